// A sync handed back to the queue (worker shutdown mid-run: the job is delayed with
// attemptsMade 0, its run record queued / phase interrupted) is still the centre's one
// sync: "Sync now" and `sync <centre>` report it instead of queueing a second sync. The
// job scheduler's next tick (also delayed, attemptsMade 0) is not a running sync.
import { DelayedError, Worker, type Job } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSyncQueue, runIdForJob, type SyncJobData } from '../../queues/sync.js';
import { requestSync, type SyncTriggerDeps } from '../../src/sync/request-sync.js';
import { createRunStore } from '../../src/sync/run-store.js';
import { deletePrefix, testPrefix, testRedis, waitFor } from './helpers.js';

describe('requestSync with a handed-back sync', () => {
  const prefix = testPrefix();
  const redis = testRedis();
  const queue = createSyncQueue(redis, prefix);
  const runStore = createRunStore(redis, prefix);
  const deps: SyncTriggerDeps = { redis, prefix, syncQueue: queue, runStore };
  let worker: Worker<SyncJobData> | undefined;

  beforeAll(async () => {
    // Hands every job back as the processor does at shutdown: the run record goes back to
    // queued (phase interrupted), the job is moved to delayed, not failed.
    worker = new Worker<SyncJobData>(
      'sync',
      async (job: Job<SyncJobData>, token?: string) => {
        const runId = job.data.runId ?? runIdForJob(String(job.id), job.attemptsMade);
        if (!job.data.runId)
          await runStore.start({
            runId,
            centreId: job.data.centreId,
            mode: job.data.mode,
            reason: job.data.reason,
            status: 'running',
            jobId: String(job.id),
          });
        await runStore.update(runId, { status: 'queued', phase: 'interrupted' });
        await job.moveToDelayed(Date.now() + 60_000, token);
        throw new DelayedError();
      },
      { connection: redis.duplicate(), prefix },
    );
  });

  afterAll(async () => {
    await worker?.close();
    await queue.close();
    await deletePrefix(redis, prefix);
    await redis.quit();
  });

  async function handedBack(jobId: string): Promise<void> {
    await waitFor(
      async () => (await queue.getJob(jobId))?.getState().then((s) => s === 'delayed') ?? false,
      10_000,
      'the job handed back',
    );
  }

  it('when a manual sync was handed back at shutdown, then a second trigger reports it', async () => {
    const first = await requestSync(deps, 'handback-manual', 'full');
    expect(first.status).toBe('queued');
    if (first.status !== 'queued') return;
    await handedBack(first.jobId);
    expect((await runStore.get(first.runId))?.phase).toBe('interrupted');

    const second = await requestSync(deps, 'handback-manual', 'incremental');
    expect(second).toEqual({
      status: 'already-running',
      runId: first.runId,
      jobId: first.jobId,
    });
    expect((await queue.getJobs(['delayed', 'waiting'])).length).toBe(1);
  });

  it('when a scheduled sync was handed back at shutdown, then a trigger reports it', async () => {
    const job = await queue.add(
      'sync',
      { centreId: 'handback-sched', mode: 'incremental', reason: 'schedule' },
      { jobId: 'sched-handback-1' },
    );
    await handedBack(String(job.id));
    const trigger = await requestSync(deps, 'handback-sched', 'incremental');
    expect(trigger).toMatchObject({ status: 'already-running', jobId: 'sched-handback-1' });
  });

  it("when only the scheduler's next tick is delayed, then a trigger queues a sync", async () => {
    await queue.add(
      'sync',
      { centreId: 'next-tick', mode: 'incremental', reason: 'schedule' },
      { jobId: 'sched-next-tick', delay: 3_600_000 },
    );
    const trigger = await requestSync(deps, 'next-tick', 'incremental');
    expect(trigger.status).toBe('queued');
  });
});
