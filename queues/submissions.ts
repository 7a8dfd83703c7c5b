// The `submissions` queue: one job per RegistrySubmission (visit version or retraction),
// job id = submission id, so the same visit content is never queued twice. Deliveries retry
// with exponential backoff long enough to ride out a registry outage of more than an hour;
// failed jobs are kept until a person resolves them.
import { randomUUID } from 'node:crypto';
import {
  DelayedError,
  Queue,
  RateLimitError,
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
  INCARNATION_PATTERN,
  MAX_RETRY_AFTER_MS,
  RegistryRejectedError,
  RegistryUnavailableError,
  deliveryIdempotencyKey,
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
    /**
     * The incarnation of the Redis state it was enqueued in (src/sync/secret-fingerprint.ts
     * ensureIncarnation), part of its Idempotency-Key (deliveryIdempotencyKey): a job id
     * repeated after the Redis lost its state never repeats a key. Absent in jobs enqueued
     * before it existed (their key is the job id alone).
     */
    incarnation: z.string().regex(INCARNATION_PATTERN).optional(),
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

/**
 * How often a delivery may be lost with its worker (killed, OOM, a node drained without a
 * grace period) before BullMQ fails the job as "stalled more than allowable limit" (BullMQ's
 * default is 1: a second crash fails it). Re-delivering after a crash is harmless (the
 * registry answers `duplicate`; the visit claim lapses on its own lease), so allow a few; a job
 * that keeps killing its worker still ends in the failed list after this many.
 */
export const SUBMISSIONS_MAX_STALLED_COUNT = 3;

/**
 * The `limiter` every submissions worker is created with. BullMQ applies a manual rate limit
 * (`queue.rateLimit(ms)`, see SubmissionProcessorDeps.rateLimit) only to workers that have a
 * limiter; this one (a million jobs a second) never limits on its own.
 */
export const SUBMISSIONS_WORKER_LIMITER = { max: 1_000_000, duration: 1_000 };

/**
 * Shortest queue-wide pause for a Retry-After (1 s): a rate-limited job goes back to waiting
 * without using an attempt, so a `Retry-After: 0` must not turn into a loop of posts.
 */
export const MIN_RATE_LIMIT_PAUSE_MS = 1_000;

/**
 * How long the whole submissions queue pauses for a registry's 429, or 503 with Retry-After
 * (a 429's job waits without using an attempt; a 503's job uses one and backs off):
 * the Retry-After, at least MIN_RATE_LIMIT_PAUSE_MS and at most MAX_RETRY_AFTER_MS (an hour,
 * the cap of the per-job backoff too), so an absurd value cannot stall delivery for days.
 * Undefined when the answer does not ask every delivery to wait (other statuses, no
 * Retry-After): that job alone backs off.
 */
export function rateLimitPauseMs(err: unknown): number | undefined {
  if (!(err instanceof RegistryUnavailableError) || err.retryAfterMs === undefined) return;
  if (err.httpStatus !== 429 && err.httpStatus !== 503) return;
  return Math.min(Math.max(err.retryAfterMs, MIN_RATE_LIMIT_PAUSE_MS), MAX_RETRY_AFTER_MS);
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
   * How long one delivery may hold its visit (default 120 s; the worker passes
   * visitClaimMs(registry config)); renewed while the request is in flight, so a crashed
   * holder's claim lapses after it. After a delivery whose outcome is unknown (timeout,
   * reset) the claim is kept for this long again, not released.
   */
  visitLockMs?: number;
  /** Wait before trying again when another version of the visit is being delivered (1 s). */
  visitBusyDelayMs?: number;
  /**
   * Pauses the whole queue, across every worker (the worker passes the submissions queue's
   * `rateLimit`; its Worker needs `limiter: SUBMISSIONS_WORKER_LIMITER`). When the registry
   * answers 429, or 503 with Retry-After, the queue pauses for rateLimitPauseMs and the job
   * goes back to waiting without using an attempt, so the other queued jobs are not posted
   * into the limit. Without it, only the job that got the answer waits (its backoff).
   */
  rateLimit?: (ms: number) => Promise<void>;
}

/** Deletes a visit's delivery claim only if this delivery still holds it. */
const RELEASE_VISIT = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0`;
/** Extends a visit's delivery claim (PX ARGV[2]) only if this delivery still holds it. */
const RENEW_VISIT = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0`;
/**
 * Marks this delivery's claim "in doubt" (its request may still land) and holds it for a
 * full lease from now, only if this delivery still holds it.
 */
const DOUBT_VISIT = `if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('set', KEYS[1], 'doubt:' .. ARGV[1], 'PX', ARGV[2]) return 1 end return 0`;

/**
 * The lease of a visit's delivery claim for a registry config: the longest one delivery can
 * take (with client credentials: token fetch, post, 401, token fetch, post, each up to
 * timeoutMs; else one post), plus one more timeoutMs in which the registry must commit or
 * abandon the last request (docs/registry-contract.md), plus 5 s for clocks and Redis.
 */
export function visitClaimMs(
  registry: Pick<ServiceConfig['registry'], 'timeoutMs' | 'auth'>,
): number {
  const requests = registry.auth.type === 'client-credentials' ? 4 : 1;
  return registry.timeoutMs * (requests + 1) + 5_000;
}

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
      // A claim in doubt stays until its lease lapses: wait that long rather than poll.
      const [holder, ttl] = await Promise.all([deps.redis.get(claim), deps.redis.pttl(claim)]);
      const busyDelay = deps.visitBusyDelayMs ?? 1_000;
      const delay = holder?.startsWith('doubt:') ? Math.max(busyDelay, ttl) : busyDelay;
      await job.moveToDelayed(Date.now() + delay, token);
      throw new DelayedError();
    }
    // Renewed while the request is in flight (a slow token fetch, a stalled event loop), so
    // the claim never lapses under a delivery that is still running.
    const renew = setInterval(
      () => void deps.redis.eval(RENEW_VISIT, 1, claim, owner, lockMs).catch(() => undefined),
      Math.max(Math.floor(lockMs / 3), 50),
    );
    let inDoubt = false;
    try {
      return await deliverClaimed(job, submission);
    } catch (err) {
      // The request may still be stored (a timeout or a reset after the body went out): keep
      // the visit claimed for a full lease, by which time the registry has committed or
      // abandoned it, so no newer version can be posted before it and then be overwritten.
      if (err instanceof RegistryUnavailableError && err.outcomeUnknown) {
        inDoubt = true;
        clearInterval(renew);
        await deps.redis.eval(DOUBT_VISIT, 1, claim, owner, lockMs).catch(() => undefined);
        log.warn(
          { jobId: job.id, centreId: submission.centreId },
          'delivery outcome unknown; the visit stays claimed until the request can no longer land',
        );
      }
      throw err;
    } finally {
      clearInterval(renew);
      if (!inDoubt) await deps.redis.eval(RELEASE_VISIT, 1, claim, owner).catch(() => undefined);
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
      // The key is the job id and the Redis incarnation it was enqueued in, so a revert
      // (`<submissionId>-r<seq>`) or a version sent again after the Redis lost its state is a
      // new request to the registry, not a repeat of an earlier delivery.
      const outcome = await deps.client.deliver(submission, {
        idempotencyKey: deliveryIdempotencyKey(
          submission.submissionId,
          job.id,
          job.data.incarnation,
        ),
      });
      deps.metrics?.submissionsDelivered.inc({ centre: submission.centreId });
      return outcome;
    } catch (err) {
      const pauseMs = deps.rateLimit ? rateLimitPauseMs(err) : undefined;
      if (deps.rateLimit && pauseMs !== undefined) {
        await deps.rateLimit(pauseMs);
        // A 429 is throttling: the job waits without using an attempt (BullMQ moves it back to
        // waiting). A 503 is an outage: every delivery pauses too, but the job uses an attempt
        // and backs off, so a registry that stays down ends with the job in the failed list,
        // visible, rather than waiting unseen for ever.
        const throttled = (err as RegistryUnavailableError).httpStatus === 429;
        log.warn(
          {
            jobId: job.id,
            centreId: submission.centreId,
            httpStatus: (err as RegistryUnavailableError).httpStatus,
            pauseMs,
          },
          throttled
            ? 'registry asked to slow down (429 Retry-After); all deliveries pause, the job waits without using an attempt'
            : 'registry unavailable (503 Retry-After); all deliveries pause, the job will retry',
        );
        if (throttled) throw new RateLimitError();
      }
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
