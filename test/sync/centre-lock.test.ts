// The centre lock against real Redis: one live holder at a time, also for two runs of the same
// BullMQ job, and a holder's release or renewal never touches a lock someone else now holds.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import {
  acquireCentreLock,
  centreLockKey,
  getCentreLockHolder,
  type CentreLock,
} from '../../src/sync/centre-lock.js';
import { deletePrefix, testPrefix, testRedis, waitFor } from './helpers.js';

const owner = { runId: 'run-1', jobId: 'repeat:sync-alpha:1700000000000' };

describe('centre lock', () => {
  let redis: Redis;
  let prefix: string;
  const held: CentreLock[] = [];

  beforeAll(() => {
    redis = testRedis();
  });
  afterAll(async () => {
    await redis.quit();
  });
  beforeEach(() => {
    prefix = testPrefix();
  });
  afterEach(async () => {
    for (const lock of held.splice(0)) await lock.release();
    await deletePrefix(redis, prefix);
  });

  async function acquire(
    who: { runId: string; jobId: string },
    options: { leaseMs?: number; onLost?: () => void } = {},
  ) {
    const result = await acquireCentreLock(redis, prefix, 'alpha', who, {
      leaseMs: 300,
      ...options,
    });
    if (result.acquired) held.push(result.lock);
    return result;
  }

  it('when the same job asks again while the first holder is alive and renewing, then it is refused, and only a lapsed lease lets it in', async () => {
    const a = await acquire(owner);
    expect(a.acquired).toBe(true);
    const b = await acquire({ ...owner, runId: 'run-1-again' });
    expect(b).toMatchObject({ acquired: false, holder: owner });
    expect(b.acquired === false && b.leaseRemainingMs).toBeGreaterThan(0);

    // Through several renewals A keeps the lock and nobody else gets it.
    await new Promise((r) => setTimeout(r, 800));
    expect(a.acquired && a.lock.held).toBe(true);
    expect((await acquire(owner)).acquired).toBe(false);

    // A releases: now the centre is free, and only one newcomer gets it.
    if (a.acquired) await a.lock.release();
    const [c, d] = await Promise.all([acquire(owner), acquire({ runId: 'r2', jobId: 'manual' })]);
    expect([c.acquired, d.acquired].filter(Boolean)).toHaveLength(1);
  });

  it('when a crashed holder of the same job stops renewing, then the job takes the lock once the lease lapses', async () => {
    // A holder that died: its value stays until the lease runs out.
    const key = centreLockKey(prefix, 'alpha');
    await redis.set(key, JSON.stringify({ ...owner, token: 'dead' }), 'PX', 200);
    expect((await acquire(owner)).acquired).toBe(false);
    await new Promise((r) => setTimeout(r, 300));
    const again = await acquire({ ...owner, runId: 'run-1-restart' });
    expect(again.acquired).toBe(true);
    expect(await getCentreLockHolder(redis, prefix, 'alpha')).toEqual({
      ...owner,
      runId: 'run-1-restart',
    });
  });

  it('when a holder lost its lease and the same job took the lock, then the old holder learns it lost and its release leaves the new holder in place', async () => {
    let lost = 0;
    const a = await acquire(owner, {
      onLost: () => {
        lost += 1;
      },
    });
    expect(a.acquired).toBe(true);
    // The lease lapses (A was partitioned from Redis, say) and the restarted job takes over.
    await redis.del(centreLockKey(prefix, 'alpha'));
    const b = await acquire({ ...owner, runId: 'run-1-restart' });
    expect(b.acquired).toBe(true);

    await waitFor(() => lost === 1, 2_000, 'A to notice its lost lease');
    expect(a.acquired && a.lock.held).toBe(false);
    if (a.acquired) await a.lock.release();
    expect(await getCentreLockHolder(redis, prefix, 'alpha')).toEqual({
      ...owner,
      runId: 'run-1-restart',
    });
    expect(b.acquired && b.lock.held).toBe(true);
    expect((await acquire({ runId: 'r3', jobId: 'manual' })).acquired).toBe(false);
  });

  it('when an old holder releases after its lease ran out, then the lock someone else holds is not freed', async () => {
    const a = await acquire(owner, { leaseMs: 60_000 });
    expect(a.acquired).toBe(true);
    await redis.del(centreLockKey(prefix, 'alpha'));
    const b = await acquire(owner);
    expect(b.acquired).toBe(true);
    // A releases before its renewal timer noticed anything.
    if (a.acquired) await a.lock.release();
    expect(await getCentreLockHolder(redis, prefix, 'alpha')).toEqual(owner);
  });
});
