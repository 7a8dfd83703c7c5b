// A per-client token bucket for failed authentication attempts: each failure takes a token,
// tokens come back at a steady rate, and an empty bucket means 429 until one returns. In
// memory per process: enough to make guessing keys slow; a shared limit would need Redis.

/** Options of the failed-attempt limiter. */
export interface FailureLimiterOptions {
  /** Failures allowed in a burst before the client is refused. Default 10. */
  burst?: number;
  /** Seconds for one token to come back. Default 6 (10 per minute sustained). */
  refillSeconds?: number;
  /** Most clients tracked at once; the oldest are forgotten first. Default 10,000. */
  maxClients?: number;
  now?: () => number;
}

/** Tracks failed attempts per client key (an IP address). */
export interface FailureLimiter {
  /** Seconds until the client may try again, or 0 when it may try now. */
  retryAfter(client: string): number;
  /** Records one failed attempt by the client. */
  recordFailure(client: string): void;
}

interface Bucket {
  tokens: number;
  updatedAt: number;
}

/** Creates an in-memory failed-attempt limiter. */
export function createFailureLimiter(options: FailureLimiterOptions = {}): FailureLimiter {
  const burst = options.burst ?? 10;
  const refillMs = (options.refillSeconds ?? 6) * 1000;
  const maxClients = options.maxClients ?? 10_000;
  const now = options.now ?? Date.now;
  const buckets = new Map<string, Bucket>();

  function current(client: string): Bucket {
    const t = now();
    const bucket = buckets.get(client);
    if (!bucket) return { tokens: burst, updatedAt: t };
    const refilled = Math.min(burst, bucket.tokens + (t - bucket.updatedAt) / refillMs);
    return { tokens: refilled, updatedAt: t };
  }

  return {
    retryAfter(client) {
      const bucket = current(client);
      if (bucket.tokens >= 1) return 0;
      return Math.max(1, Math.ceil(((1 - bucket.tokens) * refillMs) / 1000));
    },
    recordFailure(client) {
      const bucket = current(client);
      bucket.tokens = Math.max(0, bucket.tokens - 1);
      buckets.delete(client);
      buckets.set(client, bucket);
      if (buckets.size > maxClients) {
        const oldest = buckets.keys().next().value;
        if (oldest !== undefined) buckets.delete(oldest);
      }
    },
  };
}
