// `lhn-bridge sync <centre> --wait --json` prints only the JSON run record on stdout (the
// "queued a … sync" line goes to stderr; it came first on stdout, so JSON.parse failed), and
// --wait follows a sync whose first attempt failed to its retry's outcome instead of exiting
// 1 while the queue still retries it.
import { randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitForSync } from '../../src/commands/sync.js';
import type { PrepareCentre } from '../../src/sync/centre-services.js';
import { createRunStore } from '../../src/sync/run-store.js';
import { startWorker, type RunningWorker } from '../../src/worker.js';
import { refusingClient, startSyncFixture, type SyncFixture } from '../sync/fixture.js';
import { SECRET, waitFor } from '../sync/helpers.js';
import { useTestRedis } from '../sync/redis-scope.js';
import { centresDirWith, CLI_BIN, cliEnv, ROOT } from './cli-support.js';

const root = ROOT;
const bin = CLI_BIN;
const work = centresDirWith('wait-json', 'Wait JSON');
const jsonOnly = centresDirWith('json-only', 'JSON only');

describe('sync --wait --json', () => {
  const { redis, prefix } = useTestRedis();

  it('when the run finishes, then stdout is the JSON record alone and the status line is on stderr', async () => {
    const env = cliEnv({
      LHN_PSEUDONYM_SECRET: SECRET,
      LHN_CENTRES_DIR: work,
      LHN_REDIS_URL: 'redis://127.0.0.1:6379',
      LHN_QUEUE_PREFIX: prefix,
      LHN_LOG_LEVEL: 'silent',
    });
    const child = spawn(
      process.execPath,
      [bin, 'sync', 'wait-json', '--wait', '--json', '--timeout', '60'],
      { cwd: root, env },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
    try {
      const runIdIn = () => /run id ([0-9a-f-]{36})/.exec(stdout + stderr)?.[1];
      await waitFor(async () => runIdIn() !== undefined, 30_000, 'the run queued');
      const runId = runIdIn()!;
      // Stands in for the worker: the run succeeds.
      const runStore = createRunStore(redis, prefix);
      await runStore.update(runId, { status: 'running' });
      await runStore.finish(runId, { status: 'succeeded' });
      expect(await exited).toBe(0);
      const record = JSON.parse(stdout) as { runId: string; status: string };
      expect(record).toMatchObject({ runId, status: 'succeeded' });
      expect(stderr).toContain(`queued a incremental sync of wait-json: run id ${runId}`);
    } finally {
      child.kill('SIGKILL');
    }
  }, 60_000);

  it('when --json is given without --wait, then stdout is JSON saying what was queued', async () => {
    const env = cliEnv({
      LHN_PSEUDONYM_SECRET: SECRET,
      LHN_CENTRES_DIR: jsonOnly,
      LHN_REDIS_URL: 'redis://127.0.0.1:6379',
      LHN_QUEUE_PREFIX: prefix,
      LHN_LOG_LEVEL: 'silent',
    });
    const run = (): Promise<{ code: number; stdout: string }> =>
      new Promise((resolve) => {
        const child = spawn(process.execPath, [bin, 'sync', 'json-only', '--json'], {
          cwd: root,
          env,
        });
        let stdout = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.on('exit', (code) => resolve({ code: code ?? 1, stdout }));
      });
    const first = await run();
    expect(first.code).toBe(0);
    const queued = JSON.parse(first.stdout) as Record<string, unknown>;
    expect(queued).toMatchObject({ status: 'queued', centreId: 'json-only', mode: 'incremental' });
    expect(queued.runId).toMatch(/^[0-9a-f-]{36}$/);
    // Asked again while that one waits: already running, with its run id.
    const again = JSON.parse((await run()).stdout) as Record<string, unknown>;
    expect(again).toMatchObject({ status: 'already-running', runId: queued.runId });
  }, 60_000);
});

describe('sync --wait when the first attempt fails', () => {
  let f: SyncFixture;
  let worker: RunningWorker | undefined;
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 2, centreId: 'wait-retry' });
  });
  afterAll(async () => {
    await worker?.close();
    await f?.close();
  });

  it('when the queue retries the sync, then --wait says so and follows the retry to its outcome', async () => {
    let attempts = 0;
    // The first attempt's EHR calls all fail; the retry runs normally.
    const prepareCentre: PrepareCentre = async (centre) => {
      const services = await f.prepareCentre(centre);
      attempts += 1;
      if (attempts > 1) return services;
      return { ...services, fhirClient: refusingClient(services.fhirClient) };
    };
    worker = await startWorker(f.runtime, { prepareCentre });
    // As requestSync queues it, with a short backoff.
    const runId = randomUUID();
    const jobId = `manual-${runId}`;
    await f.runtime.runStore.start({
      runId,
      centreId: f.centre.id,
      mode: 'full',
      reason: 'manual',
      status: 'queued',
      jobId,
    });
    await f.runtime.queues.sync.add(
      'sync',
      { centreId: f.centre.id, mode: 'full', reason: 'manual', runId },
      { jobId, attempts: 3, backoff: { type: 'fixed', delay: 500 } },
    );
    const told: string[] = [];
    const final = await waitForSync(f.runtime, runId, f.centre.id, 60_000, (l) => told.push(l));
    expect(final.status).toBe('succeeded');
    expect(final.runId).not.toBe(runId);
    expect(final).toMatchObject({ reason: 'retry', jobId });
    expect((await f.runtime.runStore.get(runId))?.status).toBe('failed');
    expect(told.some((l) => l.includes(`run ${runId} failed`) && l.includes(final.runId))).toBe(
      true,
    );
  }, 90_000);
});
