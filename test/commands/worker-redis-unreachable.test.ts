// `lhn-bridge worker` started while Redis is unreachable: its /health port (LHN_WORKER_HEALTH_PORT)
// opens at once and answers 503 (it used to open only once Redis answered, i.e. never), it
// says once what it waits for (the URL without credentials) instead of three warnings per
// retry, and SIGTERM still ends it promptly.
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { SECRET } from '../sync/helpers.js';
import { useTestRedis } from '../sync/redis-scope.js';
import { centresDirWith, CLI_BIN, cliEnv, freePort, ROOT } from './cli-support.js';

const root = ROOT;
const bin = CLI_BIN;
const work = centresDirWith('worker-down', 'Worker down');

function startWorkerCli(redisUrl: string, port: number, prefix?: string) {
  const env = cliEnv({
    LHN_PSEUDONYM_SECRET: SECRET,
    LHN_CENTRES_DIR: work,
    LHN_REDIS_URL: redisUrl,
    LHN_WORKER_HEALTH_PORT: String(port),
    LHN_WORKER_HEALTH_HOST: '127.0.0.1',
    LHN_LOG_LEVEL: 'info',
    ...(prefix ? { LHN_QUEUE_PREFIX: prefix } : {}),
  });
  const child = spawn(process.execPath, [bin, 'worker', '--no-delivery'], { cwd: root, env });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, exited };
}

describe('worker with Redis up', () => {
  const { prefix } = useTestRedis();
  it('when Redis answers, then /health turns 200 once the worker has started, and SIGTERM ends it', async () => {
    const port = await freePort();
    const { child, exited } = startWorkerCli('redis://127.0.0.1:6379', port, prefix);
    try {
      const started = Date.now();
      let status = 0;
      while (status !== 200 && Date.now() - started < 20_000) {
        status = await fetch(`http://127.0.0.1:${port}/health`).then(
          (r) => r.status,
          () => 0,
        );
        if (status !== 200) await new Promise((r) => setTimeout(r, 200));
      }
      expect(status).toBe(200);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
  }, 60_000);
});

describe('worker with Redis unreachable', () => {
  it('when Redis cannot be reached, then /health answers 503, one line says it waits for Redis (no credentials), repeats are not logged, and SIGTERM ends it promptly', async () => {
    const port = await freePort();
    const env = cliEnv({
      LHN_PSEUDONYM_SECRET: SECRET,
      LHN_CENTRES_DIR: work,
      LHN_REDIS_URL: 'redis://ops:hunter2-password@127.0.0.1:1',
      LHN_WORKER_HEALTH_PORT: String(port),
      LHN_WORKER_HEALTH_HOST: '127.0.0.1',
      LHN_LOG_LEVEL: 'info',
    });
    const child = spawn(process.execPath, [bin, 'worker', '--no-delivery'], { cwd: root, env });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) =>
      child.on('exit', (code) => resolve(code)),
    );
    try {
      let health: { status: number; body: unknown } | undefined;
      const started = Date.now();
      while (!health && Date.now() - started < 20_000) {
        try {
          const res = await fetch(`http://127.0.0.1:${port}/health`);
          health = { status: res.status, body: await res.json() };
        } catch {
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      expect(health?.status).toBe(503);
      expect(health?.body).toMatchObject({ status: 'unavailable' });
      // ioredis retries at 200 ms, 400 ms, 600 ms...: several tries in these seconds.
      await new Promise((r) => setTimeout(r, 4_000));
      const lines = out.split('\n').filter((l) => l.trim());
      const waiting = lines.filter((l) => l.includes('waiting for Redis at redis://127.0.0.1:1'));
      expect(waiting).toHaveLength(1);
      const connectionErrors = lines.filter((l) => /redis connection error|queue error/.test(l));
      expect(connectionErrors.length).toBeLessThanOrEqual(2);
      expect(out).not.toContain('hunter2');

      const signalled = Date.now();
      child.kill('SIGTERM');
      const code = await Promise.race([
        exited,
        new Promise<'still running'>((r) => setTimeout(() => r('still running'), 5_000)),
      ]);
      expect(code).toBe(0);
      expect(Date.now() - signalled).toBeLessThan(3_000);
    } finally {
      child.kill('SIGKILL');
    }
  }, 60_000);
});
