// What a person does with submissions the registry would not take: list them with the
// registry's reason, retry one or all (after the registry or the mapping was fixed), or mark
// one resolved. Resolving moves the job into a resolved record (who, when, why, and the
// submission itself) rather than deleting it, so nothing disappears without a trace.
import { createRequire } from 'node:module';
import { Job, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { SubmissionJobData } from '../../queues/submissions.js';
import { REGISTRY_REJECTED_REASON_PREFIX } from '../registry/delivery.js';

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
  /**
   * True when the registry refused it (4xx, a RegistryRejectedError): retrying the same content
   * cannot help. A job that failed otherwise before using all its attempts (stalled too often,
   * bad job data) is not "rejected by the registry".
   */
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
  /** Only those the registry refused (true) or only the others (false). */
  permanent?: boolean;
  /** Default 0. */
  offset?: number;
  /** Default 100, at most 1000. */
  limit?: number;
}

function describe(job: Job<SubmissionJobData>): FailedSubmission {
  const { submission, runId } = job.data;
  return {
    jobId: String(job.id),
    submissionId: submission.submissionId,
    centreId: submission.centreId,
    kind: submission.kind,
    failedReason: job.failedReason ?? '',
    attemptsMade: job.attemptsMade,
    permanent: (job.failedReason ?? '').startsWith(REGISTRY_REJECTED_REASON_PREFIX),
    createdAt: new Date(job.timestamp).toISOString(),
    ...(job.finishedOn ? { failedAt: new Date(job.finishedOn).toISOString() } : {}),
    ...(runId ? { runId } : {}),
  };
}

// One chunk of the failed set, newest first, as id/centre/permanent triples: the centre is read from the
// job data inside Redis, so scanning many failed jobs moves ids, not whole submissions. The
// job's JSON is not decoded: the centre id is matched in the data field's text when the key
// "centreId" occurs there once (the submission's own; a JSON string value cannot contain it
// unescaped), and only any other data is decoded. Decoding every job (a few KB each) held
// Redis about twice as long.
const FAILED_CENTRES_SCRIPT = `
local function decoded(data)
  local ok, job = pcall(cjson.decode, data)
  if ok and type(job) == 'table' and type(job.submission) == 'table'
    and type(job.submission.centreId) == 'string' then
    return job.submission.centreId
  end
  return ''
end
local ids = redis.call('ZREVRANGE', KEYS[1], ARGV[2], ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  local centre = ''
  local data = redis.call('HGET', ARGV[1] .. id, 'data')
  if data then
    local first = string.find(data, '"centreId":', 1, true)
    local at, last, found
    if first then at, last, found = string.find(data, '"centreId":"([a-z0-9][a-z0-9-]*)"', first) end
    if at == first and found and not string.find(data, '"centreId":', last + 1, true) then
      centre = found
    else
      centre = decoded(data)
    end
  end
  local reason = redis.call('HGET', ARGV[1] .. id, 'failedReason') or ''
  out[#out + 1] = id
  out[#out + 1] = centre
  out[#out + 1] = string.sub(reason, 1, #ARGV[4]) == ARGV[4] and '1' or '0'
end
return out
`;

/** A failed submission job as the scan sees it. */
export interface FailedId {
  jobId: string;
  centreId: string;
  /** Refused by the registry (see FailedSubmission.permanent). */
  permanent: boolean;
}

/**
 * Failed submission jobs (newest first) as ids with their centre, of one centre and only
 * permanent (or only other) failures if given.
 */
export async function failedSubmissionIds(
  queue: Queue<SubmissionJobData>,
  redis: Redis,
  options: { centreId?: string; permanent?: boolean; chunk?: number } = {},
): Promise<FailedId[]> {
  // 250 jobs hold Redis for ~5 ms per script call.
  const chunk = options.chunk ?? 250;
  const out: FailedId[] = [];
  for (let start = 0; ; start += chunk) {
    const flat = (await redis.eval(
      FAILED_CENTRES_SCRIPT,
      1,
      queue.toKey('failed'),
      queue.toKey(''),
      start,
      start + chunk - 1,
      REGISTRY_REJECTED_REASON_PREFIX,
    )) as string[];
    for (let i = 0; i < flat.length; i += 3) {
      const centreId = flat[i + 1]!;
      const permanent = flat[i + 2] === '1';
      if (options.centreId && centreId !== options.centreId) continue;
      if (options.permanent !== undefined && permanent !== options.permanent) continue;
      out.push({ jobId: flat[i]!, centreId, permanent });
    }
    if (flat.length < chunk * 3) return out;
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
  if (!options.centreId && options.permanent === undefined) {
    const total = await queue.getFailedCount();
    const jobs = (await queue.getFailed(offset, offset + limit - 1)) as Job<SubmissionJobData>[];
    return { total, items: jobs.filter(Boolean).map(describe) };
  }
  const ids = await failedSubmissionIds(queue, redis, {
    ...(options.centreId ? { centreId: options.centreId } : {}),
    ...(options.permanent !== undefined ? { permanent: options.permanent } : {}),
  });
  const page = await Promise.all(
    ids.slice(offset, offset + limit).map(({ jobId }) => queue.getJob(jobId)),
  );
  return {
    total: ids.length,
    items: page.filter((job): job is Job<SubmissionJobData> => job !== undefined).map(describe),
  };
}

/**
 * A retried submission starts a fresh retry budget (the whole backoff schedule): its attempts
 * were used up when it failed, and one more transient error must not fail it again at once.
 */
export const FRESH_ATTEMPTS = { resetAttemptsMade: true, resetAttemptsStarted: true } as const;

/** Moves one failed submission back to waiting; false when it is not (or no longer) failed. */
export async function retryFailedSubmission(
  queue: Queue<SubmissionJobData>,
  jobId: string,
): Promise<boolean> {
  const job = await queue.getJob(jobId);
  if (!job || (await job.getState()) !== 'failed') return false;
  await job.retry('failed', FRESH_ATTEMPTS);
  return true;
}

/** Failed jobs retried at once: one round trip per batch, not per job. */
const RETRY_BATCH = 200;

/** Every failed submission's job id (newest first), read in chunks of ids alone. */
async function allFailedIds(queue: Queue<SubmissionJobData>, redis: Redis): Promise<string[]> {
  const chunk = 5000;
  const out: string[] = [];
  for (let start = 0; ; start += chunk) {
    const ids = await redis.zrevrange(queue.toKey('failed'), start, start + chunk - 1);
    out.push(...ids);
    if (ids.length < chunk) return out;
  }
}

/**
 * Retries these failed jobs (each as Job.retry, with a fresh retry budget), RETRY_BATCH at a
 * time; returns how many went back to waiting. One that is no longer failed (retried,
 * resolved or removed by someone else meanwhile) is skipped. Job.retry needs only the id (and
 * opts.lifo, which submission jobs never set), so the jobs are not read first.
 */
export async function retryFailedSubmissionIds(
  queue: Queue<SubmissionJobData>,
  jobIds: readonly string[],
  options: { batch?: number } = {},
): Promise<number> {
  const batch = options.batch ?? RETRY_BATCH;
  let retried = 0;
  for (let i = 0; i < jobIds.length; i += batch) {
    const results = await Promise.allSettled(
      jobIds
        .slice(i, i + batch)
        .map((id) =>
          new Job<SubmissionJobData>(queue, 'retry', {} as SubmissionJobData, {}, id).retry(
            'failed',
            FRESH_ATTEMPTS,
          ),
        ),
    );
    retried += results.filter((r) => r.status === 'fulfilled').length;
  }
  return retried;
}

/**
 * Starts retrying every failed submission (of one centre, if given): resolves once it knows
 * which (count) while the retries go on (done: how many were retried), so a caller can answer
 * before thousands of jobs are moved.
 */
export async function startRetryAllFailedSubmissions(
  queue: Queue<SubmissionJobData>,
  redis: Redis,
  options: { centreId?: string } = {},
): Promise<{ count: number; done: Promise<number> }> {
  const ids = options.centreId
    ? (await failedSubmissionIds(queue, redis, { centreId: options.centreId })).map((i) => i.jobId)
    : await allFailedIds(queue, redis);
  return { count: ids.length, done: retryFailedSubmissionIds(queue, ids) };
}

/** Retries every failed submission (of one centre, if given); returns how many. */
export async function retryAllFailedSubmissions(
  queue: Queue<SubmissionJobData>,
  redis: Redis,
  options: { centreId?: string } = {},
): Promise<number> {
  return (await startRetryAllFailedSubmissions(queue, redis, options)).done;
}

function resolvedKey(prefix: string): string {
  return `${prefix}:submissions-resolved`;
}

/** Marks a job id resolved for a day, so a late second resolve or retry hears "resolved". */
function resolvedMarkKey(prefix: string, jobId: string): string {
  return `${prefix}:submissions-resolved-id:${jobId}`;
}

const RESOLVED_MARK_SECONDS = 24 * 3600;

// BullMQ's own removeJob script (the one Job.remove runs), embedded in the resolve script as a
// function so the removal happens in the same atomic step as the failed-state check and the
// resolved record. It is read from the installed bullmq so it always matches its key layout.
const bullmqRemoveJob = (
  createRequire(import.meta.url)('bullmq/dist/cjs/scripts/removeJob-2.js') as {
    removeJob: { content: string; keys: number };
  }
).removeJob;

// KEYS: failed set, job hash, job schedulers (repeat) key, resolved list, resolved mark.
// ARGV: job id, queue key prefix, the job's finishedOn as read, record, keep, mark seconds.
// Returns 1 (resolved), 0 (not in the failed set: retried, resolved or removed meanwhile),
// -1 (failed again since it was read: read it again), or BullMQ's code when it would not
// remove the job (0 locked, -8 a scheduler's job); nothing is written unless it returns 1.
const RESOLVE_SCRIPT = `
local function bullmqRemoveJob(KEYS, ARGV)
${bullmqRemoveJob.content}
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
if (redis.call('HGET', KEYS[2], 'finishedOn') or '') ~= ARGV[3] then return -1 end
local removed = bullmqRemoveJob({KEYS[2], KEYS[3]}, {ARGV[1], '1', ARGV[2]})
if removed ~= 1 then return removed end
redis.call('LPUSH', KEYS[4], ARGV[4])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[5]) - 1)
redis.call('SET', KEYS[5], '1', 'EX', ARGV[6])
return 1
`;

/** True when the job id was resolved in the last day (its job is gone). */
export async function wasResolvedRecently(
  redis: Redis,
  prefix: string,
  jobId: string,
): Promise<boolean> {
  return (await redis.exists(resolvedMarkKey(prefix, jobId))) === 1;
}

/**
 * Marks a failed submission resolved, in one atomic Redis script: only if the job is still in
 * the failed set, it removes the job (as BullMQ's Job.remove does), writes the resolved
 * record and marks the id resolved. So a double resolve writes one record, and a resolve and
 * a retry at once cannot both win. Undefined when the job is not failed (retried, resolved or
 * removed meanwhile).
 */
export async function resolveFailedSubmission(
  queue: Queue<SubmissionJobData>,
  redis: Redis,
  prefix: string,
  jobId: string,
  by: { resolvedBy: string; note?: string },
): Promise<ResolvedSubmission | undefined> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const job = await queue.getJob(jobId);
    if (!job || (await job.getState()) !== 'failed') return undefined;
    const record: ResolvedSubmission = {
      ...describe(job),
      resolvedAt: new Date().toISOString(),
      resolvedBy: by.resolvedBy,
      ...(by.note ? { note: by.note } : {}),
      submission: job.data.submission,
    };
    const result = (await redis.eval(
      RESOLVE_SCRIPT,
      5,
      queue.toKey('failed'),
      queue.toKey(jobId),
      queue.toKey('repeat'),
      resolvedKey(prefix),
      resolvedMarkKey(prefix, jobId),
      jobId,
      queue.toKey(''),
      job.finishedOn === undefined ? '' : String(job.finishedOn),
      JSON.stringify(record),
      KEEP_RESOLVED,
      RESOLVED_MARK_SECONDS,
    )) as number;
    if (result === 1) return record;
    if (result !== -1) return undefined;
  }
  return undefined;
}

/**
 * A page of a Redis list of JSON records kept newest first (LPUSH): `limit` 1-1000, default
 * 100, from `offset`.
 */
export async function readNewestFirst<T>(
  redis: Redis,
  key: string,
  options: { offset?: number; limit?: number } = {},
): Promise<T[]> {
  const offset = Math.max(options.offset ?? 0, 0);
  const limit = Math.min(Math.max(options.limit ?? 100, 1), 1000);
  const texts = await redis.lrange(key, offset, offset + limit - 1);
  return texts.map((t) => JSON.parse(t) as T);
}

/** Resolved submissions, newest first. */
export function listResolvedSubmissions(
  redis: Redis,
  prefix: string,
  options: { offset?: number; limit?: number } = {},
): Promise<ResolvedSubmission[]> {
  return readNewestFirst<ResolvedSubmission>(redis, resolvedKey(prefix), options);
}
