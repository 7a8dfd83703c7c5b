// `lhn-bridge sync <centre> [--full] [--wait] [--json]`: queues a manual sync of a centre for
// the workers (this command does not run it). A sync already queued or running is reported
// with its run id instead of being queued twice. With --wait, follows the sync to its final
// outcome and prints that run's record: a failed attempt that the queue retries is told on
// stderr and the retry's run is followed. The exit code is 1 when the sync failed (its last
// attempt), or when Redis lost it while waiting. With --json, stdout holds only the JSON
// record; the status lines go to stderr.
import type { Command } from 'commander';
import { loadServiceConfig } from '../config/service.js';
import type { Runtime } from '../runtime.js';
import { runIdForAttempt } from '../../queues/sync.js';
import { requestSync } from '../sync/request-sync.js';
import { SYNC_ATTEMPTS, type RunRecord } from '../sync/run-store.js';
import { CliError } from './cli-error.js';
import { createCliRuntime } from './cli-runtime.js';

interface SyncCommandOptions {
  full?: boolean;
  wait?: boolean;
  json?: boolean;
  timeout: string;
}

export function formatRun(run: RunRecord): string {
  const c = run.counts;
  const kinds = Object.entries(run.findingsByKind)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  const lines = [
    `run ${run.runId}: ${run.status} (${run.mode}, ${run.reason})`,
    `  started ${run.startedAt}${run.endedAt ? `, ended ${run.endedAt}` : ''}`,
    `  pulled ${c.pulled}, mapped ${c.mapped}, visits ${c.visits}, enqueued ${c.enqueued}, unchanged ${c.unchanged}, retracted ${c.retracted}`,
    `  findings: ${kinds || 'none'}`,
  ];
  for (const e of run.errors) lines.push(`  error in ${e.step}: ${e.message}`);
  for (const w of run.warnings ?? []) lines.push(`  warning in ${w.step}: ${w.message}`);
  return lines.join('\n');
}

/** What `sync --wait` says when the run's record vanished from Redis while it waited. */
function runLostMessage(runId: string, centreId: string): string {
  return (
    `Redis lost run ${runId} (its run record is gone: Redis restarted without persistence, ` +
    `failed over to an empty replica, or its keys were deleted); queue the sync again with ` +
    `\`npx lhn-bridge sync ${centreId}\``
  );
}

/** How long a failed attempt's job may stay active (being moved on by its worker), ms. */
const SETTLE_MS = 10_000;

/**
 * After a failed run: the run id of the job's next attempt when the queue retries it, else
 * undefined (the job failed for good, or is gone).
 */
async function nextAttempt(
  runtime: Pick<Runtime, 'queues'>,
  run: RunRecord,
): Promise<string | undefined> {
  const jobId = run.jobId;
  if (!jobId) return undefined;
  const settleBy = Date.now() + SETTLE_MS;
  let attempt: number | undefined;
  for (;;) {
    const job = await runtime.queues.sync.getJob(jobId);
    if (!job) return undefined;
    // Which attempt this run was (see createSyncProcessor's run ids).
    attempt ??= Array.from({ length: SYNC_ATTEMPTS }, (_, k) => k).find(
      (k) => runIdForAttempt(jobId, job.data, k) === run.runId,
    );
    if (attempt === undefined) return undefined;
    if (job.attemptsMade <= attempt) {
      // The run record is written before the worker counts the attempt: wait for that.
      if (Date.now() > settleBy) return undefined;
      await new Promise((r) => setTimeout(r, 200));
      continue;
    }
    const state = await job.getState();
    // Its last attempt failed: this is the outcome.
    if (state === 'failed' && job.attemptsMade === attempt + 1) return undefined;
    if (state === 'unknown') return undefined;
    return runIdForAttempt(jobId, job.data, attempt + 1);
  }
}

/**
 * Follows a sync from its run to its final outcome: when a run fails and its job is retried,
 * the retry's run (written when the retry starts) is followed, and so on.
 */
export async function waitForSync(
  runtime: Pick<Runtime, 'runStore' | 'queues'>,
  runId: string,
  centreId: string,
  timeoutMs: number,
  tell: (line: string) => void = (line) => process.stderr.write(`lhn-bridge: ${line}\n`),
): Promise<RunRecord> {
  const deadline = Date.now() + timeoutMs;
  let current = runId;
  let pendingJob: string | undefined;
  for (;;) {
    const run = await waitForRun(
      runtime,
      current,
      centreId,
      { deadline, timeoutMs },
      tell,
      pendingJob,
    );
    if (run.status !== 'failed') return run;
    const next = await nextAttempt(runtime, run);
    if (!next) return run;
    tell(
      `run ${run.runId} failed (${run.errors.map((e) => e.step).join(', ') || 'no error recorded'}); ` +
        `the sync is retried after its backoff as run ${next}; waiting for it`,
    );
    current = next;
    pendingJob = run.jobId;
  }
}

async function waitForRun(
  runtime: Pick<Runtime, 'runStore' | 'queues'>,
  runId: string,
  centreId: string,
  { deadline, timeoutMs }: { deadline: number; timeoutMs: number },
  tell: (line: string) => void,
  /** A retry's run, of this job: its record is written only when the retry starts. */
  pendingJob?: string,
): Promise<RunRecord> {
  let warned = false;
  for (;;) {
    const run = await runtime.runStore.get(runId);
    // The record is written before the run is queued and never deleted while it is recent:
    // gone means Redis lost it (and the job with it); nothing will finish it. A retry's
    // record comes when the retry starts.
    if (!run && !pendingJob) throw new CliError(runLostMessage(runId, centreId), 1);
    if (run?.status === 'succeeded' || run?.status === 'failed') return run;
    if (Date.now() > deadline)
      throw new CliError(
        `run ${runId} did not finish within ${timeoutMs / 1000} s (it goes on in the worker)`,
        1,
      );
    if (!run) {
      // The retry's job ended without starting it (or Redis lost it): nothing will.
      const job = await runtime.queues.sync.getJob(pendingJob!);
      const state = job ? await job.getState() : 'gone';
      if (state === 'failed' || state === 'completed' || state === 'gone' || state === 'unknown')
        throw new CliError(
          `the retry of the sync of ${centreId} (run ${runId}) did not start: its job is ${state}; queue the sync again with \`npx lhn-bridge sync ${centreId}\``,
          1,
        );
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    if (
      !warned &&
      run.status === 'queued' &&
      (await runtime.queues.sync.getWorkers()).length === 0
    ) {
      tell('no worker is connected yet; start one with `npx lhn-bridge worker`');
      warned = true;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

export function registerSyncCommand(program: Command): void {
  program
    .command('sync')
    .description(
      'queue a manual sync of a centre (run by the workers); --wait follows it to the end',
    )
    .argument('<centre>', 'centre id (from the centre files in centresDir)')
    .option('--full', "full sync instead of the centre's scheduled mode")
    .option('--wait', 'wait for the run to finish and print its record')
    .option('--json', 'JSON on stdout: the run record with --wait, else what was queued')
    .option('--timeout <seconds>', 'longest wait with --wait', '3600')
    .action(async (centreId: string, options: SyncCommandOptions) => {
      const timeout = Number(options.timeout);
      if (!Number.isFinite(timeout) || timeout <= 0)
        throw new CliError(
          `--timeout must be a positive number of seconds, got "${options.timeout}"`,
        );
      const config = loadServiceConfig(process.env);
      const runtime = await createCliRuntime(config);
      try {
        const centre = runtime.centres.get(centreId);
        if (!centre)
          throw new CliError(
            `no centre with id "${centreId}" in ${config.centresDir} (known: ${[...runtime.centres.keys()].join(', ') || 'none'})`,
          );
        const mode = options.full ? 'full' : centre.schedule.mode;
        const result = await requestSync(
          {
            redis: runtime.redis,
            prefix: runtime.prefix,
            syncQueue: runtime.queues.sync,
            runStore: runtime.runStore,
          },
          centre.id,
          mode,
        );
        // With --json, stdout is the JSON record alone.
        const status = options.json ? process.stderr : process.stdout;
        if (result.status === 'queued')
          status.write(`queued a ${mode} sync of ${centre.id}: run id ${result.runId}\n`);
        else
          status.write(
            `a sync of ${centre.id} is already queued or running${result.runId ? ` (run id ${result.runId})` : ''}; not queued again\n`,
          );
        if (!options.wait || !result.runId) {
          // Without --wait, --json still gives stdout something to parse: what was done.
          if (options.json) {
            const done = {
              status: result.status,
              centreId: centre.id,
              ...(result.status === 'queued' ? { mode } : {}),
              ...(result.runId ? { runId: result.runId } : {}),
              ...(result.jobId ? { jobId: result.jobId } : {}),
            };
            process.stdout.write(`${JSON.stringify(done, null, 2)}\n`);
          }
          return;
        }
        const run = await waitForSync(runtime, result.runId, centre.id, timeout * 1000);
        process.stdout.write(
          options.json ? `${JSON.stringify(run, null, 2)}\n` : `${formatRun(run)}\n`,
        );
        if (run.status === 'failed') process.exitCode = 1;
      } finally {
        await runtime.close();
      }
    });
}
