// Run records and quality reports, kept in Redis beside the queues. Every sync run leaves a
// record (what it did, what went wrong) that the API and dashboard read; the per-centre
// quality report is what a data manager needs to extend a centre's value sets. Records are
// small JSON documents indexed by start time; old ones are trimmed per centre, never the
// latest success.
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';

export type SyncMode = 'full' | 'incremental';
export type SyncReason = 'schedule' | 'manual' | 'retry';
export type RunStatus = 'queued' | 'running' | 'succeeded' | 'failed';

/**
 * Attempts of one sync job (queues/sync.ts): a failed run is retried until it has had this
 * many, each attempt with a run record of its own (the failing alert counts the job once).
 */
export const SYNC_ATTEMPTS = 3;

/** What a run did, by stage. */
export interface RunCounts {
  /** FHIR resources received from the EHR. */
  pulled: number;
  /** Resources handed to the mapper. */
  mapped: number;
  /** Visits (and retractions) the mapper assembled. */
  visits: number;
  /** New submission versions added to the submissions queue (visits and retractions). */
  enqueued: number;
  /** Visits whose content had not changed since they were last enqueued. */
  unchanged: number;
  /** Retractions enqueued (also counted in `enqueued`). */
  retracted: number;
}

/** One sync run of one centre. */
export interface RunRecord {
  runId: string;
  centreId: string;
  mode: SyncMode;
  reason: SyncReason;
  status: RunStatus;
  /** ISO time the run was queued or started. */
  startedAt: string;
  /** ISO time the run ended (succeeded or failed). */
  endedAt?: string;
  counts: RunCounts;
  /** Data-quality findings of the visits assembled in this run, by kind. */
  findingsByKind: Record<string, number>;
  /** What went wrong, by step (`cohort`, `pull`, `map`, `enqueue`, ...); no PHI. */
  errors: { step: string; message: string }[];
  /**
   * What the run worked around without failing (e.g. a configured resource type the EHR does
   * not serve, skipped); no PHI.
   */
  warnings?: { step: string; message: string }[];
  /** The BullMQ job that carries (or carried) this run. */
  jobId?: string;
  /** Current phase while running (`cohort`, `pull`, `map`, `enqueue`, `retract`, `done`). */
  phase?: string;
}

/** An unmapped local code seen in a centre's data. */
export interface UnmappedCode {
  /** Registry field concerned, e.g. `pga`, `steroidUse`, `diagnosis`. */
  field: string;
  /** `system|code` (or the finding's message when the source had text only). */
  code: string;
  count: number;
  /** One resource where it was seen, as `Type/id`, for the data manager to look up. */
  exampleResource?: string;
}

/** Counts of one finding kind for one field, with an example resource. */
export interface FindingSummary {
  field: string;
  count: number;
  exampleResource?: string;
}

/** Data quality of everything the registry currently holds from a centre. */
export interface QualityReport {
  centreId: string;
  /** The run that last refreshed the report. */
  runId: string;
  generatedAt: string;
  /** Visits currently submitted (not retracted) that the report covers. */
  visits: number;
  unmappedCodes: UnmappedCode[];
  visitsWithoutPga: { count: number; exampleResources: string[] };
  implausibleValues: FindingSummary[];
  /** Every finding kind with its count, across the visits covered. */
  findingsByKind: Record<string, number>;
}

export interface StartRunInput {
  /** Defaults to a new UUID. */
  runId?: string;
  centreId: string;
  mode: SyncMode;
  reason: SyncReason;
  /** `queued` when recorded at trigger time, `running` when a worker starts it. */
  status?: 'queued' | 'running';
  jobId?: string;
}

/** A warning of a run: what it worked around, by step; no PHI. */
export interface RunWarning {
  step: string;
  message: string;
}

/** Most warnings one run record keeps (the first ones; later distinct ones are dropped). */
export const MAX_RUN_WARNINGS = 100;

/** `existing` with the warnings of `added` it does not hold yet, by (step, message). */
export function mergeWarnings(
  existing: readonly RunWarning[] | undefined,
  added: readonly RunWarning[],
): RunWarning[] {
  const out = [...(existing ?? [])];
  const seen = new Set(out.map((w) => `${w.step}\u0000${w.message}`));
  for (const w of added) {
    const key = `${w.step}\u0000${w.message}`;
    if (seen.has(key) || out.length >= MAX_RUN_WARNINGS) continue;
    seen.add(key);
    out.push({ step: w.step, message: w.message });
  }
  return out;
}

/** A change to a run record; warnings change only through addWarnings, which appends. */
export type RunPatch = Partial<
  Pick<RunRecord, 'status' | 'mode' | 'counts' | 'findingsByKind' | 'errors' | 'phase' | 'jobId'>
>;

export interface FinishRunInput {
  status: 'succeeded' | 'failed';
  counts?: RunCounts;
  findingsByKind?: Record<string, number>;
  errors?: { step: string; message: string }[];
}

export interface ListRunsOptions {
  centreId?: string;
  /** Most recent first; default 50, at most 1000. */
  limit?: number;
}

/** Reads and writes run records and quality reports. */
export interface RunStore {
  /** Records a new run (queued or running) and returns it. */
  start(input: StartRunInput): Promise<RunRecord>;
  /**
   * Merges a patch into a run; undefined when the run is unknown (trimmed, or Redis lost it:
   * a record deleted meanwhile is not written back).
   */
  update(runId: string, patch: RunPatch): Promise<RunRecord | undefined>;
  /**
   * Appends warnings to a run, skipping any whose (step, message) it already holds (a run
   * handed back and run again under the same id keeps its earlier warnings); at most
   * MAX_RUN_WARNINGS are kept. Undefined when the run is unknown.
   */
  addWarnings(runId: string, warnings: RunWarning[]): Promise<RunRecord | undefined>;
  /**
   * Ends a run with its outcome; a success becomes the centre's `latestSuccess`. Undefined
   * when the run is unknown (as for update).
   */
  finish(runId: string, outcome: FinishRunInput): Promise<RunRecord | undefined>;
  get(runId: string): Promise<RunRecord | undefined>;
  /** Runs, most recently started first, for one centre or all. */
  list(options?: ListRunsOptions): Promise<RunRecord[]>;
  latest(centreId: string): Promise<RunRecord | undefined>;
  latestSuccess(centreId: string): Promise<RunRecord | undefined>;
  saveQualityReport(report: QualityReport): Promise<void>;
  getQualityReport(centreId: string): Promise<QualityReport | undefined>;
}

export interface RunStoreOptions {
  /** Runs kept per centre (older ones are deleted, never the latest success). Default 500. */
  keepPerCentre?: number;
}

/**
 * Redis key of a run record. A run's own record is the sign that Redis still holds the state
 * the run started with: nothing but the run creates it, and updates never re-create it
 * (`SET XX`), so a Redis restarted empty or a wiped prefix shows as a missing record.
 */
export const runRecordKey = (prefix: string, runId: string): string => `${prefix}:runs:r:${runId}`;

// Ends a run: overwrites its record only if it still exists (KEYS[1]) and, for a success
// (ARGV[2] non-empty), points the centre's latest success (KEYS[2]) at it. 1 if written.
const FINISH_SCRIPT = `
if not redis.call('SET', KEYS[1], ARGV[1], 'XX') then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) end
return 1`;

/** Counts of a run that has done nothing yet. */
export function emptyCounts(): RunCounts {
  return { pulled: 0, mapped: 0, visits: 0, enqueued: 0, unchanged: 0, retracted: 0 };
}

/**
 * Creates a run store on a Redis connection. Keys live under `${prefix}:runs:` and
 * `${prefix}:quality:` (a hash-tagged prefix such as `{lhn}` keeps them in one Cluster slot).
 */
export function createRunStore(
  redis: Redis,
  prefix: string,
  options: RunStoreOptions = {},
): RunStore {
  const keepPerCentre = options.keepPerCentre ?? 500;
  const runKey = (runId: string) => runRecordKey(prefix, runId);
  const allKey = `${prefix}:runs:all`;
  const centreKey = (centreId: string) => `${prefix}:runs:c:${centreId}`;
  const successKey = (centreId: string) => `${prefix}:runs:ok:${centreId}`;
  const qualityKey = (centreId: string) => `${prefix}:quality:${centreId}`;

  async function get(runId: string): Promise<RunRecord | undefined> {
    const text = await redis.get(runKey(runId));
    return text ? (JSON.parse(text) as RunRecord) : undefined;
  }

  async function getMany(ids: string[]): Promise<RunRecord[]> {
    if (ids.length === 0) return [];
    const texts = await redis.mget(ids.map(runKey));
    return texts.filter((t): t is string => t !== null).map((t) => JSON.parse(t) as RunRecord);
  }

  async function trim(centreId: string): Promise<void> {
    const excess = await redis.zrevrange(centreKey(centreId), keepPerCentre, -1);
    if (excess.length === 0) return;
    const keep = await redis.get(successKey(centreId));
    const drop = excess.filter((id) => id !== keep);
    if (drop.length === 0) return;
    await redis
      .multi()
      .del(...drop.map(runKey))
      .zrem(centreKey(centreId), ...drop)
      .zrem(allKey, ...drop)
      .exec();
  }

  /**
   * Overwrites an existing record only (SET XX): false when it is gone. A read-modify-write
   * whose record was deleted in between (Redis restarted empty, keys wiped) must not bring it
   * back, or a run would not notice that Redis lost its state.
   */
  async function write(record: RunRecord): Promise<boolean> {
    return (await redis.set(runKey(record.runId), JSON.stringify(record), 'XX')) === 'OK';
  }

  // Read-modify-writes of one run, one at a time in this process: a progress update read
  // before a warning was added would otherwise write the record back without it.
  const chains = new Map<string, Promise<unknown>>();
  function serial<T>(runId: string, fn: () => Promise<T>): Promise<T> {
    const before = chains.get(runId) ?? Promise.resolve();
    const run = before.then(fn, fn);
    const tail = run.catch(() => undefined);
    chains.set(runId, tail);
    void tail.then(() => {
      if (chains.get(runId) === tail) chains.delete(runId);
    });
    return run;
  }

  return {
    async start(input) {
      const now = new Date();
      const record: RunRecord = {
        runId: input.runId ?? randomUUID(),
        centreId: input.centreId,
        mode: input.mode,
        reason: input.reason,
        status: input.status ?? 'running',
        startedAt: now.toISOString(),
        counts: emptyCounts(),
        findingsByKind: {},
        errors: [],
        ...(input.jobId ? { jobId: input.jobId } : {}),
      };
      const score = now.getTime();
      await redis
        .multi()
        .set(runKey(record.runId), JSON.stringify(record))
        .zadd(centreKey(record.centreId), score, record.runId)
        .zadd(allKey, score, record.runId)
        .exec();
      await trim(record.centreId);
      return record;
    },

    update: (runId, patch) =>
      serial(runId, async () => {
        const record = await get(runId);
        if (!record) return undefined;
        const next: RunRecord = { ...record, ...patch };
        // A run that is queued and then picked up by a worker starts when it starts running.
        if (record.status === 'queued' && patch.status === 'running')
          next.startedAt = new Date().toISOString();
        return (await write(next)) ? next : undefined;
      }),

    addWarnings: (runId, added) =>
      serial(runId, async () => {
        const record = await get(runId);
        if (!record) return undefined;
        const merged = mergeWarnings(record.warnings, added);
        if (merged.length === (record.warnings?.length ?? 0)) return record;
        const next: RunRecord = { ...record, warnings: merged };
        return (await write(next)) ? next : undefined;
      }),

    finish: (runId, outcome) =>
      serial(runId, async () => {
        const record = await get(runId);
        if (!record) return undefined;
        const next: RunRecord = {
          ...record,
          status: outcome.status,
          endedAt: new Date().toISOString(),
          counts: outcome.counts ?? record.counts,
          findingsByKind: outcome.findingsByKind ?? record.findingsByKind,
          errors: outcome.errors ?? record.errors,
          phase: 'done',
        };
        // One step: the record (only if it still exists) and, for a success, the pointer.
        const done = await redis.eval(
          FINISH_SCRIPT,
          2,
          runKey(runId),
          successKey(record.centreId),
          JSON.stringify(next),
          outcome.status === 'succeeded' ? runId : '',
        );
        return done === 1 ? next : undefined;
      }),

    get,

    async list(options = {}) {
      const limit = Math.min(Math.max(options.limit ?? 50, 1), 1000);
      const key = options.centreId ? centreKey(options.centreId) : allKey;
      const ids = await redis.zrevrange(key, 0, limit - 1);
      return getMany(ids);
    },

    async latest(centreId) {
      const [id] = await redis.zrevrange(centreKey(centreId), 0, 0);
      return id ? get(id) : undefined;
    },

    async latestSuccess(centreId) {
      const id = await redis.get(successKey(centreId));
      return id ? get(id) : undefined;
    },

    async saveQualityReport(report) {
      await redis.set(qualityKey(report.centreId), JSON.stringify(report));
    },

    async getQualityReport(centreId) {
      const text = await redis.get(qualityKey(centreId));
      return text ? (JSON.parse(text) as QualityReport) : undefined;
    },
  };
}
