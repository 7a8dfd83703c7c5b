// Search-mode pull: many EHRs (Epic among them) only answer searches scoped to one patient,
// so the pull walks the cohort patient by patient and, for each configured resource type,
// runs `[type]?patient=<id>&_count=<pageSize>[&_lastUpdated=ge<since>]`, following next
// links. Each patient's resources come out as one batch, so memory holds one patient (or a
// few, when patients are fetched concurrently) whatever the centre's size. Medications
// referenced by MedicationRequest/MedicationStatement are read too (cached for the run),
// because steroid use can only be judged from the Medication's codes.
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { CentreConfig, PullResourceType, SearchedType } from '../config/centre.js';
import { silentLogger, type Logger } from '../util/logger.js';
import type { FhirClient, SearchParams } from './client.js';
import { FhirHttpError, saysDataWithheld, type OutcomeIssue } from './errors.js';
import type { FhirResource } from './types.js';
import { followAbort } from '../util/abort.js';

/** One cohort patient's resources. */
export interface PatientBatch {
  patientId: string;
  resources: FhirResource[];
  /**
   * A search of this patient's carried a warning that the EHR left data out (Epic 4119, a
   * restricted record): what is missing from these resources may still exist.
   */
  withheld?: true;
}

/** Why a roster line did not yield a patient (the line's content is never kept: PHI). */
export interface UnresolvedRosterLine {
  line: number;
  reason: 'malformed' | 'not-found' | 'ambiguous';
}

/** The cohort: patient ids and what could not be resolved. */
export interface CohortResolution {
  source: 'group' | 'roster';
  patientIds: string[];
  unresolved: UnresolvedRosterLine[];
  /** Group members skipped because they are inactive or not Patients. */
  skippedMembers: number;
}

/**
 * Statuses that refuse one patient's data rather than the client (a restricted record, as
 * Epic answers 403 / 4118 "User not authorized" for an employee's or a VIP's chart; a search
 * the server cannot answer for this patient's data). 401 (after a fresh token), 429 and 5xx
 * (after retries) are not among them: those are about the client or the server.
 */
export const PATIENT_SCOPED_STATUSES: ReadonlySet<number> = new Set([400, 403, 404, 410, 422]);

/** True when a patient's pull failed in a way that concerns that patient only. */
export function isPatientScopedFailure(err: unknown): err is FhirHttpError {
  return err instanceof FhirHttpError && PATIENT_SCOPED_STATUSES.has(err.status);
}

/** A patient whose searches the EHR refused; the pull went on with the others. */
export interface PatientPullFailure {
  /** The source id: for the caller's own bookkeeping, never to be logged or recorded. */
  patientId: string;
  /** 0-based position in the cohort, and the cohort's size. */
  index: number;
  total: number;
  error: FhirHttpError;
}

/** Consecutive failures from the start of the cohort that stop the pull as systemic. */
export const SYSTEMIC_LEADING_FAILURES = 5;
/** With at least this many patients read, more than half failing stops the pull. */
export const SYSTEMIC_MIN_PATIENTS = 10;

/**
 * The pull stopped because patients' searches fail across the cohort: not one restricted
 * record but the client's access (scopes, the background user's security) or a search the
 * EHR does not accept. The message carries counts and the last error (no patient ids).
 */
export class CohortPullRefusedError extends Error {
  constructor(
    readonly failed: number,
    readonly read: number,
    readonly last: FhirHttpError,
  ) {
    super(
      `the EHR refused the searches of ${failed} of the ${read} patients read so far ` +
        `(${failed === read ? 'every one' : 'more than half'}), so the pull stopped: this is the ` +
        `client's access or a search the EHR does not accept, not one restricted record. Last: ${last.message}`,
      { cause: last },
    );
    this.name = 'CohortPullRefusedError';
  }
}

/** A cohort that cannot be read at all (missing Group, unreadable roster). */
export class CohortError extends Error {
  readonly hint: string;
  constructor(message: string, hint: string, options?: { cause?: unknown }) {
    super(`${message}. ${hint}`, options);
    this.name = 'CohortError';
    this.hint = hint;
  }
}

/**
 * The error for a Group that yields no active Patient member. A sync of such a cohort would
 * "succeed" with nothing, every night: the Group may be definitional (`actual: false`), may
 * only count its patients (`quantity`, as servers may for large Groups), or may have been
 * emptied or rebuilt by the EHR.
 */
function emptyGroupError(groupId: string, group: FhirResource, members: number): CohortError {
  const holds: string[] = [
    members === 0 ? 'no member entries' : `${members} member entries, none an active Patient`,
  ];
  if (typeof group.quantity === 'number') holds.push(`quantity ${group.quantity}`);
  if (typeof group.actual === 'boolean') holds.push(`actual ${group.actual}`);
  return new CohortError(
    `the cohort Group "${groupId}" lists no active Patient members (it holds ${holds.join(', ')})`,
    'Ask centre IT to list the registry patients in the Group as member entries (Patient references, not inactive): ' +
      (group.actual === false
        ? 'a definitional Group (actual: false) has no members to read; '
        : typeof group.quantity === 'number' && members === 0
          ? 'the EHR reports only how many patients it holds, not which; '
          : '') +
      'or check cohort.group in the centre file, or use a roster (cohort.roster) instead',
  );
}

/** `Patient/123`, `https://ehr/fhir/Patient/123/_history/2` -> { type, id }. */
export function parseReference(
  reference: string | undefined,
): { type: string; id: string } | undefined {
  if (!reference || reference.startsWith('#')) return undefined;
  const m = /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/.exec(
    reference,
  );
  return m ? { type: m[1]!, id: m[2]! } : undefined;
}

/** Reads the roster's `system|value` lines lazily, with 1-based line numbers. */
async function* readRosterLines(path: string): AsyncGenerator<{ line: number; text: string }> {
  const lines = createInterface({ input: createReadStream(path, 'utf8'), crlfDelay: Infinity });
  let n = 0;
  for await (const text of lines) {
    n += 1;
    const trimmed = text.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    yield { line: n, text: trimmed };
  }
}

/** Options for resolveCohort. */
export interface ResolveCohortOptions {
  signal?: AbortSignal;
  logger?: Logger;
  /** Stop after this many patients (the onboarding check needs only one). */
  limit?: number;
}

/**
 * Resolves the centre's cohort to Patient ids: the active Patient members of the Group, or
 * each roster line `system|value` looked up with `Patient?identifier=system|value`.
 */
export async function resolveCohort(
  client: FhirClient,
  centre: Pick<CentreConfig, 'cohort'>,
  options: ResolveCohortOptions = {},
): Promise<CohortResolution> {
  const logger = options.logger ?? silentLogger;
  const limit = options.limit ?? Number.POSITIVE_INFINITY;
  const signalOpt = options.signal ? { signal: options.signal } : {};
  if ('group' in centre.cohort) {
    const groupId = centre.cohort.group;
    const group = await client.read('Group', groupId, signalOpt);
    if (!group)
      throw new CohortError(
        `the cohort Group "${groupId}" does not exist on the EHR (404 Not Found or 410 Gone)`,
        'Check cohort.group in the centre file against the Group id centre IT created',
      );
    const ids = new Set<string>();
    let skipped = 0;
    const members = Array.isArray(group.member) ? (group.member as unknown[]) : [];
    for (const raw of members) {
      const member = raw as { entity?: { reference?: string }; inactive?: boolean } | null;
      const ref = parseReference(member?.entity?.reference);
      if (!ref || ref.type !== 'Patient' || member?.inactive === true) {
        skipped += 1;
        continue;
      }
      ids.add(ref.id);
      if (ids.size >= limit) break;
    }
    if (ids.size === 0) throw emptyGroupError(groupId, group, members.length);
    logger.info(
      { centre: client.centreId, patients: ids.size, skippedMembers: skipped },
      'cohort resolved from Group',
    );
    return { source: 'group', patientIds: [...ids], unresolved: [], skippedMembers: skipped };
  }

  const path = centre.cohort.roster;
  const ids = new Set<string>();
  const unresolved: UnresolvedRosterLine[] = [];
  try {
    for await (const { line, text } of readRosterLines(path)) {
      const bar = text.indexOf('|');
      if (bar <= 0 || bar === text.length - 1) {
        unresolved.push({ line, reason: 'malformed' });
        continue;
      }
      const found: string[] = [];
      for await (const resource of client.searchResources(
        'Patient',
        { identifier: text, _count: 2 },
        signalOpt,
      )) {
        if (resource.resourceType === 'Patient' && resource.id && !found.includes(resource.id))
          found.push(resource.id);
        if (found.length > 1) break;
      }
      if (found.length === 0) unresolved.push({ line, reason: 'not-found' });
      else if (found.length > 1) unresolved.push({ line, reason: 'ambiguous' });
      else ids.add(found[0]!);
      if (ids.size >= limit) break;
    }
  } catch (err) {
    if (
      (err as NodeJS.ErrnoException).code === 'ENOENT' ||
      (err as NodeJS.ErrnoException).code === 'EACCES'
    )
      throw new CohortError(
        `cannot read the roster file ${path} (${(err as NodeJS.ErrnoException).code})`,
        'Check cohort.roster in the centre file (relative paths are relative to the centre file)',
        { cause: err },
      );
    throw err;
  }
  logger.info(
    { centre: client.centreId, patients: ids.size, unresolved: unresolved.length },
    'cohort resolved from roster',
  );
  return { source: 'roster', patientIds: [...ids], unresolved, skippedMembers: 0 };
}

/**
 * Resource types that record events (a visit, a measurement). A lookback window bounds only
 * these: the patient, their diagnoses and their medication lists are needed whatever their
 * age (a steroid course prescribed three years ago can still be active at today's visit).
 */
export const EVENT_RESOURCE_TYPES: ReadonlySet<string> = new Set(['Encounter', 'Observation']);

/**
 * The search parameters for one patient and resource type: `_id` for Patient, `patient`
 * otherwise; `_count`; `_lastUpdated=ge<since>` when incremental (every type), else
 * `_lastUpdated=ge<lookback>` for event types only.
 */
export function patientSearchParams(
  resourceType: string,
  patientId: string,
  options: { pageSize: number; since?: string | undefined; lookback?: string | undefined },
  extra?: Readonly<Record<string, string>>,
): SearchParams {
  const lowerBound =
    options.since ?? (EVENT_RESOURCE_TYPES.has(resourceType) ? options.lookback : undefined);
  return {
    ...extra,
    ...(resourceType === 'Patient' ? { _id: patientId } : { patient: patientId }),
    _count: options.pageSize,
    ...(lowerBound ? { _lastUpdated: `ge${lowerBound}` } : {}),
  };
}

/**
 * True when the resource says it was last updated before `ms` (epoch ms). A resource without
 * a readable meta.lastUpdated, or a bound that is not a number, never counts as before.
 */
export function updatedBefore(resource: FhirResource, ms: number): boolean {
  if (!Number.isFinite(ms)) return false;
  const updated = Date.parse(String(resource.meta?.lastUpdated ?? ''));
  return Number.isFinite(updated) && updated < ms;
}

/**
 * The searches a pull runs for a type: the centre's `pull.searches` parameter sets, or one
 * plain search when it names none.
 */
export function searchesOf(
  centre: Pick<CentreConfig, 'pull'>,
  type: string,
): readonly (Readonly<Record<string, string>> | undefined)[] {
  const sets = centre.pull.searches?.[type as SearchedType];
  return sets && sets.length > 0 ? sets : [undefined];
}

/** Options for pullSearch. */
export interface PullSearchOptions {
  client: FhirClient;
  centre: Pick<CentreConfig, 'id' | 'cohort' | 'pull'>;
  /** Incremental pull: only resources (of every type) updated at or after this instant. */
  since?: string | Date;
  /**
   * Full pull window: event types (Encounter, Observation) updated at or after this instant;
   * the other types in full. Ignored when `since` is given.
   */
  lookback?: string | Date;
  /** Defaults to centre.pull.resourceTypes. `Medication` means "read referenced Medications". */
  resourceTypes?: readonly PullResourceType[];
  /** Patient ids to pull; resolved from the centre's cohort when absent. */
  patientIds?: readonly string[];
  /** Patients fetched at once (default 2); the limiter still bounds requests. */
  concurrency?: number;
  signal?: AbortSignal;
  logger?: Logger;
  /** Called once the cohort is known (e.g. to record unresolved roster lines). */
  onCohort?: (cohort: CohortResolution) => void;
  /** Called after each patient, including patients with nothing new. */
  onPatient?: (progress: {
    patientId: string;
    index: number;
    total: number;
    resources: number;
    /** The EHR said it left some of this patient's data out (PatientBatch.withheld). */
    withheld: boolean;
  }) => void;
  /**
   * Called for a patient whose searches fail with a patient-scoped error (see
   * isPatientScopedFailure); that patient is then neither yielded nor reported to onPatient,
   * and the pull goes on. Without it, such an error ends the pull. Systemic failure (the first
   * SYSTEMIC_LEADING_FAILURES patients in a row, or more than half of at least
   * SYSTEMIC_MIN_PATIENTS) still ends it, with CohortPullRefusedError.
   */
  onPatientError?: (failure: PatientPullFailure) => void | Promise<void>;
  /**
   * Called once at the end of the pull with how many resources a patient's searches returned
   * that belong to another patient (left out: see belongsToAnotherPatient), when any were.
   */
  onOtherPatients?: (resources: number) => void;
}

/**
 * True when a resource a search scoped to `patientId` returned is another patient's: a
 * Patient with another id, or a subject (or patient) reference to another Patient. A server
 * that ignores the `patient` parameter (FHIR lets a server ignore a parameter it does not
 * support) answers every patient's search with everyone's resources; kept, they would be
 * mapped into visits of this patient's batch without the other patient's demographics, and
 * patients outside the cohort would reach the registry. A resource without a patient
 * reference (a Medication included with a request) is kept.
 */
export function belongsToAnotherPatient(resource: FhirResource, patientId: string): boolean {
  if (resource.resourceType === 'Patient')
    return typeof resource.id === 'string' && resource.id !== patientId;
  const holder = (resource.subject ?? resource.patient) as { reference?: unknown } | undefined;
  const reference = typeof holder?.reference === 'string' ? holder.reference : undefined;
  const target = parseReference(reference);
  return target?.type === 'Patient' && target.id !== patientId;
}

/**
 * Pulls the cohort in search mode, yielding one batch per patient that has resources
 * (patients with nothing in the window are reported to onPatient but not yielded).
 * Batches come in cohort order. Any failure after retries ends the pull with that error,
 * so a caller never mistakes a partial pull for a complete one; the exception is a
 * patient-scoped refusal when onPatientError is given, which the caller then records.
 */
export async function* pullSearch(options: PullSearchOptions): AsyncGenerator<PatientBatch> {
  const { client, centre } = options;
  const logger = options.logger ?? silentLogger;
  const since =
    options.since === undefined
      ? undefined
      : options.since instanceof Date
        ? options.since.toISOString()
        : options.since;
  const lookback =
    options.lookback instanceof Date ? options.lookback.toISOString() : options.lookback;
  const types = options.resourceTypes ?? centre.pull.resourceTypes;
  const searchTypes = types.filter((t) => t !== 'Medication');
  const readMedications = types.includes('Medication');
  const pageSize = centre.pull.pageSize;

  // Aborted when the consumer stops early or a patient fails, so in-flight work stops too.
  const controller = new AbortController();
  const unfollow = followAbort(options.signal, controller);
  const signal = controller.signal;

  const medications = new Map<string, Promise<FhirResource | undefined>>();
  const readMedication = (id: string): Promise<FhirResource | undefined> => {
    let cached = medications.get(id);
    if (!cached) {
      cached = client.read('Medication', id, { signal });
      medications.set(id, cached);
      cached.catch(() => medications.delete(id));
    }
    return cached;
  };

  // The window is also applied here: a server that ignores _lastUpdated (lenient handling
  // of a parameter it does not support) would otherwise hand back everything, every time.
  const sinceMs = since === undefined ? NaN : Date.parse(since);
  const lookbackMs = lookback === undefined ? NaN : Date.parse(lookback);
  const windowStart = (type: string): number =>
    since !== undefined ? sinceMs : EVENT_RESOURCE_TYPES.has(type) ? lookbackMs : NaN;
  let outsideWindow = 0;
  let otherPatients = 0;

  const pullPatient = async (patientId: string): Promise<PatientBatch> => {
    const resources: FhirResource[] = [];
    let withheld = false;
    const onNotice = (issue: OutcomeIssue): void => {
      if (saysDataWithheld(issue)) withheld = true;
    };
    // With several searches for a type, a resource matching two of them arrives twice.
    const seen = new Set<string>();
    for (const type of searchTypes) {
      const sets = searchesOf(centre, type);
      const from = windowStart(type);
      for (const extra of sets) {
        for await (const resource of client.searchResources(
          type,
          patientSearchParams(type, patientId, { pageSize, since, lookback }, extra),
          { signal, onNotice },
        )) {
          if (updatedBefore(resource, from)) {
            outsideWindow += 1;
            continue;
          }
          if (belongsToAnotherPatient(resource, patientId)) {
            otherPatients += 1;
            continue;
          }
          if (sets.length > 1 && typeof resource.id === 'string') {
            const key = `${resource.resourceType}/${resource.id}`;
            if (seen.has(key)) continue;
            seen.add(key);
          }
          resources.push(resource);
        }
      }
    }
    if (readMedications) {
      const wanted = new Set<string>();
      const present = new Set(
        resources.filter((r) => r.resourceType === 'Medication' && r.id).map((r) => r.id!),
      );
      for (const r of resources) {
        if (r.resourceType !== 'MedicationRequest' && r.resourceType !== 'MedicationStatement')
          continue;
        const ref = parseReference(
          (r.medicationReference as { reference?: string } | undefined)?.reference,
        );
        if (ref?.type === 'Medication' && !present.has(ref.id)) wanted.add(ref.id);
      }
      for (const id of wanted) {
        const medication = await readMedication(id);
        if (medication) resources.push(medication);
        else
          logger.warn(
            { centre: client.centreId, medicationId: id },
            'referenced Medication not found on the EHR',
          );
      }
    }
    return withheld ? { patientId, resources, withheld } : { patientId, resources };
  };

  try {
    let patientIds = options.patientIds;
    if (!patientIds) {
      const cohort = await resolveCohort(client, centre, { signal, logger });
      options.onCohort?.(cohort);
      patientIds = cohort.patientIds;
    }
    const total = patientIds.length;
    const concurrency = Math.max(1, Math.floor(options.concurrency ?? 2));
    const pending: { patientId: string; batch: Promise<PatientBatch> }[] = [];
    let next = 0;
    const startNext = () => {
      const id = patientIds[next++]!;
      const p = pullPatient(id);
      p.catch(() => undefined); // awaited in order below; avoids an unhandled rejection meanwhile
      pending.push({ patientId: id, batch: p });
    };
    let failed = 0;
    while (pending.length < concurrency && next < total) startNext();
    for (let index = 0; pending.length > 0; index++) {
      const head = pending.shift()!;
      let batch: PatientBatch;
      try {
        batch = await head.batch;
      } catch (err) {
        if (!options.onPatientError || !isPatientScopedFailure(err) || signal.aborted) throw err;
        failed += 1;
        const read = index + 1;
        if (
          (failed === read && failed >= SYSTEMIC_LEADING_FAILURES) ||
          (read >= SYSTEMIC_MIN_PATIENTS && failed * 2 > read)
        )
          throw new CohortPullRefusedError(failed, read, err);
        logger.warn(
          { centre: client.centreId, cohortIndex: index, status: err.status },
          "the EHR refused one patient's searches; going on with the others",
        );
        await options.onPatientError({ patientId: head.patientId, index, total, error: err });
        if (next < total) startNext();
        continue;
      }
      if (next < total) startNext();
      options.onPatient?.({
        patientId: batch.patientId,
        index,
        total,
        resources: batch.resources.length,
        withheld: batch.withheld === true,
      });
      if (batch.resources.length > 0) yield batch;
    }
    if (outsideWindow > 0)
      logger.warn(
        { centre: client.centreId, resources: outsideWindow },
        'the EHR returned resources updated before the _lastUpdated window (it may not support the parameter); they were left out',
      );
    if (otherPatients > 0) {
      logger.warn(
        { centre: client.centreId, resources: otherPatients },
        "the EHR returned other patients' resources to patient-scoped searches (it may ignore the patient parameter); they were left out of those patients' batches",
      );
      options.onOtherPatients?.(otherPatients);
    }
    logger.info(
      {
        centre: client.centreId,
        patients: total,
        incremental: since !== undefined,
        medications: medications.size,
      },
      'search pull finished',
    );
  } finally {
    unfollow();
    controller.abort(new Error('pull ended'));
  }
}
