// The `submissions` queue: one job per RegistrySubmission (visit version or retraction),
// job id = submission id, so the same visit content is never queued twice. Deliveries retry
// with exponential backoff long enough to ride out a registry outage of more than an hour;
// failed jobs are kept until a person resolves them.
import { randomUUID } from 'node:crypto';
import {
  DelayedError,
  Queue,
  UnrecoverableError,
  type ConnectionOptions,
  type BackoffStrategy,
  type JobsOptions,
  type Processor,
} from 'bullmq';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { RegistrySubmissionSchema } from '../src/registry/submission.js';
import {
  RegistryRejectedError,
  RegistryUnavailableError,
  type RegistryClient,
} from '../src/registry/delivery.js';
import { isSuperseded, openVisitState } from '../src/sync/visit-state.js';
import type { ServiceConfig } from '../src/config/service.js';
import type { Metrics } from '../src/util/metrics.js';
import { silentLogger, type Logger } from '../src/util/logger.js';

/** BullMQ queue name. */
export const SUBMISSIONS_QUEUE = 'submissions';

export const SubmissionJobDataSchema = z
  .object({
    /** The run that enqueued it (for the dashboard); not part of the submission. */
    runId: z.string().min(1).optional(),
    /**
     * The visit version's place in the centre's enqueue order (a Redis counter): what the
     * supersede check compares, so no machine's clock decides which version is newer.
     */
    seq: z.number().int().positive().optional(),
    submission: RegistrySubmissionSchema,
  })
  .strict();
/** What a submission job carries: the submission itself (a few KB at most). */
export type SubmissionJobData = z.infer<typeof SubmissionJobDataSchema>;

/**
 * Default options of submission jobs from the service config. With the defaults (12
 * attempts, 5 s exponential backoff) the retries span 5 s x (2^11 - 1) = about 2.8 hours, so
 * a registry that is down for an hour loses nothing.
 */
export function submissionJobOptions(config: ServiceConfig['submissions']): JobsOptions {
  return {
    attempts: config.attempts,
    backoff: { type: REGISTRY_BACKOFF, delay: config.backoffMs },
    removeOnComplete: {
      age: Math.round(config.keepCompletedHours * 3600),
      count: config.keepCompletedCount,
    },
    removeOnFail: false,
  };
}

/** Name of the backoff type of submission jobs (workers register submissionBackoff for it). */
export const REGISTRY_BACKOFF = 'registry';

/**
 * The backoff of submission jobs: exponential (delay x 2^(attempt-1)), but never shorter than
 * the registry's Retry-After when it sent one (capped at an hour). Pass it to every submissions
 * worker as `settings.backoffStrategy`.
 */
export function createSubmissionBackoff(config: ServiceConfig['submissions']): BackoffStrategy {
  return (attemptsMade, _type, err) => {
    const exponential = config.backoffMs * 2 ** Math.max(attemptsMade - 1, 0);
    const retryAfter = err instanceof RegistryUnavailableError ? err.retryAfterMs : undefined;
    return Math.max(exponential, retryAfter ?? 0);
  };
}

/** Total time a submission keeps retrying before it fails (sum of the backoff delays). */
export function retrySpanMs(config: ServiceConfig['submissions']): number {
  return config.backoffMs * (2 ** (config.attempts - 1) - 1);
}

/** Creates the submissions queue on a connection (shared ioredis instance or options). */
export function createSubmissionsQueue(
  connection: ConnectionOptions,
  prefix: string,
  config: ServiceConfig['submissions'],
): Queue<SubmissionJobData> {
  return new Queue<SubmissionJobData>(SUBMISSIONS_QUEUE, {
    connection,
    prefix,
    defaultJobOptions: submissionJobOptions(config),
  });
}

export interface SubmissionProcessorDeps {
  client: RegistryClient;
  /** Connection for the visit state (the supersede check). */
  redis: Redis;
  prefix: string;
  metrics?: Metrics;
  logger?: Logger;
  /**
   * How long one delivery may hold its visit (default 120 s; the worker passes twice the
   * registry timeout plus 5 s); a crashed holder's claim lapses after it.
   */
  visitLockMs?: number;
  /** Wait before trying again when another version of the visit is being delivered (1 s). */
  visitBusyDelayMs?: number;
}

/** Deletes a visit's delivery claim only if this delivery still holds it. */
const RELEASE_VISIT = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0`;

/** Result of a submission job, kept on completed jobs. */
export type SubmissionJobResult =
  { status: 'accepted' | 'duplicate'; httpStatus: number } | { status: 'superseded' };

/**
 * The delivery processor: validates the job, skips a version that a newer one has
 * superseded, posts the submission and lets the error class decide retry vs fail.
 */
export function createSubmissionProcessor(
  deps: SubmissionProcessorDeps,
): Processor<SubmissionJobData, SubmissionJobResult> {
  const log = deps.logger ?? silentLogger;
  const lockMs = deps.visitLockMs ?? 120_000;
  return async (job, token) => {
    const parsed = SubmissionJobDataSchema.safeParse(job.data);
    if (!parsed.success)
      throw new UnrecoverableError(
        `invalid submission job data: ${parsed.error.issues[0]?.message}`,
      );
    const { submission } = parsed.data;
    // One delivery per visit at a time (across slots and workers): otherwise an older version
    // that passed its supersede check could reach the registry after a newer one.
    const claim = `${deps.prefix}:deliver:${submission.centreId}:${submission.visitKey}`;
    const owner = `${job.id ?? ''}:${randomUUID()}`;
    if ((await deps.redis.set(claim, owner, 'PX', lockMs, 'NX')) !== 'OK') {
      if (token === undefined)
        throw new RegistryUnavailableError('another delivery of this visit is in flight');
      await job.moveToDelayed(Date.now() + (deps.visitBusyDelayMs ?? 1_000), token);
      throw new DelayedError();
    }
    try {
      return await deliverClaimed(job, submission);
    } finally {
      await deps.redis.eval(RELEASE_VISIT, 1, claim, owner).catch(() => undefined);
    }
  };

  async function deliverClaimed(
    job: Parameters<Processor<SubmissionJobData, SubmissionJobResult>>[0],
    submission: SubmissionJobData['submission'],
  ): Promise<SubmissionJobResult> {
    const state = openVisitState(deps.redis, deps.prefix, submission.centreId);
    const [entry] = await state.getMany([submission.visitKey]);
    if (isSuperseded(entry, submission.contentHash, job.timestamp, job.data.seq)) {
      log.info(
        { jobId: job.id, centreId: submission.centreId },
        'submission superseded by a newer version',
      );
      return { status: 'superseded' };
    }
    try {
      const outcome = await deps.client.deliver(submission);
      deps.metrics?.submissionsDelivered.inc({ centre: submission.centreId });
      return outcome;
    } catch (err) {
      // Permanent: the registry refused it, or this was its last attempt (it now stays failed).
      const permanent =
        err instanceof RegistryRejectedError || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      deps.metrics?.submissionsFailed.inc({
        centre: submission.centreId,
        permanent: String(permanent),
      });
      log.warn(
        { jobId: job.id, centreId: submission.centreId, attempt: job.attemptsMade + 1, permanent },
        permanent ? 'registry rejected a submission' : 'submission delivery failed; will retry',
      );
      throw err;
    }
  }
}
