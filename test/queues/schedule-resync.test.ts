import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startWorker, type RunningWorker } from '../../src/worker.js';
import { SCHEDULER_PREFIX } from '../../src/sync/schedules.js';
import { startSyncFixture, type SyncFixture } from '../sync/fixture.js';
import { deletePrefix, waitFor } from '../sync/helpers.js';

// Redis that comes back empty (FLUSHALL, a failover to an empty replica, a restart without
// AOF) has lost the centres' job schedulers; a running worker puts them back.
describe('job schedulers after Redis lost them', () => {
  let f: SyncFixture;
  let worker: RunningWorker | undefined;
  beforeAll(async () => {
    f = await startSyncFixture({
      patients: 2,
      centreId: 'resync',
      // Once a year: no tick fires during the test.
      centre: { schedule: { cron: '0 3 1 1 *', mode: 'incremental' } },
    });
  });
  afterEach(async () => {
    await worker?.close();
    worker = undefined;
  });
  afterAll(async () => {
    await f?.close();
  });

  const schedulers = async () =>
    (await f.runtime.queues.sync.getJobSchedulers(0, -1))
      .filter((s) => s.key.startsWith(SCHEDULER_PREFIX))
      .map((s) => `${s.key} ${s.pattern}`);
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('when the prefix is flushed under a running worker, then the next periodic resync restores the schedulers', async () => {
    worker = await startWorker(f.runtime, {
      prepareCentre: f.prepareCentre,
      scheduleResyncMs: 200,
    });
    expect(await schedulers()).toEqual(['sync-resync 0 3 1 1 *']);
    await deletePrefix(f.runtime.redis, f.runtime.prefix);
    expect(await schedulers()).toEqual([]);
    await waitFor(async () => (await schedulers()).length === 1, 10_000, 'the scheduler back');
    expect(await schedulers()).toEqual(['sync-resync 0 3 1 1 *']);
    // Idempotent: later resyncs change nothing (one scheduler, one next run).
    await sleep(600);
    expect(await schedulers()).toEqual(['sync-resync 0 3 1 1 *']);
    const delayed = await f.runtime.queues.sync.getDelayed();
    expect(delayed.filter((j) => j.data.centreId === 'resync')).toHaveLength(1);
  });

  it('when Redis reconnects empty, then the schedulers are restored without waiting for the interval', async () => {
    worker = await startWorker(f.runtime, {
      prepareCentre: f.prepareCentre,
      scheduleResyncMs: 3_600_000,
    });
    await deletePrefix(f.runtime.redis, f.runtime.prefix);
    expect(await schedulers()).toEqual([]);
    f.runtime.redis.disconnect(true);
    await waitFor(async () => (await schedulers()).length === 1, 10_000, 'the scheduler back');
    expect(await schedulers()).toEqual(['sync-resync 0 3 1 1 *']);
  });

  it('when the worker has closed, then it resyncs no more (timer cleared, reconnect hook removed)', async () => {
    worker = await startWorker(f.runtime, {
      prepareCentre: f.prepareCentre,
      scheduleResyncMs: 100,
    });
    await worker.close();
    worker = undefined;
    await deletePrefix(f.runtime.redis, f.runtime.prefix);
    const ready = new Promise((r) => f.runtime.redis.once('ready', r));
    f.runtime.redis.disconnect(true);
    await ready;
    await sleep(400);
    expect(await schedulers()).toEqual([]);
  });
});
