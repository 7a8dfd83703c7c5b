import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { timingSafeEqual } from 'node:crypto';
import { hashApiKey, matchApiKey } from '../../src/api/auth.js';
import { createFailureLimiter } from '../../src/api/rate-limit.js';
import { call, newApiKey, startTestApi, type TestApi } from './helpers.js';

describe('matchApiKey', () => {
  const keys = ['a', 'b', 'c', 'd'].map((name) => ({
    name,
    role: 'viewer' as const,
    sha256: hashApiKey(`key-${name}`),
  }));

  it('when the key matches the first configured key, then every configured hash is still compared', () => {
    let comparisons = 0;
    const counting = (x: Buffer, y: Buffer) => {
      comparisons += 1;
      return timingSafeEqual(x, y);
    };
    expect(matchApiKey('key-a', keys, counting)?.name).toBe('a');
    expect(comparisons).toBe(keys.length);
  });

  it('when the key matches none, then the same number of comparisons is made as for a match', () => {
    let comparisons = 0;
    const counting = (x: Buffer, y: Buffer) => {
      comparisons += 1;
      return timingSafeEqual(x, y);
    };
    expect(matchApiKey('key-zzz', keys, counting)).toBeUndefined();
    expect(comparisons).toBe(keys.length);
  });

  it('when a key differs from a configured one only in its last character, then it is refused', () => {
    expect(matchApiKey('key-d', keys)?.name).toBe('d');
    expect(matchApiKey('key-e', keys)).toBeUndefined();
    expect(matchApiKey('', keys)).toBeUndefined();
  });
});

describe('failure limiter', () => {
  it('when the burst is used up, then the client waits for one refill, and other clients are unaffected', () => {
    let now = 0;
    const limiter = createFailureLimiter({ burst: 2, refillSeconds: 10, now: () => now });
    limiter.recordFailure('1.1.1.1');
    expect(limiter.retryAfter('1.1.1.1')).toBe(0);
    limiter.recordFailure('1.1.1.1');
    expect(limiter.retryAfter('1.1.1.1')).toBe(10);
    expect(limiter.retryAfter('2.2.2.2')).toBe(0);
    now = 4_000;
    expect(limiter.retryAfter('1.1.1.1')).toBe(6);
    now = 10_000;
    expect(limiter.retryAfter('1.1.1.1')).toBe(0);
  });
});

describe('API authentication and roles', () => {
  let api: TestApi;

  beforeAll(async () => {
    api = await startTestApi();
  });
  afterAll(async () => {
    await api.close();
  });

  it('when no credentials are sent, then the API answers 401 problem+json with a Bearer challenge', async () => {
    const res = await call(`${api.url}/api/centres`);
    expect(res.status).toBe(401);
    expect(res.headers.get('content-type')).toContain('application/problem+json');
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="lhn-bridge"');
    expect(res.body).toMatchObject({ status: 401, title: 'Authentication required' });
    expect(res.body.type).toMatch(/unauthorized$/);
  });

  it('when an unknown key is sent, then the API answers 401 and does not echo the key', async () => {
    const wrong = newApiKey();
    const res = await call(`${api.url}/api/centres`, { key: wrong });
    expect(res.status).toBe(401);
    expect(JSON.stringify(res.body)).not.toContain(wrong);
    expect(res.headers.get('www-authenticate')).toContain('Bearer');
  });

  it('when each role reads the centres, then all three get 200', async () => {
    for (const key of [api.keys.viewer, api.keys.operator, api.keys.admin]) {
      const res = await call(`${api.url}/api/centres`, { key });
      expect(res.status).toBe(200);
      expect(res.body.centres.map((c: { id: string }) => c.id)).toEqual(['alpha']);
    }
  });

  it('when the key comes in X-API-Key, then it is accepted like a bearer token', async () => {
    const res = await call(`${api.url}/api/me`, { headers: { 'x-api-key': api.keys.operator } });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ name: 'operator-key', role: 'operator' });
  });

  it('when a viewer triggers a sync, then the API answers 403 naming the role needed', async () => {
    const res = await call(`${api.url}/api/centres/alpha/sync`, {
      key: api.keys.viewer,
      method: 'POST',
      body: { mode: 'full' },
    });
    expect(res.status).toBe(403);
    expect(res.body.detail).toContain('operator');
  });

  it('when an operator runs the onboarding check, then the API answers 403; an admin passes the role check', async () => {
    const asOperator = await call(`${api.url}/api/centres/alpha/check`, {
      key: api.keys.operator,
      method: 'POST',
    });
    expect(asOperator.status).toBe(403);
    const asAdmin = await call(`${api.url}/api/centres/alpha/check`, {
      key: api.keys.admin,
      method: 'POST',
    });
    expect(asAdmin.status).not.toBe(403);
    expect(asAdmin.status).not.toBe(401);
  });

  it('when a viewer opens Bull Board, then it is refused; an operator with Basic credentials gets the UI', async () => {
    const none = await fetch(`${api.url}/admin/queues`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toContain('Basic');
    const basic = (key: string) => `Basic ${Buffer.from(`any:${key}`).toString('base64')}`;
    const viewer = await fetch(`${api.url}/admin/queues`, {
      headers: { authorization: basic(api.keys.viewer) },
    });
    expect(viewer.status).toBe(403);
    const operator = await fetch(`${api.url}/admin/queues`, {
      headers: { authorization: basic(api.keys.operator) },
    });
    expect(operator.status).toBe(200);
    expect(await operator.text()).toContain('lhn-bridge queues');
    const queues = await fetch(`${api.url}/admin/queues/api/queues`, {
      headers: { authorization: `Bearer ${api.keys.admin}` },
    });
    expect(queues.status).toBe(200);
    const names = ((await queues.json()) as { queues: { name: string }[] }).queues.map(
      (q) => q.name,
    );
    expect(names.sort()).toEqual(['submissions', 'sync']);
  });

  it('when anyone tries to clean, empty or add jobs through Bull Board, then it is read-only', async () => {
    const admin = { authorization: `Bearer ${api.keys.admin}` };
    for (const [method, path] of [
      ['PUT', '/admin/queues/api/queues/submissions/clean/failed'],
      ['PUT', '/admin/queues/api/queues/submissions/empty'],
      ['PUT', '/admin/queues/api/queues/submissions/obliterate'],
      ['POST', '/admin/queues/api/queues/submissions/add'],
    ] as const) {
      const res = await fetch(`${api.url}${path}`, { method, headers: admin });
      expect(res.status, `${method} ${path}`).toBe(405);
    }
    const queues = await fetch(`${api.url}/admin/queues/api/queues`, { headers: admin });
    const body = (await queues.json()) as { queues: { readOnlyMode?: boolean }[] };
    expect(body.queues.every((q) => q.readOnlyMode === true)).toBe(true);
  });

  it('when /metrics is scraped without a key, then it is refused', async () => {
    expect((await fetch(`${api.url}/metrics`)).status).toBe(401);
  });

  it('when the probes and JWKS are called without a key, then they answer', async () => {
    expect((await call(`${api.url}/health`)).status).toBe(200);
    expect((await call(`${api.url}/ready`)).status).toBe(200);
    const jwks = await call(`${api.url}/.well-known/jwks.json`);
    expect(jwks.status).toBe(200);
    expect(jwks.body).toHaveProperty('keys');
  });

  it('when requests are logged, then the log has the caller name and request id but never the key', async () => {
    const res = await call(`${api.url}/api/centres`, {
      key: api.keys.admin,
      headers: { 'x-request-id': 'trace-123' },
    });
    expect(res.headers.get('x-request-id')).toBe('trace-123');
    await new Promise((r) => setTimeout(r, 50));
    const line = api.logs.lines().find((l) => l.reqId === 'trace-123');
    expect(line).toMatchObject({ caller: 'admin-key', status: 200, path: '/api/centres' });
    const text = api.logs.text();
    for (const key of Object.values(api.keys)) expect(text).not.toContain(key);
  });
});

describe('failed-attempt rate limit', () => {
  let api: TestApi;

  beforeAll(async () => {
    api = await startTestApi({ authLimit: { burst: 3, refillSeconds: 30 } });
  });
  afterAll(async () => {
    await api.close();
  });

  it('when a client keeps sending wrong keys, then it gets 429 with Retry-After, even with a right key', async () => {
    for (let i = 0; i < 3; i++)
      expect((await call(`${api.url}/api/centres`, { key: newApiKey() })).status).toBe(401);
    const limited = await call(`${api.url}/api/centres`, { key: newApiKey() });
    expect(limited.status).toBe(429);
    expect(limited.headers.get('content-type')).toContain('application/problem+json');
    const retryAfter = Number(limited.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(30);
    const right = await call(`${api.url}/api/centres`, { key: api.keys.viewer });
    expect(right.status).toBe(429);
    // The public probes are not behind the limiter.
    expect((await call(`${api.url}/health`)).status).toBe(200);
  });
});

describe('client addresses behind a reverse proxy', () => {
  const wrongKeys = async (url: string, forwardedFor: string, n: number) => {
    const statuses: number[] = [];
    for (let i = 0; i < n; i++)
      statuses.push(
        (
          await call(`${url}/api/centres`, {
            key: newApiKey(),
            headers: { 'x-forwarded-for': forwardedFor },
          })
        ).status,
      );
    return statuses;
  };

  it('when the proxy is trusted, then each forwarded client is limited on its own', async () => {
    const api = await startTestApi({
      authLimit: { burst: 2, refillSeconds: 30 },
      config: { api: { trustProxy: 1 } },
    });
    try {
      expect(await wrongKeys(api.url, '203.0.113.7', 3)).toEqual([401, 401, 429]);
      const other = await call(`${api.url}/api/centres`, {
        key: api.keys.viewer,
        headers: { 'x-forwarded-for': '203.0.113.8' },
      });
      expect(other.status).toBe(200);
    } finally {
      await api.close();
    }
  });

  it('when no proxy is trusted, then a forged X-Forwarded-For does not escape the limit', async () => {
    const api = await startTestApi({ authLimit: { burst: 2, refillSeconds: 30 } });
    try {
      expect(await wrongKeys(api.url, '198.51.100.1', 2)).toEqual([401, 401]);
      expect(await wrongKeys(api.url, '198.51.100.2', 1)).toEqual([429]);
    } finally {
      await api.close();
    }
  });
});
