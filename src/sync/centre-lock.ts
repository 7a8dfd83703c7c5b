// At most one sync runs per centre, whichever worker (or machine) picks the job up. The
// guard is a Redis lock with a lease: the running sync holds `${prefix}:lock:sync:${centre}`
// and renews it while it works; a worker that dies stops renewing, so the lease lapses and
// the centre is free again. Each acquisition stores its own random token beside the owner,
// and renew and release act only while that token is still the value: so nobody, not even a
// second run of the same BullMQ job, takes the lock while its holder keeps renewing. BullMQ
// re-runs a job whose worker merely missed its job-lock renewal (a blocked event loop, Redis
// latency, a partition), so "same job id" does not mean "the previous run is dead"; the lease
// lapsing does. A restarted job therefore waits out the previous run's lease.
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';

/** Who holds a centre's sync lock. */
export interface CentreLockOwner {
  runId: string;
  jobId: string;
}

/** A held lock; `release()` is safe to call more than once. */
export interface CentreLock {
  readonly owner: CentreLockOwner;
  /** True while the lease is believed held (false after a failed renewal or release). */
  readonly held: boolean;
  release(): Promise<void>;
}

export type AcquireResult =
  | { acquired: true; lock: CentreLock }
  | {
      acquired: false;
      holder: CentreLockOwner | undefined;
      /** How long the holder's lease still runs unless renewed (ms); 0 when unknown. */
      leaseRemainingMs: number;
    };

export interface AcquireCentreLockOptions {
  /** Lease length; renewed every third of it. Default 60 s. */
  leaseMs?: number;
  /** Called if the lease could not be renewed (another run may now take the centre). */
  onLost?: () => void;
}

// Renew or release only when the value (owner and this acquisition's token) is still ours.
const RENEW_SCRIPT = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE_SCRIPT = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;

/**
 * The reason a run is aborted with when its centre lock lapsed under it (Redis unreachable
 * longer than the lease, or a worker stalled past it): another run may hold the centre now.
 */
export class CentreLockLostError extends Error {
  constructor(readonly centreId: string) {
    super(
      `the centre lock of ${centreId} lapsed under the run (Redis unreachable or the worker stalled for longer than the lease)`,
    );
    this.name = 'CentreLockLostError';
  }
}

/** Redis key of a centre's sync lock. */
export function centreLockKey(prefix: string, centreId: string): string {
  return `${prefix}:lock:sync:${centreId}`;
}

/** Who holds the centre's lock now, if anyone. */
export async function getCentreLockHolder(
  redis: Redis,
  prefix: string,
  centreId: string,
): Promise<CentreLockOwner | undefined> {
  const value = await redis.get(centreLockKey(prefix, centreId));
  return ownerOf(value);
}

function ownerOf(value: string | null): CentreLockOwner | undefined {
  if (!value) return undefined;
  try {
    const { runId, jobId } = JSON.parse(value) as CentreLockOwner;
    return { runId, jobId };
  } catch {
    return undefined;
  }
}

/**
 * Tries to take a centre's sync lock for a run; never waits. It is taken only when free (no
 * holder, or the holder's lease lapsed), also when the holder names the same job.
 */
export async function acquireCentreLock(
  redis: Redis,
  prefix: string,
  centreId: string,
  owner: CentreLockOwner,
  options: AcquireCentreLockOptions = {},
): Promise<AcquireResult> {
  const key = centreLockKey(prefix, centreId);
  const leaseMs = options.leaseMs ?? 60_000;
  const value = JSON.stringify({ ...owner, token: randomUUID() });
  const taken = (await redis.set(key, value, 'PX', leaseMs, 'NX')) === 'OK';
  if (!taken) {
    const replies = await redis.multi().get(key).pttl(key).exec();
    const current = (replies?.[0]?.[1] ?? null) as string | null;
    const ttl = Number(replies?.[1]?.[1] ?? 0);
    return { acquired: false, holder: ownerOf(current), leaseRemainingMs: Math.max(ttl, 0) };
  }

  let held = true;
  const timer = setInterval(
    () => {
      redis
        .eval(RENEW_SCRIPT, 1, key, value, leaseMs)
        .then((ok) => {
          if (ok !== 1 && held) {
            held = false;
            options.onLost?.();
          }
        })
        // A failed renewal (Redis briefly down) is retried at the next tick; the lease is
        // three ticks long.
        .catch(() => undefined);
    },
    Math.max(Math.floor(leaseMs / 3), 50),
  );
  timer.unref();

  return {
    acquired: true,
    lock: {
      owner,
      get held() {
        return held;
      },
      async release() {
        clearInterval(timer);
        if (!held) return;
        held = false;
        await redis.eval(RELEASE_SCRIPT, 1, key, value);
      },
    },
  };
}
