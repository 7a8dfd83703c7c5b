// Pseudonymous keys and content hashes. Keys are HMAC-SHA256 with a per-deployment secret,
// so the registry can link a patient's visits without ever seeing a source identifier, and
// nobody without the secret can reverse or recompute them.
import * as crypto from 'node:crypto';
import { createHash, createHmac } from 'node:crypto';

// crypto.hash (Node >= 20.12) hashes in one call without a Hash object; older Nodes fall
// back to createHash. Same digest either way.
const oneShotHash = (crypto as { hash?: typeof crypto.hash }).hash;

/** HMAC-SHA256 (hex) of `centreId|resourceType/id` with the deployment secret. */
export function pseudonymKey(
  secret: string,
  centreId: string,
  resourceType: string,
  id: string,
): string {
  if (secret !== lastSecret) {
    lastHmac = createHmacHex(secret);
    lastSecret = secret;
  }
  return lastHmac(`${centreId}|${resourceType}/${id}`);
}

// The keyed function of the last secret used: a deployment has one secret, so this is set
// once and the key schedule (padding, KeyObject) is not redone for every key.
let lastSecret: string | undefined;
let lastHmac: (message: string) => string = () => '';

const BLOCK = 64; // SHA-256 block size in bytes

/**
 * HMAC-SHA256 (hex, of UTF-8 text) with the key prepared once. Where crypto.hash exists it
 * computes HMAC from its definition (RFC 2104: H((K^opad) || H((K^ipad) || m))) with two
 * one-shot hashes, which costs about two thirds of createHmac per call on Node 20; the
 * digest is the same.
 */
export function createHmacHex(secret: string): (message: string) => string {
  if (!oneShotHash) {
    const key = crypto.createSecretKey(Buffer.from(secret, 'utf8'));
    return (message) => createHmac('sha256', key).update(message, 'utf8').digest('hex');
  }
  const hashOnce = oneShotHash;
  let key = Buffer.from(secret, 'utf8');
  if (key.length > BLOCK) key = createHash('sha256').update(key).digest();
  let inner = Buffer.alloc(BLOCK + 256);
  const outer = Buffer.alloc(BLOCK + 32);
  for (let i = 0; i < BLOCK; i++) {
    const k = i < key.length ? (key[i] as number) : 0;
    inner[i] = k ^ 0x36;
    outer[i] = k ^ 0x5c;
  }
  return (message) => {
    // A UTF-16 code unit is at most 3 UTF-8 bytes: make sure write() cannot truncate.
    if (BLOCK + message.length * 3 > inner.length) {
      const bigger = Buffer.alloc(BLOCK + message.length * 3);
      inner.copy(bigger, 0, 0, BLOCK);
      inner = bigger;
    }
    const n = inner.write(message, BLOCK, 'utf8');
    const innerDigest = hashOnce('sha256', inner.subarray(0, BLOCK + n), 'buffer');
    innerDigest.copy(outer, BLOCK);
    return hashOnce('sha256', outer, 'hex');
  };
}

// Strings that JSON.stringify would write as-is between quotes: no quote, backslash, control
// character or (possibly lone) surrogate. Testing this is several times cheaper than
// JSON.stringify on a short string.
// eslint-disable-next-line no-control-regex -- control characters are exactly what it looks for
const PLAIN_JSON_STRING = /^[^"\\\u0000-\u001f\ud800-\udfff]*$/;

/** JSON.stringify(text), faster for the common strings that need no escaping. */
export function jsonString(text: string): string {
  return PLAIN_JSON_STRING.test(text) ? `"${text}"` : JSON.stringify(text);
}

/** JSON with object keys sorted at every level, so equal content gives equal text. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  // Built by concatenation rather than map/join: this runs once per submission.
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ',';
      const item: unknown = value[i];
      out += item === undefined ? 'null' : canonicalJson(item);
    }
    return `${out}]`;
  }
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record).sort();
  let out = '{';
  let first = true;
  for (const key of keys) {
    const item = record[key];
    if (item === undefined) continue;
    if (!first) out += ',';
    first = false;
    out += `${JSON.stringify(key)}:${canonicalJson(item)}`;
  }
  return `${out}}`;
}

/** SHA-256 (hex) of a text (UTF-8). */
export function sha256Hex(text: string): string {
  return oneShotHash
    ? oneShotHash('sha256', text, 'hex')
    : createHash('sha256').update(text).digest('hex');
}

/** SHA-256 (hex) of the canonical JSON of a value. */
export function contentHash(value: unknown): string {
  return sha256Hex(canonicalJson(value));
}

/** The submission id: first 32 hex of the visit key, a dash, first 16 hex of the content hash. */
export function submissionId(visitKey: string, hash: string): string {
  return `${visitKey.slice(0, 32)}-${hash.slice(0, 16)}`;
}
