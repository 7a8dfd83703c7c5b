// Enqueues submissions idempotently, in batches: a visit whose content hash equals the last
// enqueued version is skipped (`unchanged`), a changed visit is added as a new job whose id
// is its submission id, and a retraction is added only for a visit that was sent (and not
// already retracted). The visit state is written after addBulk succeeds; a crash in between
// re-adds the same job ids on the next run, which BullMQ ignores (and the registry answers
// as duplicates), so nothing is lost and nothing is delivered twice.
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { SubmissionJobData } from '../../queues/submissions.js';
import type { RegistrySubmission } from '../registry/submission.js';
import { pseudonymKey } from '../registry/keys.js';
import type { VisitState, VisitStateEntry } from './visit-state.js';
import { summariseQuality } from './quality.js';

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
  /** Called after each batch is enqueued (for metrics and progress). */
  onBatch?: (batch: { enqueuedVisits: number; enqueuedRetractions: number }) => void;
}

/** Adds submissions in batches; call `flush()` at the end of a run. */
export interface SubmissionEnqueuer {
  add(submission: RegistrySubmission): Promise<void>;
  flush(): Promise<void>;
  readonly counts: Readonly<EnqueueCounts>;
}

/** Finds the source ids behind a submission's keys in its provenance. */
function sourceIds(
  submission: RegistrySubmission,
  secret: string,
  centreId: string,
): { patientId?: string; encounterId?: string; encounterLastUpdated?: string } {
  const out: { patientId?: string; encounterId?: string; encounterLastUpdated?: string } = {};
  for (const ref of submission.provenance) {
    if (
      ref.resourceType === 'Encounter' &&
      !out.encounterId &&
      pseudonymKey(secret, centreId, 'Encounter', ref.id) === submission.visitKey
    ) {
      out.encounterId = ref.id;
      if (ref.lastUpdated) out.encounterLastUpdated = ref.lastUpdated;
    } else if (
      ref.resourceType === 'Patient' &&
      !out.patientId &&
      pseudonymKey(secret, centreId, 'Patient', ref.id) === submission.patientKey
    ) {
      out.patientId = ref.id;
    }
  }
  return out;
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
  };
  let buffer: RegistrySubmission[] = [];

  async function enqueueBatch(batch: RegistrySubmission[]): Promise<void> {
    // The same visit twice in one batch: the last one wins.
    const byVisit = new Map<string, RegistrySubmission>();
    for (const s of batch) byVisit.set(s.visitKey, s);
    const subs = [...byVisit.values()];
    const entries = await state.getMany(subs.map((s) => s.visitKey));
    const toAdd: RegistrySubmission[] = [];
    const previous: (VisitStateEntry | undefined)[] = [];
    subs.forEach((s, i) => {
      const entry = entries[i];
      if (s.kind === 'visit') {
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
    if (toAdd.length === 0) return;

    // A job with this id may already exist when a visit's content reverts to an earlier
    // version (or after a crash between addBulk and the state write). addBulk ignores
    // existing ids, so find them first and requeue the completed ones.
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

    await queue.addBulk(
      toAdd.map((submission) => ({
        name: submission.kind,
        data: { runId, submission },
        opts: { jobId: submission.submissionId },
      })),
    );
    for (const id of existing) {
      const job = await queue.getJob(id);
      if (job && (await job.getState()) === 'completed') {
        await job.retry('completed');
        counts.reverted += 1;
      }
    }

    const now = Date.now();
    const stateEntries: [string, VisitStateEntry][] = [];
    const qualityEntries: [string, string | null][] = [];
    toAdd.forEach((s, i) => {
      const ids = sourceIds(s, pseudonymSecret, centreId);
      const prev = previous[i];
      const entry: VisitStateEntry = { h: s.contentHash, t: now };
      if (s.kind === 'retraction') entry.r = 1;
      const patientId = ids.patientId ?? prev?.p;
      const encounterId = ids.encounterId ?? prev?.e;
      const lastUpdated = ids.encounterLastUpdated ?? prev?.u;
      if (patientId) entry.p = patientId;
      if (encounterId) entry.e = encounterId;
      if (lastUpdated) entry.u = lastUpdated;
      stateEntries.push([s.visitKey, entry]);
      qualityEntries.push([s.visitKey, summariseQuality(s, encounterId)]);
    });
    await Promise.all([state.setMany(stateEntries), state.setQuality(qualityEntries)]);
    const retractions = toAdd.filter((s) => s.kind === 'retraction').length;
    counts.enqueued += toAdd.length;
    counts.retracted += retractions;
    options.onBatch?.({
      enqueuedVisits: toAdd.length - retractions,
      enqueuedRetractions: retractions,
    });
  }

  return {
    async add(submission) {
      buffer.push(submission);
      if (buffer.length >= batchSize) {
        const batch = buffer;
        buffer = [];
        await enqueueBatch(batch);
      }
    },
    async flush() {
      const batch = buffer;
      buffer = [];
      if (batch.length > 0) await enqueueBatch(batch);
    },
    counts,
  };
}
