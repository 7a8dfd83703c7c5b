// The per-centre failed counts behind GET /api/centres (polled by the dashboard every 4 s):
// reused while the failed set is unchanged, and scanned without decoding each job's JSON.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { SUBMISSIONS_QUEUE, type SubmissionJobData } from '../../queues/submissions.js';
import { createFailedSubmissionStore } from '../../src/api/services/failed-submissions.js';
import { countFailedByCentre } from '../../src/sync/submission-admin.js';
import { deletePrefix, testPrefix, testRedis } from '../sync/helpers.js';
import { failVisits as failJobs } from './failed-jobs.js';

describe('failed submission counts', () => {
  let redis: Redis;
  let workerRedis: Redis;
  let prefix: string;
  let queue: Queue<SubmissionJobData>;

  beforeAll(() => {
    redis = testRedis();
    workerRedis = testRedis();
  });
  afterAll(async () => {
    await redis.quit();
    await workerRedis.quit();
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    await queue.close();
    await deletePrefix(redis, prefix);
  });

  const failVisits = (centres: string[], tag: string) => failJobs(queue, workerRedis, centres, tag);

  it('when the counts are asked again and the failed set is unchanged, then the failed jobs are not scanned again; a new failure is counted at once', async () => {
    prefix = testPrefix();
    queue = new Queue(SUBMISSIONS_QUEUE, { connection: redis, prefix });
    await failVisits(['alpha', 'beta', 'alpha'], 'a');
    const store = createFailedSubmissionStore({ queue, redis, prefix });
    const scans = vi.spyOn(redis, 'eval');

    expect(Object.fromEntries(await store.countByCentre())).toEqual({ alpha: 2, beta: 1 });
    const firstScans = scans.mock.calls.length;
    expect(firstScans).toBeGreaterThan(0);
    const [again, concurrent] = await Promise.all([store.countByCentre(), store.countByCentre()]);
    expect(Object.fromEntries(again)).toEqual({ alpha: 2, beta: 1 });
    expect(Object.fromEntries(concurrent)).toEqual({ alpha: 2, beta: 1 });
    expect(scans.mock.calls.length).toBe(firstScans);

    await failVisits(['beta'], 'b');
    expect(Object.fromEntries(await store.countByCentre())).toEqual({ alpha: 2, beta: 2 });
    expect(scans.mock.calls.length).toBeGreaterThan(firstScans);
  });

  it('when a failed job carries its centre once, then it is counted from the data text without decoding the JSON', async () => {
    prefix = testPrefix();
    queue = new Queue(SUBMISSIONS_QUEUE, { connection: redis, prefix });
    await failVisits(['alpha', 'beta'], 'c');
    const [first, second] = await queue.getFailed(0, 1);
    // Data that no JSON decoder accepts: only a scan that reads the centre id from the text
    // (rather than decoding the whole job) can count it.
    await redis.hset(
      queue.toKey(first!.id!),
      'data',
      '{"runId":"r","submission":{"centreId":"gamma","kind":"visit", not json',
    );
    // "centreId" twice: decoded, so the submission's own centre counts, not the first match.
    await redis.hset(
      queue.toKey(second!.id!),
      'data',
      JSON.stringify({
        runId: 'r',
        note: { centreId: 'wrong' },
        submission: { centreId: 'delta' },
      }),
    );
    expect(Object.fromEntries(await countFailedByCentre(queue, redis))).toEqual({
      gamma: 1,
      delta: 1,
    });
  });
});
