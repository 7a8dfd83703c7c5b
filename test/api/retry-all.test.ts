// POST /api/submissions/failed/retry-all with many failed jobs: the request answers with the
// count once it knows which jobs, and the jobs go back to the queue in concurrent batches.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { call, makeCentre, startTestApi, testRedis, type TestApi } from './helpers.js';
import { failVisits } from './failed-jobs.js';
import { waitFor } from '../sync/helpers.js';

describe('retry-all', () => {
  let api: TestApi;
  let workerRedis: Redis;

  beforeAll(async () => {
    api = await startTestApi({ centres: [makeCentre('alpha'), makeCentre('beta')] });
    workerRedis = testRedis();
  });
  afterAll(async () => {
    await workerRedis.quit();
    await api.close();
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('when retry-all is asked, then it answers 202 with the count before the jobs are moved, and moves them in concurrent batches', async () => {
    const queue = api.server.runtime.queues.submissions;
    await failVisits(queue, workerRedis, ['alpha', 'beta', 'alpha', 'beta', 'alpha'], 'ra');

    // Every retry waits at a gate until the test opens it, and the test counts how many wait
    // at once: one at a time (a round trip per job) would show 1.
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let waiting = 0;
    const retry = Job.prototype.retry;
    vi.spyOn(Job.prototype, 'retry').mockImplementation(async function (
      this: Job,
      ...args: Parameters<Job['retry']>
    ) {
      waiting += 1;
      await gate;
      return retry.apply(this, args);
    });

    try {
      const answer = call(`${api.url}/api/submissions/failed/retry-all`, {
        key: api.keys.operator,
        method: 'POST',
      });
      // Not a timing: without an answer while the retries wait, this fails after 10 s.
      const res = await Promise.race([
        answer,
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error('no answer while the retries waited')), 10_000),
        ),
      ]);
      expect(res.status).toBe(202);
      expect(res.body.retried).toBe(5);
      // Answered while every retry still waits at the gate: nothing has moved yet.
      expect(await queue.getFailedCount()).toBe(5);
      await waitFor(() => waiting === 5, 10_000, 'all five retries under way at once');
    } finally {
      open();
    }
    await waitFor(async () => (await queue.getFailedCount()) === 0, 10_000, 'all retried');
    const job = await queue.getJob((await queue.getWaiting())[0]!.id!);
    expect(job?.attemptsMade).toBe(0);
  });
});
