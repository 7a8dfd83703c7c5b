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

/**
 * Builds a text as UTF-8 bytes piece by piece and hashes it, without ever making the text
 * a string: a JSON text built from ~100 pieces costs V8 more to join (or flatten) than to
 * hash, so the assembler writes each visit's canonical JSON here instead. ASCII is copied
 * in JS; anything else goes through Buffer.write. Reusable: `sha256Hex()` resets it.
 */
export class HashWriter {
  private buf = Buffer.alloc(16_384);
  private n = 0;

  private ensure(extra: number): void {
    if (this.n + extra <= this.buf.length) return;
    const bigger = Buffer.alloc(Math.max(this.buf.length * 2, this.n + extra));
    this.buf.copy(bigger, 0, 0, this.n);
    this.buf = bigger;
  }

  /** Appends text as it is (UTF-8). */
  text(s: string): void {
    const len = s.length;
    this.ensure(len * 3); // a UTF-16 code unit is at most 3 UTF-8 bytes
    const buf = this.buf;
    let n = this.n;
    for (let i = 0; i < len; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        n += buf.write(i === 0 ? s : s.slice(i), n, 'utf8');
        break;
      }
      buf[n++] = c;
    }
    this.n = n;
  }

  /** Appends `s` as a JSON string literal, exactly as JSON.stringify(s) writes it. */
  str(s: string): void {
    const len = s.length;
    this.ensure(len + 2);
    const buf = this.buf;
    const start = this.n;
    let n = start;
    buf[n++] = 34; // "
    for (let i = 0; i < len; i++) {
      const c = s.charCodeAt(i);
      // Escapes (control characters, quote, backslash) and non-ASCII (which may hold lone
      // surrogates, escaped by JSON.stringify) take the general path.
      if (c < 0x20 || c === 34 || c === 92 || c >= 0x80) {
        this.n = start;
        this.text(JSON.stringify(s));
        return;
      }
      buf[n++] = c;
    }
    buf[n++] = 34;
    this.n = n;
  }

  /** Appends a number as JSON.stringify writes it (null when not finite). */
  num(v: number | null): void {
    this.text(v !== null && Number.isFinite(v) ? String(v) : 'null');
  }

  /** SHA-256 (hex) of the bytes appended since the last call; starts a new text. */
  sha256Hex(): string {
    const bytes = this.buf.subarray(0, this.n);
    this.n = 0;
    return oneShotHash
      ? oneShotHash('sha256', bytes, 'hex')
      : createHash('sha256').update(bytes).digest('hex');
  }
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
