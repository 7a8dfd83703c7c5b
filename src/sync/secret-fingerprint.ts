// Which pseudonym secret built this Redis's state. Patient and visit keys are HMACs with
// LHN_PSEUDONYM_SECRET: a process with another secret (a replica with a stale secret, a
// rotated one) would re-key every visit, find none of them in the visit state, and drop every
// change to a visit already sent while its runs say `succeeded`. The first process to use a
// Redis stores a fingerprint of its secret (an HMAC of a fixed label, never the secret);
// every worker and serve start and every sync run compares its own and refuses on a mismatch.
import { createHmac, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { ConfigError } from '../config/errors.js';
import { INCARNATION_PATTERN } from '../registry/delivery.js';

/** The label the fingerprint is an HMAC of (with the secret as key). */
const LABEL = 'lhn-bridge/pseudonym-secret-fingerprint/v1';

/** Redis key of the fingerprint. */
export const secretFingerprintKey = (prefix: string): string => `${prefix}:secret-fingerprint`;

/** HMAC-SHA256 of a fixed label keyed with the secret, hex: tells secrets apart, reveals none. */
export function secretFingerprint(secret: string): string {
  return createHmac('sha256', secret).update(LABEL).digest('hex');
}

/** What a process with another secret than the one this Redis's state was made with is told. */
export const SECRET_MISMATCH_MESSAGE =
  'this Redis holds state made with another LHN_PSEUDONYM_SECRET; every visit would be re-keyed and changes dropped; use the original secret, or a new LHN_QUEUE_PREFIX for a fresh start';

/** The stored fingerprint is not this process's secret's. */
export class SecretMismatchError extends ConfigError {
  constructor(prefix: string) {
    super('environment', [
      {
        path: 'pseudonymSecret (LHN_PSEUDONYM_SECRET)',
        message: `${SECRET_MISMATCH_MESSAGE} (fingerprint ${secretFingerprintKey(prefix)})`,
      },
    ]);
    this.name = 'SecretMismatchError';
    // One line, for a run record as much as for the CLI.
    this.message = `LHN_PSEUDONYM_SECRET: ${SECRET_MISMATCH_MESSAGE} (fingerprint ${secretFingerprintKey(prefix)})`;
  }
}

/**
 * Stores the secret's fingerprint if this Redis has none yet (SET NX), else compares it;
 * throws SecretMismatchError when it differs.
 */
export async function ensureSecretFingerprint(
  redis: Redis,
  prefix: string,
  secret: string,
): Promise<void> {
  const key = secretFingerprintKey(prefix);
  const mine = secretFingerprint(secret);
  const set = await redis.set(key, mine, 'NX');
  if (set === 'OK') return;
  const stored = await redis.get(key);
  // Deleted in between (someone starting afresh): claim it again.
  if (stored === null) return ensureSecretFingerprint(redis, prefix, secret);
  if (stored !== mine) throw new SecretMismatchError(prefix);
}

// Which incarnation of this Redis's state a job was enqueued in. Redis may come back empty
// (no persistence, a failover to an empty replica): queue jobs and the enqueue sequence
// counters are gone, so job ids, and with them Idempotency-Keys, would repeat ones the
// registry saw before the loss (src/registry/delivery.ts deliveryIdempotencyKey). A random
// id stored beside the fingerprint, created by the first process that finds none, names the
// incarnation; the keys carry it, so no key is used again after a loss.

/** Redis key of the incarnation id. */
export const incarnationKey = (prefix: string): string => `${prefix}:incarnation`;

/**
 * This Redis's incarnation id: the stored one, or a new random one stored (SET NX) when there
 * is none, i.e. when the Redis is new or has lost its state. Read it again for each use that
 * must belong to the current incarnation (never cache it for a process's lifetime).
 */
export async function ensureIncarnation(redis: Redis, prefix: string): Promise<string> {
  const key = incarnationKey(prefix);
  for (;;) {
    const stored = await redis.get(key);
    if (stored !== null && INCARNATION_PATTERN.test(stored)) return stored;
    const fresh = randomBytes(8).toString('hex');
    // An unreadable value (written by hand) is replaced; a concurrent creator's wins.
    const set =
      stored === null
        ? await redis.set(key, fresh, 'NX')
        : await redis.eval(REPLACE_IF, 1, key, stored, fresh);
    if (set === 'OK' || set === 1) return fresh;
  }
}

/** Sets KEYS[1] to ARGV[2] if it still holds ARGV[1]; 1 when set. */
const REPLACE_IF = `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end return 0`;
