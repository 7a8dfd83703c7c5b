// Redis loses a run's state while the run goes on (restarted without persistence, failed over
// to an empty replica, keys deleted): the run fails with a clear error, never returns
// undefined or throws a TypeError, and writes no watermark, so the next sync is a full one
// that sends every visit again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  REDIS_STATE_LOST_MESSAGE,
  RedisStateLostError,
  syncCentre,
} from '../../src/sync/run-sync.js';
import { runRecordKey, type RunStore } from '../../src/sync/run-store.js';
import { openVisitState } from '../../src/sync/visit-state.js';
import { startSyncFixture, type SyncFixture } from './fixture.js';
import { SECRET, deletePrefix } from './helpers.js';

/** A run store that deletes the run's record once it is told of `phase` (a wipe then). */
function wipingAt(store: RunStore, redis: SyncFixture['runtime']['redis'], prefix: string) {
  return (phase: string): RunStore => ({
    ...store,
    async update(runId, patch) {
      const out = await store.update(runId, patch);
      if (patch.phase === phase) await redis.del(runRecordKey(prefix, runId));
      return out;
    },
  });
}

describe('Redis loses the run state mid-run', () => {
  let f: SyncFixture;
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 6, seed: 9, centreId: 'state-lost' });
  });
  afterAll(async () => {
    await f?.close();
  });

  const run = async (runStore: RunStore) => {
    const services = await f.prepareCentre(f.centre);
    return syncCentre(
      {
        redis: f.runtime.redis,
        prefix: f.runtime.prefix,
        submissionsQueue: f.runtime.queues.submissions,
        runStore,
        pseudonymSecret: SECRET,
        ...services,
      },
      {
        centre: f.centre,
        mode: 'full',
        reason: 'manual',
        enqueueBatchSize: 5,
        patientConcurrency: 1,
      },
    );
  };

  it("when the prefix's keys are wiped while a full sync pulls, then the run fails with RedisStateLostError, no watermark is written, and the next incremental sync sends every visit again", async () => {
    const state = openVisitState(f.runtime.redis, f.runtime.prefix, f.centre.id);
    f.ehr.faults.set({ slow: { delayMs: 80, kinds: ['search'] } });
    const p = run(f.runtime.runStore).then(
      (r) => ({ ok: r }),
      (e: unknown) => ({ err: e }),
    );
    while ((await state.size()) === 0) await new Promise((r) => setTimeout(r, 20));
    await deletePrefix(f.runtime.redis, f.runtime.prefix);
    f.ehr.faults.reset();
    const res = await p;
    expect(res).toHaveProperty('err');
    const err = (res as { err: unknown }).err;
    expect(err).toBeInstanceOf(RedisStateLostError);
    expect((err as RedisStateLostError).message).toContain(REDIS_STATE_LOST_MESSAGE);
    expect((err as RedisStateLostError).record.status).toBe('failed');
    expect((err as RedisStateLostError).record.errors).toContainEqual({
      step: 'redis',
      message: REDIS_STATE_LOST_MESSAGE,
    });
    expect(await state.getWatermarks()).toEqual({});

    await f.deliverAll();
    const next = await f.runSync('incremental');
    expect(next.status).toBe('succeeded');
    expect(next.mode).toBe('full');
    await f.deliverAll();
    const truth = f.gen.truth.filter((t) => !t.retracted);
    expect(f.registry.visits()).toHaveLength(truth.length);
  });

  it('when the run record vanishes just before the watermarks are written, then they are not written', async () => {
    await deletePrefix(f.runtime.redis, f.runtime.prefix);
    const state = openVisitState(f.runtime.redis, f.runtime.prefix, f.centre.id);
    const store = wipingAt(f.runtime.runStore, f.runtime.redis, f.runtime.prefix)('enqueue');
    await expect(run(store)).rejects.toBeInstanceOf(RedisStateLostError);
    expect(await state.getWatermarks()).toEqual({});
  });

  it('when the run record vanishes after the watermarks, then the run still ends with RedisStateLostError, not undefined or a TypeError', async () => {
    await deletePrefix(f.runtime.redis, f.runtime.prefix);
    const store = wipingAt(f.runtime.runStore, f.runtime.redis, f.runtime.prefix)('quality');
    const err: unknown = await run(store).then(
      (r) => r,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RedisStateLostError);
    expect((err as RedisStateLostError).record.counts.visits).toBeGreaterThan(0);
  });

  it('when a record is deleted, then an update does not write it back', async () => {
    const record = await f.runtime.runStore.start({
      centreId: f.centre.id,
      mode: 'full',
      reason: 'manual',
    });
    await f.runtime.redis.del(runRecordKey(f.runtime.prefix, record.runId));
    expect(await f.runtime.runStore.update(record.runId, { phase: 'pull' })).toBeUndefined();
    expect(await f.runtime.runStore.finish(record.runId, { status: 'failed' })).toBeUndefined();
    expect(await f.runtime.runStore.get(record.runId)).toBeUndefined();
  });
});
