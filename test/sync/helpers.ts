// Shared test helpers for the sync, queue and registry tests: a unique Redis prefix per test
// file with cleanup, and hand-built valid submissions (independent of the mapper).
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { contentHash, pseudonymKey, submissionId } from '../../src/registry/keys.js';
import type { Retraction, VisitSubmission } from '../../src/registry/submission.js';

export const REDIS_URL = 'redis://127.0.0.1:6379';
export const SECRET = 'lhn-sync-tests-7f3a9c21e8b04d65a1c2e9f0b3d47a86';

/** A prefix no other test run uses. */
export function testPrefix(): string {
  return `lhn-test-${randomUUID()}`;
}

/** A Redis connection for tests (commands wait through reconnects, like workers). */
export function testRedis(url = REDIS_URL): Redis {
  return new Redis(url, { maxRetriesPerRequest: null });
}

/** Deletes every key under a prefix. */
export async function deletePrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await redis.del(...keys);
  } while (cursor !== '0');
}

export interface VisitInput {
  centreId?: string;
  patientId: string;
  encounterId: string;
  date?: string;
  pga?: VisitSubmission['pga'];
  versionId?: string;
}

/** A valid visit submission with real keys and hash. */
export function makeVisit(input: VisitInput): VisitSubmission {
  const centreId = input.centreId ?? 'test-centre';
  const pga = input.pga ?? 'quiescent';
  const lastUpdated = '2024-05-01T10:00:00Z';
  const content = {
    schema: 'lhn-bridge/registry-submission/v1' as const,
    kind: 'visit' as const,
    centreId,
    patientKey: pseudonymKey(SECRET, centreId, 'Patient', input.patientId),
    visitKey: pseudonymKey(SECRET, centreId, 'Encounter', input.encounterId),
    visit: { date: input.date ?? '2024-05-01', type: 'outpatient' },
    patient: { birthDate: '2012-03-04', sex: 'female' as const, ageAtVisitMonths: 145 },
    diagnosis: 'crohns_disease' as const,
    pga,
    remission: pga === null ? null : pga === 'quiescent',
    steroidUse: false,
    steroids: [],
    height: { value: 150.2, unit: 'cm' as const },
    weight: { value: 41.5, unit: 'kg' as const },
    bmi: null,
    findings: [],
    provenance: [
      {
        resourceType: 'Encounter',
        id: input.encounterId,
        versionId: input.versionId ?? '1',
        lastUpdated,
      },
      { resourceType: 'Patient', id: input.patientId, versionId: '1', lastUpdated },
    ],
  };
  const hash = contentHash(content);
  return { ...content, contentHash: hash, submissionId: submissionId(content.visitKey, hash) };
}

/** A valid retraction of a visit. */
export function makeRetraction(input: VisitInput & { reason?: Retraction['reason'] }): Retraction {
  const centreId = input.centreId ?? 'test-centre';
  const content = {
    schema: 'lhn-bridge/registry-submission/v1' as const,
    kind: 'retraction' as const,
    centreId,
    patientKey: pseudonymKey(SECRET, centreId, 'Patient', input.patientId),
    visitKey: pseudonymKey(SECRET, centreId, 'Encounter', input.encounterId),
    reason: input.reason ?? 'entered-in-error',
    provenance: [
      {
        resourceType: 'Encounter',
        id: input.encounterId,
        versionId: input.versionId ?? '2',
      },
    ],
  };
  const hash = contentHash(content);
  return { ...content, contentHash: hash, submissionId: submissionId(content.visitKey, hash) };
}

/** Polls `check` until it returns true or the time runs out. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
  what = 'condition',
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * `queue` and `redis` wrapped so that every HSET fails once the queue's addBulk was called
 * (Redis out of memory, a cut connection, the process killed right after addBulk).
 */
export function failingAfterAddBulk<Q extends object>(
  queue: Q,
  redis: Redis,
): { queue: Q; redis: Redis } {
  let added = false;
  const watched = new Proxy(queue, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (prop === 'addBulk')
        return (...args: unknown[]) => {
          added = true;
          return (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        };
      return typeof value === 'function' ? (value as () => unknown).bind(target) : value;
    },
  });
  const failing = new Proxy(redis, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (prop === 'hset')
        return (...args: unknown[]) =>
          added
            ? Promise.reject(new Error('OOM command not allowed (simulated)'))
            : (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
      return typeof value === 'function' ? (value as () => unknown).bind(target) : value;
    },
  });
  return { queue: watched, redis: failing };
}
