// Pseudonymous keys and content hashes. Keys are HMAC-SHA256 with a per-deployment secret,
// so the registry can link a patient's visits without ever seeing a source identifier, and
// nobody without the secret can reverse or recompute them.
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

/** JSON with object keys sorted at every level, so equal content gives equal text. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value))
    return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/** SHA-256 (hex) of the canonical JSON of a value. */
export function contentHash(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex');
}

/** The submission id: first 32 hex of the visit key, a dash, first 16 hex of the content hash. */
export function submissionId(visitKey: string, hash: string): string {
  return `${visitKey.slice(0, 32)}-${hash.slice(0, 16)}`;
}
