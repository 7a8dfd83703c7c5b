// The `submissions` queue: one job per RegistrySubmission (visit version or retraction),
// job id = submission id, so the same visit content is never queued twice. Deliveries retry
// with exponential backoff long enough to ride out a registry outage of more than an hour;
// failed jobs are kept until a person resolves them.
import { Queue, type ConnectionOptions, type JobsOptions } from 'bullmq';
import { z } from 'zod';
import { RegistrySubmissionSchema } from '../src/registry/submission.js';
import type { ServiceConfig } from '../src/config/service.js';

/** BullMQ queue name. */
export const SUBMISSIONS_QUEUE = 'submissions';

export const SubmissionJobDataSchema = z
  .object({
    /** The run that enqueued it (for the dashboard); not part of the submission. */
    runId: z.string().min(1).optional(),
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
    backoff: { type: 'exponential', delay: config.backoffMs },
    removeOnComplete: {
      age: Math.round(config.keepCompletedHours * 3600),
      count: config.keepCompletedCount,
    },
    removeOnFail: false,
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
