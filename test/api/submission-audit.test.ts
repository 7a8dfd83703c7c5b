// The audit of retries and resolves: GET /api/submissions/audit lists who did what and when,
// with ids, centres and counts only (no key, no note, no clinical content), capped in Redis.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import {
  listSubmissionAudit,
  recordSubmissionAudit,
} from '../../src/api/services/submission-audit.js';
import { call, makeCentre, startTestApi, testRedis, type TestApi } from './helpers.js';
import { failVisits } from './failed-jobs.js';
import { waitFor } from '../sync/helpers.js';

describe('submission audit', () => {
  let api: TestApi;
  let redis: Redis;

  beforeAll(async () => {
    api = await startTestApi({ centres: [makeCentre('alpha'), makeCentre('beta')] });
    redis = testRedis();
  });
  afterAll(async () => {
    await redis.quit();
    await api.close();
  });

  it('when a submission is retried, one resolved and a centre retried all, then the audit lists each with who and when, newest first', async () => {
    const queue = api.server.runtime.queues.submissions;
    const [one, two, three, four] = await failVisits(
      queue,
      redis,
      ['alpha', 'beta', 'alpha', 'alpha'],
      'au',
    );
    const operator = { key: api.keys.operator, method: 'POST' };
    expect((await call(`${api.url}/api/submissions/failed/${two}/retry`, operator)).status).toBe(
      202,
    );
    const note = 'patient withdrew consent';
    const resolve = await call(`${api.url}/api/submissions/failed/${one}/resolve`, {
      ...operator,
      body: { note },
    });
    expect(resolve.status).toBe(200);
    const all = await call(`${api.url}/api/submissions/failed/retry-all`, {
      ...operator,
      body: { centre: 'alpha' },
    });
    expect(all.body.retried).toBe(2);
    await waitFor(async () => (await queue.getFailedCount()) === 0, 10_000, 'all retried');

    const audit = await call(`${api.url}/api/submissions/audit`, { key: api.keys.viewer });
    expect(audit.status).toBe(200);
    const by = { name: 'operator-key', role: 'operator' };
    expect(audit.body.items).toEqual([
      { action: 'retry-all', count: 2, centreId: 'alpha', by, at: expect.any(String) },
      { action: 'resolve', jobIds: [one], centreId: 'alpha', by, at: expect.any(String) },
      { action: 'retry', jobIds: [two], centreId: 'beta', by, at: expect.any(String) },
    ]);
    expect(Date.parse(audit.body.items[0].at)).toBeGreaterThanOrEqual(
      Date.parse(audit.body.items[2].at),
    );
    const text = JSON.stringify(audit.body);
    expect(text).not.toContain(api.keys.operator);
    expect(text).not.toContain(note);
    expect([three, four]).toHaveLength(2);

    const page = await call(`${api.url}/api/submissions/audit?offset=1&limit=1`, {
      key: api.keys.viewer,
    });
    expect(page.body.items.map((i: { action: string }) => i.action)).toEqual(['resolve']);
  });

  it('when more entries are recorded than kept, then the oldest are trimmed', async () => {
    const prefix = `${api.prefix}:cap`;
    const by = { name: 'k', role: 'operator' as const };
    for (const count of [1, 2, 3])
      await recordSubmissionAudit(redis, prefix, { action: 'retry-all', count, by }, 2);
    expect((await listSubmissionAudit(redis, prefix)).map((e) => e.count)).toEqual([3, 2]);
  });
});
