// `lhn-bridge sync <centre> --wait` whose run record vanishes from Redis while it waits (Redis
// restarted without persistence, keys deleted): it stops at once and says to queue the sync
// again, with a non-zero exit, instead of waiting out --timeout (an hour by default) and
// then saying the run goes on in the worker.
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { runRecordKey } from '../../src/sync/run-store.js';
import { SECRET, waitFor } from '../sync/helpers.js';
import { useTestRedis } from '../sync/redis-scope.js';
import { centresDirWith, CLI_BIN, cliEnv, ROOT } from './cli-support.js';

const root = ROOT;
const bin = CLI_BIN;
const work = centresDirWith('wait-lost', 'Wait lost');

describe('sync --wait when Redis loses the run', () => {
  const { redis, prefix } = useTestRedis();

  it('when the run record disappears while waiting, then it stops within seconds, says Redis lost the run, and exits non-zero', async () => {
    const env = cliEnv({
      LHN_PSEUDONYM_SECRET: SECRET,
      LHN_CENTRES_DIR: work,
      LHN_REDIS_URL: 'redis://127.0.0.1:6379',
      LHN_QUEUE_PREFIX: prefix,
      LHN_LOG_LEVEL: 'silent',
    });
    const child = spawn(process.execPath, [bin, 'sync', 'wait-lost', '--wait', '--timeout', '60'], {
      cwd: root,
      env,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
    try {
      await waitFor(async () => /run id [0-9a-f-]{36}/.test(stdout), 30_000, 'the run queued');
      const runId = /run id ([0-9a-f-]{36})/.exec(stdout)![1]!;
      await new Promise((r) => setTimeout(r, 1_500));
      await redis.del(runRecordKey(prefix, runId));
      const deleted = Date.now();
      const code = await Promise.race([
        exited,
        new Promise<'still waiting'>((r) => setTimeout(() => r('still waiting'), 10_000)),
      ]);
      expect(code).toBe(1);
      expect(Date.now() - deleted).toBeLessThan(5_000);
      expect(stderr).toContain(`Redis lost run ${runId}`);
      expect(stderr).toContain('queue the sync again');
      expect(stderr).not.toMatch(/goes on in the worker|TypeError/);
    } finally {
      child.kill('SIGKILL');
    }
  }, 60_000);
});
