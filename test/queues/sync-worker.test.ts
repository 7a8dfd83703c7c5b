import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requestSync } from '../../src/sync/request-sync.js';
import { startWorker, type RunningWorker } from '../../src/worker.js';
import type { FhirClient } from '../../src/fhir/client.js';
import type { PrepareCentre } from '../../src/sync/centre-services.js';
import { centreLockKey, getCentreLockHolder } from '../../src/sync/centre-lock.js';
import { startSyncFixture, type SyncFixture } from '../sync/fixture.js';
import { waitFor } from '../sync/helpers.js';

describe('sync worker', () => {
  let f: SyncFixture;
  let worker: RunningWorker | undefined;
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 8, centreId: 'sync-worker' });
  });
  afterAll(async () => {
    await worker?.close();
    await f?.close();
  });

  const trigger = () =>
    requestSync(
      {
        redis: f.runtime.redis,
        prefix: f.runtime.prefix,
        syncQueue: f.runtime.queues.sync,
        runStore: f.runtime.runStore,
      },
      f.centre.id,
      'full',
    );
  const runStatus = async (runId: string) => (await f.runtime.runStore.get(runId))?.status;

  it('when the worker should deliver but no registry URL is configured, then it refuses to start and names the setting', async () => {
    const runtime = {
      ...f.runtime,
      config: { ...f.runtime.config, registry: { ...f.runtime.config.registry, url: undefined } },
    } as typeof f.runtime;
    await expect(startWorker(runtime, { prepareCentre: f.prepareCentre })).rejects.toThrow(
      /LHN_REGISTRY_URL.*--no-delivery/s,
    );
  });

  it('when a manual sync is triggered while one runs, then it is reported with the running run id, and a scheduled tick is skipped', async () => {
    f.ehr.faults.set({ slow: { delayMs: 100, kinds: ['search'] } });
    worker = await startWorker(f.runtime, { syncConcurrency: 2, prepareCentre: f.prepareCentre });
    const first = await trigger();
    expect(first.status).toBe('queued');
    const runId = first.runId!;
    await waitFor(async () => (await runStatus(runId)) === 'running', 20_000, 'the run to start');

    const second = await trigger();
    expect(second).toMatchObject({ status: 'already-running', runId });

    const tick = await f.runtime.queues.sync.add('sync', {
      centreId: f.centre.id,
      mode: 'incremental',
      reason: 'schedule',
    });
    await waitFor(async () => (await tick.getState()) === 'completed', 20_000, 'the tick');
    const done = await f.runtime.queues.sync.getJob(tick.id!);
    expect(done!.returnvalue).toMatchObject({ status: 'skipped', runningRunId: runId });

    f.ehr.faults.reset();
    await waitFor(
      async () => (await runStatus(runId)) === 'succeeded',
      60_000,
      'the run to finish',
    );
    const runs = await f.runtime.runStore.list({ centreId: f.centre.id });
    expect(runs.map((r) => r.runId)).toEqual([runId]);
    expect(
      await getCentreLockHolder(f.runtime.redis, f.runtime.prefix, f.centre.id),
    ).toBeUndefined();
    await worker.close();
    worker = undefined;
  });

  it('when the Redis connection drops under a command mid-sync, then the run is handed back and finishes under the same run id', async () => {
    // ioredis rejects a pipeline whose reply was cut off by a closed connection with this
    // error; here the first search of the run fails with it once.
    let dropped = 0;
    const prepareCentre: PrepareCentre = async (centre) => {
      const services = await f.prepareCentre(centre);
      const client = services.fhirClient;
      const flaky: FhirClient = {
        ...client,
        searchResources: (type, params, options) => {
          if (dropped === 0) {
            dropped += 1;
            throw Object.assign(new Error('Command aborted due to connection close'), {
              name: 'AbortError',
            });
          }
          return client.searchResources(type, params, options);
        },
      };
      return { ...services, fhirClient: flaky };
    };
    worker = await startWorker(f.runtime, { prepareCentre, redisRetryMs: 50 });
    const { runId } = await trigger();
    await waitFor(async () => (await runStatus(runId!)) === 'succeeded', 60_000, 'the run');
    expect(dropped).toBe(1);
    const record = (await f.runtime.runStore.get(runId!))!;
    expect(record.errors).toEqual([]);
    expect(record.reason).toBe('manual');
    await worker.close();
    worker = undefined;
  });

  it('when the worker shuts down mid-sync, then the run is handed back and another worker finishes it under the same run id', async () => {
    // Every search is held far longer than the test needs, so the pull is certainly still
    // going when the worker closes however loaded the machine is (400 ms once lost that race
    // in CI). Closing aborts the held requests, so the delay costs the test nothing.
    f.ehr.faults.set({ slow: { delayMs: 15_000, kinds: ['search'] } });
    const first = await startWorker(f.runtime, { prepareCentre: f.prepareCentre });
    const { runId } = await trigger();
    await waitFor(
      async () => (await f.runtime.runStore.get(runId!))?.phase === 'pull',
      20_000,
      'the pull to start',
    );
    await first.close();
    const interrupted = await f.runtime.runStore.get(runId!);
    expect(interrupted).toMatchObject({ status: 'queued', phase: 'interrupted' });
    const job = await f.runtime.queues.sync.getJob(interrupted!.jobId!);
    expect(['delayed', 'waiting']).toContain(await job!.getState());
    expect(
      await getCentreLockHolder(f.runtime.redis, f.runtime.prefix, f.centre.id),
    ).toBeUndefined();

    f.ehr.faults.reset();
    worker = await startWorker(f.runtime, { prepareCentre: f.prepareCentre });
    await waitFor(
      async () => (await runStatus(runId!)) === 'succeeded',
      60_000,
      'the run to finish',
    );
    expect((await f.runtime.runStore.get(runId!))!.reason).toBe('manual');
  });

  it('when the centre lock lapses under a running sync, then the run is handed back with that reason, not as a shutdown or a failed attempt, and finishes later', async () => {
    await worker?.close();
    f.ehr.faults.set({ slow: { delayMs: 15_000, kinds: ['search'] } });
    worker = await startWorker(f.runtime, { prepareCentre: f.prepareCentre, lockLeaseMs: 600 });
    const { runId } = await trigger();
    await waitFor(
      async () => (await f.runtime.runStore.get(runId!))?.phase === 'pull',
      20_000,
      'the pull to start',
    );
    // The lease lapses (Redis was unreachable longer than it, or the event loop stalled).
    await f.runtime.redis.del(centreLockKey(f.runtime.prefix, f.centre.id));
    await waitFor(
      async () => (await f.runtime.runStore.get(runId!))?.phase === 'interrupted',
      10_000,
      'the run to be interrupted',
    );
    const interrupted = (await f.runtime.runStore.get(runId!))!;
    expect(interrupted.status).toBe('queued');
    const note = interrupted.warnings?.map((w) => w.message).join(' ') ?? '';
    expect(note).toMatch(/centre lock's lease lapsed/);
    expect(note).not.toMatch(/shutting down/);
    f.ehr.faults.reset();
    await waitFor(async () => (await runStatus(runId!)) === 'succeeded', 60_000, 'the run');
    // The run record says succeeded just before BullMQ completes the job (and counts the attempt).
    await waitFor(
      async () =>
        (await (await f.runtime.queues.sync.getJob(interrupted.jobId!))?.getState()) ===
        'completed',
      10_000,
      'the job to complete',
    );
    const job = await f.runtime.queues.sync.getJob(interrupted.jobId!);
    // One attempt, the one that succeeded: the interruption was not a failure.
    expect(job!.attemptsMade).toBe(1);
    expect(job!.failedReason).toBeFalsy();
    expect(job!.stacktrace ?? []).toEqual([]);
    await worker.close();
    worker = undefined;
  });
});
