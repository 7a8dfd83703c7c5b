import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { hashApiKey } from '../../src/api/auth.js';
import {
  REDIS_URL,
  SECRET,
  centreData,
  deletePrefix,
  newApiKey,
  testPrefix,
  testRedis,
} from './helpers.js';

/**
 * Resolves with the first stderr line matching `pattern` (the banner goes to stderr: stdout
 * holds the JSON logs alone), or rejects when the process ends.
 */
function waitForLine(child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(() => reject(new Error(`no line matching ${pattern}`)), timeoutMs);
    child.stderr!.on('data', (chunk: Buffer) => {
      buffer += chunk.toString();
      const match = buffer.split('\n').find((line) => pattern.test(line));
      if (match) {
        clearTimeout(timer);
        resolve(match);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited early with ${code}`));
    });
  });
}

describe('lhn-bridge serve', () => {
  let dir: string;
  const prefix = testPrefix();
  const key = newApiKey();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lhn-serve-'));
    await writeFile(join(dir, 'alpha.yaml'), stringify(centreData('alpha')));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
    const redis = testRedis();
    await deletePrefix(redis, prefix);
    await redis.quit();
  });

  /** `lhn-bridge serve --port 0` on this file's centres folder, with a viewer key. */
  const spawnServe = (redisUrl: string, logLevel: string) =>
    spawn(process.execPath, ['bin/lhn-bridge.js', 'serve', '--port', '0'], {
      cwd: process.cwd(),
      env: {
        PATH: process.env.PATH,
        LHN_PSEUDONYM_SECRET: SECRET,
        LHN_REDIS_URL: redisUrl,
        LHN_QUEUE_PREFIX: prefix,
        LHN_CENTRES_DIR: dir,
        LHN_KEYS_DIR: dir,
        LHN_LOG_LEVEL: logLevel,
        LHN_API_KEYS: JSON.stringify([{ name: 'ops', role: 'viewer', sha256: hashApiKey(key) }]),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });

  it.each(['SIGTERM', 'SIGHUP'] as const)(
    'when started from the CLI and sent %s, then it serves the API and then exits 0 after closing',
    async (signal) => {
      const child = spawnServe(REDIS_URL, 'warn');
      let stderr = '';
      let stdout = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      try {
        const line = await waitForLine(child, /listening on http:\/\/127\.0\.0\.1:\d+/, 30_000);
        const url = /(http:\/\/127\.0\.0\.1:\d+)/.exec(line)![1]!;
        expect((await fetch(`${url}/ready`)).status).toBe(200);
        const centres = await fetch(`${url}/api/centres`, {
          headers: { authorization: `Bearer ${key}` },
        });
        expect(centres.status).toBe(200);
        expect(((await centres.json()) as { centres: { id: string }[] }).centres[0]!.id).toBe(
          'alpha',
        );
        child.kill(signal);
        expect(await exited).toBe(0);
        // The banner alone on stderr; stdout is JSON log lines only, for a log shipper.
        expect(stderr).toMatch(
          /^lhn-bridge API listening on http:\/\/127\.0\.0\.1:\d+ \(dashboard: [^)]+\)\n$/,
        );
        for (const line of stdout.split('\n').filter(Boolean))
          expect(() => JSON.parse(line) as unknown).not.toThrow();
        await expect(fetch(`${url}/health`)).rejects.toThrow();
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    },
  );

  it('when Redis is unreachable, then serve answers 503 where Redis is needed, logs each connection error once (not at every retry), and SIGTERM ends it', async () => {
    const child = spawnServe('redis://127.0.0.1:1', 'info');
    let stdout = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      const line = await waitForLine(child, /listening on http:\/\/127\.0\.0\.1:\d+/, 30_000);
      const url = /(http:\/\/127\.0\.0\.1:\d+)/.exec(line)![1]!;
      expect((await fetch(`${url}/health`)).status).toBe(200);
      expect((await fetch(`${url}/ready`)).status).toBe(503);
      const centres = await fetch(`${url}/api/centres`, {
        headers: { authorization: `Bearer ${key}` },
      });
      expect(centres.status).toBe(503);
      expect(await centres.json()).toMatchObject({
        status: 503,
        detail: expect.stringMatching(/Redis/),
      });
      // ioredis retries at 200 ms, 400 ms, 600 ms...: many tries in these seconds, each of
      // which errors on the connection and on both queues.
      await new Promise((r) => setTimeout(r, 4_000));
      const logged = stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { level: number; msg: string });
      const messages = logged.map((l) => l.msg);
      // An outage, not a bug: no stacks (the alert evaluation's is a warning); the error-level
      // lines are the access log's, for the 503 answers.
      expect(stdout).not.toContain('"stack"');
      expect(logged.filter((l) => l.level >= 50).map((l) => l.msg)).toEqual([
        'request failed',
        'request failed',
      ]);
      expect(logged).toContainEqual(
        expect.objectContaining({
          level: 40,
          msg: 'alert evaluation skipped: Redis is not reachable; will try again',
        }),
      );
      expect(messages.filter((m) => m === 'redis connection error')).toHaveLength(1);
      expect(messages.filter((m) => m === 'queue error')).toHaveLength(1);
      child.kill('SIGTERM');
      const code = await Promise.race([
        exited,
        new Promise<'still running'>((r) => setTimeout(() => r('still running'), 10_000)),
      ]);
      expect(code).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 60_000);

  it('when the configuration is invalid, then serve exits 2 naming the problem', async () => {
    const child = spawn(process.execPath, ['bin/lhn-bridge.js', 'serve'], {
      cwd: process.cwd(),
      env: { PATH: process.env.PATH, LHN_CENTRES_DIR: dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(2);
    expect(stderr).toContain('pseudonymSecret');
  });
});
