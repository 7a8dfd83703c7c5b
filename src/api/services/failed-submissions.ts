// Failed submissions as the API serves them: a thin layer over the delivery admin helpers
// (src/sync/submission-admin.ts) that tells "no such job" (404) from "not failed" (409),
// counts failures per centre in one pass (reused while the failed set is unchanged), and never returns a submission's clinical content
// (resolved records keep it in Redis; the API shows ids, reasons and who resolved what).
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { SubmissionJobData } from '../../../queues/submissions.js';
import {
  countFailedByCentre,
  listFailedSubmissions,
  listResolvedSubmissions,
  resolveFailedSubmission,
  retryFailedSubmission,
  startRetryAllFailedSubmissions,
  wasResolvedRecently,
  type FailedSubmission,
  type ResolvedSubmission,
} from '../../sync/submission-admin.js';

export type { FailedSubmission };

/** A resolved submission without its content. */
export type ResolvedSubmissionSummary = Omit<ResolvedSubmission, 'submission'>;

/** Options for listing. */
export interface ListSubmissionsOptions {
  centreId?: string;
  /** Only those the registry refused (true) or only the others (false). */
  permanent?: boolean;
  /** Default 0. */
  offset?: number;
  /** Default 100, at most 1000. */
  limit?: number;
}

/** The failed-submission operations behind the API. */
export interface FailedSubmissionStore {
  /** Failed submissions, most recently failed first, with the total. */
  list(options?: ListSubmissionsOptions): Promise<{ items: FailedSubmission[]; total: number }>;
  /** Failed submissions per centre id. */
  countByCentre(): Promise<Map<string, number>>;
  /** Sends one failed submission back to the queue; returns its centre. */
  retry(jobId: string): Promise<{ centreId: string }>;
  /**
   * Starts retrying every failed submission (of one centre if given): resolves with how many
   * once it knows which; `done` resolves with how many were retried (others were retried,
   * resolved or removed meanwhile).
   */
  retryAll(options?: { centreId?: string }): Promise<{ count: number; done: Promise<number> }>;
  /** Marks a failed submission resolved; it leaves the failed list for the resolved one. */
  resolve(jobId: string, by: { name: string; note: string }): Promise<ResolvedSubmissionSummary>;
  /** Resolved submissions, most recently resolved first. */
  listResolved(options?: ListSubmissionsOptions): Promise<ResolvedSubmissionSummary[]>;
}

/** The job does not exist (404). */
export class SubmissionNotFoundError extends Error {
  constructor(readonly jobId: string) {
    super(`no submission job with id "${jobId}"`);
    this.name = 'SubmissionNotFoundError';
  }
}

/** The job exists but is not failed (409): retried, delivered or resolved meanwhile. */
export class SubmissionStateError extends Error {
  constructor(
    readonly jobId: string,
    readonly state: string,
  ) {
    super(`submission ${jobId} is ${state}, not failed`);
    this.name = 'SubmissionStateError';
  }
}

function withoutContent(record: ResolvedSubmission): ResolvedSubmissionSummary {
  const { submission: _content, ...summary } = record;
  return summary;
}

/**
 * How long the per-centre failed counts are reused (per process) while the failed set looks
 * unchanged. The dashboard polls /api/centres every 4 s, and counting scans every failed job.
 */
export const FAILED_COUNTS_CACHE_MS = 30_000;

/** Creates the store over the submissions queue (resolved records under the prefix). */
export function createFailedSubmissionStore(options: {
  queue: Queue<SubmissionJobData>;
  redis: Redis;
  prefix: string;
  /** Default FAILED_COUNTS_CACHE_MS. */
  countsCacheMs?: number;
}): FailedSubmissionStore {
  const { queue, redis, prefix } = options;
  const countsCacheMs = options.countsCacheMs ?? FAILED_COUNTS_CACHE_MS;

  // The per-centre counts, reused for countsCacheMs unless the failed set visibly changed: its
  // size, or its newest member (a new failure is added on top, with its finishing time). Both
  // are O(1) to read; a change that keeps both (rare: one job leaves and another fails with an
  // older timestamp) shows within countsCacheMs. This process's own retries and resolves drop
  // the counts at once. Concurrent requests share one scan.
  let counts: { at: number; fingerprint: string; value: Promise<Map<string, number>> } | undefined;
  async function failedFingerprint(): Promise<string> {
    const [size, newest] = await Promise.all([
      redis.zcard(queue.toKey('failed')),
      redis.zrevrange(queue.toKey('failed'), 0, 0, 'WITHSCORES'),
    ]);
    return `${size}:${newest.join(':')}`;
  }
  async function countByCentre(): Promise<Map<string, number>> {
    const fingerprint = await failedFingerprint();
    const now = Date.now();
    if (!counts || counts.fingerprint !== fingerprint || now - counts.at >= countsCacheMs) {
      const entry = { at: now, fingerprint, value: countFailedByCentre(queue, redis) };
      counts = entry;
      entry.value.catch(() => {
        if (counts === entry) counts = undefined;
      });
    }
    return new Map(await counts.value);
  }
  function countsChanged(): void {
    counts = undefined;
  }

  // Why a job is not (or no longer) failed. A job resolved lately is gone from the queue but
  // answers 409 "resolved", so the loser of two resolves (or of a resolve and a retry) is told
  // what happened rather than "no such job".
  async function notFailed(jobId: string, ifGone: 'not-found' | 'gone'): Promise<Error> {
    const job = await queue.getJob(jobId);
    if (job) return new SubmissionStateError(jobId, await job.getState());
    if (await wasResolvedRecently(redis, prefix, jobId))
      return new SubmissionStateError(jobId, 'resolved');
    return ifGone === 'gone'
      ? new SubmissionStateError(jobId, 'gone')
      : new SubmissionNotFoundError(jobId);
  }

  async function requireFailed(jobId: string): Promise<{ centreId: string }> {
    const job = await queue.getJob(jobId);
    if (!job) throw await notFailed(jobId, 'not-found');
    const state = await job.getState();
    if (state !== 'failed') throw new SubmissionStateError(jobId, state);
    return { centreId: job.data.submission.centreId };
  }

  return {
    list(opts = {}) {
      return listFailedSubmissions(queue, redis, {
        ...(opts.centreId ? { centreId: opts.centreId } : {}),
        ...(opts.permanent !== undefined ? { permanent: opts.permanent } : {}),
        offset: opts.offset ?? 0,
        limit: opts.limit ?? 100,
      });
    },

    countByCentre,

    async retry(jobId) {
      const { centreId } = await requireFailed(jobId);
      let retried: boolean;
      try {
        retried = await retryFailedSubmission(queue, jobId);
      } catch (err) {
        // BullMQ refuses to move a job that left the failed set (resolved or retried by
        // someone else) after we read it: that is a lost race (409), anything else is not.
        const reason = await notFailed(jobId, 'gone');
        if (reason instanceof SubmissionStateError && reason.state !== 'failed') throw reason;
        throw err;
      }
      if (!retried) throw await notFailed(jobId, 'gone');
      countsChanged();
      return { centreId };
    },

    async retryAll(opts = {}) {
      const started = await startRetryAllFailedSubmissions(
        queue,
        redis,
        opts.centreId ? { centreId: opts.centreId } : {},
      );
      countsChanged();
      const done = started.done.finally(countsChanged);
      return { count: started.count, done };
    },

    async resolve(jobId, by) {
      await requireFailed(jobId);
      const record = await resolveFailedSubmission(queue, redis, prefix, jobId, {
        resolvedBy: by.name,
        note: by.note,
      });
      if (!record) throw await notFailed(jobId, 'gone');
      countsChanged();
      return withoutContent(record);
    },

    async listResolved(opts = {}) {
      const offset = Math.max(opts.offset ?? 0, 0);
      const limit = Math.min(Math.max(opts.limit ?? 100, 1), 1000);
      if (!opts.centreId && opts.permanent === undefined)
        return (await listResolvedSubmissions(redis, prefix, { offset, limit })).map(
          withoutContent,
        );
      // The resolved list is not indexed by centre: page through it, filter, skip `offset`.
      const out: ResolvedSubmissionSummary[] = [];
      let skip = offset;
      for (let at = 0; out.length < limit; at += 1000) {
        const page = await listResolvedSubmissions(redis, prefix, { offset: at, limit: 1000 });
        for (const record of page) {
          if (opts.centreId && record.centreId !== opts.centreId) continue;
          if (opts.permanent !== undefined && record.permanent !== opts.permanent) continue;
          if (skip > 0) skip -= 1;
          else if (out.length < limit) out.push(withoutContent(record));
        }
        if (page.length < 1000) break;
      }
      return out;
    },
  };
}
