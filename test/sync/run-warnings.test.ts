// Run warnings (final review 6): each warning is appended to the run record, de-duplicated by
// (step, message), so a run handed back and run again under the same id keeps the warnings
// of its earlier attempt; `lhn-bridge sync --wait` prints them.
import { afterEach, describe, expect, it } from 'vitest';
import { createRunStore, MAX_RUN_WARNINGS } from '../../src/sync/run-store.js';
import { formatRun } from '../../src/commands/sync.js';
import { useTestRedis } from './redis-scope.js';
import { startSyncFixture, type SyncFixture } from './fixture.js';

describe('run store warnings', () => {
  const { redis, prefix } = useTestRedis();

  it('when warnings are added twice, then both are kept, a repeated (step, message) once', async () => {
    const store = createRunStore(redis, prefix);
    const run = await store.start({ centreId: 'w1', mode: 'full', reason: 'manual' });
    await store.addWarnings(run.runId, [
      { step: 'pull', message: "the centre lock's lease lapsed" },
    ]);
    await store.addWarnings(run.runId, [
      { step: 'server-time', message: 'MedicationStatement skipped' },
      { step: 'pull', message: "the centre lock's lease lapsed" },
    ]);
    await store.update(run.runId, { phase: 'map' });
    await store.finish(run.runId, { status: 'succeeded' });
    expect((await store.get(run.runId))!.warnings).toEqual([
      { step: 'pull', message: "the centre lock's lease lapsed" },
      { step: 'server-time', message: 'MedicationStatement skipped' },
    ]);
  });

  it('when a progress update and a warning race, then the warning is not written over', async () => {
    const store = createRunStore(redis, prefix);
    const run = await store.start({ centreId: 'w2', mode: 'full', reason: 'manual' });
    await Promise.all([
      store.update(run.runId, { phase: 'pull' }),
      store.addWarnings(run.runId, [{ step: 'pull', message: 'a' }]),
      store.update(run.runId, { phase: 'map' }),
    ]);
    const got = (await store.get(run.runId))!;
    expect(got.warnings).toEqual([{ step: 'pull', message: 'a' }]);
    expect(got.phase).toBe('map');
  });

  it('when a run collects more distinct warnings than the cap, then the first ones are kept', async () => {
    const store = createRunStore(redis, prefix);
    const run = await store.start({ centreId: 'w3', mode: 'full', reason: 'manual' });
    const many = Array.from({ length: MAX_RUN_WARNINGS + 5 }, (_, i) => ({
      step: 'pull',
      message: `w${i}`,
    }));
    await store.addWarnings(run.runId, many);
    const got = (await store.get(run.runId))!;
    expect(got.warnings).toHaveLength(MAX_RUN_WARNINGS);
    expect(got.warnings![0]!.message).toBe('w0');
  });

  it('when a run record is unknown, then addWarnings returns undefined', async () => {
    const store = createRunStore(redis, prefix);
    expect(await store.addWarnings('nope', [{ step: 'x', message: 'y' }])).toBeUndefined();
  });
});

describe('run warnings in a sync run and its output', () => {
  let f: SyncFixture | undefined;
  afterEach(async () => {
    await f?.close();
    f = undefined;
  });

  it('when a run handed back after a lost lock runs again and warns, then the record keeps both warnings and sync prints them', async () => {
    f = await startSyncFixture({ patients: 2, seed: 61, centreId: 'warn-append' });
    // The earlier attempt of the run lost its centre lock (as syncCentre records it).
    const run = await f.runtime.runStore.start({
      centreId: f.centre.id,
      mode: 'full',
      reason: 'manual',
      status: 'queued',
    });
    const lockLost = {
      step: 'pull',
      message: "sync interrupted: the centre lock's lease lapsed",
    };
    await f.runtime.runStore.addWarnings(run.runId, [lockLost]);
    // The retry skips a type the EHR does not list: a second warning.
    f.ehr.faults.set({ capabilityOmitsTypes: ['MedicationStatement'] });
    const done = await f.runSync('full', { runId: run.runId });
    expect(done.status).toBe('succeeded');
    expect(done.warnings).toEqual([
      lockLost,
      {
        step: 'server-time',
        message: expect.stringMatching(/does not list MedicationStatement: skipped/),
      },
    ]);
    const text = formatRun(done);
    expect(text).toContain(`  warning in pull: ${lockLost.message}`);
    expect(text).toMatch(
      /\n {2}warning in server-time: the EHR's CapabilityStatement does not list MedicationStatement: skipped/,
    );
  });
});
