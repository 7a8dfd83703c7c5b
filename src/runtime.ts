// The composition root shared by `serve`, `worker` and `sync`: one Redis connection, the
// queues, the run store, the centres, metrics and the logger, built once from the service
// config and closed in reverse order. Tests build it the same way with their own prefix.
import { Redis } from 'ioredis';
import type { Queue } from 'bullmq';
import type { ServiceConfig } from './config/service.js';
import { loadCentres, type CentreConfig } from './config/centre.js';
import { createLogger, type Logger } from './util/logger.js';
import { createDampedWarn } from './util/damped-warn.js';
import { createMetrics, type Metrics } from './util/metrics.js';
import { createOutboundFetch, describeProxy } from './util/outbound.js';
import { createRunStore, type RunStore } from './sync/run-store.js';
import { createSyncQueue, type SyncJobData } from '../queues/sync.js';
import { createSubmissionsQueue, type SubmissionJobData } from '../queues/submissions.js';
import { createCentreLoadCheck } from './onboarding/centre-mapping.js';

export interface RuntimeOptions {
  /**
   * `worker` (default) makes Redis commands wait through a reconnect (maxRetriesPerRequest:
   * null, as BullMQ workers require); `api` and `cli` fail commands after a few retries so a
   * request gets an answer while Redis is down.
   */
  role?: 'worker' | 'api' | 'cli';
  /** Centres to use instead of loading `config.centresDir`. */
  centres?: CentreConfig[];
  logger?: Logger;
  metrics?: Metrics;
  /** Overrides `config.redis.prefix` (tests use a unique prefix per run). */
  prefix?: string;
}

/** Everything a process needs, built from the service config. */
export interface Runtime {
  config: ServiceConfig;
  /** BullMQ key prefix (and of the run store, watermarks and locks). */
  prefix: string;
  redis: Redis;
  queues: { sync: Queue<SyncJobData>; submissions: Queue<SubmissionJobData> };
  runStore: RunStore;
  /** Centres by id, as loaded at start. */
  centres: ReadonlyMap<string, CentreConfig>;
  metrics: Metrics;
  logger: Logger;
  /** fetch for outbound requests (EHR, registry, webhook): through config.outbound's proxy. */
  fetch: typeof fetch;
  /**
   * Closes queues, then Redis; call after any workers are closed. Idempotent. Bounded: with
   * Redis down it drops the connection and returns within about half a second.
   */
  close(): Promise<void>;
}

/** Creates a Redis connection with the options the given role needs. */
export function createRedisConnection(
  url: string,
  role: NonNullable<RuntimeOptions['role']>,
): Redis {
  return new Redis(url, {
    maxRetriesPerRequest: role === 'worker' ? null : 3,
    // Reconnect forever with a capped delay: a Redis restart delays work, never ends it.
    retryStrategy: (times) => Math.min(times * 200, 5_000),
    connectionName: `lhn-bridge-${role}`,
  });
}

/**
 * Builds the runtime: loads and checks centres (unless given), connects Redis, opens the
 * queues. Throws ConfigError listing every centre problem, mapping packs and overrides too.
 */
export async function createRuntime(
  config: ServiceConfig,
  options: RuntimeOptions = {},
): Promise<Runtime> {
  const role = options.role ?? 'worker';
  const prefix = options.prefix ?? config.redis.prefix;
  const logger = options.logger ?? createLogger({ level: config.log.level, name: 'lhn-bridge' });
  const metrics = options.metrics ?? createMetrics({ defaultMetrics: true });
  // Loaded centres are checked whole before anything starts: a missing mapping pack or an
  // override typo stops the process here instead of failing every sync.
  const centreList =
    options.centres ??
    (await loadCentres(config.centresDir, { check: createCentreLoadCheck(config.mappingsDir) }));
  const centres = new Map(centreList.map((c) => [c.id, c]));

  const redis = createRedisConnection(config.redis.url, role);
  // While Redis is down every retry errors on the connection and on each queue: each distinct
  // error is logged once a minute, with how many were dropped.
  const connectionWarn = createDampedWarn(logger);
  redis.on('error', (err: Error) => connectionWarn('redis connection error', err.message));
  const sync = createSyncQueue(redis, prefix);
  const submissions = createSubmissionsQueue(redis, prefix, config.submissions);
  for (const queue of [sync, submissions])
    queue.on('error', (err: Error) => connectionWarn('queue error', err.message));
  const runStore = createRunStore(redis, prefix);
  if (config.outbound.proxyUrl)
    logger.info(
      { proxy: describeProxy(config.outbound.proxyUrl), noProxy: config.outbound.noProxy },
      'outbound requests go through the proxy',
    );

  let closed: Promise<void> | undefined;
  return {
    config,
    prefix,
    redis,
    queues: { sync, submissions },
    runStore,
    centres,
    metrics,
    logger,
    fetch: createOutboundFetch(config.outbound),
    close() {
      closed ??= (async () => {
        // With Redis down the queues would wait for a connection that may never come back:
        // the connection is dropped first (commands waiting on it fail at once), and closing
        // the queues is waited for a moment only.
        const connected = redis.status === 'ready';
        if (!connected) redis.disconnect();
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          Promise.allSettled([submissions.close(), sync.close()]),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, connected ? 5_000 : 500))),
        ]);
        clearTimeout(timer);
        // Closing the queues may have had a dropped connection try again: stop it for good.
        if (connected) await redis.quit().catch(() => redis.disconnect());
        else redis.disconnect();
      })();
      return closed;
    },
  };
}
