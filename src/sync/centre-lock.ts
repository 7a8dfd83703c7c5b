// At most one sync runs per centre, whichever worker (or machine) picks the job up. The
// guard is a Redis lock with a lease: the running sync holds `${prefix}:lock:sync:${centre}`
// and renews it while it works; a worker that dies stops renewing, so the lease lapses and
// the centre is free again. The lock names the BullMQ job that holds it, so the same job,
// restarted by BullMQ's stalled-job recovery after a crash, takes it over at once instead of
// waiting for the lease to lapse.
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
  { acquired: true; lock: CentreLock } | { acquired: false; holder: CentreLockOwner | undefined };

export interface AcquireCentreLockOptions {
  /** Lease length; renewed every third of it. Default 60 s. */
  leaseMs?: number;
  /** Called if the lease could not be renewed (another run may now take the centre). */
  onLost?: () => void;
}

// Renew or release only when the value is still ours.
const RENEW_SCRIPT = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE_SCRIPT = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;
// Take over a lock held by the same job id (a restart of a stalled job).
const TAKEOVER_SCRIPT = `local v = redis.call('get', KEYS[1])
if v == false then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[3]) return 1 end
local ok, cur = pcall(cjson.decode, v)
if ok and cur.jobId == ARGV[2] then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[3]) return 1 end
return 0`;

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
  if (!value) return undefined;
  try {
    return JSON.parse(value) as CentreLockOwner;
  } catch {
    return undefined;
  }
}

/** Tries to take a centre's sync lock for a run; never waits. */
export async function acquireCentreLock(
  redis: Redis,
  prefix: string,
  centreId: string,
  owner: CentreLockOwner,
  options: AcquireCentreLockOptions = {},
): Promise<AcquireResult> {
  const key = centreLockKey(prefix, centreId);
  const leaseMs = options.leaseMs ?? 60_000;
  const value = JSON.stringify(owner);
  const taken = (await redis.eval(TAKEOVER_SCRIPT, 1, key, value, owner.jobId, leaseMs)) === 1;
  if (!taken)
    return { acquired: false, holder: await getCentreLockHolder(redis, prefix, centreId) };

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
