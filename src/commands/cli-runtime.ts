// The runtime of a one-shot CLI command that needs Redis (`sync`): Redis is probed once, fast,
// before anything else, so an unreachable or refusing Redis is one line naming the URL
// (without its credentials) and a non-zero exit, not seconds of retries ending in ioredis's
// "Reached the max retries per request limit". The command's logs go to stderr, so its
// stdout holds only what it prints for the person or script that ran it.
import { Redis } from 'ioredis';
import type { ServiceConfig } from '../config/service.js';
import { createRuntime, type Runtime } from '../runtime.js';
import { createLogger } from '../util/logger.js';
import { CliError } from './cli-error.js';

/** How long the probe waits for Redis to connect and answer PING. */
const REDIS_PROBE_TIMEOUT_MS = 5_000;

/**
 * The Redis URL without user name, password or query (ioredis reads options such as a
 * password from the query too), for messages.
 */
export function redisUrlForDisplay(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.username = '';
    parsed.password = '';
    parsed.search = '';
    parsed.hash = '';
    return parsed.toString().replace(/\/$/, '');
  } catch {
    return 'the URL in LHN_REDIS_URL';
  }
}

/** Why a connection failed, in a word: an errno (ECONNREFUSED), a Redis error (WRONGPASS). */
function reasonOf(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e.code) return e.code;
  const word = /^[A-Z][A-Z_]+\b/.exec(e.message ?? '')?.[0];
  return word ?? 'no answer';
}

/**
 * Connects once to `url` and sends PING, without retries; throws CliError naming the URL
 * (credentials removed) when Redis cannot be reached or refuses within `timeoutMs`.
 */
export async function probeRedis(url: string, timeoutMs = REDIS_PROBE_TIMEOUT_MS): Promise<void> {
  const redis = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
    connectionName: 'lhn-bridge-cli-probe',
  });
  let lastError: unknown;
  redis.on('error', (err: unknown) => (lastError = err));
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      redis.connect().then(() => redis.ping()),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })),
          timeoutMs,
        );
      }),
    ]);
  } catch (err) {
    const reason = reasonOf((err as Error).message === 'Connection is closed.' ? lastError : err);
    throw new CliError(
      `cannot reach Redis at ${redisUrlForDisplay(url)} (${reason}); check LHN_REDIS_URL`,
      1,
    );
  } finally {
    clearTimeout(timer);
    redis.disconnect();
  }
}

/** Probes Redis, then builds the runtime for role `cli` with its logs on stderr. */
export async function createCliRuntime(
  config: ServiceConfig,
  options: { probeTimeoutMs?: number } = {},
): Promise<Runtime> {
  await probeRedis(config.redis.url, options.probeTimeoutMs);
  return createRuntime(config, {
    role: 'cli',
    logger: createLogger({
      level: config.log.level,
      name: 'lhn-bridge',
      destination: process.stderr,
    }),
  });
}
