// Redis is killed and restarted while a sync runs: the worker's connections wait and
// reconnect, the run completes, and the registry ends with every expected visit once.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requestSync } from '../../src/sync/request-sync.js';
import { startWorker, type RunningWorker } from '../../src/worker.js';
import { startSyncFixture, type SyncFixture } from './fixture.js';
import { waitFor } from './helpers.js';
import { startPrivateRedis, type PrivateRedis } from './redis-server.js';

describe('redis restart mid-run', () => {
  let dir: string;
  let redis: PrivateRedis;
  let f: SyncFixture;
  let worker: RunningWorker | undefined;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lhn-redis-'));
    redis = await startPrivateRedis(dir);
    f = await startSyncFixture({
      patients: 20,
      seed: 9,
      centreId: 'redis-restart',
      redisUrl: redis.url,
    });
  });
  afterAll(async () => {
    await worker?.close();
    await f?.close();
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('when Redis is killed and restarted during a sync, then the run completes after reconnect and nothing is lost', async () => {
    worker = await startWorker(f.runtime, {
      prepareCentre: f.prepareCentre,
      tuning: { enqueueBatchSize: 10, patientConcurrency: 2 },
      // If a job lock lapses while Redis is down, recover the job in seconds, not minutes.
      lockDurationMs: 5000,
      stalledIntervalMs: 1000,
      lockLeaseMs: 5000,
    });
    f.ehr.faults.set({ slow: { delayMs: 80, kinds: ['search'] } });
    const { runId } = await requestSync(
      {
        redis: f.runtime.redis,
        prefix: f.runtime.prefix,
        syncQueue: f.runtime.queues.sync,
        runStore: f.runtime.runStore,
      },
      f.centre.id,
      'full',
    );
    await waitFor(
      async () => ((await f.runtime.runStore.get(runId!))?.counts.enqueued ?? 0) > 0,
      60_000,
      'the sync to enqueue its first visits',
    );
    await redis.kill();
    await new Promise((r) => setTimeout(r, 1500));
    await redis.start();
    f.ehr.faults.reset();

    await waitFor(
      async () => (await f.runtime.runStore.get(runId!))?.status === 'succeeded',
      90_000,
      'the run to finish',
    );
    const truth = f.gen.truth.filter((t) => !t.retracted);
    await waitFor(
      () => f.registry.visits().length === truth.length,
      60_000,
      'every visit delivered',
    );
    const visits = f.registry.visits();
    expect(visits.every((v) => v.version === 1)).toBe(true);
    for (const t of truth)
      expect(visits.find((v) => v.visitKey === f.visitKey(t.encounterId))?.current?.pga).toBe(
        t.pga,
      );
    const ids = f.registry.submissions().map((s) => s.submissionId);
    expect(new Set(ids).size).toBe(ids.length);
  }, 240_000);
});
