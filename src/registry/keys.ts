// Pseudonymous keys and content hashes. Keys are HMAC-SHA256 with a per-deployment secret,
// so the registry can link a patient's visits without ever seeing a source identifier, and
// nobody without the secret can reverse or recompute them.
import * as crypto from 'node:crypto';
import { createHash, createHmac } from 'node:crypto';

// crypto.hash (Node >= 20.12) hashes in one call without a Hash object; older Nodes fall
// back to createHash. Same digest either way.
const oneShotHash = (crypto as { hash?: typeof crypto.hash }).hash;

/** SHA-256 block size in bytes (the HMAC key pad length). */
const HMAC_BLOCK = 64;

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

/**
 * HMAC-SHA256 (hex, of UTF-8 text) keyed once, per RFC 2104:
 * SHA-256((K ^ opad) || SHA-256((K ^ ipad) || message)), K the secret's UTF-8 bytes (hashed
 * first when longer than the 64-byte block) padded with zeros to the block size. Built from
 * two one-shot hashes over buffers that hold the padded keys from the start: createHmac
 * measured about 4.4 µs per key here against about 2.6 µs for this (one key per visit).
 * test/mapping/keys.test.ts holds it to createHmac for many secrets and messages.
 */
export function createHmacHex(secret: string): (message: string) => string {
  const hash = oneShotHash;
  if (!hash) {
    const keyObject = crypto.createSecretKey(Buffer.from(secret, 'utf8'));
    return (message) => createHmac('sha256', keyObject).update(message, 'utf8').digest('hex');
  }
  let key: Uint8Array = Buffer.from(secret, 'utf8');
  if (key.length > HMAC_BLOCK) key = createHash('sha256').update(key).digest();
  // inner: K ^ ipad, then the message; outer: K ^ opad, then the inner digest (32 bytes).
  let inner = Buffer.alloc(HMAC_BLOCK + 256);
  const outer = Buffer.alloc(HMAC_BLOCK + 32);
  for (let i = 0; i < HMAC_BLOCK; i++) {
    const k = i < key.length ? key[i]! : 0;
    inner[i] = k ^ 0x36;
    outer[i] = k ^ 0x5c;
  }
  const outerBytes = new Uint8Array(outer.buffer, outer.byteOffset, outer.length);
  // Views of the inner buffer by length, so hashing a message allocates no view.
  let views: Uint8Array[] = [];
  return (message) => {
    if (HMAC_BLOCK + message.length * 3 > inner.length) {
      const bigger = Buffer.alloc(HMAC_BLOCK + message.length * 3);
      inner.copy(bigger, 0, 0, HMAC_BLOCK);
      inner = bigger;
      views = [];
    }
    const len = HMAC_BLOCK + inner.write(message, HMAC_BLOCK, 'utf8');
    let view = views[len];
    if (view === undefined) {
      view = new Uint8Array(inner.buffer, inner.byteOffset, len);
      if (len <= 1024) views[len] = view;
    }
    outer.write(hash('sha256', view, 'hex'), HMAC_BLOCK, 'hex');
    return hash('sha256', outerBytes, 'hex');
  };
}

/** Text JSON.stringify never escapes: printable ASCII but `"` and `\\`. */
const PLAIN_JSON_TEXT = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** True when JSON.stringify(s) is s in double quotes (no escapes). */
export function isPlainJsonText(s: string): boolean {
  return PLAIN_JSON_TEXT.test(s);
}

/** JSON.stringify(s), quicker for the common plain ASCII text (ids, dates, codes). */
export function jsonString(s: string): string {
  return PLAIN_JSON_TEXT.test(s) ? `"${s}"` : JSON.stringify(s);
}

/**
 * JSON.stringify(v), quicker for a value rounded to `decimals` places (the vitals). V8
 * prints a double as the shortest decimal that reads back as it; for v = k / 10^d (k an
 * integer, |v| < 1e9, the division correctly rounded) that is k's digits with the point put
 * back and trailing zeros dropped: any shorter decimal lies further from v than half a unit
 * in its last place. Anything else is printed by V8 (slowly: it is the general algorithm).
 */
export function jsonDecimal(v: number, decimals: number): string {
  // |v| < 1e9 keeps k exact and a / f's floor right (its rounding error is below 1 / f).
  if (decimals >= 0 && decimals <= 6 && Number.isInteger(decimals) && Math.abs(v) < 1e9) {
    const f = 10 ** decimals;
    const k = Math.round(v * f);
    const a = Math.abs(k);
    const int = Math.floor(a / f);
    let frac = a - int * f;
    if (k / f === v && k !== 0 && frac >= 0 && frac < f) {
      let text = String(int);
      if (frac !== 0) {
        let digits = decimals;
        while (frac % 10 === 0) {
          frac /= 10;
          digits -= 1;
        }
        text += `.${String(frac).padStart(digits, '0')}`;
      }
      return k < 0 ? `-${text}` : text;
    }
  }
  return Number.isFinite(v) ? String(v) : 'null';
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
