// The worker process: the sync processor (one centre run per job) and the delivery
// processor (one submission per job), on the runtime's Redis. Any number of workers may run
// on any number of machines. At start, every SCHEDULE_RESYNC_MS and after each Redis
// reconnect, the centres' job schedulers are brought in step with the centre files. close() stops taking jobs, asks a running sync to stop at its next step
// (it is handed back to the queue and resumes from its watermarks), lets deliveries in
// flight finish, and closes the workers.
import { Worker } from 'bullmq';
import type { Runtime } from './runtime.js';
import { ConfigError } from './config/errors.js';
import {
  SYNC_QUEUE,
  createSyncProcessor,
  type SyncJobData,
  type SyncJobResult,
} from '../queues/sync.js';
import {
  SUBMISSIONS_MAX_STALLED_COUNT,
  SUBMISSIONS_QUEUE,
  SUBMISSIONS_WORKER_LIMITER,
  createSubmissionBackoff,
  createSubmissionProcessor,
  visitClaimMs,
  type SubmissionJobData,
  type SubmissionJobResult,
} from '../queues/submissions.js';
import { createRegistryClient, type RegistryClient } from './registry/delivery.js';
import { createCentreServices, type PrepareCentre } from './sync/centre-services.js';
import { syncCentreSchedules, type ScheduleChanges } from './sync/schedules.js';
import { ensureSecretFingerprint } from './sync/secret-fingerprint.js';
import type { SyncProcessorDeps } from '../queues/sync.js';
import { startMetricsPublisher } from './api/metrics-relay.js';
import { WORKER_SHUTDOWN_REASON } from './util/abort.js';

/**
 * How often a worker brings the job schedulers in step with its centre files again (5 min),
 * besides at start and after a Redis reconnect: a Redis that came back empty (a flush, a
 * failover to an empty replica, a restart without AOF) has lost them, and without this no
 * scheduled sync would run again until a worker restarts. Cheap when nothing changed (one
 * read of the schedulers); idempotent, so any number of workers may run it.
 */
export const SCHEDULE_RESYNC_MS = 5 * 60_000;

export interface StartWorkerOptions {
  /** Centre syncs run at once by this process (default 1). */
  syncConcurrency?: number;
  /** Deliveries in flight in this process (default 8). */
  submissionConcurrency?: number;
  /** Which processors to run (default both). */
  processors?: { sync?: boolean; submissions?: boolean };
  /** Test hooks and tuning. */
  prepareCentre?: PrepareCentre;
  registryClient?: RegistryClient;
  lockLeaseMs?: number;
  busyRetryMs?: number;
  /** A run cut off by a dropped Redis connection runs again after this long (default 2 s). */
  redisRetryMs?: number;
  /** How often BullMQ checks for stalled jobs (ms); lower in tests. */
  stalledIntervalMs?: number;
  /** BullMQ job lock duration (ms); a crashed worker's job is recovered after this. */
  lockDurationMs?: number;
  /** How often the job schedulers are synced again (default SCHEDULE_RESYNC_MS); tests. */
  scheduleResyncMs?: number;
  tuning?: SyncProcessorDeps['tuning'];
}

/** A running worker process. */
export interface RunningWorker {
  sync?: Worker<SyncJobData, SyncJobResult>;
  submissions?: Worker<SubmissionJobData, SubmissionJobResult>;
  schedules: ScheduleChanges;
  /** Stops taking jobs, releases or finishes current ones, closes the workers. Idempotent. */
  close(): Promise<void>;
}

/** Marks the run of a failed sync job failed, if it was left queued or running. */
async function closeOrphanRun(
  runtime: Runtime,
  jobId: string,
  centreId: string,
  reason: string,
): Promise<void> {
  try {
    const runs = await runtime.runStore.list({ centreId, limit: 20 });
    for (const run of runs)
      if (run.jobId === jobId && (run.status === 'running' || run.status === 'queued'))
        await runtime.runStore.finish(run.runId, {
          status: 'failed',
          errors: [...run.errors, { step: 'worker', message: reason }],
        });
  } catch (err) {
    runtime.logger.warn(
      { jobId, error: (err as Error).name },
      'could not close the run of a failed sync job',
    );
  }
}

/**
 * The worker's own configuration checks that need no Redis: run before the runtime is built
 * (`lhn-bridge worker` refuses with exit code 2 before it connects or opens /health) and
 * again in startWorker. A worker that should deliver but cannot would let submissions pile
 * up unseen while every sync reports success: it refuses to start instead.
 */
export function checkWorkerConfig(
  config: Pick<Runtime['config'], 'registry'>,
  processors: { submissions: boolean },
): void {
  if (processors.submissions && !config.registry.url)
    throw new ConfigError('environment', [
      {
        path: 'registry.url (LHN_REGISTRY_URL)',
        message:
          'is required for a worker that delivers submissions; set it, or start the worker with --no-delivery (syncs only)',
      },
    ]);
}

/** Starts the processors on the runtime and syncs the job schedulers. */
export async function startWorker(
  runtime: Runtime,
  options: StartWorkerOptions = {},
): Promise<RunningWorker> {
  const { logger, config } = runtime;
  const wantSync = options.processors?.sync ?? true;
  const wantSubmissions = options.processors?.submissions ?? true;
  checkWorkerConfig(config, { submissions: wantSubmissions && !options.registryClient });
  const workerTiming = {
    ...(options.stalledIntervalMs ? { stalledInterval: options.stalledIntervalMs } : {}),
    ...(options.lockDurationMs ? { lockDuration: options.lockDurationMs } : {}),
  };

  // Refuse to start with another pseudonym secret than the one this Redis's state was made with.
  await ensureSecretFingerprint(runtime.redis, runtime.prefix, config.pseudonymSecret);
  const schedules = await syncCentreSchedules(runtime.queues.sync, runtime.centres.values(), {
    logger,
  });
  logger.info(
    {
      added: schedules.added.length,
      updated: schedules.updated.length,
      removed: schedules.removed.length,
      unchanged: schedules.unchanged.length,
    },
    'centre sync schedules in step with the centre files',
  );
  const scheduleResync = startScheduleResync(runtime, options.scheduleResyncMs);

  let sync: Worker<SyncJobData, SyncJobResult> | undefined;
  if (wantSync) {
    sync = new Worker<SyncJobData, SyncJobResult>(
      SYNC_QUEUE,
      createSyncProcessor({
        redis: runtime.redis,
        prefix: runtime.prefix,
        centres: runtime.centres,
        prepareCentre:
          options.prepareCentre ??
          createCentreServices({
            config,
            redis: runtime.redis,
            prefix: runtime.prefix,
            metrics: runtime.metrics,
            logger,
            fetch: runtime.fetch,
          }),
        submissionsQueue: runtime.queues.submissions,
        runStore: runtime.runStore,
        pseudonymSecret: config.pseudonymSecret,
        metrics: runtime.metrics,
        logger,
        ...(options.lockLeaseMs ? { lockLeaseMs: options.lockLeaseMs } : {}),
        ...(options.busyRetryMs ? { busyRetryMs: options.busyRetryMs } : {}),
        ...(options.redisRetryMs ? { redisRetryMs: options.redisRetryMs } : {}),
        ...(options.tuning ? { tuning: options.tuning } : {}),
      }),
      {
        connection: runtime.redis,
        prefix: runtime.prefix,
        concurrency: options.syncConcurrency ?? 1,
        // A sync killed with its process is restarted (from its watermarks) twice at most.
        maxStalledCount: 2,
        ...workerTiming,
      },
    );
    // The reason is in the run record and the job; the log carries ids only.
    sync.on('failed', (job, err) => {
      logger.warn(
        { jobId: job?.id, centreId: job?.data.centreId, error: err.name },
        'sync job failed',
      );
      // A run whose job failed outside the run (stalled too often, killed) must not stay
      // "running" on the dashboard.
      if (job) void closeOrphanRun(runtime, String(job.id), job.data.centreId, err.message);
    });
    sync.on('error', (err) => logger.error({ err: err.message }, 'sync worker error'));
  }

  let submissions: Worker<SubmissionJobData, SubmissionJobResult> | undefined;
  if (wantSubmissions) {
    const client =
      options.registryClient ??
      (config.registry.url
        ? createRegistryClient({ config: config.registry, fetch: runtime.fetch })
        : undefined);
    if (client) {
      submissions = new Worker<SubmissionJobData, SubmissionJobResult>(
        SUBMISSIONS_QUEUE,
        createSubmissionProcessor({
          client,
          redis: runtime.redis,
          prefix: runtime.prefix,
          metrics: runtime.metrics,
          logger,
          // A delivery's claim on its visit covers its longest delivery (auth retries
          // included) plus the registry's window to commit or abandon a request, but not much
          // more, so a crashed worker's claim soon lapses.
          visitLockMs: visitClaimMs(config.registry),
          // A 429 (or 503 with Retry-After) pauses every delivery, on every worker.
          rateLimit: (ms) => runtime.queues.submissions.rateLimit(ms),
        }),
        {
          connection: runtime.redis,
          prefix: runtime.prefix,
          concurrency: options.submissionConcurrency ?? 8,
          // A delivery lost with its worker is delivered again, up to a few times.
          maxStalledCount: SUBMISSIONS_MAX_STALLED_COUNT,
          // Only so that the rate limit above applies; never limits by itself.
          limiter: SUBMISSIONS_WORKER_LIMITER,
          settings: { backoffStrategy: createSubmissionBackoff(config.submissions) },
          ...workerTiming,
        },
      );
      submissions.on('error', (err) =>
        logger.error({ err: err.message }, 'submissions worker error'),
      );
    }
  }

  // The API's /metrics shows this process's counters through Redis (src/api/metrics-relay.ts).
  const metricsPublisher = startMetricsPublisher({
    redis: runtime.redis,
    prefix: runtime.prefix,
    registry: runtime.metrics.registry,
    logger,
  });

  let closing: Promise<void> | undefined;
  return {
    ...(sync ? { sync } : {}),
    ...(submissions ? { submissions } : {}),
    schedules,
    close() {
      closing ??= (async () => {
        logger.info('worker closing: no new jobs; releasing running syncs');
        const resyncStopped = scheduleResync.stop();
        sync?.cancelAllJobs(WORKER_SHUTDOWN_REASON);
        await Promise.all([sync?.close(), submissions?.close(), resyncStopped]);
        await metricsPublisher.stop();
        logger.info('worker closed');
      })();
      return closing;
    },
  };
}

/**
 * Syncs the job schedulers again every `intervalMs` and on each ioredis `ready` (a reconnect:
 * the first `ready` came before startWorker), one run at a time; a run asked for while one is
 * going runs after it. Failures are logged and retried at the next tick or reconnect.
 */
function startScheduleResync(
  runtime: Runtime,
  intervalMs = SCHEDULE_RESYNC_MS,
): { stop(): Promise<void> } {
  const { logger } = runtime;
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  const resync = (trigger: 'interval' | 'reconnect'): void => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = (async () => {
      try {
        const changes = await syncCentreSchedules(runtime.queues.sync, runtime.centres.values(), {
          logger,
        });
        const changed = changes.added.length + changes.updated.length + changes.removed.length;
        // Changes here mean Redis lost the schedulers (or another worker has other centre
        // files): worth a warning, with the centres.
        if (changed > 0)
          logger.warn(
            { trigger, added: changes.added, updated: changes.updated, removed: changes.removed },
            'centre sync schedules were out of step with the centre files (Redis lost them, or another worker has other centre files); restored',
          );
      } catch (err) {
        logger.warn(
          { trigger, err: (err as Error).message },
          'could not sync the centre sync schedules; trying again later',
        );
      } finally {
        running = undefined;
        if (again && !stopped) {
          again = false;
          resync(trigger);
        }
      }
    })();
  };
  const timer = setInterval(() => resync('interval'), intervalMs);
  timer.unref();
  const onReady = (): void => resync('reconnect');
  runtime.redis.on('ready', onReady);
  return {
    /** Stops the timer and the reconnect hook; resolves when a run in flight is done. */
    async stop() {
      stopped = true;
      clearInterval(timer);
      runtime.redis.off('ready', onReady);
      await running;
    },
  };
}
