// A worker opens no API port, so the image's HEALTHCHECK (the API's /health) always failed in
// a worker container. With worker.healthPort (LHN_WORKER_HEALTH_PORT) the worker answers its
// own GET /health: 200 while its Redis connection is ready, 503 otherwise; compose.yaml's
// worker service probes it instead of inheriting the API's check.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ENV_VARS, parseServiceConfig } from '../../src/config/service.js';
import { createRedisConnection } from '../../src/runtime.js';
import { silentLogger } from '../../src/util/logger.js';
import { startWorkerHealthServer } from '../../src/worker-health.js';
import { REDIS_URL, SECRET, deletePrefix, testPrefix, testRedis } from '../sync/helpers.js';

const root = new URL('../../', import.meta.url);

describe('worker /health', () => {
  it('when the Redis connection is ready, then 200; while reconnecting or stopping, 503', async () => {
    let status = 'ready';
    const health = await startWorkerHealthServer({
      host: '127.0.0.1',
      port: 0,
      redisStatus: () => status,
      logger: silentLogger,
    });
    try {
      const ok = await fetch(`${health.url}/health`);
      expect(ok.status).toBe(200);
      expect(await ok.json()).toEqual({ status: 'ok', redis: 'ready' });
      status = 'reconnecting';
      const down = await fetch(`${health.url}/health`);
      expect(down.status).toBe(503);
      expect(await down.json()).toEqual({ status: 'unavailable', redis: 'reconnecting' });
      status = 'ready';
      health.markStopping();
      expect((await fetch(`${health.url}/health`)).status).toBe(503);
      expect((await fetch(`${health.url}/metrics`)).status).toBe(404);
      expect((await fetch(`${health.url}/health`, { method: 'POST' })).status).toBe(405);
    } finally {
      await health.close();
    }
  });

  it('when given a real connection, then it follows it: 200 with Redis up, 503 with Redis unreachable', async () => {
    const up = createRedisConnection(REDIS_URL, 'worker');
    const down = createRedisConnection('redis://127.0.0.1:1', 'worker');
    down.on('error', () => {});
    await up.ping();
    const servers = await Promise.all(
      [up, down].map((redis) =>
        startWorkerHealthServer({
          host: '127.0.0.1',
          port: 0,
          redisStatus: () => redis.status,
          logger: silentLogger,
        }),
      ),
    );
    try {
      expect((await fetch(`${servers[0]!.url}/health`)).status).toBe(200);
      expect((await fetch(`${servers[1]!.url}/health`)).status).toBe(503);
    } finally {
      await Promise.all(servers.map((s) => s.close()));
      up.disconnect();
      down.disconnect();
    }
  });

  it('when LHN_WORKER_HEALTH_PORT / _HOST are set, then the service config reads them; unset, it is off', () => {
    expect(ENV_VARS.LHN_WORKER_HEALTH_PORT?.path).toEqual(['worker', 'healthPort']);
    expect(ENV_VARS.LHN_WORKER_HEALTH_HOST?.path).toEqual(['worker', 'healthHost']);
    const config = parseServiceConfig({ pseudonymSecret: SECRET });
    expect(config.worker).toEqual({ healthHost: '127.0.0.1' });
  });

  describe('lhn-bridge worker with LHN_WORKER_HEALTH_PORT', () => {
    const prefix = testPrefix();
    let dir: string | undefined;
    afterAll(async () => {
      if (dir) await rm(dir, { recursive: true, force: true });
      const redis = testRedis();
      await deletePrefix(redis, prefix);
      await redis.quit();
    });

    it('when started, then it answers /health with 200, and exits 0 on SIGTERM', async () => {
      dir = await mkdtemp(join(tmpdir(), 'lhn-worker-health-'));
      const child = spawn(process.execPath, ['bin/lhn-bridge.js', 'worker', '--no-delivery'], {
        cwd: new URL('.', root).pathname,
        env: {
          PATH: process.env.PATH,
          LHN_PSEUDONYM_SECRET: SECRET,
          LHN_REDIS_URL: REDIS_URL,
          LHN_QUEUE_PREFIX: prefix,
          LHN_CENTRES_DIR: dir,
          LHN_WORKER_HEALTH_PORT: '0',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      let output = '';
      try {
        const url = await new Promise<string>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no health URL in: ${output}`)), 60_000);
          child.stdout.on('data', (chunk: Buffer) => {
            output += chunk.toString();
            const m = /"url":"(http:\/\/127\.0\.0\.1:\d+)\/health"/.exec(output);
            if (m) {
              clearTimeout(timer);
              resolve(m[1]!);
            }
          });
          child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
          void exited.then((code) => reject(new Error(`worker exited with ${code}: ${output}`)));
        });
        const res = await fetch(`${url}/health`);
        expect(res.status).toBe(200);
        expect(await res.json()).toMatchObject({ status: 'ok' });
      } finally {
        child.kill('SIGTERM');
      }
      expect(await exited).toBe(0);
    }, 90_000);
  });
});

describe('compose.yaml', () => {
  const compose = parse(readFileSync(new URL('compose.yaml', root), 'utf8')) as {
    services: Record<
      string,
      { environment?: Record<string, string>; healthcheck?: { test?: string[] } }
    >;
  };

  it("when the worker service runs, then its healthcheck asks the worker's own /health, not the API port", () => {
    const worker = compose.services.worker!;
    const port = worker.environment?.LHN_WORKER_HEALTH_PORT;
    expect(port).toMatch(/^\d+$/);
    const test = (worker.healthcheck?.test ?? []).join(' ');
    expect(test).toMatch(/LHN_WORKER_HEALTH_PORT/);
    expect(test).toMatch(/\/health/);
    expect(test).not.toMatch(/LHN_API_PORT|8080/);
  });
});
