// `lhn-bridge worker` that refuses to start exits (code 2, as serve does) instead of staying
// alive: without LHN_REGISTRY_URL it refuses before it connects to Redis or opens /health,
// and with another pseudonym secret than the Redis state's it closes its runtime and its
// /health port before it exits.
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { SECRET } from '../sync/helpers.js';
import { useTestRedis } from '../sync/redis-scope.js';
import { centresDirWith, CLI_BIN, cliEnv, freePort, ROOT } from './cli-support.js';

const root = ROOT;
const bin = CLI_BIN;
const work = centresDirWith('worker-refuses', 'Worker refuses');

async function runWorker(
  args: string[],
  extra: Record<string, string>,
): Promise<{ code: number | null | 'still running'; out: string; ms: number }> {
  const env = cliEnv({
    LHN_CENTRES_DIR: work,
    LHN_WORKER_HEALTH_HOST: '127.0.0.1',
    LHN_LOG_LEVEL: 'info',
    ...extra,
  });
  const child = spawn(process.execPath, [bin, 'worker', ...args], { cwd: root, env });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const started = Date.now();
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    const code = await Promise.race([
      exited,
      new Promise<'still running'>((r) => setTimeout(() => r('still running'), 20_000)),
    ]);
    return { code, out, ms: Date.now() - started };
  } finally {
    child.kill('SIGKILL');
  }
}

describe('worker that refuses to start', () => {
  const { redis, prefix } = useTestRedis();

  it('when LHN_REGISTRY_URL is unset, then it exits 2 before connecting to Redis or opening /health', async () => {
    const port = await freePort();
    const result = await runWorker([], {
      LHN_PSEUDONYM_SECRET: SECRET,
      LHN_QUEUE_PREFIX: prefix,
      // An unreachable Redis: the refusal must not wait for it.
      LHN_REDIS_URL: 'redis://127.0.0.1:1',
      LHN_WORKER_HEALTH_PORT: String(port),
    });
    expect(result.code).toBe(2);
    expect(result.out).toContain('registry.url (LHN_REGISTRY_URL): is required');
    expect(result.out).not.toContain('health endpoint open');
    expect(result.out).not.toContain('waiting for Redis');
  }, 30_000);

  it('when Redis holds state made with another pseudonym secret, then it exits 2 and its /health port is closed', async () => {
    await redis.set(`${prefix}:secret-fingerprint`, 'f'.repeat(64));
    const port = await freePort();
    const result = await runWorker(['--no-delivery'], {
      LHN_PSEUDONYM_SECRET: SECRET,
      LHN_QUEUE_PREFIX: prefix,
      LHN_REDIS_URL: 'redis://127.0.0.1:6379',
      LHN_WORKER_HEALTH_PORT: String(port),
    });
    expect(result.code).toBe(2);
    expect(result.out).toContain('this Redis holds state made with another LHN_PSEUDONYM_SECRET');
    expect(result.ms).toBeLessThan(15_000);
    await expect(fetch(`http://127.0.0.1:${port}/health`)).rejects.toThrow();
  }, 30_000);
});
