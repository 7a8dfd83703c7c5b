import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createRedisLimiter,
  isWithinSyncWindow,
  limiterKeys,
  msUntilSyncWindowOpens,
  OutsideSyncWindowError,
  type LimiterLease,
} from '../../src/fhir/limiter.js';

const REDIS_URL = 'redis://127.0.0.1:6379';
const prefix = `test-limiter-${randomUUID()}`;
// Two connections stand in for two worker processes sharing one Redis.
let redisA: Redis;
let redisB: Redis;

beforeAll(() => {
  redisA = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  redisB = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
});

afterAll(async () => {
  const keys = await redisA.keys(`${prefix}:*`);
  if (keys.length > 0) await redisA.del(...keys);
  await redisA.quit();
  await redisB.quit();
});

describe('Redis limiter', () => {
  it('when two limiter instances share a centre, then Redis-time grants are spaced by 1/rps across both', async () => {
    const rps = 20; // one grant per 50 ms
    const common = { prefix, centreId: 'rate', maxConcurrent: 64, requestsPerSecond: rps };
    const a = createRedisLimiter({ redis: redisA, ...common });
    const b = createRedisLimiter({ redis: redisB, ...common });
    const leases = await Promise.all(
      Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? a : b).acquire()),
    );
    await Promise.all(leases.map((l) => l.release()));
    const grants = leases.map((l) => l.grantedAtMs).sort((x, y) => x - y);
    const gaps = grants.slice(1).map((t, i) => t - grants[i]!);
    // Redis TIME has ms resolution here; GCRA never grants two within one interval.
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(1000 / rps - 1);
    // Within any 1-second window of Redis time, at most rps (+1 for the boundary) grants.
    for (const start of grants) {
      const inWindow = grants.filter((t) => t >= start && t < start + 1000).length;
      expect(inWindow).toBeLessThanOrEqual(rps + 1);
    }
  });

  it('when both instances hold all slots, then a third acquire waits until one is released', async () => {
    const common = {
      prefix,
      centreId: 'slots',
      maxConcurrent: 2,
      requestsPerSecond: 1000,
      maxPollMs: 20,
    };
    const a = createRedisLimiter({ redis: redisA, ...common });
    const b = createRedisLimiter({ redis: redisB, ...common });
    const first = await a.acquire();
    const second = await b.acquire();
    expect(await redisA.zcard(limiterKeys(prefix, 'slots').leases)).toBe(2);
    let third: LimiterLease | undefined;
    const waiting = a.acquire().then((l) => (third = l));
    await new Promise((r) => setTimeout(r, 150));
    expect(third).toBeUndefined();
    expect(await redisA.zcard(limiterKeys(prefix, 'slots').leases)).toBe(2);
    await second.release();
    await waiting;
    expect(third).toBeDefined();
    expect(await redisA.zcard(limiterKeys(prefix, 'slots').leases)).toBe(2);
    await first.release();
    await third!.release();
    expect(await redisA.zcard(limiterKeys(prefix, 'slots').leases)).toBe(0);
  });

  it('when the holder of a slot dies without releasing, then its lease expires and the slot is reused', async () => {
    const key = limiterKeys(prefix, 'dead').leases;
    // A lease left by a killed process: it expired 1 ms ago by Redis time.
    const [seconds, micros] = await redisA.time();
    const nowMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    await redisA.zadd(key, nowMs - 1, 'lease-of-a-killed-worker');
    const limiter = createRedisLimiter({
      redis: redisB,
      prefix,
      centreId: 'dead',
      maxConcurrent: 1,
      requestsPerSecond: 1000,
    });
    const lease = await limiter.acquire();
    expect(await redisA.zscore(key, 'lease-of-a-killed-worker')).toBeNull();
    await lease.release();
  });

  it('when a slot is held longer than its lease, then the lease is renewed rather than lost', async () => {
    const limiter = createRedisLimiter({
      redis: redisA,
      prefix,
      centreId: 'renew',
      maxConcurrent: 1,
      requestsPerSecond: 1000,
      leaseMs: 300,
    });
    const lease = await limiter.acquire();
    await new Promise((r) => setTimeout(r, 700));
    expect(await redisA.zcard(limiterKeys(prefix, 'renew').leases)).toBe(1);
    await lease.release();
    expect(await redisA.zcard(limiterKeys(prefix, 'renew').leases)).toBe(0);
  });

  it('when the signal aborts while waiting for a slot, then acquire rejects and holds nothing', async () => {
    const common = { prefix, centreId: 'abort', maxConcurrent: 1, requestsPerSecond: 1000 };
    const a = createRedisLimiter({ redis: redisA, ...common, maxPollMs: 20 });
    const held = await a.acquire();
    const controller = new AbortController();
    const pending = a.acquire(controller.signal);
    setTimeout(() => controller.abort(new Error('stop')), 50);
    await expect(pending).rejects.toThrow('stop');
    expect(await redisA.zcard(limiterKeys(prefix, 'abort').leases)).toBe(1);
    await held.release();
  });

  it('when a request is attempted outside the sync window, then it fails fast naming when the window opens', async () => {
    // 2025-03-01T12:00Z is 07:00 in New York (EST).
    const at = Date.parse('2025-03-01T12:00:00Z');
    const limiter = createRedisLimiter({
      redis: redisA,
      prefix,
      centreId: 'window',
      maxConcurrent: 1,
      requestsPerSecond: 10,
      syncWindow: { start: '22:00', end: '06:00' },
      timeZone: 'America/New_York',
      now: () => at,
    });
    const error = await limiter.acquire().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OutsideSyncWindowError);
    expect((error as OutsideSyncWindowError).opensAt).toBe('2025-03-02T03:00:00.000Z');
    expect(await redisA.exists(limiterKeys(prefix, 'window').leases)).toBe(0);
  });

  it('when a cleanup request asks to ignore the sync window, then it gets a slot outside the window', async () => {
    const at = Date.parse('2025-03-01T12:00:00Z'); // 07:00 in New York, window 22:00-06:00
    const limiter = createRedisLimiter({
      redis: redisA,
      prefix,
      centreId: 'window-cleanup',
      maxConcurrent: 1,
      requestsPerSecond: 10,
      syncWindow: { start: '22:00', end: '06:00' },
      timeZone: 'America/New_York',
      now: () => at,
    });
    await expect(limiter.acquire()).rejects.toBeInstanceOf(OutsideSyncWindowError);
    const lease = await limiter.acquire(undefined, { ignoreSyncWindow: true });
    expect(await redisA.zcard(limiterKeys(prefix, 'window-cleanup').leases)).toBe(1);
    await lease.release();
    expect(await redisA.zcard(limiterKeys(prefix, 'window-cleanup').leases)).toBe(0);
  });
});

describe('sync window arithmetic', () => {
  const tz = 'Europe/Amsterdam';
  it('when the window spans midnight, then late evening and early morning are inside', () => {
    const window = { start: '22:00', end: '06:00' };
    expect(isWithinSyncWindow(window, tz, Date.parse('2025-06-01T21:30:00Z'))).toBe(true); // 23:30
    expect(isWithinSyncWindow(window, tz, Date.parse('2025-06-02T03:00:00Z'))).toBe(true); // 05:00
    expect(isWithinSyncWindow(window, tz, Date.parse('2025-06-02T04:00:00Z'))).toBe(false); // 06:00
    expect(isWithinSyncWindow(window, tz, Date.parse('2025-06-01T10:00:00Z'))).toBe(false); // 12:00
  });

  it('when the window is closed, then the time until it opens is counted to its start', () => {
    const window = { start: '01:00', end: '05:00' };
    // 00:30 local (CEST, UTC+2) -> opens in 30 minutes
    expect(msUntilSyncWindowOpens(window, tz, Date.parse('2025-06-01T22:30:00Z'))).toBe(
      30 * 60_000,
    );
    expect(msUntilSyncWindowOpens(window, tz, Date.parse('2025-06-01T23:30:00Z'))).toBe(0);
  });
});
