// CSRF: a browser that has cached Bull Board's Basic credentials must not be usable by another
// site to change state through /api (security review finding 1).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, startTestApi, type TestApi } from './helpers.js';

describe('cross-site requests to the API', () => {
  let api: TestApi;
  const basic = (key: string) => `Basic ${Buffer.from(`anyone:${key}`).toString('base64')}`;

  beforeAll(async () => {
    api = await startTestApi();
  });
  afterAll(async () => {
    await api.close();
  });

  it('when an /api request carries HTTP Basic credentials, then they are not accepted (401 naming Bull Board)', async () => {
    for (const [method, path] of [
      ['GET', '/api/me'],
      ['POST', '/api/alerts/evaluate'],
    ] as const) {
      const res = await call(`${api.url}${path}`, {
        method,
        headers: { authorization: basic(api.keys.operator) },
      });
      expect(res.status).toBe(401);
      expect(res.body.detail).toContain('only by Bull Board');
    }
    const metrics = await fetch(`${api.url}/metrics`, {
      headers: { authorization: basic(api.keys.operator) },
    });
    expect(metrics.status).toBe(401);
    // Bull Board still takes them.
    const board = await fetch(`${api.url}/admin/queues`, {
      headers: { authorization: basic(api.keys.operator) },
    });
    expect(board.status).toBe(200);
  });

  it('when a form on another site posts text/plain with cached Basic credentials, then nothing is queued', async () => {
    const simple = {
      'content-type': 'text/plain',
      origin: 'https://evil.example',
      'sec-fetch-site': 'cross-site',
      authorization: basic(api.keys.operator),
    };
    for (const path of [
      '/api/centres/alpha/sync',
      '/api/submissions/failed/retry-all',
      '/api/alerts/evaluate',
    ]) {
      const res = await call(`${api.url}${path}`, { method: 'POST', headers: simple });
      expect(res.status, path).toBe(403);
    }
  });

  it('when a state-changing request has a foreign Origin, then it is refused with 403 even with a valid Bearer key', async () => {
    for (const origin of ['https://evil.example', 'null', `http://127.0.0.1:1`]) {
      const res = await call(`${api.url}/api/alerts/evaluate`, {
        key: api.keys.operator,
        method: 'POST',
        headers: { origin },
      });
      expect(res.status, origin).toBe(403);
      expect(res.headers.get('content-type')).toContain('application/problem+json');
      expect(res.body.title).toBe('Cross-site request refused');
      expect(res.body.detail).toContain('another site');
    }
  });

  it('when Sec-Fetch-Site is cross-site, then a state change is refused with 403; same-origin passes', async () => {
    const cross = await call(`${api.url}/api/alerts/evaluate`, {
      key: api.keys.operator,
      method: 'POST',
      headers: { 'sec-fetch-site': 'cross-site' },
    });
    expect(cross.status).toBe(403);
    const same = await call(`${api.url}/api/alerts/evaluate`, {
      key: api.keys.operator,
      method: 'POST',
      headers: { 'sec-fetch-site': 'same-origin', origin: api.url },
    });
    expect(same.status).toBe(200);
  });

  it('when a GET has a foreign Origin, then it is answered as usual (reads change nothing)', async () => {
    const res = await call(`${api.url}/api/me`, {
      key: api.keys.viewer,
      headers: { origin: 'https://evil.example' },
    });
    expect(res.status).toBe(200);
  });

  it('when a body is not sent as application/json, then the answer is 415; no body and JSON bodies pass', async () => {
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data']) {
      // No body: the content type does not matter (the dashboard's Retry and Check send none).
      const res = await call(`${api.url}/api/alerts/evaluate`, {
        key: api.keys.operator,
        method: 'POST',
        headers: { 'content-type': type },
      });
      expect(res.status, type).toBe(200);
    }
    const plain = await fetch(`${api.url}/api/alerts/evaluate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${api.keys.operator}`, 'content-type': 'text/plain' },
      body: '{}',
    });
    expect(plain.status).toBe(415);
    const problem = (await plain.json()) as { detail: string };
    expect(problem.detail).toContain('Content-Type: application/json');
    const json = await call(`${api.url}/api/alerts/evaluate`, {
      key: api.keys.operator,
      method: 'POST',
      headers: { origin: api.url },
      body: {},
    });
    expect(json.status).toBe(200);
    const withCharset = await fetch(`${api.url}/api/alerts/evaluate`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${api.keys.operator}`,
        'content-type': 'application/json; charset=utf-8',
      },
      body: '{}',
    });
    expect(withCharset.status).toBe(200);
  });
});
