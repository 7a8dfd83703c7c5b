// Per-centre load limits that hold across every worker process, because a centre's EHR sees
// the sum of all our workers. State lives in Redis and each decision is one Lua script
// using Redis's own clock, so processes on different machines agree without clock sync:
//  - requests/second: GCRA (a token bucket with one timestamp) keyed
//    `${prefix}:limit:${centreId}`; grants are spaced 1/rps apart (plus an optional burst);
//  - concurrency: a semaphore in a sorted set `${prefix}:limit:${centreId}:leases`, each
//    lease scored by its expiry and renewed while held, so a killed process frees its slot
//    when the lease runs out instead of leaking it forever;
//  - an optional daily sync window in the centre's time zone, outside which requests fail
//    fast with OutsideSyncWindowError; cleanup requests (cancelling a bulk export) may ask to
//    skip this check. The sync processor (queues/sync.ts) checks the window before a run
//    starts: outside it the run fails once (step `window`, with when it opens) and is not
//    retried, nor is a run whose window closed under it.
import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { CentreConfig } from '../config/centre.js';
import type { Logger } from '../util/logger.js';
import { sleepWithSignal } from './retry.js';

/** A held concurrency slot; release it when the response (or stream) is done. */
export interface LimiterLease {
  /** Redis time (ms) at which the rate limiter let this request go. */
  readonly grantedAtMs: number;
  /** Frees the slot; safe to call twice. */
  release(): Promise<void>;
}

/** Options of one acquire. */
export interface LimiterAcquireOptions {
  /**
   * Skip the sync-window check (rate and concurrency limits still apply). For cleanup that
   * must not wait for the next window, such as cancelling a bulk export when the window
   * closes mid-export: otherwise the job is left running on the EHR.
   */
  ignoreSyncWindow?: boolean;
}

/** What the FHIR client needs from a limiter. */
export interface FhirLimiter {
  /**
   * Waits for a concurrency slot and a rate token; throws OutsideSyncWindowError when the
   * sync window is closed (unless `ignoreSyncWindow`).
   */
  acquire(signal?: AbortSignal, options?: LimiterAcquireOptions): Promise<LimiterLease>;
}

/** Thrown when a request is attempted outside the centre's sync window. */
export class OutsideSyncWindowError extends Error {
  /** When the window next opens (ISO instant). */
  readonly opensAt: string;
  constructor(options: {
    centreId: string;
    window: SyncWindow;
    timeZone: string;
    opensAt: string;
  }) {
    super(
      `centre ${options.centreId} allows EHR requests only between ${options.window.start} and ` +
        `${options.window.end} (${options.timeZone}); the window opens next at ${options.opensAt}`,
    );
    this.name = 'OutsideSyncWindowError';
    this.opensAt = options.opensAt;
  }
}

/** Daily window, HH:MM in the centre's time zone; `end` before `start` spans midnight. */
export interface SyncWindow {
  start: string;
  end: string;
}

/** Options for createRedisLimiter. */
export interface RedisLimiterOptions {
  redis: Redis;
  /** Key prefix (the service's redis.prefix, or a test's unique prefix). */
  prefix: string;
  centreId: string;
  maxConcurrent: number;
  requestsPerSecond: number;
  /** Requests that may go back to back before pacing applies (default 1: strict pacing). */
  burst?: number;
  syncWindow?: SyncWindow;
  timeZone?: string;
  /** Lease lifetime; renewed every third of it while held (default 60 s). */
  leaseMs?: number;
  /** Longest pause between polls for a free slot (default 250 ms). */
  maxPollMs?: number;
  logger?: Logger;
  now?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

// GCRA: KEYS[1] holds the theoretical arrival time (TAT, ms). ARGV: interval ms, burst.
// Returns {grantedAtMs, 0} when allowed, {0, waitMs} when not.
const RATE_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allowAt = tat - interval * (burst - 1)
if now < allowAt then
  return {0, math.ceil(allowAt - now)}
end
local newTat = tat + interval
redis.call('SET', KEYS[1], tostring(newTat), 'PX', math.ceil(newTat - now) + 1000)
return {now, 0}
`;

// Semaphore acquire: KEYS[1] sorted set of leaseId -> expiry (ms). ARGV: max, leaseMs, id.
// Returns {1, 0} when acquired, {0, msUntilEarliestExpiry} when full.
const ACQUIRE_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
  return {1, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, math.max(1, tonumber(first[2]) - now)}
`;

// Renew: KEYS[1] leases, ARGV: leaseMs, id. Returns 1 if the lease was still held.
const RENEW_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not score or tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
`;

/** Runs a Lua script by SHA, loading it on NOSCRIPT (e.g. after a Redis restart). */
function scriptRunner(redis: Redis, source: string) {
  const sha = createHash('sha1').update(source).digest('hex');
  return async (keys: string[], args: (string | number)[]): Promise<unknown> => {
    try {
      return await redis.evalsha(sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (err instanceof Error && err.message.includes('NOSCRIPT')) {
        return redis.eval(source, keys.length, ...keys, ...args);
      }
      throw err;
    }
  };
}

/** Redis keys used by the limiter of one centre. */
export function limiterKeys(prefix: string, centreId: string): { rate: string; leases: string } {
  const rate = `${prefix}:limit:${centreId}`;
  return { rate, leases: `${rate}:leases` };
}

/** Creates a limiter whose limits are shared by every process using the same Redis + prefix. */
export function createRedisLimiter(options: RedisLimiterOptions): FhirLimiter {
  if (!(options.requestsPerSecond > 0)) throw new RangeError('requestsPerSecond must be > 0');
  if (!(options.maxConcurrent >= 1)) throw new RangeError('maxConcurrent must be >= 1');
  const keys = limiterKeys(options.prefix, options.centreId);
  const intervalMs = 1000 / options.requestsPerSecond;
  const burst = Math.max(1, Math.floor(options.burst ?? 1));
  const leaseMs = options.leaseMs ?? 60_000;
  const maxPollMs = options.maxPollMs ?? 250;
  const sleep = options.sleep ?? sleepWithSignal;
  const now = options.now ?? Date.now;
  const timeZone = options.timeZone ?? 'UTC';
  const runRate = scriptRunner(options.redis, RATE_SCRIPT);
  const runAcquire = scriptRunner(options.redis, ACQUIRE_SCRIPT);
  const runRenew = scriptRunner(options.redis, RENEW_SCRIPT);

  const acquireSlot = async (leaseId: string, signal?: AbortSignal): Promise<void> => {
    for (;;) {
      signal?.throwIfAborted();
      const [ok, waitMs] = (await runAcquire(
        [keys.leases],
        [options.maxConcurrent, leaseMs, leaseId],
      )) as [number, number];
      if (ok === 1) return;
      // Slots free up on release (unknown time) or expiry (waitMs); poll, jittered.
      await sleep(Math.min(waitMs, 10 + Math.floor(Math.random() * maxPollMs)), signal);
    }
  };

  const acquireRate = async (signal?: AbortSignal): Promise<number> => {
    for (;;) {
      signal?.throwIfAborted();
      const [grantedAt, waitMs] = (await runRate([keys.rate], [intervalMs.toFixed(3), burst])) as [
        number,
        number,
      ];
      if (waitMs === 0) return grantedAt;
      await sleep(waitMs, signal);
    }
  };

  return {
    async acquire(signal, acquireOptions = {}) {
      if (options.syncWindow && !acquireOptions.ignoreSyncWindow) {
        const closed = syncWindowClosedError(options.syncWindow, timeZone, options.centreId, now());
        if (closed) throw closed;
      }
      const leaseId = randomUUID();
      await acquireSlot(leaseId, signal);
      let released = false;
      const release = async () => {
        if (released) return;
        released = true;
        clearInterval(renewal);
        await options.redis.zrem(keys.leases, leaseId);
      };
      const renewal = setInterval(
        () => {
          runRenew([keys.leases], [leaseMs, leaseId]).then(
            (held) => {
              if (held !== 1 && !released) {
                options.logger?.warn(
                  { centre: options.centreId },
                  'a concurrency lease expired while held (process paused?); the slot may be reused',
                );
              }
            },
            (err: unknown) =>
              options.logger?.warn(
                { centre: options.centreId, err: (err as Error).message },
                'could not renew a concurrency lease',
              ),
          );
        },
        Math.max(100, Math.floor(leaseMs / 3)),
      );
      renewal.unref();
      try {
        const grantedAtMs = await acquireRate(signal);
        return { grantedAtMs, release };
      } catch (err) {
        await release();
        throw err;
      }
    },
  };
}

/** Builds the limiter for a centre from its `limits` section. */
export function createCentreLimiter(
  redis: Redis,
  prefix: string,
  centre: Pick<CentreConfig, 'id' | 'limits' | 'timeZone'>,
  options: { logger?: Logger; leaseMs?: number } = {},
): FhirLimiter {
  return createRedisLimiter({
    redis,
    prefix,
    centreId: centre.id,
    maxConcurrent: centre.limits.maxConcurrentRequests,
    requestsPerSecond: centre.limits.requestsPerSecond,
    ...(centre.limits.syncWindow ? { syncWindow: centre.limits.syncWindow } : {}),
    timeZone: centre.timeZone,
    ...options,
  });
}

/** Minutes since local midnight at `at` in `timeZone`. */
function localMinutes(timeZone: string, at: number): number {
  const parts = new Intl.DateTimeFormat('en-GB', {
    timeZone,
    hour: '2-digit',
    minute: '2-digit',
    hourCycle: 'h23',
  }).formatToParts(new Date(at));
  const hour = Number(parts.find((p) => p.type === 'hour')?.value ?? '0');
  const minute = Number(parts.find((p) => p.type === 'minute')?.value ?? '0');
  return hour * 60 + minute;
}

function toMinutes(hhmm: string): number {
  const [h, m] = hhmm.split(':').map(Number);
  return (h ?? 0) * 60 + (m ?? 0);
}

/** When the window is closed at `at`: the error saying so and when it opens; else undefined. */
export function syncWindowClosedError(
  window: SyncWindow,
  timeZone: string,
  centreId: string,
  at: number,
): OutsideSyncWindowError | undefined {
  if (isWithinSyncWindow(window, timeZone, at)) return undefined;
  return new OutsideSyncWindowError({
    centreId,
    window,
    timeZone,
    opensAt: new Date(at + msUntilSyncWindowOpens(window, timeZone, at)).toISOString(),
  });
}

/** True when `at` falls inside the daily window (start inclusive, end exclusive). */
export function isWithinSyncWindow(window: SyncWindow, timeZone: string, at: number): boolean {
  const minute = localMinutes(timeZone, at);
  const start = toMinutes(window.start);
  const end = toMinutes(window.end);
  if (start === end) return true;
  return start < end ? minute >= start && minute < end : minute >= start || minute < end;
}

/** Milliseconds until the window next opens (0 when open). Minute precision. */
export function msUntilSyncWindowOpens(window: SyncWindow, timeZone: string, at: number): number {
  if (isWithinSyncWindow(window, timeZone, at)) return 0;
  const minute = localMinutes(timeZone, at);
  const start = toMinutes(window.start);
  const minutes = (start - minute + 24 * 60) % (24 * 60);
  const seconds = new Date(at).getUTCSeconds();
  // Time-zone shifts (DST) can move this by an hour; the caller only uses it as a hint.
  return Math.max(0, minutes * 60_000 - seconds * 1000);
}
