// Enqueues submissions idempotently, in batches: a visit whose content hash equals the last
// enqueued version is skipped (`unchanged`), a changed visit is added as a new job whose id
// is its submission id, and a retraction is added only for a visit that was sent (and not
// already retracted). The visit state is written ahead of addBulk, marked pending (`w`), and
// confirmed after it: a delivery of an older version sees the newer sequence number from the
// moment the newer job can exist, whatever fails in between; a pending entry whose job is
// missing (the run died before or in addBulk) is enqueued again by the next run.
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { SubmissionJobData } from '../../queues/submissions.js';
import type { RegistrySubmission } from '../registry/submission.js';
import { pseudonymKey } from '../registry/keys.js';
import type { VisitState, VisitStateEntry } from './visit-state.js';
import { compactFindings } from './quality.js';

export interface EnqueueCounts {
  /** Jobs added (visits and retractions). */
  enqueued: number;
  /** Visits whose content had not changed since last enqueued. */
  unchanged: number;
  /** Retractions added. */
  retracted: number;
  /** Retractions not sent: the visit was never sent, or is already retracted. */
  retractionsSkipped: number;
  /** Earlier versions enqueued again because the source content reverted to them. */
  reverted: number;
  /**
   * Visits mapped a second time in this run from an older version of their Encounter (one
   * export holding two versions, under two patients: a chart correction made while it ran),
   * not sent: the newer version stands.
   */
  olderVersionsSkipped: number;
}

/** The visit's Encounter version in its provenance: lastUpdated, then versionId. */
function encounterVersionOf(submission: RegistrySubmission): { at: number; version: number } {
  const ref = submission.provenance.find((r) => r.resourceType === 'Encounter');
  const at = ref?.lastUpdated ? Date.parse(ref.lastUpdated) : NaN;
  const version = ref?.versionId !== undefined ? Number(ref.versionId) : NaN;
  return { at: Number.isNaN(at) ? -Infinity : at, version: Number.isNaN(version) ? -1 : version };
}

/** True when `a` is an older Encounter version than `b` (equal or unknown is not older). */
function olderThan(a: { at: number; version: number }, b: { at: number; version: number }) {
  return a.at !== b.at ? a.at < b.at : a.version < b.version;
}

export interface SubmissionEnqueuerOptions {
  queue: Queue<SubmissionJobData>;
  /** The connection the queue uses (to look up existing job ids). */
  redis: Redis;
  state: VisitState;
  centreId: string;
  pseudonymSecret: string;
  runId: string;
  /** Submissions per addBulk; default 500. */
  batchSize?: number;
  /**
   * The centre has no visit state yet (its first sync, checked under the centre lock): every
   * visit is new, so the per-batch state lookup is skipped. Retractions are never sent then.
   */
  stateEmpty?: boolean;
  /** Called after each batch is enqueued (for metrics and progress). */
  onBatch?: (batch: { enqueuedVisits: number; enqueuedRetractions: number }) => void;
}

/** The source ids behind a submission, remembered to build its retraction later. */
export interface SubmissionSource {
  patientId?: string;
  encounterId?: string;
  encounterLastUpdated?: string;
}

/** Adds submissions in batches; `flush()` at the end of a run waits until all is written. */
export interface SubmissionEnqueuer {
  /** `source` defaults to what the provenance tells (raw Patient/Encounter ids). */
  add(submission: RegistrySubmission, source?: SubmissionSource): Promise<void>;
  flush(): Promise<void>;
  readonly counts: Readonly<EnqueueCounts>;
}

/**
 * Finds the source ids behind a submission's keys in its provenance. A visit's provenance
 * normally holds one Encounter (the visit) and one Patient, taken as they are; when there
 * are several, the one whose pseudonymous key matches is chosen (an HMAC per candidate).
 */
/** `Type/id` of a visit's sources other than its Encounter and Patient (VisitStateEntry.s). */
function otherSourceKeys(submission: RegistrySubmission): string[] {
  const keys: string[] = [];
  for (const r of submission.provenance)
    if (r.resourceType !== 'Encounter' && r.resourceType !== 'Patient')
      keys.push(`${r.resourceType}/${r.id}`);
  return keys;
}

function sourceIds(
  submission: RegistrySubmission,
  secret: string,
  centreId: string,
): SubmissionSource {
  const encounters = submission.provenance.filter((r) => r.resourceType === 'Encounter');
  const patients = submission.provenance.filter((r) => r.resourceType === 'Patient');
  const encounter =
    encounters.length === 1
      ? encounters[0]
      : encounters.find(
          (r) => pseudonymKey(secret, centreId, 'Encounter', r.id) === submission.visitKey,
        );
  const patient =
    patients.length === 1
      ? patients[0]
      : patients.find(
          (r) => pseudonymKey(secret, centreId, 'Patient', r.id) === submission.patientKey,
        );
  return {
    ...(patient ? { patientId: patient.id } : {}),
    ...(encounter ? { encounterId: encounter.id } : {}),
    ...(encounter?.lastUpdated ? { encounterLastUpdated: encounter.lastUpdated } : {}),
  };
}

/**
 * Job id of a version enqueued again (its content reverted to an earlier version whose job
 * still exists): unique by the enqueue sequence number; the submission is the earlier
 * version's, the Idempotency-Key is this job's (src/registry/delivery.ts
 * deliveryIdempotencyKey), so a registry that replays repeated keys applies the revert.
 */
export function revertJobId(submissionId: string, seq: number): string {
  return `${submissionId}-r${seq}`;
}

/**
 * The entry as written ahead of addBulk: marked pending, and not yet a retraction (so a run
 * that dies before confirming it still finds the visit sent, and retracts it again).
 */
function pendingEntry(entry: VisitStateEntry, previous?: VisitStateEntry): VisitStateEntry {
  const ahead: VisitStateEntry = { ...entry, w: 1 };
  delete ahead.r;
  delete ahead.c;
  // The registry has the visit already when the previous version was sent (confirmed, or
  // itself pending over a sent one).
  if (previous && !previous.r && (!previous.w || previous.c === 1)) ahead.c = 1;
  return ahead;
}

/** A pending entry confirmed: its job exists. */
function confirmedEntry(entry: VisitStateEntry, retraction: boolean): VisitStateEntry {
  const done: VisitStateEntry = { ...entry };
  delete done.w;
  delete done.c;
  if (retraction) done.r = 1;
  return done;
}

/** Creates a batching, idempotent enqueuer for one centre's run. */
export function createSubmissionEnqueuer(options: SubmissionEnqueuerOptions): SubmissionEnqueuer {
  const { queue, state, centreId, pseudonymSecret, runId } = options;
  const batchSize = options.batchSize ?? 500;
  const counts: EnqueueCounts = {
    enqueued: 0,
    unchanged: 0,
    retracted: 0,
    retractionsSkipped: 0,
    reverted: 0,
    olderVersionsSkipped: 0,
  };
  let buffer: RegistrySubmission[] = [];
  /**
   * Visit keys of the visits added in this run, with their Encounter's version: the same visit
   * from two patients' batches (the Encounter moved between them while the export ran) is
   * sent once, from the newer version, whichever comes first.
   */
  const mappedVisits = new Map<string, { at: number; version: number }>();
  let sources = new Map<string, SubmissionSource>();
  // State writes still in flight. They need not finish before the next batch: its lookups go
  // over the same connection after them, and Redis runs one connection's commands in order.
  // At most two are in flight; flush() waits for all.
  const pendingWrites: Promise<void>[] = [];

  async function settleWrites(keep: number): Promise<void> {
    while (pendingWrites.length > keep) await pendingWrites.shift();
  }

  async function enqueueBatch(
    batch: RegistrySubmission[],
    given: Map<string, SubmissionSource>,
  ): Promise<void> {
    await settleWrites(1);
    // The same visit twice in one batch: the last one wins, but a retraction never replaces
    // a visit mapped in this run (see add()).
    const byVisit = new Map<string, RegistrySubmission>();
    for (const s of batch) {
      if (s.kind === 'retraction' && byVisit.get(s.visitKey)?.kind === 'visit') continue;
      byVisit.set(s.visitKey, s);
    }
    const subs = [...byVisit.values()];
    const entries = options.stateEmpty
      ? subs.map(() => undefined)
      : await state.getMany(subs.map((s) => s.visitKey));
    const toAdd: RegistrySubmission[] = [];
    const previous: (VisitStateEntry | undefined)[] = [];
    // Written ahead for this very version by a run that failed before confirming it: enqueued
    // only if its job does not exist.
    const pending: [RegistrySubmission, VisitStateEntry][] = [];
    subs.forEach((s, i) => {
      const entry = entries[i];
      if (entry?.w && entry.h === s.contentHash) pending.push([s, entry]);
      else if (s.kind === 'visit') {
        if (entry && !entry.r && entry.h === s.contentHash) counts.unchanged += 1;
        else {
          toAdd.push(s);
          previous.push(entry);
        }
      } else if (!entry || entry.r) counts.retractionsSkipped += 1;
      else {
        toAdd.push(s);
        previous.push(entry);
      }
    });
    if (pending.length > 0) {
      const pipeline = options.redis.pipeline();
      for (const [s, e] of pending) pipeline.exists(queue.toKey(e.j ?? s.submissionId));
      const results = (await pipeline.exec()) ?? [];
      const confirmed: [string, VisitStateEntry][] = [];
      pending.forEach(([s, e], i) => {
        if (results[i]?.[1] === 1) {
          confirmed.push([s.visitKey, confirmedEntry(e, s.kind === 'retraction')]);
          counts.unchanged += 1;
        } else {
          toAdd.push(s);
          previous.push(e);
        }
      });
      await state.setMany(confirmed);
    }
    if (toAdd.length === 0) return;

    // A job with this id may already exist when a visit's content reverts to an earlier
    // version (or after a crash between addBulk and the state write). addBulk ignores
    // existing ids, so find them first: such a version gets a fresh job (id
    // `<submissionId>-r<seq>`, same submission, its own Idempotency-Key), whatever the old job's
    // state. Reviving the old job instead loses the visit when it is active and has just
    // decided it is superseded (or leaves it failed while the state names it current).
    const maybeExisting = toAdd.filter((_, i) => previous[i] !== undefined);
    let existing = new Set<string>();
    if (maybeExisting.length > 0) {
      const pipeline = options.redis.pipeline();
      for (const s of maybeExisting) pipeline.exists(queue.toKey(s.submissionId));
      const results = (await pipeline.exec()) ?? [];
      existing = new Set(
        maybeExisting.filter((_, i) => results[i]?.[1] === 1).map((s) => s.submissionId),
      );
    }

    const firstSeq = await state.reserveSequence(toAdd.length);
    // Read for each batch, after the sequence: a Redis that lost its state in between has a
    // new incarnation, so these jobs' Idempotency-Keys cannot repeat one sent before the loss.
    const incarnation = await state.incarnation();
    const jobIds = toAdd.map((submission, i) =>
      existing.has(submission.submissionId)
        ? revertJobId(submission.submissionId, firstSeq + i)
        : submission.submissionId,
    );

    const now = Date.now();
    const stateEntries: [string, VisitStateEntry][] = [];
    toAdd.forEach((s, i) => {
      const ids = given.get(s.visitKey) ?? sourceIds(s, pseudonymSecret, centreId);
      const prev = previous[i];
      const entry: VisitStateEntry = { h: s.contentHash, t: now, n: firstSeq + i };
      if (jobIds[i] !== s.submissionId) entry.j = jobIds[i];
      if (s.kind === 'retraction') entry.r = 1;
      const patientId = ids.patientId ?? prev?.p;
      const encounterId = ids.encounterId ?? prev?.e;
      const lastUpdated = ids.encounterLastUpdated ?? prev?.u;
      if (patientId) entry.p = patientId;
      if (encounterId) entry.e = encounterId;
      if (lastUpdated) entry.u = lastUpdated;
      if (s.kind === 'visit') {
        entry.d = s.visit.date;
        const keys = otherSourceKeys(s);
        if (keys.length > 0) entry.s = keys;
      }
      const findings = compactFindings(s);
      if (findings) entry.q = findings;
      stateEntries.push([s.visitKey, entry]);
    });
    // Written ahead, pending: from here on an older version's delivery finds itself
    // superseded, even if addBulk or the confirmation below fails or the process dies.
    await state.setMany(stateEntries.map(([k, e], i) => [k, pendingEntry(e, previous[i])]));
    await queue.addBulk(
      toAdd.map((submission, i) => ({
        name: submission.kind,
        data: { runId, seq: firstSeq + i, incarnation, submission },
        opts: { jobId: jobIds[i]! },
      })),
    );
    counts.reverted += existing.size;
    // Confirmed once addBulk succeeded; not awaited here, so it overlaps with what follows.
    const write = state.setMany(stateEntries);
    write.catch(() => undefined);
    pendingWrites.push(write);
    const retractions = toAdd.filter((s) => s.kind === 'retraction').length;
    counts.enqueued += toAdd.length;
    counts.retracted += retractions;
    options.onBatch?.({
      enqueuedVisits: toAdd.length - retractions,
      enqueuedRetractions: retractions,
    });
  }

  return {
    async add(submission, source) {
      // A visit mapped in this run wins over a retraction of the same key (one built from a
      // state entry under another key that maps to it, e.g. written with another secret):
      // the retraction would otherwise replace the visit, or retract it a batch later.
      if (submission.kind === 'visit') {
        const version = encounterVersionOf(submission);
        const earlier = mappedVisits.get(submission.visitKey);
        if (earlier && olderThan(version, earlier)) {
          counts.olderVersionsSkipped += 1;
          return;
        }
        mappedVisits.set(submission.visitKey, version);
      } else if (mappedVisits.has(submission.visitKey)) {
        counts.retractionsSkipped += 1;
        return;
      }
      buffer.push(submission);
      if (source) sources.set(submission.visitKey, source);
      if (buffer.length >= batchSize) {
        const batch = buffer;
        const given = sources;
        buffer = [];
        sources = new Map();
        await enqueueBatch(batch, given);
      }
    },
    async flush() {
      const batch = buffer;
      const given = sources;
      buffer = [];
      sources = new Map();
      if (batch.length > 0) await enqueueBatch(batch, given);
      await settleWrites(0);
    },
    counts,
  };
}
