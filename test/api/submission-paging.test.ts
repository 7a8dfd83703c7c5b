// Paging and the permanent filter of GET /api/submissions/failed and /resolved.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { call, makeCentre, startTestApi, testRedis, type TestApi } from './helpers.js';
import { failVisits } from './failed-jobs.js';

describe('failed submission paging', () => {
  let api: TestApi;
  let workerRedis: Redis;
  let rejected: string[];
  let stalled: string[];

  beforeAll(async () => {
    api = await startTestApi({ centres: [makeCentre('alpha'), makeCentre('beta')] });
    workerRedis = testRedis();
    const queue = api.server.runtime.queues.submissions;
    rejected = await failVisits(queue, workerRedis, ['alpha', 'beta', 'alpha', 'alpha'], 'pg');
    stalled = await failVisits(
      queue,
      workerRedis,
      ['alpha', 'beta'],
      'st',
      'job stalled more than allowable limit',
    );
  });
  afterAll(async () => {
    await workerRedis.quit();
    await api.close();
  });

  const list = (query: string) =>
    call(`${api.url}/api/submissions/failed?${query}`, { key: api.keys.viewer });

  it('when pages are asked with offset and limit, then together they list every failed submission once, newest first', async () => {
    const all = await list('limit=100');
    expect(all.body.total).toBe(6);
    const pages = await Promise.all([0, 2, 4].map((offset) => list(`offset=${offset}&limit=2`)));
    for (const page of pages) {
      expect(page.status).toBe(200);
      expect(page.body.total).toBe(6);
      expect(page.body.items).toHaveLength(2);
    }
    expect(pages.flatMap((p) => p.body.items.map((i: { jobId: string }) => i.jobId))).toEqual(
      all.body.items.map((i: { jobId: string }) => i.jobId),
    );
    expect(pages[1]!.body).toMatchObject({ offset: 2, limit: 2 });

    const centre = await list('centre=alpha&offset=3&limit=2');
    expect(centre.body.total).toBe(4);
    expect(centre.body.items).toHaveLength(1);
  });

  it('when permanent=true or false is asked, then only the registry refusals or only the others are listed', async () => {
    const refused = await list('permanent=true');
    expect(refused.body.total).toBe(4);
    expect(refused.body.items.map((i: { jobId: string }) => i.jobId).sort()).toEqual(
      [...rejected].sort(),
    );
    const others = await list('permanent=false&centre=beta');
    expect(others.body.total).toBe(1);
    expect(others.body.items[0]).toMatchObject({ jobId: stalled[1], permanent: false });
  });

  it('when offset or permanent is not valid, then the answer is 400', async () => {
    for (const query of ['offset=-1', 'offset=1.5', 'offset=x', 'permanent=yes']) {
      const res = await list(query);
      expect(res.status, query).toBe(400);
    }
    const resolved = await call(`${api.url}/api/submissions/resolved?offset=0&limit=5`, {
      key: api.keys.viewer,
    });
    expect(resolved.status).toBe(200);
    expect(resolved.body.items).toEqual([]);
  });
});
