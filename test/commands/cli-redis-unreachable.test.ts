// A CLI command that needs Redis (`sync`) with Redis unreachable: one line on stderr naming
// the URL without its credentials and what to check, a non-zero exit, fast, and nothing on
// stdout (the command's logs go to stderr; stdout is for what it prints).
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { probeRedis, redisUrlForDisplay } from '../../src/commands/cli-runtime.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bin = join(root, 'bin', 'lhn-bridge.js');
const SECRET = 'cli-redis-unreachable-secret-0123456789abcdef';
const work = mkdtempSync(join(tmpdir(), 'lhn-cli-redis-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function run(
  args: string[],
  extraEnv: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env))
    if (v !== undefined && !k.startsWith('LHN_') && k !== 'REDIS_URL') env[k] = v;
  Object.assign(env, { LHN_PSEUDONYM_SECRET: SECRET, LHN_CENTRES_DIR: work }, extraEnv);
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { cwd: root, env }, (err, stdout, stderr) =>
      resolve({
        code: err ? ((err as { code?: number }).code ?? 1) : 0,
        stdout,
        stderr,
        ms: Date.now() - started,
      }),
    );
  });
}

describe('sync with Redis unreachable', () => {
  it('when LHN_REDIS_URL names a closed port, then one line names the URL without credentials and it exits non-zero', async () => {
    const r = await run(['sync', 'good-one'], {
      LHN_REDIS_URL: 'redis://ops:hunter2-password@127.0.0.1:1',
    });
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim()).toBe(
      'lhn-bridge: cannot reach Redis at redis://127.0.0.1:1 (ECONNREFUSED); check LHN_REDIS_URL',
    );
    expect(r.stderr).not.toMatch(/hunter2|max retries|unexpected error/);
  });

  it('when probed directly, then it fails within a second, not after retries', async () => {
    const started = Date.now();
    await expect(probeRedis('redis://127.0.0.1:1')).rejects.toThrow(
      'cannot reach Redis at redis://127.0.0.1:1 (ECONNREFUSED); check LHN_REDIS_URL',
    );
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it('when Redis is up, then the probe passes', async () => {
    await expect(probeRedis('redis://127.0.0.1:6379')).resolves.toBeUndefined();
  });

  it('when a URL carries a user and password, then neither is shown', () => {
    expect(redisUrlForDisplay('rediss://u:p@redis.internal:6380/2')).toBe(
      'rediss://redis.internal:6380/2',
    );
    expect(redisUrlForDisplay('not a url')).toBe('the URL in LHN_REDIS_URL');
  });

  it('when a URL carries options in its query (ioredis reads a password there too), then the query is not shown', () => {
    expect(redisUrlForDisplay('redis://redis.internal:6379/0?password=hunter2&db=1')).toBe(
      'redis://redis.internal:6379/0',
    );
  });
});
