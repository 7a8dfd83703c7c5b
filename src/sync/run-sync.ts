// One sync run of one centre: cohort -> pull -> map -> enqueue, streamed patient by patient
// so memory stays bounded whatever the centre's size.
//
// Full sync: every cohort patient's Encounters and Observations updated within the lookback
// window, and their Patient, Conditions and medications whatever their age. Afterwards,
// a visit sent earlier whose Encounter (last seen inside the window) no longer produced a
// visit for a patient that was synced is retracted as `deleted`.
// Incremental sync: resources changed since the watermark tell which patients are affected;
// those patients are pulled again in full (within the lookback), because a visit is
// assembled from many resources and one changed observation changes one visit. Content
// hashes then drop every visit that did not change. Bulk `deleted` Encounters are retracted.
//
// Watermarks (per resource type) are the EHR's clock at the start of the run (HTTP Date of
// the server, or the bulk transactionTime) minus a small overlap; they are written only after
// everything pulled has been enqueued, and not at all if anything failed, so a crash or an
// error re-runs from the previous watermark and loses nothing.
import { randomUUID } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { CentreConfig } from '../config/centre.js';
import type { FhirClient } from '../fhir/client.js';
import {
  EVENT_RESOURCE_TYPES,
  pullSearch,
  resolveCohort,
  type PatientPullFailure,
} from '../fhir/pull-search.js';
import { summariseIssues } from '../fhir/errors.js';
import { pullBulk, VISIT_CORE_TYPES } from '../fhir/pull-bulk.js';
import type { FhirResource } from '../fhir/types.js';
import type { Mapper } from '../mapping/assemble.js';
import { buildRetraction } from '../registry/retraction.js';
import { pseudonymKey, submissionId } from '../registry/keys.js';
import type { RegistrySubmission } from '../registry/submission.js';
import type { Metrics } from '../util/metrics.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { WORKER_SHUTDOWN_REASON } from '../util/abort.js';
import type { SubmissionJobData } from '../../queues/submissions.js';
import { createSubmissionEnqueuer } from './enqueue.js';
import { buildQualityReport } from './quality.js';
import {
  emptyCounts,
  runRecordKey,
  type RunCounts,
  type RunRecord,
  type RunStore,
  type SyncMode,
  type SyncReason,
} from './run-store.js';
import { openVisitState, type VisitStateEntry } from './visit-state.js';
import { createPatientSpool, patientOf } from './bulk-spool.js';
import { openCohortMembers } from './cohort-members.js';
import { CentreLockLostError } from './centre-lock.js';
import { recordWithheldData } from './search-notices.js';
import { ensureSecretFingerprint, secretFingerprint } from './secret-fingerprint.js';

/** Watermarks are moved back by this much, to cover EHR commit lag and clock granularity. */
export const DEFAULT_OVERLAP_MS = 2 * 60_000;
const DAY_MS = 86_400_000;
/** Watermarks entry: when the last successful full sync ended (this machine's clock). */
const LAST_FULL_MARK = '$lastFull';

/** What a sync run needs. */
export interface SyncDeps {
  redis: Redis;
  prefix: string;
  submissionsQueue: Queue<SubmissionJobData>;
  runStore: RunStore;
  pseudonymSecret: string;
  /** The centre's FHIR client (auth and limiter wired in). */
  fhirClient: FhirClient;
  /** The centre's mapper (pack + overrides). */
  mapper: Mapper;
  metrics?: Metrics;
  logger?: Logger;
}

/** Progress reported while a run works (also `job.updateProgress`). */
export interface SyncProgress {
  phase: string;
  pulled: number;
  visits: number;
  enqueued: number;
}

export interface SyncCentreOptions {
  centre: CentreConfig;
  mode: SyncMode;
  reason: SyncReason;
  /** Defaults to a new UUID; a queued run record with this id is picked up. */
  runId?: string;
  jobId?: string;
  /** Aborting stops the run at the next step; what was mapped is still enqueued. */
  signal?: AbortSignal;
  onProgress?: (progress: SyncProgress) => void | Promise<void>;
  /** Submissions per addBulk (default 500). */
  enqueueBatchSize?: number;
  /** Patients pulled at once in search mode (default 4). */
  patientConcurrency?: number;
  /** Default DEFAULT_OVERLAP_MS. */
  overlapMs?: number;
  /** Filled in with where the time went (benchmarks). */
  timings?: SyncTimings;
}

/** Wall time spent in each stage of a run, in ms (stages overlap with pulling). */
export interface SyncTimings {
  /** Mapping (assembling visits). */
  mapMs: number;
  /** Enqueueing: state lookups, addBulk, state writes. */
  enqueueMs: number;
}

const INTERRUPT_CAUSES = {
  shutdown: 'worker shutting down',
  'redis-connection': 'the Redis connection dropped under a command',
  'lock-lost':
    "the centre lock's lease lapsed: Redis was unreachable or the worker stalled for longer than the lease",
} as const;

/**
 * True for an abort that hands the run over to the next one rather than ends it: the worker
 * shutting down, or the centre lock lost (another run may hold the centre now). A bulk export
 * in progress is then left running for the next run to resume.
 */
export function isHandOverAbort(reason: unknown): boolean {
  return reason instanceof CentreLockLostError || reason === WORKER_SHUTDOWN_REASON;
}

/**
 * A run stopped before its end for a reason outside it: its signal (worker shutdown) or a
 * Redis connection that dropped under a command in flight. The job should be handed back to
 * run again under the same run id, not failed.
 */
export class SyncInterruptedError extends Error {
  constructor(
    readonly runId: string,
    readonly reason: 'shutdown' | 'redis-connection' | 'lock-lost' = 'shutdown',
  ) {
    super(
      `the sync was interrupted (${INTERRUPT_CAUSES[reason]}); it will run again from its watermarks`,
    );
    this.name = 'SyncInterruptedError';
  }
}

/**
 * True for the error ioredis gives a pipeline or transaction whose reply was cut off when
 * the connection closed (it cannot resend those safely): the command may or may not have
 * run, so the step is redone rather than the run failed.
 */
export function isRedisConnectionAbort(err: unknown): boolean {
  return (
    err instanceof Error &&
    err.name === 'AbortError' &&
    /aborted due to connection close/i.test(err.message)
  );
}

/** A run that finished with errors; the record says which. */
export class SyncFailedError extends Error {
  constructor(readonly record: RunRecord) {
    super(
      `sync of ${record.centreId} failed: ${record.errors.map((e) => `${e.step}: ${e.message}`).join('; ')}`,
    );
    this.name = 'SyncFailedError';
  }
}

/** What a run whose state Redis lost while it ran is told (run record error, log, CLI). */
export const REDIS_STATE_LOST_MESSAGE =
  "Redis lost this run's state while it ran (its run record is gone: Redis restarted without persistence, failed over to an empty replica, or its keys were deleted); no watermark was written, so the next sync starts from the previous watermarks, and is a full sync that sends every visit again if Redis lost those too";

/**
 * Redis lost the run's state mid-run (its run record vanished, or the secret fingerprint):
 * the run fails, and its watermarks are not written. The attached record is built in memory
 * (Redis no longer holds it).
 */
export class RedisStateLostError extends SyncFailedError {
  constructor(record: RunRecord) {
    super(record);
    this.name = 'RedisStateLostError';
    this.message = `sync of ${record.centreId} failed: ${REDIS_STATE_LOST_MESSAGE}`;
  }
}

/** Thrown inside a run when it finds its run record gone; becomes a RedisStateLostError. */
class StateLostSignal extends Error {
  constructor() {
    super(REDIS_STATE_LOST_MESSAGE);
    this.name = 'StateLostSignal';
  }
}

/** Shortens an error message for the run record (messages from our layers carry no PHI). */
function describeError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.length > 500 ? `${message.slice(0, 500)}...` : message;
}

/**
 * Distinct errors of a run with how often each happened (a bad page can repeat 10,000 times).
 * An error `about` patients concerns only them (a refused pull, a mapping failure): the run
 * fails, but deletion detection and the watermarks go on for the others, since those patients
 * are pulled in full by the next sync (cohort-members.ts).
 */
function createErrorList(maxDistinct = 20) {
  type Entry = { step: string; message: string; count?: number; patients: boolean };
  const seen = new Map<string, Entry & { count: number }>();
  /** Errors kept up to date under a name (one summary that grows during the run). */
  const named = new Map<string, Entry>();
  let dropped = 0;
  let droppedOthers = 0;
  return {
    /** Sets (or replaces) the error kept under `name`. */
    put(name: string, error: { step: string; message: string }, about?: 'patients'): void {
      named.set(name, { ...error, patients: about === 'patients' });
    },
    add(error: { step: string; message: string }, about?: 'patients'): void {
      const key = `${error.step}\u0000${error.message}`;
      const entry = seen.get(key);
      if (entry) entry.count += 1;
      else if (seen.size < maxDistinct)
        seen.set(key, { ...error, count: 1, patients: about === 'patients' });
      else {
        dropped += 1;
        if (about !== 'patients') droppedOthers += 1;
      }
    },
    size: () => seen.size + named.size + dropped,
    /** Errors that are not about some patients only. */
    othersThanPatients(): number {
      let n = droppedOthers;
      for (const e of seen.values()) if (!e.patients) n += 1;
      for (const e of named.values()) if (!e.patients) n += 1;
      return n;
    },
    list(): { step: string; message: string }[] {
      const out = [...named.values(), ...seen.values()].map((e) => ({
        step: e.step,
        message: (e.count ?? 1) > 1 ? `${e.message} (${e.count} times)` : e.message,
      }));
      if (dropped > 0) out.push({ step: 'run', message: `${dropped} more errors not listed` });
      return out;
    },
  };
}

/** The smallest watermark across the types, or undefined if any type has none. */
export function incrementalSince(
  marks: Record<string, string>,
  types: readonly string[],
): string | undefined {
  let min: number | undefined;
  for (const type of types) {
    const mark = marks[type];
    const t = mark ? Date.parse(mark) : NaN;
    if (!Number.isFinite(t)) return undefined;
    min = min === undefined ? t : Math.min(min, t);
  }
  return min === undefined ? undefined : new Date(min).toISOString();
}

/**
 * The EHR's clock, from the Date header of its CapabilityStatement answer, and the resource
 * types that CapabilityStatement lists (undefined when it lists none or cannot be read: then
 * nothing is judged from it).
 */
async function fetchServerInfo(
  client: FhirClient,
  signal: AbortSignal | undefined,
): Promise<{ time: number | undefined; resourceTypes: ReadonlySet<string> | undefined }> {
  const res = await client.request(client.resolveUrl('metadata'), {
    resourceType: 'metadata',
    ...(signal ? { signal } : {}),
  });
  const date = Date.parse(res.headers.get('date') ?? '');
  let resourceTypes: ReadonlySet<string> | undefined;
  try {
    resourceTypes = listedResourceTypes(JSON.parse(await res.text()));
  } catch {
    // not JSON, or the body broke off: judge nothing from it
  }
  return { time: Number.isFinite(date) ? date : undefined, resourceTypes };
}

/**
 * The resource types a CapabilityStatement lists in its server `rest` entries; undefined
 * unless it clearly lists some (a statement without rest.resource says nothing about types).
 */
export function listedResourceTypes(statement: unknown): ReadonlySet<string> | undefined {
  const cs = statement as { resourceType?: unknown; rest?: unknown } | null;
  if (cs?.resourceType !== 'CapabilityStatement' || !Array.isArray(cs.rest)) return undefined;
  const types = new Set<string>();
  for (const rest of cs.rest as { mode?: unknown; resource?: unknown }[]) {
    if (rest?.mode !== undefined && rest.mode !== 'server') continue;
    if (!Array.isArray(rest.resource)) continue;
    for (const r of rest.resource as { type?: unknown }[])
      if (typeof r?.type === 'string') types.add(r.type);
  }
  return types.size > 0 ? types : undefined;
}

/** Patients listed by name (cohort position, pseudonymous key) in the failure summary. */
const LISTED_PATIENT_FAILURES = 5;

/**
 * The run-record error for cohort patients whose searches the EHR refused: how many, and the
 * first few by cohort position (1-based) and pseudonymous patient key, with the status, the
 * searched type and the coded issues. Never a source id or a query value.
 */
export function describePatientFailures(
  failures: readonly {
    index: number;
    total: number;
    key: string;
    error: PatientPullFailure['error'];
  }[],
): string {
  const total = Math.max(...failures.map((f) => f.total));
  const listed = failures.slice(0, LISTED_PATIENT_FAILURES).map(({ index, key, error }) => {
    let type = '';
    try {
      type = new URL(error.url).pathname.split('/').filter(Boolean).pop() ?? '';
    } catch {
      // keep no type
    }
    const issues = summariseIssues(error.issues);
    return (
      `#${index + 1} (patient key ${key}): HTTP ${error.status}` +
      (/^[A-Z][A-Za-z]+$/.test(type) ? ` on the ${type} search` : '') +
      (issues ? ` (OperationOutcome: ${issues})` : '')
    );
  });
  const more = failures.length - listed.length;
  return (
    `${failures.length} of ${total} patients could not be read and were left out of this run ` +
    `(their visits are neither updated nor retracted; the next sync pulls them in full again): ` +
    listed.join('; ') +
    (more > 0 ? `; and ${more} more` : '') +
    (failures.some((f) => f.error.status === 403)
      ? '. A 403 for some patients only usually means restricted records (Epic 4118): ask ' +
        "centre IT to give the background user access to these patients' records, or take them " +
        'out of the cohort'
      : '') +
    // The first refusal's hint (e.g. a 400 that asks for pull.searches).
    (failures[0]!.error.hint ? `. ${failures[0]!.error.hint}` : '')
  );
}

/**
 * Runs one sync of a centre and returns its finished run record. Throws SyncFailedError
 * (record attached) when the run failed, SyncInterruptedError when its signal stopped it.
 */
export async function syncCentre(deps: SyncDeps, options: SyncCentreOptions): Promise<RunRecord> {
  const { centre } = options;
  const runId = options.runId ?? randomUUID();
  const log = (deps.logger ?? silentLogger).child({ runId, centreId: centre.id });
  const client = deps.fhirClient;
  const signal = options.signal;
  const overlapMs = options.overlapMs ?? DEFAULT_OVERLAP_MS;
  const timings = options.timings;
  const counts: RunCounts = emptyCounts();
  const findingsByKind: Record<string, number> = {};
  const errors = createErrorList();
  const state = openVisitState(deps.redis, deps.prefix, centre.id);
  let phase = 'start';
  const startedAt = new Date().toISOString();

  const existing = await deps.runStore.update(runId, {
    status: 'running',
    phase,
    ...(options.jobId ? { jobId: options.jobId } : {}),
  });
  if (!existing)
    await deps.runStore.start({
      runId,
      centreId: centre.id,
      mode: options.mode,
      reason: options.reason,
      status: 'running',
      ...(options.jobId ? { jobId: options.jobId } : {}),
    });

  let lastProgress = 0;
  const progress = async (force = false): Promise<void> => {
    const now = Date.now();
    if (!force && now - lastProgress < 1000) return;
    lastProgress = now;
    const p: SyncProgress = {
      phase,
      pulled: counts.pulled,
      visits: counts.visits,
      enqueued: counts.enqueued,
    };
    await options.onProgress?.(p);
    // The record gone mid-run: Redis lost its state (restarted empty, keys wiped). Stop here
    // rather than pull everything for nothing; the watermarks stay as they were.
    if (!(await deps.runStore.update(runId, { phase, counts: { ...counts } })))
      throw new StateLostSignal();
  };
  const setPhase = async (next: string) => {
    phase = next;
    await progress(true);
  };

  // A centre's first sync has no visit state: skip the per-batch lookups.
  const stateEmpty = (await state.size()) === 0;
  const enqueuer = createSubmissionEnqueuer({
    stateEmpty,
    queue: deps.submissionsQueue,
    redis: deps.redis,
    state,
    centreId: centre.id,
    pseudonymSecret: deps.pseudonymSecret,
    runId,
    ...(options.enqueueBatchSize ? { batchSize: options.enqueueBatchSize } : {}),
    onBatch: ({ enqueuedVisits, enqueuedRetractions }) => {
      deps.metrics?.submissionsEnqueued.inc({ centre: centre.id, kind: 'visit' }, enqueuedVisits);
      if (enqueuedRetractions > 0)
        deps.metrics?.submissionsEnqueued.inc(
          { centre: centre.id, kind: 'retraction' },
          enqueuedRetractions,
        );
    },
  });
  const syncEnqueueCounts = () => {
    counts.enqueued = enqueuer.counts.enqueued;
    counts.unchanged = enqueuer.counts.unchanged;
    counts.retracted = enqueuer.counts.retracted;
  };

  /**
   * Visit keys produced in this run, and patients whose data was pulled in full (deletion
   * detection retracts their visits that are gone; not a patient whose searches said the EHR
   * left data out).
   */
  const seen = new Set<string>();
  const synced = new Set<string>();
  /**
   * Patients pulled in full (withheld data or not), and patients whose pull or mapping
   * failed: recorded in the cohort members set at the end, so the next incremental sync pulls
   * in full the failed ones and the members it has never pulled (cohort-members.ts).
   */
  const pulledInFull = new Set<string>();
  const redo = new Set<string>();
  const members = openCohortMembers(deps.redis, deps.prefix, centre.id);
  const patientKeyOf = (patientId: string): string =>
    pseudonymKey(deps.pseudonymSecret, centre.id, 'Patient', patientId);
  /** Patients whose searches carried a warning that the EHR left data out. */
  let withheldPatients = 0;
  /** Resources of other patients that patient-scoped searches returned (left out). */
  let otherPatientResources = 0;
  const onOtherPatients = (resources: number): void => {
    otherPatientResources += resources;
  };
  /** Some patient's pull went through (changes or in full). */
  let pulledAny = false;
  const onPulledInFull = (p: { patientId: string; withheld: boolean }): void => {
    pulledAny = true;
    pulledInFull.add(p.patientId);
    if (!p.withheld) synced.add(p.patientId);
    else withheldPatients += 1;
  };
  const recordMembers = async (replace: boolean): Promise<void> => {
    await members.record([...pulledInFull].map(patientKeyOf), [...redo].map(patientKeyOf), replace);
  };
  /** Patients whose searches the EHR refused (source ids stay in memory, never recorded). */
  const failedPatients = new Map<
    string,
    { index: number; total: number; key: string; error: PatientPullFailure['error'] }
  >();
  const onPatientError = (failure: PatientPullFailure): void => {
    synced.delete(failure.patientId);
    redo.add(failure.patientId);
    if (!failedPatients.has(failure.patientId))
      failedPatients.set(failure.patientId, {
        index: failure.index,
        total: failure.total,
        key: pseudonymKey(deps.pseudonymSecret, centre.id, 'Patient', failure.patientId),
        error: failure.error,
      });
    errors.put(
      'patients',
      { step: 'pull', message: describePatientFailures([...failedPatients.values()]) },
      'patients',
    );
  };

  const countPulled = (resources: readonly FhirResource[]) => {
    counts.pulled += resources.length;
    if (!deps.metrics) return;
    const byType = new Map<string, number>();
    for (const r of resources) byType.set(r.resourceType, (byType.get(r.resourceType) ?? 0) + 1);
    for (const [type, n] of byType)
      deps.metrics.resourcesPulled.inc({ centre: centre.id, resource_type: type }, n);
  };

  /** Maps one patient's resources and enqueues the result. */
  const mapPatient = async (
    patientId: string,
    resources: readonly FhirResource[],
  ): Promise<void> => {
    let submissions: RegistrySubmission[];
    const started = performance.now();
    try {
      const assembler = deps.mapper.createAssembler();
      for (const r of resources) assembler.add(r);
      const result = assembler.finish();
      submissions = result.submissions;
      for (const f of result.findings) findingsByKind[f.kind] = (findingsByKind[f.kind] ?? 0) + 1;
    } catch (err) {
      // One patient's data that cannot be mapped must not hide everyone else's: record it,
      // keep going, and fail the run at the end; the next sync pulls the patient in full again.
      errors.add({ step: 'map', message: describeError(err) }, 'patients');
      redo.add(patientId);
      return;
    }
    counts.mapped += resources.length;
    const mapped = performance.now();
    if (timings) timings.mapMs += mapped - started;
    // The source ids behind each visit key, for a later retraction (never sent anywhere).
    const encounters = new Map<string, { id: string; lastUpdated?: string }>();
    if (submissions.length > 0)
      for (const r of resources)
        if (r.resourceType === 'Encounter' && r.id)
          encounters.set(pseudonymKey(deps.pseudonymSecret, centre.id, 'Encounter', r.id), {
            id: r.id,
            ...(r.meta?.lastUpdated ? { lastUpdated: r.meta.lastUpdated } : {}),
          });
    for (const s of submissions) {
      counts.visits += 1;
      seen.add(s.visitKey);
      const encounter = encounters.get(s.visitKey);
      await enqueuer.add(s, {
        patientId,
        ...(encounter ? { encounterId: encounter.id } : {}),
        ...(encounter?.lastUpdated ? { encounterLastUpdated: encounter.lastUpdated } : {}),
      });
    }
    if (timings) timings.enqueueMs += performance.now() - mapped;
    syncEnqueueCounts();
    await progress();
  };

  /**
   * True for a visit the registry never got: its entry is written ahead (pending) over no sent
   * version, and its job does not exist (the run died before addBulk). No retraction for it.
   */
  const neverQueued = async (visitKey: string, e: VisitStateEntry): Promise<boolean> =>
    e.w === 1 &&
    e.c !== 1 &&
    (await deps.redis.exists(deps.submissionsQueue.toKey(e.j ?? submissionId(visitKey, e.h)))) ===
      0;

  const retractMissing = async (lookbackStart: number): Promise<void> => {
    for await (const chunk of state.scan()) {
      for (const [visitKey, e] of chunk) {
        signal?.throwIfAborted();
        if (e.r || !e.p || !e.e || seen.has(visitKey) || !synced.has(e.p)) continue;
        // Only a visit the pull would have returned had it still existed: its Encounter was
        // updated inside the lookback; without meta.lastUpdated, its date is (a day of margin
        // for the centre's zone), as an Encounter is not last updated before its visit.
        const inWindow = e.u
          ? Date.parse(e.u) >= lookbackStart
          : e.d !== undefined && Date.parse(e.d) - DAY_MS >= lookbackStart;
        if (!inWindow || (await neverQueued(visitKey, e))) continue;
        await enqueuer.add(
          buildRetraction({
            centreId: centre.id,
            pseudonymSecret: deps.pseudonymSecret,
            patientId: e.p,
            encounterId: e.e,
            reason: 'deleted',
            provenance: [{ resourceType: 'Encounter', id: e.e }],
          }),
          { patientId: e.p, encounterId: e.e, encounterLastUpdated: e.u },
        );
      }
    }
  };

  /**
   * Of these cohort patients, the ones no sync has pulled in full (new in the cohort), or
   * whose last pull or mapping failed: an incremental sync pulls them in full.
   */
  const notPulledBefore = async (patientIds: readonly string[]): Promise<string[]> => {
    if (patientIds.length === 0) return [];
    // A centre synced before the set existed: filled once from the visit state.
    if (!stateEmpty) {
      const seeded = await members.seedFrom(state, patientKeyOf);
      if (seeded > 0)
        log.info({ patients: seeded }, 'cohort members set filled from the visit state');
    }
    const keys = patientIds.map(patientKeyOf);
    const missing = new Set(await members.missing(keys));
    const out = patientIds.filter((_, i) => missing.has(keys[i]!));
    if (out.length > 0)
      log.info(
        { patients: out.length },
        'cohort patients not pulled in full before (new in the cohort, or their last pull failed): pulling them in full',
      );
    return out;
  };
  let membersRecorded = false;

  let mode = options.mode;
  const withheld = recordWithheldData(client, deps.runStore, runId, log);
  try {
    // A secret other than the one this Redis's visit state was made with would re-key every
    // visit and drop every change: refuse before anything is pulled.
    await ensureSecretFingerprint(deps.redis, deps.prefix, deps.pseudonymSecret);
    // The CapabilityStatement gives the EHR's clock (for the watermark) and the types it
    // serves: a configured type it does not list (Epic R4 has no MedicationStatement) is
    // skipped with a warning instead of failing every run. Never a type every visit is built
    // from (Patient, Encounter, Observation: a statement that leaves one out is partial, and
    // skipping it would retract or empty every visit), nor one pulled before (it has a
    // watermark: an EHR that stopped serving it must fail the run, not re-version every visit
    // without it). Those are pulled anyway, and the run fails if the EHR refuses them.
    await setPhase('server-time');
    const serverInfo = await fetchServerInfo(client, signal);
    const listed = serverInfo.resourceTypes;
    const marks = await state.getWatermarks();
    const unlisted = listed ? centre.pull.resourceTypes.filter((t) => !listed.has(t)) : [];
    const skippedTypes = unlisted.filter((t) => !VISIT_CORE_TYPES.has(t) && marks[t] === undefined);
    const pulledAnyway = unlisted.filter((t) => !skippedTypes.includes(t));
    const types = centre.pull.resourceTypes.filter((t) => !skippedTypes.includes(t));
    if (skippedTypes.length > 0) {
      const message =
        `the EHR's CapabilityStatement does not list ${skippedTypes.join(', ')}: skipped ` +
        '(remove it from pull.resourceTypes in the centre file to silence this' +
        (skippedTypes.includes('MedicationStatement')
          ? '; on Epic, MedicationRequest carries the medication data'
          : '') +
        ')';
      log.warn({ skippedTypes }, message);
      await deps.runStore.addWarnings(runId, [{ step: 'server-time', message }]);
    }
    if (pulledAnyway.length > 0) {
      const message =
        `the EHR's CapabilityStatement does not list ${pulledAnyway.join(', ')}: pulled anyway ` +
        '(every visit is built from Patient, Encounter and Observation, and a type pulled before is not dropped silently); the run fails if the EHR refuses it';
      log.warn({ pulledAnyway }, message);
      await deps.runStore.addWarnings(runId, [{ step: 'server-time', message }]);
    }
    if (types.length === 0)
      throw new Error(
        `the EHR's CapabilityStatement lists none of pull.resourceTypes (${centre.pull.resourceTypes.join(', ')}); check fhir.baseUrl`,
      );
    // What the pull reads: the configured types the EHR serves.
    const pullCentre: CentreConfig =
      skippedTypes.length > 0
        ? { ...centre, pull: { ...centre.pull, resourceTypes: types } }
        : centre;
    const since = incrementalSince(marks, types);
    if (mode === 'incremental' && !since) {
      mode = 'full';
      log.info('no watermark for every resource type yet; running a full sync');
      await deps.runStore.update(runId, { mode });
    }
    const fullEvery = centre.schedule.fullEveryDays;
    // A last full sync in the future (written by a clock that ran ahead) tells nothing: it
    // counts as due, rather than turning fullEveryDays (and deletion detection) off until
    // real time catches up.
    const lastFull = Date.parse(marks[LAST_FULL_MARK] ?? '');
    const lastFullKnown = lastFull <= Date.now() + overlapMs ? lastFull : Number.NaN;
    if (
      mode === 'incremental' &&
      fullEvery !== undefined &&
      !(Date.now() - lastFullKnown < fullEvery * DAY_MS)
    ) {
      mode = 'full';
      log.info(
        { fullEveryDays: fullEvery, lastFull: marks[LAST_FULL_MARK] ?? null },
        'the last full sync is older than schedule.fullEveryDays; running a full sync',
      );
      await deps.runStore.update(runId, { mode });
    }

    // The watermark's clock: the earlier of the EHR's Date and this machine's, so neither
    // clock running ahead (a proxy in front of the EHR, a forward jump) moves the watermark
    // past changes the EHR has yet to stamp.
    const localNow = Date.now();
    let serverTime = serverInfo.time ?? localNow;
    if (serverInfo.time === undefined)
      log.warn('the EHR sent no Date header; using this machine clock for the watermark');
    else if (Math.abs(serverInfo.time - localNow) > overlapMs) {
      const skewS = Math.round((serverInfo.time - localNow) / 1000);
      const message = `the EHR's clock (Date header) and this machine's differ by ${skewS} s, more than the watermark overlap of ${Math.round(overlapMs / 1000)} s; the watermark uses the earlier one (check NTP on both)`;
      log.warn({ skewSeconds: skewS }, message);
      await deps.runStore.addWarnings(runId, [{ step: 'server-time', message }]);
    }
    serverTime = Math.min(serverTime, localNow);
    const lookbackStart = serverTime - centre.pull.firstSyncLookbackDays * DAY_MS;
    const lookbackIso = new Date(lookbackStart).toISOString();
    const sinceWithOverlap = since;

    if (centre.pull.mode === 'search') {
      const concurrency = options.patientConcurrency ?? 4;
      let patientIds: string[] | undefined;
      let cohort: readonly string[] = [];
      if (mode === 'incremental') {
        await setPhase('changes');
        const affected = new Set<string>();
        for await (const batch of pullSearch({
          client,
          centre: pullCentre,
          since: sinceWithOverlap!,
          concurrency,
          logger: log,
          ...(signal ? { signal } : {}),
          onCohort: (c) => (cohort = c.patientIds),
          onPatient: () => (pulledAny = true),
          onPatientError,
          onOtherPatients,
        })) {
          countPulled(batch.resources);
          affected.add(batch.patientId);
        }
        log.info({ patients: affected.size }, 'patients with changes');
        for (const id of await notPulledBefore(cohort)) affected.add(id);
        patientIds = [...affected];
      }
      await setPhase('pull');
      if (!patientIds || patientIds.length > 0) {
        for await (const batch of pullSearch({
          client,
          centre: pullCentre,
          lookback: lookbackIso,
          concurrency,
          logger: log,
          ...(patientIds ? { patientIds } : {}),
          ...(signal ? { signal } : {}),
          onPatient: onPulledInFull,
          onPatientError,
          onOtherPatients,
        })) {
          countPulled(batch.resources);
          await mapPatient(batch.patientId, batch.resources);
        }
      }
    } else {
      await setPhase('export');
      const spool = await createPatientSpool(
        types.includes('Medication')
          ? {
              readMedication: async (id) => {
                const medication = await client.read('Medication', id, signal ? { signal } : {});
                if (!medication)
                  log.warn({ medicationId: id }, 'referenced Medication not found on the EHR');
                return medication;
              },
            }
          : {},
      );
      const deletedEncounters: string[] = [];
      /** `Type/id` of deleted resources other than Encounters (incremental exports). */
      const deletedSources = new Set<string>();
      const changed = new Set<string>();
      /** Resources the export held per patient (incremental: for the cohort warning). */
      const exportedOf = new Map<string, number>();
      /**
       * Errors that show the export's data files are incomplete (a file cut short, a line
       * that is not a resource): which patients they hit is unknown. An error OperationOutcome
       * of the error file is not counted: it fails the run (nothing retracted), but it names
       * what the EHR could not export (a restricted chart, often for good), and holding back
       * every patient's visits for it would stop the centre on every run.
       */
      let exportErrors = 0;
      let rosterIds: readonly string[] | undefined;
      try {
        for await (const item of pullBulk({
          client,
          centre: pullCentre,
          // A full export has no _since (patients, diagnoses and medication lists are needed
          // whatever their age); the event types are bounded to the lookback window.
          ...(mode === 'incremental'
            ? { since: sinceWithOverlap! }
            : {
                updatedSince: { since: lookbackIso, types: [...EVENT_RESOURCE_TYPES] },
              }),
          logger: log,
          onCohort: (ids) => (rosterIds = ids),
          pending: state.pendingExport,
          // Shutdown or lock lost: the run is handed over, and the next one resumes the export.
          keepExportOnAbort: isHandOverAbort,
          ...(signal ? { signal } : {}),
          onWarning: async (message) => {
            log.warn(message);
            await deps.runStore.addWarnings(runId, [{ step: 'export', message }]);
          },
          onManifest: (m) => {
            // transactionTime is the export's point in time; some servers (HAPI before
            // hapi-fhir#6841) give the job's end instead. The kick-off bounds it: a resumed
            // job's is the crashed run's, before this run's clock (changes made in between
            // are not in its files).
            const t = Date.parse(m.transactionTime);
            if (Number.isFinite(t)) serverTime = Math.min(t, localNow, m.kickedOffAt ?? localNow);
          },
        })) {
          if (item.kind === 'resource') {
            counts.pulled += 1;
            deps.metrics?.resourcesPulled.inc({
              centre: centre.id,
              resource_type: item.resource.resourceType,
            });
            const patientId = patientOf(item.resource);
            // Incremental: the export only says which patients changed (pulled again below).
            if (mode === 'incremental') {
              if (patientId) {
                changed.add(patientId);
                exportedOf.set(patientId, (exportedOf.get(patientId) ?? 0) + 1);
              }
            } else await spool.add(patientId, item.resource);
          } else if (item.kind === 'deleted') {
            if (item.resourceType === 'Encounter') deletedEncounters.push(item.id);
            else deletedSources.add(`${item.resourceType}/${item.id}`);
          } else if (item.kind === 'notice') {
            // Information or a warning from the EHR about the export (e.g. a parameter it
            // ignored): told, but not a failure of the run.
            log.warn({ notice: item.message }, 'the EHR noted something about the export');
          } else {
            if (item.source !== 'error-file') exportErrors += 1;
            errors.add({ step: 'pull', message: item.message });
          }
          if (counts.pulled % 5000 === 0) await progress();
        }
        // The Group the export was asked for, read back to check what came: a server that
        // ignores the Group (or mis-resolves it) exports patients outside the cohort, and
        // only the Group's members may reach the registry. A roster is applied by pullBulk.
        let cohortIds = rosterIds;
        let groupMembers: ReadonlySet<string> | undefined;
        let groupUnread: string | undefined;
        const readGroup = async (): Promise<void> => {
          if (cohortIds || !('group' in pullCentre.cohort)) return;
          try {
            cohortIds = (
              await resolveCohort(client, pullCentre, {
                logger: log,
                ...(signal ? { signal } : {}),
              })
            ).patientIds;
            groupMembers = new Set(cohortIds);
          } catch (err) {
            if (signal?.aborted || isRedisConnectionAbort(err)) throw err;
            groupUnread = describeError(err);
          }
        };
        const outside = { patients: 0, resources: 0 };
        const isOutside = (patientId: string, resources: number): boolean => {
          if (!groupMembers || groupMembers.has(patientId)) return false;
          // Counted when the export held their data (not a patient named by a deletion only).
          if (resources > 0) {
            outside.patients += 1;
            outside.resources += resources;
          }
          return true;
        };
        if (exportErrors > 0) {
          // The data files are known to be incomplete (see the errors): visits built from them would
          // replace complete ones in the registry with values missing (PGA, vitals), and its
          // deletions may be partial. Nothing is mapped, enqueued or retracted from it; the
          // run fails with the errors above, its watermarks stay, and the next run exports
          // again.
          log.warn(
            { errors: exportErrors },
            'the export is incomplete: nothing from it is mapped, enqueued or retracted',
          );
          deletedEncounters.length = 0;
        } else if (mode === 'full') {
          await readGroup();
          if (groupUnread !== undefined) {
            // An EHR that exports the Group but will not let it be read does not fail the run
            // (the export was asked for the Group); the run says the check was not made.
            const message = `the cohort Group could not be read to check the export against it (${groupUnread}): every patient the export held was mapped`;
            log.warn(message);
            await deps.runStore.addWarnings(runId, [{ step: 'export', message }]);
          }
          await setPhase('map');
          for await (const patient of spool.patients()) {
            // A shutdown stops the map at the next patient (the job is handed back).
            signal?.throwIfAborted();
            if (isOutside(patient.patientId, patient.resources.length)) continue;
            onPulledInFull({ patientId: patient.patientId, withheld: false });
            await mapPatient(patient.patientId, patient.resources);
          }
        } else {
          // Incremental bulk: the export says which patients changed; pull each of them
          // again in full by search (within the lookback) to re-assemble their visits. A
          // deleted Observation, medication or Condition names no patient: the patients whose
          // sent visits used it (or have a finding about it) are pulled again too.
          if (deletedSources.size > 0)
            for await (const chunk of state.scan())
              for (const [, e] of chunk) {
                if (e.r || !e.p || changed.has(e.p)) continue;
                if (
                  e.s?.some((key) => deletedSources.has(key)) ||
                  e.q?.some((f) => deletedSources.has(f[3]))
                )
                  changed.add(e.p);
              }
          // Cohort members never pulled (joined the Group or roster since; Bulk Data lets a
          // `_since` export leave their older data out) or whose last pull failed. The roster
          // was resolved by the export; a Group is read here (and checks the export).
          await readGroup();
          if (groupUnread !== undefined) {
            // The export itself worked: an EHR that exports the Group but will not let it
            // be read (or reads it empty) does not fail the run; new members wait for the
            // next full sync, and the run says so.
            const message = `the cohort Group could not be read to find members not pulled before (${groupUnread}); patients added to it since the last full sync are pulled by the next full sync`;
            log.warn(message);
            await deps.runStore.addWarnings(runId, [{ step: 'export', message }]);
          }
          // Changed patients who are not members of the Group are not pulled again.
          for (const id of changed) if (isOutside(id, exportedOf.get(id) ?? 0)) changed.delete(id);
          for (const id of await notPulledBefore(cohortIds ?? [])) changed.add(id);
          const affected = [...changed];
          await setPhase('pull');
          if (affected.length > 0)
            for await (const batch of pullSearch({
              client,
              centre: pullCentre,
              lookback: lookbackIso,
              patientIds: affected,
              concurrency: options.patientConcurrency ?? 4,
              logger: log,
              ...(signal ? { signal } : {}),
              onPatient: onPulledInFull,
              onPatientError,
              onOtherPatients,
            })) {
              countPulled(batch.resources);
              await mapPatient(batch.patientId, batch.resources);
            }
        }
        if (outside.patients > 0) {
          const message = `the EHR's export of the cohort Group held ${outside.patients} patient(s) who are not members of the Group (${outside.resources} resource(s); it may ignore the Group and export every patient): they were left out, so nothing of theirs reached the registry; ask centre IT whether the Group export is scoped to the Group`;
          log.warn(outside, message);
          await deps.runStore.addWarnings(runId, [{ step: 'export', message }]);
        }
      } finally {
        await spool.close();
      }
      if (deletedEncounters.length > 0) {
        await setPhase('retract');
        const keys = deletedEncounters.map((id) =>
          pseudonymKey(deps.pseudonymSecret, centre.id, 'Encounter', id),
        );
        const entries = await state.getMany(keys);
        for (const [i, e] of entries.entries()) {
          if (!e || e.r || !e.p || (await neverQueued(keys[i]!, e))) continue;
          await enqueuer.add(
            buildRetraction({
              centreId: centre.id,
              pseudonymSecret: deps.pseudonymSecret,
              patientId: e.p,
              encounterId: deletedEncounters[i]!,
              reason: 'deleted',
              provenance: [{ resourceType: 'Encounter', id: deletedEncounters[i]! }],
            }),
          );
        }
      }
    }

    if (otherPatientResources > 0) {
      const message = `the EHR returned ${otherPatientResources} resource(s) of other patients to searches for one patient (it may ignore the patient search parameter): they were left out, so no visit was built from another patient's data; the pull was that much larger, so ask centre IT whether the FHIR server supports the patient parameter`;
      log.warn({ resources: otherPatientResources }, message);
      await deps.runStore.addWarnings(runId, [{ step: 'pull', message }]);
    }
    if (withheldPatients > 0) {
      const message = `the EHR said it left data out of the searches of ${withheldPatients} patient(s) (see the warning above): their visits were updated, but none of them was retracted for being missing`;
      log.warn({ patients: withheldPatients }, message);
      await deps.runStore.addWarnings(runId, [{ step: 'retract', message }]);
    }
    // Errors about some patients only (a refused pull, a mapping failure) leave deletion
    // detection and the watermarks to go on for the others: those patients are not in
    // `synced`, and are pulled in full by the next sync (the cohort members set). Not when
    // every patient failed: that is no progress to mark.
    const othersFine = errors.othersThanPatients() === 0 && (pulledAny || redo.size === 0);
    if (othersFine) {
      await setPhase('retract');
      await retractMissing(lookbackStart);
    }
    await setPhase('enqueue');
    const flushStart = performance.now();
    await enqueuer.flush();
    if (timings) timings.enqueueMs += performance.now() - flushStart;
    syncEnqueueCounts();
    // A full pull that went through is the whole cohort: the set is replaced (a patient who
    // left it is pulled in full should they come back).
    await recordMembers(mode === 'full' && othersFine);
    membersRecorded = true;

    if (othersFine) {
      const mark = new Date(serverTime - overlapMs).toISOString();
      const marks: Record<string, string> = {
        ...Object.fromEntries(types.map((t) => [t, mark])),
        ...(mode === 'full' ? { [LAST_FULL_MARK]: new Date().toISOString() } : {}),
      };
      // Not over a Redis that lost the run's state meanwhile: the visit state and the queued
      // submissions before the loss are gone, and watermarks (and $lastFull) written now would
      // let the next incremental sync skip the visits lost with them.
      const written = await state.setWatermarks(marks, {
        runKey: runRecordKey(deps.prefix, runId),
        fingerprint: secretFingerprint(deps.pseudonymSecret),
      });
      if (!written) throw new StateLostSignal();
    }
    await setPhase('quality');
    await deps.runStore.saveQualityReport(await buildQualityReport(state, runId));
  } catch (err) {
    // Whatever was mapped is correct data: enqueue it before giving up (watermarks stay).
    try {
      await enqueuer.flush();
      syncEnqueueCounts();
      if (!membersRecorded) await recordMembers(false);
    } catch (flushErr) {
      errors.add({ step: 'enqueue', message: describeError(flushErr) });
    }
    const redisDropped = !signal?.aborted && isRedisConnectionAbort(err);
    if (signal?.aborted || redisDropped) {
      const reason = redisDropped
        ? 'redis-connection'
        : signal?.reason instanceof CentreLockLostError
          ? 'lock-lost'
          : 'shutdown';
      const interrupted = new SyncInterruptedError(runId, reason);
      await withheld.stop();
      if (reason === 'lock-lost')
        await deps.runStore.addWarnings(runId, [{ step: phase, message: interrupted.message }]);
      await deps.runStore.update(runId, {
        status: 'queued',
        phase: 'interrupted',
        counts: { ...counts },
        findingsByKind,
      });
      log.info({ counts, reason }, 'sync interrupted; it will run again from its watermarks');
      throw interrupted;
    }
    if (err instanceof StateLostSignal)
      errors.put('redis-state', { step: 'redis', message: REDIS_STATE_LOST_MESSAGE });
    else errors.add({ step: phase, message: describeError(err) });
  }

  await withheld.stop();
  let status: 'succeeded' | 'failed' = errors.size() === 0 ? 'succeeded' : 'failed';
  const finished = await deps.runStore.finish(runId, {
    status,
    counts: { ...counts },
    findingsByKind,
    errors: errors.list(),
  });
  if (!finished) {
    // The record is gone: Redis lost the run's state (restarted empty, keys wiped) after the
    // watermarks were guarded, or before anything noticed. The run fails with a record built
    // here; its errors name steps and counts only (no PHI).
    status = 'failed';
    errors.put('redis-state', { step: 'redis', message: REDIS_STATE_LOST_MESSAGE });
    const record: RunRecord = {
      runId,
      centreId: centre.id,
      mode,
      reason: options.reason,
      status,
      startedAt,
      endedAt: new Date().toISOString(),
      counts: { ...counts },
      findingsByKind,
      errors: errors.list(),
      phase: 'done',
      ...(options.jobId ? { jobId: options.jobId } : {}),
    };
    deps.metrics?.syncRuns.inc({ centre: centre.id, outcome: status });
    log.error({ mode, counts, phase, errors: record.errors }, REDIS_STATE_LOST_MESSAGE);
    throw new RedisStateLostError(record);
  }
  const record = finished;
  deps.metrics?.syncRuns.inc({ centre: centre.id, outcome: status });
  await options.onProgress?.({
    phase: 'done',
    pulled: counts.pulled,
    visits: counts.visits,
    enqueued: counts.enqueued,
  });
  log.info({ status, mode, counts, errors: errors.size() }, 'sync finished');
  if (status === 'failed') throw new SyncFailedError(record);
  return record;
}
