// `lhn-bridge worker`: runs the sync and delivery processors until SIGTERM/SIGINT. Any number
// of workers, on any number of machines, may share one Redis. On a signal the worker stops
// taking jobs, hands a running sync back to the queue (it resumes from its watermarks on
// another worker), lets deliveries in flight finish and closes; a second signal exits at once.
import type { Command } from 'commander';
import { loadServiceConfig } from '../config/service.js';
import { createRuntime } from '../runtime.js';
import { STOP_SIGNALS } from '../util/abort.js';
import { startWorker } from '../worker.js';
import { startWorkerHealthServer, type WorkerHealthServer } from '../worker-health.js';
import { CliError } from './cli-error.js';

interface WorkerCommandOptions {
  syncConcurrency: string;
  deliveryConcurrency: string;
  sync: boolean;
  delivery: boolean;
}

function positiveInt(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new CliError(`${flag} must be a positive integer, got "${value}"`);
  return n;
}

export function registerWorkerCommand(program: Command): void {
  program
    .command('worker')
    .description(
      'run the sync and delivery processors (scale by starting more workers on the same Redis)',
    )
    .option('--sync-concurrency <n>', 'centre syncs run at once by this worker', '1')
    .option('--delivery-concurrency <n>', 'registry deliveries in flight in this worker', '8')
    .option('--no-sync', 'do not run centre syncs in this worker')
    .option('--no-delivery', 'do not deliver submissions in this worker')
    .action(async (options: WorkerCommandOptions) => {
      const syncConcurrency = positiveInt(options.syncConcurrency, '--sync-concurrency');
      const submissionConcurrency = positiveInt(
        options.deliveryConcurrency,
        '--delivery-concurrency',
      );
      const config = loadServiceConfig(process.env);
      const runtime = await createRuntime(config, { role: 'worker' });
      const worker = await startWorker(runtime, {
        syncConcurrency,
        submissionConcurrency,
        processors: { sync: options.sync, submissions: options.delivery },
      });
      // The container healthcheck's answer (worker.healthPort / LHN_WORKER_HEALTH_PORT).
      let health: WorkerHealthServer | undefined;
      const { healthPort, healthHost } = config.worker;
      if (healthPort !== undefined) {
        try {
          health = await startWorkerHealthServer({
            host: healthHost,
            port: healthPort,
            redisStatus: () => runtime.redis.status,
            logger: runtime.logger,
          });
        } catch (err) {
          await worker.close().then(() => runtime.close());
          throw new CliError(
            `cannot listen for the worker's /health on ${healthHost}:${healthPort} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); set LHN_WORKER_HEALTH_PORT to a free port, or unset it`,
          );
        }
      }
      runtime.logger.info(
        { centres: runtime.centres.size, sync: options.sync, delivery: options.delivery },
        'worker started',
      );
      await new Promise<void>((resolve) => {
        let stopping = false;
        const stop = (signal: NodeJS.Signals) => {
          if (stopping) {
            runtime.logger.warn({ signal }, 'second signal: exiting now');
            process.exit(1);
          }
          stopping = true;
          runtime.logger.info({ signal }, 'shutting down');
          health?.markStopping();
          worker
            .close()
            .then(() => runtime.close())
            .then(() => health?.close())
            .catch((err: unknown) =>
              runtime.logger.error({ err: (err as Error).message }, 'error while shutting down'),
            )
            .finally(resolve);
        };
        for (const name of STOP_SIGNALS) process.on(name, stop);
      });
    });
}
