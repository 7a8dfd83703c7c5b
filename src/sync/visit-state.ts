// What the bridge has already sent for each visit of a centre, and how far each resource
// type has been pulled. This is what makes a sync idempotent: a visit whose content hash is
// unchanged is not enqueued again; a changed one is; a retraction is sent only for a visit
// that was sent before. Watermarks move only after everything up to them is enqueued.
// Everything lives in Redis hashes under `${prefix}:state:${centreId}:`.
import type { Redis } from 'ioredis';
import type { PendingExport, PendingExportStore } from '../fhir/pull-bulk.js';
import { cohortMembersKey } from './cohort-members.js';
import { ensureIncarnation, secretFingerprintKey } from './secret-fingerprint.js';

// Writes the watermarks (KEYS[1], ARGV[2..] field/value pairs) only while the run's record
// (KEYS[2]) exists and the secret fingerprint (KEYS[3]) is ARGV[1]. 1 if written, 0 if not.
const GUARDED_WATERMARKS_SCRIPT = `
if redis.call('EXISTS', KEYS[2]) == 0 or redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1`;

/** The last version of a visit that was enqueued. */
export interface VisitStateEntry {
  /** Content hash of the last enqueued version. */
  h: string;
  /** When it was enqueued (ms since epoch, the enqueuing process's clock). */
  t: number;
  /** Its enqueue sequence number (see SubmissionJobData.seq); absent in older entries. */
  n?: number;
  /** 1 when the last enqueued version is a retraction. */
  r?: 1;
  /**
   * 1 while the version is written ahead of its addBulk and not yet confirmed (its job may not
   * exist: the next run checks and enqueues it again if not). The supersede check counts it
   * as enqueued, so an older version is never delivered after it.
   */
  w?: 1;
  /**
   * 1 on a pending (`w`) entry when the visit's previous version was sent (enqueued and not
   * retracted): the registry has the visit even if this version's job never reached the
   * queue, so a retraction is due if it disappears. A pending entry without it whose job does
   * not exist never reached the registry, and no retraction is built from it.
   */
  c?: 1;
  /** Its job id, when not the submission id (a reverted version's fresh job). */
  j?: string;
  /** Source Patient id (to build a retraction later); stays in Redis, never logged. */
  p?: string;
  /** Source Encounter id. */
  e?: string;
  /** The Encounter's meta.lastUpdated when enqueued (deletion detection in full syncs). */
  u?: string;
  /**
   * The visit date (YYYY-MM-DD): deletion detection falls back on it when the EHR sends no
   * meta.lastUpdated.
   */
  d?: string;
  /**
   * `Type/id` of the visit's other sources (Observation, MedicationStatement/Request,
   * Medication, Condition): an export's deleted entry for one of them re-pulls the patient.
   */
  s?: string[];
  /** The visit's quality findings, compact: [kind, field, code, resource] (none: absent). */
  q?: [kind: string, field: string, code: string, resource: string][];
}

/** Per-centre sync state: visit versions (with their quality findings) and watermarks. */
export interface VisitState {
  readonly centreId: string;
  /** Entries for these visit keys (undefined where none). */
  getMany(visitKeys: string[]): Promise<(VisitStateEntry | undefined)[]>;
  setMany(entries: [visitKey: string, entry: VisitStateEntry][]): Promise<void>;
  /** Iterates all entries in chunks (HSCAN), for deletion detection. */
  scan(chunk?: number): AsyncIterable<[string, VisitStateEntry][]>;
  /** Number of visits with state. */
  size(): Promise<number>;
  getWatermarks(): Promise<Record<string, string>>;
  /**
   * Sets watermarks (resource type -> ISO instant); call only after the enqueue is done. Only
   * while `guard.runKey` (the run's record) exists and the secret fingerprint is
   * `guard.fingerprint`: both vanish when Redis restarts empty or the prefix is wiped, and the
   * check is in the same script as the write. False when not written.
   */
  setWatermarks(
    marks: Record<string, string>,
    guard: { runKey: string; fingerprint: string },
  ): Promise<boolean>;
  /** Deletes all state of the centre (tests, or a deliberate full resend). */
  clear(): Promise<void>;
  /**
   * Reserves `count` enqueue sequence numbers (one Redis counter per centre, never reset,
   * not even by clear()) and returns the first.
   */
  reserveSequence(count: number): Promise<number>;
  /**
   * This Redis's incarnation id (src/sync/secret-fingerprint.ts ensureIncarnation), created
   * when absent: a new one after the Redis lost its state, when the sequence restarts. Read
   * after reserveSequence, so a sequence number never goes with the incarnation before it.
   */
  incarnation(): Promise<string>;
  /** The bulk export a run kicked off and has not finished with (resumed after a crash). */
  readonly pendingExport: PendingExportStore;
}

/** Redis key of a centre's visit-state hash. */
export function visitStateKey(prefix: string, centreId: string): string {
  return `${prefix}:state:${centreId}:visits`;
}

/**
 * True when a submission job is no longer the newest version of its visit: a newer version
 * (or a retraction) was enqueued after this job was created. Delivering it would put older
 * content on top of newer, so the delivery worker skips it.
 */
export function isSuperseded(
  entry: VisitStateEntry | undefined,
  contentHash: string,
  jobCreatedAt: number,
  jobSeq?: number,
): boolean {
  if (entry === undefined || entry.h === contentHash) return false;
  // Enqueue sequence numbers come from one Redis counter: no clock skew between the machines
  // that enqueued the two versions can reorder them. Entries and jobs from before they
  // existed fall back to the enqueue times.
  if (entry.n !== undefined && jobSeq !== undefined) return entry.n > jobSeq;
  return entry.t > jobCreatedAt;
}

// Deletes the kept export only if it is still the one at ARGV[1] (an unreadable one too).
const CLEAR_EXPORT_SCRIPT = `local v = redis.call('get', KEYS[1])
if not v then return 0 end
local ok, p = pcall(cjson.decode, v)
if ok and type(p) == 'table' and p.statusUrl ~= ARGV[1] then return 0 end
return redis.call('del', KEYS[1])`;

function parseEntry(text: string | null | undefined): VisitStateEntry | undefined {
  if (!text) return undefined;
  try {
    return JSON.parse(text) as VisitStateEntry;
  } catch {
    return undefined;
  }
}

function parsePendingExport(text: string): PendingExport | null {
  try {
    const v = JSON.parse(text) as Partial<PendingExport> | null;
    if (
      typeof v?.request === 'string' &&
      typeof v.statusUrl === 'string' &&
      typeof v.startedAt === 'number' &&
      (v.bound === null || typeof v.bound === 'string')
    )
      return { request: v.request, bound: v.bound, statusUrl: v.statusUrl, startedAt: v.startedAt };
  } catch {
    // unreadable: as if none
  }
  return null;
}

/** Opens the sync state of one centre. */
export function openVisitState(redis: Redis, prefix: string, centreId: string): VisitState {
  const visitsKey = visitStateKey(prefix, centreId);
  const marksKey = `${prefix}:state:${centreId}:watermarks`;
  const seqKey = `${prefix}:state:${centreId}:seq`;
  const exportKey = `${prefix}:state:${centreId}:export`;

  async function* scanHash(key: string, chunk: number): AsyncIterable<[string, string][]> {
    let cursor = '0';
    do {
      const [next, flat] = await redis.hscan(key, cursor, 'COUNT', chunk);
      cursor = next;
      const pairs: [string, string][] = [];
      for (let i = 0; i + 1 < flat.length; i += 2) pairs.push([flat[i]!, flat[i + 1]!]);
      if (pairs.length > 0) yield pairs;
    } while (cursor !== '0');
  }

  return {
    centreId,
    async getMany(visitKeys) {
      if (visitKeys.length === 0) return [];
      const texts = await redis.hmget(visitsKey, ...visitKeys);
      return texts.map(parseEntry);
    },
    async setMany(entries) {
      if (entries.length === 0) return;
      const flat: string[] = [];
      for (const [k, v] of entries) flat.push(k, JSON.stringify(v));
      await redis.hset(visitsKey, ...flat);
    },
    async *scan(chunk = 1000) {
      for await (const pairs of scanHash(visitsKey, chunk)) {
        const out: [string, VisitStateEntry][] = [];
        for (const [k, v] of pairs) {
          const entry = parseEntry(v);
          if (entry) out.push([k, entry]);
        }
        yield out;
      }
    },
    size: () => redis.hlen(visitsKey),
    async getWatermarks() {
      return redis.hgetall(marksKey);
    },
    async setWatermarks(marks, guard) {
      const written = await redis.eval(
        GUARDED_WATERMARKS_SCRIPT,
        3,
        marksKey,
        guard.runKey,
        secretFingerprintKey(prefix),
        guard.fingerprint,
        ...Object.entries(marks).flat(),
      );
      return written === 1;
    },
    async clear() {
      await redis.del(visitsKey, marksKey, exportKey, cohortMembersKey(prefix, centreId));
    },
    async reserveSequence(count) {
      return (await redis.incrby(seqKey, count)) - count + 1;
    },
    incarnation: () => ensureIncarnation(redis, prefix),
    pendingExport: {
      async load() {
        const text = await redis.get(exportKey);
        return text ? parsePendingExport(text) : null;
      },
      async save(pending, ttlMs) {
        await redis.set(exportKey, JSON.stringify(pending), 'PX', Math.max(1, Math.ceil(ttlMs)));
      },
      async clear(statusUrl) {
        await redis.eval(CLEAR_EXPORT_SCRIPT, 1, exportKey, statusUrl);
      },
    },
  };
}
