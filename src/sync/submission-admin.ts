// What a person does with submissions the registry would not take: list them with the
// registry's reason, retry one or all (after the registry or the mapping was fixed), or mark
// one resolved. Resolving moves the job into a resolved record (who, when, why, and the
// submission itself) rather than deleting it, so nothing disappears without a trace.
import type { Job, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { SubmissionJobData } from '../../queues/submissions.js';

/** Resolved records kept (newest first); older ones are trimmed. */
const KEEP_RESOLVED = 10_000;

/** A failed submission job, as the API shows it. */
export interface FailedSubmission {
  jobId: string;
  submissionId: string;
  centreId: string;
  kind: 'visit' | 'retraction';
  /** The registry's reason (or the last delivery error). */
  failedReason: string;
  attemptsMade: number;
  /** True when it failed before using all attempts (the registry rejected it). */
  permanent: boolean;
  createdAt: string;
  failedAt?: string;
  runId?: string;
}

/** A failed submission that a person marked resolved. */
export interface ResolvedSubmission extends FailedSubmission {
  resolvedAt: string;
  resolvedBy: string;
  note?: string;
  submission: SubmissionJobData['submission'];
}

export interface ListFailedOptions {
  centreId?: string;
  /** Default 0. */
  offset?: number;
  /** Default 100, at most 1000. */
  limit?: number;
}

function describe(job: Job<SubmissionJobData>): FailedSubmission {
  const { submission, runId } = job.data;
  const attempts = job.opts.attempts ?? 1;
  return {
    jobId: String(job.id),
    submissionId: submission.submissionId,
    centreId: submission.centreId,
    kind: submission.kind,
    failedReason: job.failedReason ?? '',
    attemptsMade: job.attemptsMade,
    permanent: job.attemptsMade < attempts,
    createdAt: new Date(job.timestamp).toISOString(),
    ...(job.finishedOn ? { failedAt: new Date(job.finishedOn).toISOString() } : {}),
    ...(runId ? { runId } : {}),
  };
}

// One chunk of the failed set, newest first, as id/centre pairs: the centre is read from the
// job data inside Redis, so scanning many failed jobs moves ids, not whole submissions.
const FAILED_CENTRES_SCRIPT = `
local ids = redis.call('ZREVRANGE', KEYS[1], ARGV[2], ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  local centre = ''
  local data = redis.call('HGET', ARGV[1] .. id, 'data')
  if data then
    local ok, job = pcall(cjson.decode, data)
    if ok and type(job) == 'table' and type(job.submission) == 'table'
      and type(job.submission.centreId) == 'string' then
      centre = job.submission.centreId
    end
  end
  out[#out + 1] = id
  out[#out + 1] = centre
end
return out
`;

/** Failed submission jobs (newest first) as ids with their centre, of one centre if given. */
export async function failedSubmissionIds(
  queue: Queue<SubmissionJobData>,
  redis: Redis,
  options: { centreId?: string; chunk?: number } = {},
): Promise<{ jobId: string; centreId: string }[]> {
  const chunk = options.chunk ?? 1000;
  const out: { jobId: string; centreId: string }[] = [];
  for (let start = 0; ; start += chunk) {
    const flat = (await redis.eval(
      FAILED_CENTRES_SCRIPT,
      1,
      queue.toKey('failed'),
      queue.toKey(''),
      start,
      start + chunk - 1,
    )) as string[];
    for (let i = 0; i < flat.length; i += 2) {
      const centreId = flat[i + 1]!;
      if (!options.centreId || centreId === options.centreId)
        out.push({ jobId: flat[i]!, centreId });
    }
    if (flat.length < chunk * 2) return out;
  }
}

/** How many submissions failed, by centre. */
export async function countFailedByCentre(
  queue: Queue<SubmissionJobData>,
  redis: Redis,
): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const { centreId } of await failedSubmissionIds(queue, redis))
    if (centreId) counts.set(centreId, (counts.get(centreId) ?? 0) + 1);
  return counts;
}

/** Failed submissions, most recently failed first, with the total. */
export async function listFailedSubmissions(
  queue: Queue<SubmissionJobData>,
  redis: Redis,
  options: ListFailedOptions = {},
): Promise<{ total: number; items: FailedSubmission[] }> {
  const offset = Math.max(options.offset ?? 0, 0);
  const limit = Math.min(Math.max(options.limit ?? 100, 1), 1000);
  if (!options.centreId) {
    const total = await queue.getFailedCount();
    const jobs = (await queue.getFailed(offset, offset + limit - 1)) as Job<SubmissionJobData>[];
    return { total, items: jobs.filter(Boolean).map(describe) };
  }
  const ids = await failedSubmissionIds(queue, redis, { centreId: options.centreId });
  const page = await Promise.all(
    ids.slice(offset, offset + limit).map(({ jobId }) => queue.getJob(jobId)),
  );
  return {
    total: ids.length,
    items: page.filter((job): job is Job<SubmissionJobData> => job !== undefined).map(describe),
  };
}

/** Moves one failed submission back to waiting; false when it is not (or no longer) failed. */
export async function retryFailedSubmission(
  queue: Queue<SubmissionJobData>,
  jobId: string,
): Promise<boolean> {
  const job = await queue.getJob(jobId);
  if (!job || (await job.getState()) !== 'failed') return false;
  await job.retry('failed');
  return true;
}

/** Retries every failed submission (of one centre, if given); returns how many. */
export async function retryAllFailedSubmissions(
  queue: Queue<SubmissionJobData>,
  redis: Redis,
  options: { centreId?: string } = {},
): Promise<number> {
  const ids = await failedSubmissionIds(
    queue,
    redis,
    options.centreId ? { centreId: options.centreId } : {},
  );
  let retried = 0;
  for (const { jobId } of ids) {
    try {
      const job = await queue.getJob(jobId);
      if (!job) continue;
      await job.retry('failed');
      retried += 1;
    } catch {
      // Retried or removed concurrently by someone else: nothing to do.
    }
  }
  return retried;
}

function resolvedKey(prefix: string): string {
  return `${prefix}:submissions-resolved`;
}

/**
 * Marks a failed submission resolved: writes the resolved record, then removes the job from
 * the failed set. Undefined when the job is not failed (already retried or resolved).
 */
export async function resolveFailedSubmission(
  queue: Queue<SubmissionJobData>,
  redis: Redis,
  prefix: string,
  jobId: string,
  by: { resolvedBy: string; note?: string },
): Promise<ResolvedSubmission | undefined> {
  const job = await queue.getJob(jobId);
  if (!job || (await job.getState()) !== 'failed') return undefined;
  const record: ResolvedSubmission = {
    ...describe(job),
    resolvedAt: new Date().toISOString(),
    resolvedBy: by.resolvedBy,
    ...(by.note ? { note: by.note } : {}),
    submission: job.data.submission,
  };
  await redis
    .multi()
    .lpush(resolvedKey(prefix), JSON.stringify(record))
    .ltrim(resolvedKey(prefix), 0, KEEP_RESOLVED - 1)
    .exec();
  await job.remove();
  return record;
}

/** Resolved submissions, newest first. */
export async function listResolvedSubmissions(
  redis: Redis,
  prefix: string,
  options: { offset?: number; limit?: number } = {},
): Promise<ResolvedSubmission[]> {
  const offset = Math.max(options.offset ?? 0, 0);
  const limit = Math.min(Math.max(options.limit ?? 100, 1), 1000);
  const texts = await redis.lrange(resolvedKey(prefix), offset, offset + limit - 1);
  return texts.map((t) => JSON.parse(t) as ResolvedSubmission);
}
