// Failed submission jobs for the API tests: visits added to the submissions queue and failed
// at once by a worker that rejects everything (as the registry's 4xx would).
import { UnrecoverableError, Worker, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { SUBMISSIONS_QUEUE, type SubmissionJobData } from '../../queues/submissions.js';
import { makeVisit, waitFor } from '../sync/helpers.js';

/** Adds one visit per given centre id and fails each (one attempt); returns the job ids. */
export async function failVisits(
  queue: Queue<SubmissionJobData>,
  workerRedis: Redis,
  centres: string[],
  tag: string,
  reason = 'registry rejected the submission (HTTP 400)',
): Promise<string[]> {
  const jobs = centres.map((centreId, i) => {
    const submission = makeVisit({ centreId, patientId: `p${i}`, encounterId: `${tag}${i}` });
    return {
      name: 'visit',
      data: { submission },
      opts: { jobId: submission.submissionId, attempts: 1, removeOnFail: false },
    };
  });
  const target = (await queue.getFailedCount()) + jobs.length;
  await queue.addBulk(jobs);
  const worker = new Worker(
    SUBMISSIONS_QUEUE,
    () => Promise.reject(new UnrecoverableError(reason)),
    { connection: workerRedis, prefix: queue.opts.prefix! },
  );
  try {
    await waitFor(async () => (await queue.getFailedCount()) === target, 10_000, 'failures');
  } finally {
    await worker.close();
  }
  return jobs.map((j) => j.opts.jobId);
}
