import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApp } from '../../src/api/app.js';
import { parseServiceConfig } from '../../src/config/service.js';
import { createRuntime, type Runtime } from '../../src/runtime.js';
import { createLogger } from '../../src/util/logger.js';
import { hashApiKey } from '../../src/api/auth.js';
import {
  LogCapture,
  REDIS_URL,
  SECRET,
  call,
  deletePrefix,
  makeCentre,
  newApiKey,
  startTestApi,
  testPrefix,
  type TestApi,
} from './helpers.js';

describe('validation and problem details', () => {
  let api: TestApi;

  beforeAll(async () => {
    api = await startTestApi();
  });
  afterAll(async () => {
    await api.close();
  });

  it('when the query has a bad limit and an unknown parameter, then a 400 problem lists both with their paths', async () => {
    const res = await call(`${api.url}/api/runs?limit=0&colour=blue`, { key: api.keys.viewer });
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toContain('application/problem+json');
    expect(res.body).toMatchObject({ status: 400, title: 'The request is not valid' });
    const paths = res.body.issues.map((i: { path: string }) => i.path);
    expect(paths).toContain('query.limit');
    expect(paths).toContain('query');
    expect(res.body.instance).toBe('/api/runs');
  });

  it('when a sync body has an unknown mode, then the problem names body.mode', async () => {
    const res = await call(`${api.url}/api/centres/alpha/sync`, {
      key: api.keys.operator,
      method: 'POST',
      body: { mode: 'everything' },
    });
    expect(res.status).toBe(400);
    expect(res.body.issues).toEqual([expect.objectContaining({ path: 'body.mode' })]);
  });

  it('when a centre id in the path is malformed, then the problem names params.id', async () => {
    const res = await call(`${api.url}/api/centres/NOT_A_CENTRE!`, { key: api.keys.viewer });
    expect(res.status).toBe(400);
    expect(res.body.issues[0].path).toBe('params.id');
  });

  it('when a resolve note is missing, then the problem names body.note', async () => {
    const res = await call(
      `${api.url}/api/submissions/failed/${'a'.repeat(32)}-${'b'.repeat(16)}/resolve`,
      {
        key: api.keys.operator,
        method: 'POST',
        body: {},
      },
    );
    expect(res.status).toBe(400);
    expect(res.body.issues[0].path).toBe('body.note');
  });

  it('when the body is not JSON, then the API answers a 400 problem without parser details', async () => {
    const res = await call(`${api.url}/api/centres/alpha/sync`, {
      key: api.keys.operator,
      method: 'POST',
      body: '{"mode": ',
    });
    expect(res.status).toBe(400);
    expect(res.body.detail).toBe('the body is not valid JSON');
    expect(JSON.stringify(res.body)).not.toMatch(/at .*\.js/);
  });

  it('when the route does not exist, then the answer is a 404 problem (with or without a key)', async () => {
    const anon = await call(`${api.url}/nope`);
    expect(anon.status).toBe(404);
    expect(anon.headers.get('content-type')).toContain('application/problem+json');
    const authed = await call(`${api.url}/api/nope`, { key: api.keys.viewer });
    expect(authed.status).toBe(404);
    expect(authed.body.detail).toContain('GET');
  });

  it('when a centre, run or quality report is unknown, then each is a 404 problem', async () => {
    for (const path of [
      '/api/centres/zulu',
      '/api/runs/does-not-exist',
      '/api/centres/alpha/quality',
    ]) {
      const res = await call(`${api.url}${path}`, { key: api.keys.viewer });
      expect(res.status, path).toBe(404);
      expect(res.body.status).toBe(404);
    }
  });

  it('when no request id is sent, then a UUID is assigned and returned; a hostile one is replaced', async () => {
    const fresh = await call(`${api.url}/health`);
    expect(fresh.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const hostile = await call(`${api.url}/health`, {
      headers: { 'x-request-id': 'x'.repeat(300) },
    });
    expect(hostile.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe('unexpected errors', () => {
  let runtime: Runtime;
  let server: Server;
  let url: string;
  const logs = new LogCapture();
  const key = newApiKey();
  const prefix = testPrefix();

  beforeAll(async () => {
    const config = parseServiceConfig({
      pseudonymSecret: SECRET,
      redis: { url: REDIS_URL },
      api: { keys: [{ name: 'k', role: 'viewer', sha256: hashApiKey(key) }] },
    });
    const logger = createLogger({ level: 'debug', destination: logs });
    runtime = await createRuntime(config, {
      role: 'api',
      prefix,
      centres: [makeCentre('alpha')],
      logger,
    });
    // A run store whose reads fail the way a broken dependency would, with a message that
    // must stay in the logs and out of the response.
    const failing = {
      ...runtime.runStore,
      list: () => Promise.reject(new Error('internal detail: patient Jane Doe')),
    };
    const app = createApp({ ...runtime, runStore: failing, logger });
    server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    await deletePrefix(runtime.redis, prefix);
    await runtime.close();
  });

  it('when a handler throws, then the client gets a bare 500 problem and the log gets the error with the request id', async () => {
    const res = await call(`${url}/api/runs`, { key });
    expect(res.status).toBe(500);
    expect(res.headers.get('content-type')).toContain('application/problem+json');
    expect(res.body).toMatchObject({ status: 500, title: 'Internal error' });
    const text = JSON.stringify(res.body);
    expect(text).not.toContain('Jane');
    expect(text).not.toContain('stack');
    expect(res.body.requestId).toBe(res.headers.get('x-request-id'));
    await new Promise((r) => setTimeout(r, 50));
    const errorLine = logs
      .lines()
      .find((l) => l.msg === 'unhandled error in request' && l.reqId === res.body.requestId);
    expect(errorLine).toBeDefined();
  });
});

describe('client mistakes are 4xx, not 500 (security review finding 4)', () => {
  let api: TestApi;

  beforeAll(async () => {
    api = await startTestApi();
  });
  afterAll(async () => {
    await api.close();
  });

  const warned = () =>
    api.logs
      .lines()
      .filter((l) => l.msg === 'request refused: the client sent something unreadable');

  it('when a path parameter is not validly percent-encoded, then the answer is 400 saying so, logged at warn without stack', async () => {
    for (const path of ['/api/centres/%E0%A4%A', '/api/runs/%ZZ']) {
      const res = await call(`${api.url}${path}`, { key: api.keys.viewer });
      expect(res.status, path).toBe(400);
      expect(res.headers.get('content-type')).toContain('application/problem+json');
      expect(res.body.detail).toBe('the URL is not validly percent-encoded');
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(warned().length).toBeGreaterThanOrEqual(2);
    for (const line of warned()) {
      expect(line.level).toBe(40);
      expect(JSON.stringify(line)).not.toMatch(/stack|Failed to decode/);
    }
    expect(api.logs.lines().some((l) => l.msg === 'unhandled error in request')).toBe(false);
  });

  it('when a body does not match its Content-Encoding, then the answer is 400 (not 500), without the parser message', async () => {
    const res = await fetch(`${api.url}/api/alerts/evaluate`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${api.keys.operator}`,
        'content-type': 'application/json',
        'content-encoding': 'gzip',
      },
      body: '{"secret":"S3CRET-value"}',
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { detail: string };
    expect(body.detail).toBe(
      'the body could not be decompressed: it does not match its Content-Encoding',
    );
    expect(JSON.stringify(body)).not.toMatch(/S3CRET|incorrect header check/);
  });

  it('when a body has an unsupported Content-Encoding or charset, then the answer is its own 415 with a generic message', async () => {
    const encoding = await fetch(`${api.url}/api/alerts/evaluate`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${api.keys.operator}`,
        'content-type': 'application/json',
        'content-encoding': 'zstd-nope',
      },
      body: '{}',
    });
    expect(encoding.status).toBe(415);
    expect(((await encoding.json()) as { detail: string }).detail).toContain('Content-Encoding');
    const charset = await fetch(`${api.url}/api/alerts/evaluate`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${api.keys.operator}`,
        'content-type': 'application/json; charset=klingon',
      },
      body: '{}',
    });
    expect(charset.status).toBe(415);
    const text = await charset.text();
    expect(text).toContain('UTF-8');
    expect(text).not.toContain('klingon');
  });
});

describe('submission ids in routes (security review 12)', () => {
  let api: TestApi;

  beforeAll(async () => {
    api = await startTestApi();
  });
  afterAll(async () => {
    await api.close();
  });

  it('when a submission id is not 32 hex, a dash and 16 hex, then the route answers 400 naming params.id', async () => {
    for (const id of ['meta', 'events', 'abc', 'x:meta', `${'a'.repeat(32)}-${'b'.repeat(15)}`]) {
      const res = await call(`${api.url}/api/submissions/failed/${encodeURIComponent(id)}/retry`, {
        key: api.keys.operator,
        method: 'POST',
      });
      expect(res.status, id).toBe(400);
      expect(res.body.issues[0].path).toBe('params.id');
      expect(res.body.issues[0].message).toContain('32 hex digits');
    }
  });

  it('when a submission id (or a revert job id) has the right format, then it gets past validation', async () => {
    for (const id of [
      `${'a'.repeat(32)}-${'b'.repeat(16)}`,
      `${'0'.repeat(32)}-${'f'.repeat(16)}-r12`,
    ]) {
      const res = await call(`${api.url}/api/submissions/failed/${id}/retry`, {
        key: api.keys.operator,
        method: 'POST',
      });
      expect(res.status, id).not.toBe(400);
    }
  });
});
