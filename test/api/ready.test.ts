import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer } from 'node:net';
import { call, startTestApi, type TestApi } from './helpers.js';

/** A loopback port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('readiness when Redis is unreachable', () => {
  let api: TestApi;

  beforeAll(async () => {
    const port = await closedPort();
    api = await startTestApi({ config: { redis: { url: `redis://127.0.0.1:${port}` } } });
  });
  afterAll(async () => {
    await api.server.close();
  });

  it('when Redis does not answer, then /ready is a 503 problem and /health still says ok', async () => {
    const ready = await call(`${api.url}/ready`);
    expect(ready.status).toBe(503);
    expect(ready.headers.get('content-type')).toContain('application/problem+json');
    expect(ready.body).toMatchObject({ status: 503, title: 'Service unavailable' });
    // The reason is logged, never sent to this unauthenticated caller (security review 11).
    expect(ready.body.detail).toBe('Redis is not answering');
    await new Promise((r) => setTimeout(r, 50));
    const logged = api.logs
      .lines()
      .find((l) => l.msg === 'readiness check failed: Redis is not answering');
    expect(logged?.err).toEqual(expect.any(String));
    const health = await call(`${api.url}/health`);
    expect(health.status).toBe(200);
    expect(health.body).toEqual({ status: 'ok' });
  });

  it('when Redis does not answer, then data routes answer 503 with Retry-After instead of hanging', async () => {
    const res = await call(`${api.url}/api/runs`, { key: api.keys.viewer });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('5');
    expect(res.headers.get('content-type')).toContain('application/problem+json');
  });
});
