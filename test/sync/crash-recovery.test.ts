// Two worker processes share one Redis; the one running a sync is SIGKILLed mid-pull. BullMQ's
// stalled-job recovery hands the job to the other worker, which takes over the centre lock
// (same job) and runs again from the watermarks; content hashes keep what was already
// enqueued from being enqueued twice. The registry must end with every expected visit once.
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requestSync } from '../../src/sync/request-sync.js';
import { startSyncFixture, type SyncFixture } from './fixture.js';
import { SECRET, waitFor } from './helpers.js';
import { spawnWorker, type ChildWorker } from './process-helpers.js';

describe('crash recovery with two worker processes', () => {
  let f: SyncFixture;
  let centresDir: string;
  const workers: ChildWorker[] = [];

  beforeAll(async () => {
    f = await startSyncFixture({ patients: 30, seed: 5, centreId: 'crash-test' });
    centresDir = await mkdtemp(join(tmpdir(), 'lhn-centres-'));
    const { sourceFile: _source, ...centreFile } = f.centre;
    await writeFile(join(centresDir, `${f.centre.id}.json`), JSON.stringify(centreFile));
  });
  afterAll(async () => {
    for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGKILL');
    await f?.close();
    await rm(centresDir, { recursive: true, force: true });
  });

  it('when the worker running a sync is killed, then the other finishes it and the registry holds every expected visit exactly once', async () => {
    const settings = {
      redisUrl: f.config.redis.url,
      prefix: f.runtime.prefix,
      registryUrl: f.registry.url,
      centresDir,
      mappingsDir: f.config.mappingsDir,
      secret: SECRET,
    };
    workers.push(spawnWorker(settings), spawnWorker(settings));
    await Promise.all(workers.map((w) => w.waitForEvent((e) => e.event === 'ready', 60_000)));

    f.ehr.faults.set({ slow: { delayMs: 100, kinds: ['search'] } });
    const trigger = await requestSync(
      {
        redis: f.runtime.redis,
        prefix: f.runtime.prefix,
        syncQueue: f.runtime.queues.sync,
        runStore: f.runtime.runStore,
      },
      f.centre.id,
      'full',
    );
    const runId = trigger.runId!;
    await waitFor(
      async () => ((await f.runtime.runStore.get(runId))?.counts.enqueued ?? 0) > 0,
      60_000,
      'the sync to enqueue its first visits',
    );
    const running = workers.find((w) =>
      w.events.some((e) => e.event === 'active' && e.queue === 'sync'),
    )!;
    const survivor = workers.find((w) => w !== running)!;
    const partial = (await f.runtime.runStore.get(runId))!;
    running.child.kill('SIGKILL');
    await running.exited;
    expect(partial.status).toBe('running');
    // Killed part-way: some visits enqueued, not all.
    expect(partial.counts.enqueued).toBeLessThan(f.gen.truth.filter((t) => !t.retracted).length);
    f.ehr.faults.reset();

    await waitFor(
      async () => (await f.runtime.runStore.get(runId))?.status === 'succeeded',
      90_000,
      'the run to finish',
    );
    expect(survivor.events.some((e) => e.event === 'active' && e.queue === 'sync')).toBe(true);

    const truth = f.gen.truth.filter((t) => !t.retracted);
    await waitFor(
      () => f.registry.visits().length === truth.length,
      60_000,
      'every visit delivered',
    );
    await waitFor(
      async () => {
        const c = await f.runtime.queues.submissions.getJobCounts('waiting', 'active', 'delayed');
        return Object.values(c).every((n) => n === 0);
      },
      60_000,
      'the submissions queue to drain',
    );
    const visits = f.registry.visits();
    expect(visits).toHaveLength(truth.length);
    expect(visits.every((v) => v.version === 1 && !v.retracted)).toBe(true);
    const ids = f.registry.submissions().map((s) => s.submissionId);
    expect(new Set(ids).size).toBe(ids.length);
    for (const t of truth) {
      const stored = visits.find((v) => v.visitKey === f.visitKey(t.encounterId))?.current;
      expect(stored, t.encounterId).toBeDefined();
      expect([
        stored!.visit.date,
        stored!.pga,
        stored!.steroidUse,
        stored!.height?.value ?? null,
      ]).toEqual([t.visitDate, t.pga, t.steroidUse, t.heightCm]);
    }
    expect(await f.runtime.queues.submissions.getFailedCount()).toBe(0);

    survivor.child.kill('SIGTERM');
    expect(await survivor.exited).toBe(0);
    expect(survivor.events.some((e) => e.event === 'closed')).toBe(true);
  }, 240_000);
});
