// `lhn-bridge worker`: runs the sync and delivery processors until SIGTERM/SIGINT. Any number
// of workers, on any number of machines, may share one Redis. On a signal the worker stops
// taking jobs, hands a running sync back to the queue (it resumes from its watermarks on
// another worker), lets deliveries in flight finish and closes; a second signal exits at once.
// The /health listener (LHN_WORKER_HEALTH_PORT) opens first and answers 503 until the worker
// has started: a worker started while Redis is down says once that it waits for Redis (the
// URL without credentials) and still stops at once on a signal (the runtime logs repeated
// connection errors at most once a minute, as in `serve`). A worker that refuses to start (no LHN_REGISTRY_URL without
// --no-delivery: checked before Redis is connected; another pseudonym secret than the Redis
// state's) closes what it opened and exits with code 2.
import type { Command } from 'commander';
import { loadServiceConfig } from '../config/service.js';
import { createRuntime } from '../runtime.js';
import { STOP_SIGNALS } from '../util/abort.js';
import { createLogger } from '../util/logger.js';
import { checkWorkerConfig, startWorker, type RunningWorker } from '../worker.js';
import { startWorkerHealthServer, type WorkerHealthServer } from '../worker-health.js';
import { CliError } from './cli-error.js';
import { redisUrlForDisplay } from './cli-runtime.js';

/** Waiting this long for Redis at start (ms) is told, even before a connection error. */
const WAITING_NOTICE_MS = 2_000;

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
      // Refused before Redis is connected and /health opened (exit code 2, as serve).
      checkWorkerConfig(config, { submissions: options.delivery });
      const runtime = await createRuntime(config, {
        role: 'worker',
        logger: createLogger({ level: config.log.level, name: 'lhn-bridge' }),
      });
      const log = runtime.logger;
      let started = false;
      let redisAnswered = runtime.redis.status === 'ready';

      // The container healthcheck's answer (worker.healthPort / LHN_WORKER_HEALTH_PORT), open
      // before the worker waits for Redis: 503 until it has started.
      let health: WorkerHealthServer | undefined;
      const { healthPort, healthHost } = config.worker;
      if (healthPort !== undefined) {
        try {
          health = await startWorkerHealthServer({
            host: healthHost,
            port: healthPort,
            redisStatus: () => runtime.redis.status,
            ready: () => started,
            logger: log,
            announce: false,
          });
          log.info(
            { endpoint: `${health.url}/health` },
            'worker health endpoint open; it answers 503 until the worker has started',
          );
        } catch (err) {
          await runtime.close();
          throw new CliError(
            `cannot listen for the worker's /health on ${healthHost}:${healthPort} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); set LHN_WORKER_HEALTH_PORT to a free port, or unset it`,
          );
        }
      }

      // Told once if Redis does not answer at once (a refused connection, or none in 2 s).
      const redisUrl = redisUrlForDisplay(config.redis.url);
      let waitingTold = false;
      const tellWaiting = (): void => {
        if (waitingTold || redisAnswered) return;
        waitingTold = true;
        log.warn(
          { redis: redisUrl },
          `waiting for Redis at ${redisUrl} (LHN_REDIS_URL); the worker starts when it answers${health ? ', /health answers 503 until then' : ''}`,
        );
      };
      const onReady = (): void => {
        redisAnswered = true;
        if (waitingTold) log.info({ redis: redisUrl }, 'Redis answers; starting the worker');
      };
      runtime.redis.once('ready', onReady);
      runtime.redis.once('error', tellWaiting);
      const waitingTimer = setTimeout(tellWaiting, WAITING_NOTICE_MS);
      waitingTimer.unref();

      let worker: RunningWorker | undefined;
      const starting = startWorker(runtime, {
        syncConcurrency,
        submissionConcurrency,
        processors: { sync: options.sync, submissions: options.delivery },
      });
      let stopping = false;
      let stop: (signal: NodeJS.Signals) => void = () => {};
      const stopped = new Promise<void>((resolve) => {
        stop = (signal: NodeJS.Signals) => {
          if (stopping) {
            log.warn({ signal }, 'second signal: exiting now');
            process.exit(1);
          }
          stopping = true;
          log.info({ signal }, 'shutting down');
          health?.markStopping();
          (async () => {
            if (worker) {
              await worker.close();
              await runtime.close();
              return;
            }
            // Still starting (waiting for Redis): drop the connection (commands waiting for it
            // may never settle then, so the start is waited for a moment only), then close what
            // it had started, if anything.
            const connected = runtime.redis.status === 'ready';
            if (!connected) runtime.redis.disconnect();
            let timer: NodeJS.Timeout | undefined;
            const partial = await Promise.race([
              starting.catch(() => undefined),
              new Promise<undefined>(
                (r) => (timer = setTimeout(() => r(undefined), connected ? 10_000 : 200)),
              ),
            ]);
            clearTimeout(timer);
            await partial?.close();
            await runtime.close();
            // ioredis may keep a reconnect timer of a connection that never came up: whatever
            // else still runs, this process is done (the timer holds nothing up by itself).
            if (!connected) setTimeout(() => process.exit(), 200).unref();
          })()
            .then(() => health?.close())
            .catch((err: unknown) =>
              log.error({ err: (err as Error).message }, 'error while shutting down'),
            )
            .finally(() => {
              for (const name of STOP_SIGNALS) process.off(name, stop);
              resolve();
            });
        };
        for (const name of STOP_SIGNALS) process.on(name, stop);
      });

      try {
        worker = await starting;
      } catch (err) {
        if (stopping) return await stopped;
        for (const name of STOP_SIGNALS) process.off(name, stop);
        await runtime.close();
        await health?.close();
        throw err;
      } finally {
        clearTimeout(waitingTimer);
        runtime.redis.off('error', tellWaiting);
        runtime.redis.off('ready', onReady);
      }
      if (stopping) return await stopped;
      started = true;
      // As before this listened first: the line that says /health answers now.
      if (health) log.info({ url: `${health.url}/health` }, 'worker health endpoint listening');
      log.info(
        { centres: runtime.centres.size, sync: options.sync, delivery: options.delivery },
        'worker started',
      );
      await stopped;
    });
}
