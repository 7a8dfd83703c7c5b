// "Sync now" from the API, the CLI and the demo. A manual trigger records a queued run first (so the caller gets
// the run id at once) and adds a sync job that carries it. At most one sync runs per centre:
// a trigger while one is queued or running is reported with that run's id instead of adding
// a second job. A short Redis lock makes the check-then-add safe across API processes.
import { randomUUID } from 'node:crypto';
import type { Job, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { runIdForAttempt, type SyncJobData } from '../../queues/sync.js';
import type { RunRecord, RunStore, SyncMode } from './run-store.js';

/** The outcome of a trigger. */
export type SyncTriggerResult =
  | { status: 'queued'; runId: string; jobId: string }
  | { status: 'already-running'; runId?: string; jobId?: string };

/** What a trigger needs. */
export interface SyncTriggerDeps {
  redis: Redis;
  prefix: string;
  syncQueue: Queue<SyncJobData>;
  runStore: Pick<RunStore, 'latest' | 'get' | 'start' | 'finish'>;
}

const LIVE_STATES = new Set(['active', 'waiting', 'prioritized', 'waiting-children']);

/**
 * True when the job is running, waiting to run, waiting to retry after a failure, or handed
 * back to the queue (shutdown, lost lease, dropped Redis connection, busy centre).
 *
 * A delayed job is not live only when it is the job scheduler's next tick: a `schedule` job
 * in its first attempt whose run has not started. Whether a run started is read from its run
 * record (queued or running: the hand-back leaves it queued, phase interrupted), not from
 * the job's reason alone, since a scheduled run is handed back at shutdown too. A manual or
 * retry job is never a tick, so its reason (or a retry's attemptsMade) makes it live even
 * without a record (one whose record write failed).
 */
async function isLive(
  deps: Pick<SyncTriggerDeps, 'runStore'>,
  job: Job<SyncJobData>,
): Promise<boolean> {
  const state = await job.getState();
  if (LIVE_STATES.has(state)) return true;
  if (state !== 'delayed') return false;
  if (job.attemptsMade > 0 || job.data.reason !== 'schedule') return true;
  // The run id the processor gives this attempt (see createSyncProcessor).
  const runId = runIdForAttempt(String(job.id), job.data, 0);
  const record = await deps.runStore.get(runId);
  return record?.status === 'queued' || record?.status === 'running';
}

/** Finds a sync of the centre that is queued or running, if any. */
export async function findRunningSync(
  deps: SyncTriggerDeps,
  centreId: string,
): Promise<{ runId?: string; jobId?: string } | undefined> {
  const latest: RunRecord | undefined = await deps.runStore.latest(centreId);
  if (latest && (latest.status === 'queued' || latest.status === 'running')) {
    // Trust the record only while its job is alive: a crashed worker's record stays "running".
    const job = latest.jobId ? await deps.syncQueue.getJob(latest.jobId) : undefined;
    if (!latest.jobId || (job && (await isLive(deps, job))))
      return { runId: latest.runId, ...(latest.jobId ? { jobId: latest.jobId } : {}) };
  }
  const jobs = (await deps.syncQueue.getJobs([
    'active',
    'waiting',
    'prioritized',
    'delayed',
  ])) as Job<SyncJobData>[];
  for (const job of jobs) {
    if (job.data.centreId !== centreId) continue;
    if (!(await isLive(deps, job))) continue;
    return { ...(job.data.runId ? { runId: job.data.runId } : {}), jobId: String(job.id) };
  }
  return undefined;
}

/** Queues a manual sync of the centre unless one is already queued or running. */
export async function requestSync(
  deps: SyncTriggerDeps,
  centreId: string,
  mode: SyncMode,
): Promise<SyncTriggerResult> {
  const lockKey = `${deps.prefix}:sync-trigger:${centreId}`;
  const token = randomUUID();
  if ((await deps.redis.set(lockKey, token, 'PX', 10_000, 'NX')) !== 'OK') {
    // Another trigger for this centre is being added right now.
    return { status: 'already-running' };
  }
  try {
    const running = await findRunningSync(deps, centreId);
    if (running) return { status: 'already-running', ...running };
    const runId = randomUUID();
    const jobId = `manual-${runId}`;
    await deps.runStore.start({
      runId,
      centreId,
      mode,
      reason: 'manual',
      status: 'queued',
      jobId,
    });
    try {
      await deps.syncQueue.add('sync', { centreId, mode, reason: 'manual', runId }, { jobId });
    } catch (err) {
      // Leave no run "queued" forever when its job never made it into the queue.
      await deps.runStore.finish(runId, {
        status: 'failed',
        errors: [
          { step: 'queue', message: `could not add the sync job: ${(err as Error).message}` },
        ],
      });
      throw err;
    }
    return { status: 'queued', runId, jobId };
  } finally {
    // Release only our own lock (it may have expired and been taken by someone else).
    const current = await deps.redis.get(lockKey);
    if (current === token) await deps.redis.del(lockKey);
  }
}
