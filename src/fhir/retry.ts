// Retry policy for EHR requests: exponential backoff with full jitter on transient failures,
// and Retry-After honoured but capped, because one absurd header (an epoch timestamp sent
// as "seconds", a date years ahead) must delay a sync by minutes, not stall it for years.
// Clock, sleep and randomness are injectable so tests never wait for real.
import type { Logger } from '../util/logger.js';
import { RETRYABLE_STATUSES } from './errors.js';

/** Settings shared by every retry decision of one client. */
export interface RetryPolicy {
  /** Retries after the first attempt (0 = try once). */
  maxRetries: number;
  /** Longest Retry-After honoured, in seconds; longer values are capped. */
  maxRetryAfterSeconds: number;
  /** First backoff ceiling in ms; doubles each attempt. */
  baseDelayMs: number;
  /** Backoff ceiling in ms (Retry-After may exceed it, up to maxRetryAfterSeconds). */
  maxDelayMs: number;
  /** Waits `ms`, rejecting early if `signal` aborts. */
  sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Uniform random in [0, 1). */
  random: () => number;
  /** Current time in ms since the epoch. */
  now: () => number;
}

/** Builds a policy from the service's `fhir` settings with real timers. */
export function createRetryPolicy(
  config: { maxRetries: number; maxRetryAfterSeconds: number },
  overrides: Partial<RetryPolicy> = {},
): RetryPolicy {
  return {
    maxRetries: config.maxRetries,
    maxRetryAfterSeconds: config.maxRetryAfterSeconds,
    baseDelayMs: 500,
    maxDelayMs: 30_000,
    sleep: sleepWithSignal,
    random: Math.random,
    now: Date.now,
    ...overrides,
  };
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function sleepWithSignal(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A parsed Retry-After header. */
export interface RetryAfter {
  /** Seconds to wait after capping. */
  seconds: number;
  /** Seconds the server asked for, before capping. */
  requestedSeconds: number;
  /** True when the requested wait exceeded the cap. */
  capped: boolean;
}

/**
 * Parses Retry-After (delta-seconds or HTTP-date, RFC 9110 §10.2.3) and caps it.
 * Returns undefined for a missing or unparseable value. A date in the past means 0.
 */
export function parseRetryAfter(
  value: string | null | undefined,
  options: { now: number; maxSeconds: number },
): RetryAfter | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  if (text === '') return undefined;
  let requested: number;
  if (/^\d+(\.\d+)?$/.test(text)) {
    requested = Number(text);
  } else {
    // An HTTP-date always names a weekday or month; this keeps "-5" from parsing as year -5.
    if (!/[A-Za-z]{3}/.test(text)) return undefined;
    const at = Date.parse(text);
    if (Number.isNaN(at)) return undefined;
    requested = Math.max(0, (at - options.now) / 1000);
  }
  if (!Number.isFinite(requested)) requested = Number.MAX_SAFE_INTEGER;
  const capped = requested > options.maxSeconds;
  return { seconds: capped ? options.maxSeconds : requested, requestedSeconds: requested, capped };
}

/**
 * Backoff before retry number `retry` (1-based): full jitter, i.e. uniform in
 * [0, min(maxDelay, base * 2^(retry-1))].
 */
export function computeBackoffMs(retry: number, policy: RetryPolicy): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, retry - 1));
  return Math.floor(policy.random() * ceiling);
}

/** True for statuses where the same request may succeed later. */
export function isRetryableStatus(status: number): boolean {
  return RETRYABLE_STATUSES.has(status);
}

const RETRYABLE_NETWORK_CODES = new Set([
  'ECONNRESET',
  'ETIMEDOUT',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'timeout',
  // A forward proxy that could not reach the host (src/util/outbound.ts).
  'PROXY_UNAVAILABLE',
]);

/**
 * The low-level code of a failed fetch (undici wraps the socket error in `cause`), e.g.
 * ECONNRESET, UND_ERR_SOCKET; `timeout` for our own request timeout; undefined when the
 * error is not a network failure.
 */
export function networkErrorCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { name?: unknown; code?: unknown; message?: unknown; cause?: unknown };
  if (e.name === 'TimeoutError') return 'timeout';
  if (typeof e.code === 'string' && e.code !== '') return e.code;
  if (e.cause !== undefined && e.cause !== err) {
    const inner = networkErrorCode(e.cause);
    if (inner) return inner;
  }
  if (typeof e.message === 'string') {
    if (/socket hang up/i.test(e.message)) return 'ECONNRESET';
    if (e.name === 'TypeError' && /fetch failed|terminated/i.test(e.message)) return 'FETCH_FAILED';
  }
  return undefined;
}

/** True for network failures worth retrying (resets, timeouts, undici socket errors). */
export function isRetryableNetworkCode(code: string): boolean {
  return (
    RETRYABLE_NETWORK_CODES.has(code) || code.startsWith('UND_ERR_') || code === 'FETCH_FAILED'
  );
}

/**
 * Decides the wait before the next attempt, logging when a Retry-After was capped.
 * `retry` is 1-based (the first retry is 1).
 */
export function decideRetryDelay(options: {
  retry: number;
  policy: RetryPolicy;
  retryAfterHeader?: string | null;
  logger?: Logger;
  context?: Record<string, unknown>;
}): { delayMs: number; retryAfter?: RetryAfter } {
  const { policy } = options;
  const retryAfter = parseRetryAfter(options.retryAfterHeader, {
    now: policy.now(),
    maxSeconds: policy.maxRetryAfterSeconds,
  });
  if (retryAfter) {
    if (retryAfter.capped) {
      options.logger?.warn(
        {
          ...options.context,
          requestedSeconds: Math.round(retryAfter.requestedSeconds),
          cappedToSeconds: retryAfter.seconds,
        },
        'Retry-After longer than the configured maximum; capped',
      );
    }
    return { delayMs: Math.round(retryAfter.seconds * 1000), retryAfter };
  }
  return { delayMs: computeBackoffMs(options.retry, policy) };
}
