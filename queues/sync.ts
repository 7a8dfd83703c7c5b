// The `sync` queue: one job per centre sync run (full or incremental), from a centre's job
// scheduler (cron) or a manual trigger. Job data is tiny (ids and flags); the run itself
// lives in src/sync. This file holds the queue's name, job-data schema, default options and
// the thin processor.
import { Queue, type ConnectionOptions, type JobsOptions } from 'bullmq';
import { z } from 'zod';

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
 * idempotent, so a failed run may simply run again (a new run record with reason `retry`
 * semantics is kept per attempt). Finished sync jobs are trimmed: the run record is the
 * durable account of each run.
 */
export const SYNC_JOB_OPTIONS: JobsOptions = {
  attempts: 3,
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
