// Pseudonymous keys and content hashes. Keys are HMAC-SHA256 with a per-deployment secret,
// so the registry can link a patient's visits without ever seeing a source identifier, and
// nobody without the secret can reverse or recompute them.
import * as crypto from 'node:crypto';
import { createHash, createHmac } from 'node:crypto';

/** HMAC-SHA256 (hex) of `centreId|resourceType/id` with the deployment secret. */
export function pseudonymKey(
  secret: string,
  centreId: string,
  resourceType: string,
  id: string,
): string {
  return createHmac('sha256', secret).update(`${centreId}|${resourceType}/${id}`).digest('hex');
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

// crypto.hash (Node >= 20.12) hashes in one call without a Hash object; older Nodes fall
// back to createHash. Same digest either way.
const oneShotHash = (crypto as { hash?: typeof crypto.hash }).hash;

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
