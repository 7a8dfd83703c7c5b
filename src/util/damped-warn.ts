// Warnings that repeat while a dependency is down, logged at a bounded rate. ioredis retries
// every few seconds while Redis is unreachable, and each try emits an error on the connection
// and on every queue that uses it; logged as they come, that is three warnings a second or two
// for as long as the outage lasts, in `serve` and in every worker.
import type { Logger } from './logger.js';

/** The same warning is logged at most once in this long (ms). */
export const REPEAT_LOG_INTERVAL_MS = 60_000;

/**
 * A `warn(msg, err)` that logs each distinct (message, error text) at most once per interval;
 * the first one after an interval carries how many were dropped (`repeats`) and says
 * `(repeated)`. A different error text (the outage changed: ECONNREFUSED, then a timeout) is
 * logged at once.
 */
export function createDampedWarn(
  logger: Logger,
  intervalMs = REPEAT_LOG_INTERVAL_MS,
  now: () => number = Date.now,
): (msg: string, err: string) => void {
  const last = new Map<string, { at: number; dropped: number }>();
  return (msg, err) => {
    const key = `${msg}\u0000${err}`;
    const at = now();
    const seen = last.get(key);
    if (seen && at - seen.at < intervalMs) {
      seen.dropped += 1;
      return;
    }
    last.set(key, { at, dropped: 0 });
    if (seen && seen.dropped > 0) logger.warn({ err, repeats: seen.dropped }, `${msg} (repeated)`);
    else logger.warn({ err }, msg);
  };
}
