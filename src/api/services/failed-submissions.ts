// Failed submissions, as a data manager sees them. A submission job that used up its
// attempts stays in BullMQ's failed set (removeOnFail: false) until a person acts: retry it
// (back to the queue with fresh attempts) or resolve it (record who, when and why). A
// resolved job stays where it is in BullMQ, so its job id keeps deduplicating the same
// visit version; it only leaves the failed list and joins the resolved list.
import type { Job, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { SubmissionJobData } from '../../../queues/submissions.js';

/** A failed submission in the list (ids, reason and timing; never the clinical content). */
export interface FailedSubmission {
  /** BullMQ job id (the submission id). */
  id: string;
  centreId: string;
  kind: 'visit' | 'retraction';
  /** The run that enqueued it, when known. */
  runId?: string;
  /** Why the last attempt failed (the delivery error or the registry's reason). */
  reason: string;
  attempts: number;
  maxAttempts: number;
  /** ISO time it was first queued. */
  queuedAt: string;
  /** ISO time of the final failure. */
  failedAt?: string;
}

/** A submission a person marked resolved. */
export interface ResolvedSubmission extends FailedSubmission {
  resolvedBy: string;
  resolvedAt: string;
  note: string;
}

/** Options for listing failed submissions. */
export interface ListFailedOptions {
  centreId?: string;
  /** Default 100, at most 1000. */
  limit?: number;
}

/** The failed-submission operations behind the API. */
export interface FailedSubmissionStore {
  /** Unresolved failed submissions, most recently failed first. */
  list(options?: ListFailedOptions): Promise<{ items: FailedSubmission[]; total: number }>;
  /** Unresolved failed submissions per centre id. */
  countByCentre(): Promise<Map<string, number>>;
  /** Sends one failed submission back to the queue with fresh attempts. */
  retry(id: string): Promise<FailedSubmission | undefined>;
  /** Retries every unresolved failed submission (of one centre if given); returns the count. */
  retryAll(options?: { centreId?: string }): Promise<number>;
  /** Marks a failed submission resolved; it leaves the failed list. */
  resolve(
    id: string,
    resolution: { by: string; note: string },
  ): Promise<ResolvedSubmission | undefined>;
  /** Resolved submissions, most recently resolved first. */
  listResolved(options?: ListFailedOptions): Promise<ResolvedSubmission[]>;
}

/** A failed job that cannot be retried right now (e.g. it is no longer failed). */
export class SubmissionStateError extends Error {
  constructor(
    readonly id: string,
    readonly state: string,
  ) {
    super(`submission ${id} is ${state}, not failed`);
    this.name = 'SubmissionStateError';
  }
}

const SCAN_CHUNK = 500;

function describeJob(job: Job<SubmissionJobData>): FailedSubmission {
  const submission = job.data.submission as Partial<SubmissionJobData['submission']> | undefined;
  return {
    id: String(job.id),
    centreId: submission?.centreId ?? 'unknown',
    kind: submission?.kind ?? 'visit',
    ...(job.data.runId ? { runId: job.data.runId } : {}),
    reason: job.failedReason || 'no reason recorded',
    attempts: job.attemptsMade,
    maxAttempts: job.opts.attempts ?? 1,
    queuedAt: new Date(job.timestamp).toISOString(),
    ...(job.finishedOn ? { failedAt: new Date(job.finishedOn).toISOString() } : {}),
  };
}

function failedAgain(job: Job<SubmissionJobData>, resolutionText: string): boolean {
  const resolution = JSON.parse(resolutionText) as ResolvedSubmission;
  const resolvedFailure = resolution.failedAt ? Date.parse(resolution.failedAt) : 0;
  return (job.finishedOn ?? 0) > resolvedFailure;
}

/** Creates the store over the submissions queue; resolutions live under `${prefix}:resolved`. */
export function createFailedSubmissionStore(options: {
  queue: Queue<SubmissionJobData>;
  redis: Redis;
  prefix: string;
}): FailedSubmissionStore {
  const { queue, redis } = options;
  const resolvedKey = `${options.prefix}:submissions:resolved`;
  const resolvedOrderKey = `${options.prefix}:submissions:resolved-order`;

  /** Walks the failed set (newest first) in chunks, skipping resolved jobs. */
  async function* unresolvedFailed(): AsyncGenerator<Job<SubmissionJobData>> {
    for (let start = 0; ; start += SCAN_CHUNK) {
      const jobs = (await queue.getFailed(
        start,
        start + SCAN_CHUNK - 1,
      )) as Job<SubmissionJobData>[];
      if (jobs.length === 0) return;
      const ids = jobs.map((j) => String(j.id));
      const resolved = await redis.hmget(resolvedKey, ...ids);
      for (const [i, job] of jobs.entries()) {
        const text = resolved[i];
        // A job retried elsewhere (Bull Board) that failed again after its resolution is
        // unresolved again.
        if (text === null || text === undefined || failedAgain(job, text)) yield job;
      }
      if (jobs.length < SCAN_CHUNK) return;
    }
  }

  async function failedJob(id: string): Promise<Job<SubmissionJobData> | undefined> {
    const job = (await queue.getJob(id)) as Job<SubmissionJobData> | undefined;
    if (!job) return undefined;
    const state = await job.getState();
    if (state !== 'failed') throw new SubmissionStateError(id, state);
    return job;
  }

  async function retryJob(job: Job<SubmissionJobData>): Promise<void> {
    await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
    // A retried job is no longer resolved: if it fails again it must be seen again.
    await redis
      .multi()
      .hdel(resolvedKey, String(job.id))
      .zrem(resolvedOrderKey, String(job.id))
      .exec();
  }

  return {
    async list(opts = {}) {
      const limit = Math.min(Math.max(opts.limit ?? 100, 1), 1000);
      const items: FailedSubmission[] = [];
      let total = 0;
      for await (const job of unresolvedFailed()) {
        const item = describeJob(job);
        if (opts.centreId && item.centreId !== opts.centreId) continue;
        total += 1;
        if (items.length < limit) items.push(item);
      }
      return { items, total };
    },

    async countByCentre() {
      const counts = new Map<string, number>();
      for await (const job of unresolvedFailed()) {
        const centreId = describeJob(job).centreId;
        counts.set(centreId, (counts.get(centreId) ?? 0) + 1);
      }
      return counts;
    },

    async retry(id) {
      const job = await failedJob(id);
      if (!job) return undefined;
      const before = describeJob(job);
      await retryJob(job);
      return before;
    },

    async retryAll(opts = {}) {
      // Collect first: retrying moves jobs out of the failed set being walked.
      const jobs: Job<SubmissionJobData>[] = [];
      for await (const job of unresolvedFailed()) {
        if (!opts.centreId || describeJob(job).centreId === opts.centreId) jobs.push(job);
      }
      let retried = 0;
      for (const job of jobs) {
        try {
          await retryJob(job);
          retried += 1;
        } catch {
          // Retried or removed by someone else meanwhile: nothing to do for this one.
        }
      }
      return retried;
    },

    async resolve(id, resolution) {
      const job = await failedJob(id);
      if (!job) return undefined;
      const record: ResolvedSubmission = {
        ...describeJob(job),
        resolvedBy: resolution.by,
        resolvedAt: new Date().toISOString(),
        note: resolution.note,
      };
      await redis
        .multi()
        .hset(resolvedKey, record.id, JSON.stringify(record))
        .zadd(resolvedOrderKey, Date.parse(record.resolvedAt), record.id)
        .exec();
      return record;
    },

    async listResolved(opts = {}) {
      const limit = Math.min(Math.max(opts.limit ?? 100, 1), 1000);
      const out: ResolvedSubmission[] = [];
      for (let start = 0; out.length < limit; start += SCAN_CHUNK) {
        const ids = await redis.zrevrange(resolvedOrderKey, start, start + SCAN_CHUNK - 1);
        if (ids.length === 0) break;
        const texts = await redis.hmget(resolvedKey, ...ids);
        for (const text of texts) {
          if (text === null) continue;
          const record = JSON.parse(text) as ResolvedSubmission;
          if (opts.centreId && record.centreId !== opts.centreId) continue;
          if (out.length < limit) out.push(record);
        }
      }
      return out;
    },
  };
}
