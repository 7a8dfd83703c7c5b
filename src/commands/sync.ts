// `lhn-bridge sync <centre> [--full] [--wait]`: queues a manual sync of a centre for the
// workers (this command does not run it). A sync already queued or running is reported with
// its run id instead of being queued twice. With --wait, follows the run and prints its
// record; the exit code is 1 when the run failed, or when Redis lost it while waiting.
import type { Command } from 'commander';
import { loadServiceConfig } from '../config/service.js';
import type { Runtime } from '../runtime.js';
import { requestSync } from '../sync/request-sync.js';
import type { RunRecord } from '../sync/run-store.js';
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
export function runLostMessage(runId: string, centreId: string): string {
  return (
    `Redis lost run ${runId} (its run record is gone: Redis restarted without persistence, ` +
    `failed over to an empty replica, or its keys were deleted); queue the sync again with ` +
    `\`npx lhn-bridge sync ${centreId}\``
  );
}

async function waitForRun(
  runtime: Runtime,
  runId: string,
  centreId: string,
  timeoutMs: number,
): Promise<RunRecord> {
  const deadline = Date.now() + timeoutMs;
  let warned = false;
  for (;;) {
    const run = await runtime.runStore.get(runId);
    // The record is written before the run is queued and never deleted while it is recent:
    // gone means Redis lost it (and the job with it); nothing will finish it.
    if (!run) throw new CliError(runLostMessage(runId, centreId), 1);
    if (run.status === 'succeeded' || run.status === 'failed') return run;
    if (
      !warned &&
      run.status === 'queued' &&
      (await runtime.queues.sync.getWorkers()).length === 0
    ) {
      process.stderr.write(
        'lhn-bridge: no worker is connected yet; start one with `npx lhn-bridge worker`\n',
      );
      warned = true;
    }
    if (Date.now() > deadline)
      throw new CliError(
        `run ${runId} did not finish within ${timeoutMs / 1000} s (it goes on in the worker)`,
        1,
      );
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
    .option('--json', 'print the run record as JSON')
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
        if (result.status === 'queued')
          process.stdout.write(`queued a ${mode} sync of ${centre.id}: run id ${result.runId}\n`);
        else
          process.stdout.write(
            `a sync of ${centre.id} is already queued or running${result.runId ? ` (run id ${result.runId})` : ''}; not queued again\n`,
          );
        if (!options.wait || !result.runId) return;
        const run = await waitForRun(runtime, result.runId, centre.id, timeout * 1000);
        process.stdout.write(
          options.json ? `${JSON.stringify(run, null, 2)}\n` : `${formatRun(run)}\n`,
        );
        if (run.status === 'failed') process.exitCode = 1;
      } finally {
        await runtime.close();
      }
    });
}
