// The `sync` queue: one job per centre sync run (full or incremental), from a centre's job
// scheduler (cron) or a manual trigger. Job data is tiny (ids and flags); the run itself
// lives in src/sync. This file holds the queue's name, job-data schema, default options and
// the thin processor.
import { createHash } from 'node:crypto';
import {
  DelayedError,
  Queue,
  UnrecoverableError,
  type ConnectionOptions,
  type JobsOptions,
  type Processor,
} from 'bullmq';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { CentreConfig } from '../src/config/centre.js';
import { CentreLockLostError, acquireCentreLock } from '../src/sync/centre-lock.js';
import type { PrepareCentre } from '../src/sync/centre-services.js';
import { SyncInterruptedError, syncCentre, type SyncCentreOptions } from '../src/sync/run-sync.js';
import { SYNC_ATTEMPTS, type RunCounts, type RunStore } from '../src/sync/run-store.js';
import type { Metrics } from '../src/util/metrics.js';
import { silentLogger, type Logger } from '../src/util/logger.js';
import { followAbort } from '../src/util/abort.js';
import { syncWindowClosedError, type OutsideSyncWindowError } from '../src/fhir/limiter.js';
import type { SubmissionJobData } from './submissions.js';

/** BullMQ queue name. */
export const SYNC_QUEUE = 'sync';

export const SyncJobDataSchema = z
  .object({
    centreId: z.string().min(1),
    mode: z.enum(['full', 'incremental']),
    reason: z.enum(['schedule', 'manual', 'retry']),
    /** Set by manual triggers so the caller knows the run id before the run starts. */
    runId: z.uuid().optional(),
  })
  .strict();
/** What a sync job carries: which centre, which mode, and why it runs. */
export type SyncJobData = z.infer<typeof SyncJobDataSchema>;

/**
 * Default options of sync jobs. A sync restarts from its watermarks and its enqueue is
 * idempotent, so a failed run may simply run again (a new run record with reason `retry` is
 * kept per attempt, all with the job's id: the `failing` alert counts a job once, by its
 * latest attempt). A run refused outside the centre's sync window is not retried. Finished
 * sync jobs are trimmed: the run record is the durable account of each run.
 */
export const SYNC_JOB_OPTIONS: JobsOptions = {
  attempts: SYNC_ATTEMPTS,
  backoff: { type: 'exponential', delay: 60_000 },
  removeOnComplete: { age: 7 * 24 * 3600, count: 1000 },
  removeOnFail: { age: 30 * 24 * 3600, count: 1000 },
};

/** Creates the sync queue on a connection (shared ioredis instance or options). */
export function createSyncQueue(connection: ConnectionOptions, prefix: string): Queue<SyncJobData> {
  return new Queue<SyncJobData>(SYNC_QUEUE, {
    connection,
    prefix,
    defaultJobOptions: SYNC_JOB_OPTIONS,
  });
}

/** Result kept on a finished sync job. */
export type SyncJobResult =
  | { status: 'succeeded'; runId: string; counts: RunCounts }
  | { status: 'skipped'; reason: string; runningRunId?: string };

export interface SyncProcessorDeps {
  redis: Redis;
  prefix: string;
  centres: ReadonlyMap<string, CentreConfig>;
  prepareCentre: PrepareCentre;
  submissionsQueue: Queue<SubmissionJobData>;
  runStore: RunStore;
  pseudonymSecret: string;
  metrics?: Metrics;
  logger?: Logger;
  /** Lease of the per-centre lock (default 60 s). */
  lockLeaseMs?: number;
  /** A manual sync that finds the centre busy waits this long before trying again (30 s). */
  busyRetryMs?: number;
  /** A run cut off by a dropped Redis connection runs again after this long (2 s). */
  redisRetryMs?: number;
  /** Passed through to syncCentre (tests, bench). */
  tuning?: Pick<SyncCentreOptions, 'enqueueBatchSize' | 'patientConcurrency' | 'overlapMs'>;
}

/** The centre's sync window, when it is closed now: why, and when it opens (ISO). */
function syncWindowClosed(
  centre: Pick<CentreConfig, 'id' | 'limits' | 'timeZone'>,
  at = Date.now(),
): OutsideSyncWindowError | undefined {
  const window = centre.limits.syncWindow;
  return window ? syncWindowClosedError(window, centre.timeZone, centre.id, at) : undefined;
}

/** Records a run that was refused before it started as failed at `step`. */
async function recordRunRefused(
  runStore: RunStore,
  run: {
    runId: string;
    jobId: string;
    centreId: string;
    mode: SyncJobData['mode'];
    reason: SyncJobData['reason'];
    step: string;
    message: string;
  },
): Promise<void> {
  const errors = [{ step: run.step, message: run.message }];
  if (await runStore.finish(run.runId, { status: 'failed', errors })) return;
  await runStore.start({
    runId: run.runId,
    centreId: run.centreId,
    mode: run.mode,
    reason: run.reason,
    status: 'running',
    jobId: run.jobId,
  });
  await runStore.finish(run.runId, { status: 'failed', errors });
}

/** A run id stable across restarts of the same job attempt (stalled-job recovery). */
export function runIdForJob(jobId: string, attemptsMade: number): string {
  const h = createHash('sha256').update(`sync/${jobId}/${attemptsMade}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/**
 * The run id of one attempt of a sync job: the id the job was queued with (requestSync's, so
 * its "queued" record is the first attempt's), else one derived from the job id and attempt.
 */
export function runIdForAttempt(jobId: string, data: { runId?: string }, attempt: number): string {
  return attempt === 0 && data.runId ? data.runId : runIdForJob(jobId, attempt);
}

/**
 * The sync processor: one run of one centre, holding the centre's lock. A scheduled run
 * that finds the centre busy is skipped (the next tick comes); a manual one waits, and so
 * does any run whose job already holds the lock (an earlier run of it, until its lease ends). A run
 * interrupted by shutdown is released back to the queue and runs again from its watermarks.
 */
export function createSyncProcessor(
  deps: SyncProcessorDeps,
): Processor<SyncJobData, SyncJobResult> {
  const log = deps.logger ?? silentLogger;
  return async (job, token, signal) => {
    const parsed = SyncJobDataSchema.safeParse(job.data);
    if (!parsed.success)
      throw new UnrecoverableError(`invalid sync job data: ${parsed.error.issues[0]?.message}`);
    const data = parsed.data;
    const centre = deps.centres.get(data.centreId);
    if (!centre)
      throw new UnrecoverableError(
        `unknown centre "${data.centreId}": no centre file with this id is loaded`,
      );
    const jobId = String(job.id);
    const runId = runIdForAttempt(jobId, data, job.attemptsMade);
    const reason = job.attemptsMade > 0 ? 'retry' : data.reason;

    // Outside the centre's sync window no EHR request may go: the run fails at once, once,
    // with when the window opens (step `window`), and is not retried (a retry 1 or 2 min
    // later would find the window as closed).
    const closed = syncWindowClosed(centre);
    if (closed) {
      const message = `${closed.message}; this sync did not start and is not retried: run it again then, or let the schedule run it`;
      await recordRunRefused(deps.runStore, {
        runId,
        jobId,
        centreId: centre.id,
        mode: data.mode,
        reason,
        step: 'window',
        message,
      });
      log.info(
        { centreId: centre.id, jobId, runId, opensAt: closed.opensAt },
        'outside the sync window; run not started',
      );
      throw new UnrecoverableError(message);
    }

    const controller = new AbortController();
    const unfollow = followAbort(signal, controller);
    const lock = await acquireCentreLock(
      deps.redis,
      deps.prefix,
      centre.id,
      { runId, jobId },
      {
        ...(deps.lockLeaseMs ? { leaseMs: deps.lockLeaseMs } : {}),
        onLost: () => controller.abort(new CentreLockLostError(centre.id)),
      },
    );
    if (!lock.acquired) {
      unfollow();
      const running = lock.holder?.runId;
      // The holder names this very job: an earlier run of it (BullMQ re-ran the job after a
      // missed job-lock renewal or a crash) that may still be alive. Wait out its lease
      // rather than skip, so a restarted scheduled run is not lost.
      const sameJob = lock.holder?.jobId === jobId;
      if (data.reason === 'schedule' && !sameJob) {
        log.info(
          { centreId: centre.id, jobId, runningRunId: running },
          'sync already running; scheduled run skipped',
        );
        return {
          status: 'skipped',
          reason: 'already running',
          ...(running ? { runningRunId: running } : {}),
        };
      }
      const busyRetryMs = deps.busyRetryMs ?? 30_000;
      const waitMs = sameJob ? Math.min(busyRetryMs, lock.leaseRemainingMs + 100) : busyRetryMs;
      await job.moveToDelayed(Date.now() + waitMs, token);
      throw new DelayedError();
    }

    try {
      const { fhirClient, mapper } = await deps.prepareCentre(centre);
      const record = await syncCentre(
        {
          redis: deps.redis,
          prefix: deps.prefix,
          submissionsQueue: deps.submissionsQueue,
          runStore: deps.runStore,
          pseudonymSecret: deps.pseudonymSecret,
          fhirClient,
          mapper,
          ...(deps.metrics ? { metrics: deps.metrics } : {}),
          logger: log,
        },
        {
          centre,
          mode: data.mode,
          reason,
          runId,
          jobId,
          signal: controller.signal,
          onProgress: (p) => job.updateProgress({ ...p, runId }),
          ...deps.tuning,
        },
      );
      return { status: 'succeeded', runId, counts: record.counts };
    } catch (err) {
      if (err instanceof SyncInterruptedError && err.reason === 'lock-lost' && !signal?.aborted) {
        // The lease lapsed under the run: another run may hold the centre now. Not a failed
        // attempt: hand the job back for after a lease, by when that run has the lock or the
        // centre is free again (the message says what happened; the run record too).
        log.warn({ centreId: centre.id, jobId, runId }, err.message);
        await job.moveToDelayed(Date.now() + (deps.lockLeaseMs ?? 60_000), token);
        throw new DelayedError();
      }
      if (
        err instanceof SyncInterruptedError &&
        (signal?.aborted || err.reason === 'redis-connection')
      ) {
        // Shutting down: hand the job back so another worker runs it. A dropped Redis
        // connection: run it again shortly, under the same run id (not a failed attempt).
        await lock.lock.release();
        await job.moveToDelayed(
          Date.now() + (signal?.aborted ? 0 : (deps.redisRetryMs ?? 2_000)),
          token,
        );
        throw new DelayedError();
      }
      // The window closed under the run (its requests failed with OutsideSyncWindowError):
      // a retry before it opens again would only fail at the check above.
      const closedNow = syncWindowClosed(centre);
      if (closedNow)
        throw new UnrecoverableError(
          `${(err as Error).message} (not retried: ${closedNow.message})`,
        );
      throw err;
    } finally {
      unfollow();
      await lock.lock.release();
    }
  };
}
