// Bulk-mode pull (FHIR Bulk Data Access, "$export"): one kick-off for the whole cohort, a
// status URL polled until the export is ready, then NDJSON files streamed line by line so a
// centre of any size fits in bounded memory. Long exports outlive access tokens: every
// request asks the auth layer for a token (refreshed when near expiry) and a 401 triggers
// one refresh. Retry-After on polling is honoured but capped; cancellation (abort, timeout,
// consumer stopping early) sends DELETE to the status URL so the EHR can drop the job.
import { z } from 'zod';
import type { CentreConfig, PullResourceType } from '../config/centre.js';
import { silentLogger, type Logger } from '../util/logger.js';
import type { FhirClient, FhirRequestInit } from './client.js';
import {
  FhirHttpError,
  FhirNetworkError,
  MalformedFhirResponseError,
  parseOutcomeIssues,
  redactUrl,
  type OriginPurpose,
  type OutcomeIssue,
} from './errors.js';
import {
  isRetryableNetworkCode,
  networkErrorCode,
  parseRetryAfter,
  sleepWithSignal,
} from './retry.js';
import { parseReference, resolveCohort, searchesOf, updatedBefore } from './pull-search.js';
import { isRetryableTokenFailure, type FhirResource } from './types.js';

/** What a bulk pull yields. */
export type BulkItem =
  | { kind: 'resource'; resource: FhirResource }
  | { kind: 'deleted'; resourceType: string; id: string }
  | {
      kind: 'error';
      /**
       * `error-file`: an OperationOutcome the server listed; `malformed-line`: a line we could
       * not parse; `count-mismatch`: an output file with fewer lines than its manifest `count`.
       */
      source: 'error-file' | 'malformed-line' | 'count-mismatch';
      /** The manifest entry's type (e.g. Observation, OperationOutcome). */
      fileType: string;
      /** 1-based line in that file (for `count-mismatch`, the lines read). */
      line: number;
      issues: OutcomeIssue[];
      /** A PHI-free one-line summary for run records. */
      message: string;
    }
  | {
      /**
       * An error-file OperationOutcome whose issues are all `information` or `warning` (Bulk
       * Data lists those there too, e.g. a parameter a lenient server ignored): worth
       * telling, not a failure of the export.
       */
      kind: 'notice';
      fileType: string;
      line: number;
      issues: OutcomeIssue[];
      message: string;
    };

const FileEntry = z.looseObject({
  type: z.string(),
  url: z.string().min(1),
  count: z.number().int().nonnegative().optional(),
});

/**
 * The completion manifest (Bulk Data v2, §Response - Complete Status), as deployed servers
 * send it: HAPI FHIR before 6.2 leaves out `request`, `requiresAccessToken` and `error`, and
 * HAPI 6.10 and IBM/LinuxForHealth leave out `output` when nothing matched. A missing
 * `requiresAccessToken` counts as true: the token still goes only to the FHIR server's own
 * origin (files elsewhere are refused), and a server that needs it gets it.
 */
export const BulkManifestSchema = z.looseObject({
  transactionTime: z.string().min(1),
  request: z.string().optional(),
  requiresAccessToken: z.boolean().default(true),
  output: z.array(FileEntry).default([]),
  error: z.array(FileEntry).default([]),
  deleted: z.array(FileEntry).optional(),
});
export type BulkManifest = z.infer<typeof BulkManifestSchema>;

/** A short description of a finished export, for the run record and the next `_since`. */
export interface BulkManifestSummary {
  /** Server time the export reflects: use it as the next incremental `_since`. */
  transactionTime: string;
  requiresAccessToken: boolean;
  outputFiles: number;
  errorFiles: number;
  deletedFiles: number;
  /** Resource counts the server announced, by type. */
  announcedCounts: Record<string, number>;
  /**
   * When this export job was kicked off (ms since epoch, the local clock: `now` of
   * PullBulkOptions), taken before its first kick-off request; for a resumed job, the
   * original kick-off by the run that started it (PendingExport.startedAt), not the resume.
   * A lower bound for the next `_since` that does not trust `transactionTime`: HAPI FHIR
   * before hapi-fhir#6841 reports the job's end as `transactionTime`, so changes made while
   * the job ran would be skipped. Undefined when unknown.
   */
  kickedOffAt?: number;
}

/** An export that failed as a whole (not started, timed out, bad manifest). */
export class BulkExportError extends Error {
  readonly hint: string;
  constructor(message: string, hint: string, options?: { cause?: unknown }) {
    super(`${message}. ${hint}`, options);
    this.name = 'BulkExportError';
    this.hint = hint;
  }
}

/**
 * `_typeFilter` queries for an export: each `pull.searches` entry of an exported type as one
 * query (OR'ed, as the searches are), and the `_lastUpdated` bound added to every query of
 * a bounded type (alone when the type has no entries).
 */
export function narrowingFilters(
  centre: Pick<CentreConfig, 'pull'>,
  types: readonly string[],
  boundTypes: ReadonlySet<string>,
  boundIso: string | undefined,
): string[] {
  const filters: string[] = [];
  for (const type of types) {
    const bound =
      boundIso !== undefined && boundTypes.has(type) ? `_lastUpdated=ge${boundIso}` : '';
    const sets = searchesOf(centre, type);
    for (const set of sets) {
      const query = [set ? new URLSearchParams(set).toString() : '', bound]
        .filter((part) => part !== '')
        .join('&');
      if (query !== '') filters.push(`${type}?${query}`);
    }
  }
  return filters;
}

/** Options for pullBulk. */
export interface PullBulkOptions {
  client: FhirClient;
  centre: Pick<CentreConfig, 'id' | 'cohort' | 'pull'>;
  /** Incremental: `_since` (resources changed after this instant). */
  since?: string | Date;
  /** `_type`; defaults to centre.pull.resourceTypes. */
  resourceTypes?: readonly PullResourceType[];
  /**
   * `_typeFilter` queries, e.g. `Observation?category=vital-signs`; dropped (not applied
   * here) if the server refuses `_typeFilter`.
   */
  typeFilter?: readonly string[];
  /**
   * Bounds these types to resources updated at or after `since`: asked of the server as
   * `_typeFilter=Type?_lastUpdated=ge<since>` and enforced on what arrives, since servers
   * may ignore `_typeFilter`. A kick-off refused with HTTP 400 while it carries
   * `_typeFilter` is retried once without it (the bound then applies here only).
   */
  updatedSince?: { since: string | Date; types: readonly string[] };
  /** Called with the roster's patient ids once resolved (a roster cohort only). */
  onCohort?: (patientIds: readonly string[]) => void;
  /**
   * Patients to keep (by id). Defaults to the resolved roster when the cohort is a roster
   * (a Patient-level export covers every patient); not applied for a Group cohort.
   */
  patientFilter?: ReadonlySet<string>;
  signal?: AbortSignal;
  logger?: Logger;
  /** First wait between polls when the server sends no Retry-After (default 2 s). */
  pollIntervalMs?: number;
  /** Longest wait between polls, also the cap on Retry-After while polling (default 60 s). */
  maxPollIntervalMs?: number;
  /**
   * Transient failures of the status URL in a row (429, 5xx without a failed-job outcome,
   * network errors) before the export is given up (default 20; with the interval growing
   * to maxPollIntervalMs that rides out about a quarter of an hour of trouble).
   */
  maxPollFailures?: number;
  /** Times a broken NDJSON download is resumed (default 3). */
  maxResumes?: number;
  /** Send DELETE to the status URL after every file is read (default true). */
  deleteWhenDone?: boolean;
  /**
   * Keeps the export in progress (its status URL), so that a run that died mid-export (kill
   * -9, a crash, a reboot) resumes polling the same job instead of starting a new one; an
   * export of hours is not restarted by every crash. Cleared when the pull ends either way.
   */
  pending?: PendingExportStore;
  /**
   * True for an abort reason that hands the run over rather than ends it (the worker shutting
   * down, the centre lock lost to another run): the export is then neither cancelled on the
   * EHR nor forgotten, so the run that takes over resumes it. Other aborts cancel it.
   */
  keepExportOnAbort?: (reason: unknown) => boolean;
  /**
   * Told of the manifest before its files are read; told again of the new export's when a
   * resumed job turns out unusable (gone, failed, or its files expired) and a new one runs.
   */
  onManifest?: (summary: BulkManifestSummary) => void;
  /**
   * Told what the run record should say: configured types the EHR refused to export (named
   * as not supported by the kick-off's 400) and that the export runs without.
   */
  onWarning?: (message: string) => void | Promise<void>;
  onProgress?: (status: { progress: string | undefined; polls: number }) => void;
  now?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** An export kicked off and not yet finished with, as kept between runs. */
export interface PendingExport {
  /** The kick-off request without its `_lastUpdated` bounds: the same export iff equal. */
  request: string;
  /** The `_lastUpdated` bound it was kicked off with (ISO), null when none. */
  bound: string | null;
  statusUrl: string;
  /**
   * When it was kicked off (ms since epoch, the local clock before the first kick-off
   * request); the bulk timeout counts from here, and a resumed job reports it as
   * BulkManifestSummary.kickedOffAt.
   */
  startedAt: number;
}

/** Where a centre's export in progress is kept (Redis in the service). */
export interface PendingExportStore {
  load(): Promise<PendingExport | null>;
  /** Keeps it for `ttlMs` at most (the bulk timeout). */
  save(pending: PendingExport, ttlMs: number): Promise<void>;
  /**
   * Forgets the export kept, only if it is the one at `statusUrl` (compare-and-delete): a run
   * that finishes late never forgets the export a newer run has saved since.
   */
  clear(statusUrl: string): Promise<void>;
}

/** The kick-off URL: `Group/[id]/$export` for a Group cohort, else `Patient/$export`. */
export function buildExportUrl(
  baseUrl: string,
  centre: Pick<CentreConfig, 'cohort' | 'pull'>,
  options: {
    since?: string;
    resourceTypes?: readonly string[];
    typeFilter?: readonly string[];
  } = {},
): URL {
  const base = baseUrl.replace(/\/+$/, '');
  const url = new URL(
    'group' in centre.cohort
      ? `${base}/Group/${encodeURIComponent(centre.cohort.group)}/$export`
      : `${base}/Patient/$export`,
  );
  const types = options.resourceTypes ?? centre.pull.resourceTypes;
  if (types.length > 0) url.searchParams.set('_type', types.join(','));
  if (options.since) url.searchParams.set('_since', options.since);
  // One comma-delimited value: Bulk Data v1.0.1 (which Oracle Health follows) defines
  // `_typeFilter` as one string, and a server reading a single parameter would otherwise
  // apply one query only; v2 servers accept the comma-separated list too. Each query's own
  // commas are already %2C (URLSearchParams in narrowingFilters), so they do not split it.
  if (options.typeFilter && options.typeFilter.length > 0)
    url.searchParams.set('_typeFilter', options.typeFilter.join(','));
  return url;
}

const KICKOFF_HEADERS = { prefer: 'respond-async', accept: 'application/fhir+json' };

/** Kick-off retries after answers that say the export was not accepted (see kickOffExport). */
export const KICKOFF_MAX_RETRIES = 3;
/**
 * Statuses that say the kick-off was not accepted, so sending it again starts no second job.
 * Not 504: a gateway that timed out waiting for the EHR tells nothing of whether the EHR
 * accepted the job (as our own timeout).
 */
const KICKOFF_RETRY_STATUSES: ReadonlySet<number> = new Set([408, 429, 500, 502, 503]);
/** Network failures before the request reached the EHR (no connection was made). */
const KICKOFF_UNSENT_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'EAI_AGAIN',
  'ENOTFOUND',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'PROXY_UNAVAILABLE',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/** Options of a kick-off. */
export interface KickOffOptions {
  signal?: AbortSignal;
  /** Waits between kick-off retries (default: real timers). */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Retries after a "not accepted" answer (default KICKOFF_MAX_RETRIES). */
  maxRetries?: number;
}

/**
 * Starts an export and returns its status URL. Throws FhirHttpError (with the server's
 * OperationOutcome) when refused, BulkExportError when the answer is not 202 + Content-Location.
 *
 * A kick-off is not idempotent: the EHR may have accepted the job when its answer is lost. So
 * it is sent again only after an answer that says it was not accepted (408, 429, 500, 502,
 * 503, Retry-After honoured), a token failure worth retrying, or a connection that was never
 * made; a timeout, reset or 504 after the request went out fails with BulkExportError, whose
 * hint says a job may now be running on the EHR.
 */
export async function kickOffExport(
  client: FhirClient,
  url: URL,
  options: KickOffOptions = {},
): Promise<URL> {
  const sleep = options.sleep ?? sleepWithSignal;
  const maxRetries = options.maxRetries ?? KICKOFF_MAX_RETRIES;
  let response: Response;
  for (let retry = 0; ; retry++) {
    try {
      response = await client.request(url, {
        headers: KICKOFF_HEADERS,
        resourceType: '$export',
        // Retries are decided here: the client's would resend after a timeout or reset.
        maxRetries: 0,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      break;
    } catch (err) {
      if (options.signal?.aborted) throw err;
      const notAccepted =
        err instanceof FhirHttpError
          ? KICKOFF_RETRY_STATUSES.has(err.status)
          : err instanceof FhirNetworkError
            ? KICKOFF_UNSENT_CODES.has(err.code)
            : // The access token could not be had (token endpoint busy): nothing was sent.
              isRetryableTokenFailure(err);
      if (!notAccepted) {
        const unanswered =
          err instanceof FhirHttpError
            ? err.status === 504
            : err instanceof FhirNetworkError && isRetryableNetworkCode(err.code);
        if (unanswered) throw unansweredKickOff(url, err);
        throw err;
      }
      if (retry >= maxRetries) throw err;
      const retryAfter = err instanceof FhirHttpError ? err.retryAfterSeconds : undefined;
      await sleep(
        retryAfter !== undefined ? retryAfter * 1000 : Math.min(30_000, 1_000 * 2 ** retry),
        options.signal,
      );
    }
  }
  await response.body?.cancel();
  const location = response.headers.get('content-location');
  if (response.status !== 202 || !location)
    throw new BulkExportError(
      `the $export kick-off at ${redactUrl(url)} answered HTTP ${response.status}` +
        (location ? '' : ' without a Content-Location header'),
      'The server must answer 202 Accepted with Content-Location (Bulk Data Access); ask centre IT whether bulk export is enabled for this client',
    );
  return new URL(location, url);
}

/** A kick-off sent and not answered (timeout, reset, 504): the EHR may be running the job. */
function unansweredKickOff(url: URL, err: unknown): BulkExportError {
  const what =
    err instanceof FhirHttpError
      ? `a gateway answered HTTP ${err.status}`
      : `no answer came (${networkErrorCode(err) ?? 'network error'})`;
  return new BulkExportError(
    `the $export kick-off at ${redactUrl(url)} was sent and ${what}; it is not sent again, since the EHR may have accepted it`,
    'An export job may now be running on the EHR that lhn-bridge does not know of and cannot cancel; ' +
      'the next sync starts a new export. On EHRs that run one export per client at a time ' +
      '(Oracle Health) that kick-off is refused with HTTP 429 until the unknown job ends or ' +
      'expires (centre IT can cancel it). If kick-offs keep timing out, raise fhir.requestTimeoutMs',
    { cause: err },
  );
}

/** Types lhn-bridge exports that are outside the Patient compartment. */
export const NON_COMPARTMENT_TYPES: ReadonlySet<string> = new Set(['Medication']);

/** What kickOffNarrowed had to leave out for the EHR to accept the export. */
export interface NarrowedKickOff {
  statusUrl: URL;
  /** The EHR refused `_typeFilter`: the export runs without it. */
  typeFilterRefused: boolean;
  /** Types outside the Patient compartment dropped from `_type` (read one by one instead). */
  typesDropped: string[];
  /**
   * Types dropped from `_type` because the EHR's 400 OperationOutcome named them as not
   * supported (Epic R4 has no MedicationStatement): not exported at all.
   */
  typesUnsupported: string[];
}

/**
 * Types every visit is built from: never dropped from an export because a 400 seems to name
 * them (without them a run would re-version every visit empty); the kick-off fails instead.
 */
export const VISIT_CORE_TYPES: ReadonlySet<string> = new Set([
  'Patient',
  'Encounter',
  'Observation',
]);

/** `Type?query` text (a `_typeFilter` value quoted back by a server). */
const TYPE_QUERY = /(?<![A-Za-z])[A-Z][A-Za-z]+\?\S*/g;

/**
 * The requested types a 400 OperationOutcome names as not supported. An issue counts only when
 * its code is `not-supported`, or its text says so of the type in so many words ("resource
 * type X is not supported", "X export is not supported", "unknown resource type: X"). Issues
 * about `_typeFilter` never count, nor does a type quoted inside a `Type?query` (a refused
 * `_typeFilter` names every filtered type: that refusal has its own fallback). Visit-defining
 * types (VISIT_CORE_TYPES) and non-compartment types (their own fallback) are never returned.
 */
export function typesNamedUnsupported(
  issues: readonly OutcomeIssue[],
  types: readonly string[],
): string[] {
  const texts = issues
    .map((issue) => ({
      code: issue.code,
      text: Object.values(issue)
        .flatMap((v: unknown) => (Array.isArray(v) ? v : [v]))
        .filter((v): v is string => typeof v === 'string')
        .join(' '),
    }))
    .filter(({ text }) => !/_typeFilter/i.test(text))
    .map(({ code, text }) => ({ code, text: text.replace(TYPE_QUERY, ' ') }));
  const refused = (type: string, text: string) => {
    const t = `['"\\[]?${type}['"\\]]?`;
    const not = '(?:not[ -]supported|unsupported|not (?:available|enabled|recogni[sz]ed))';
    return [
      new RegExp(`resource ?types?\\W*${t}(?: resources?| export)?\\W*(?:is |are )?${not}`, 'i'),
      new RegExp(`(?<![A-Za-z])${type}(?: resources?| export| exports)? (?:is |are )?${not}`),
      new RegExp(`(?:unsupported|unknown) resource ?types?\\W*${t}(?![A-Za-z])`, 'i'),
    ].some((re) => re.test(text));
  };
  return types.filter(
    (type) =>
      !NON_COMPARTMENT_TYPES.has(type) &&
      !VISIT_CORE_TYPES.has(type) &&
      texts.some(
        ({ code, text }) =>
          (code === 'not-supported' && new RegExp(`(?<![A-Za-z])${type}(?![A-Za-z])`).test(text)) ||
          refused(type, text),
      ),
  );
}

/**
 * Starts an export of `types` with `_typeFilter` queries, falling back when the EHR answers
 * HTTP 400. Both are legitimate refusals under Bulk Data Access: `_typeFilter` is optional
 * for servers, and a Patient-level export may refuse types outside the Patient compartment
 * (HAPI FHIR refuses Medication). So a refused kick-off is retried without `_typeFilter`,
 * then without those types (with, then without, the other queries). A 400 whose
 * OperationOutcome names requested types as not supported (Epic R4: MedicationStatement; see
 * typesNamedUnsupported, never a visit-defining type) is retried without them first, at the
 * same step.
 */
export async function kickOffNarrowed(
  client: FhirClient,
  exportUrl: (parts: { types: readonly string[]; typeFilter: readonly string[] }) => URL,
  types: readonly string[],
  typeFilter: readonly string[],
  options: KickOffOptions = {},
): Promise<NarrowedKickOff> {
  const inCompartment = types.filter((t) => !NON_COMPARTMENT_TYPES.has(t));
  const dropped = types.filter((t) => NON_COMPARTMENT_TYPES.has(t));
  const filtersOf = (kept: readonly string[]) =>
    typeFilter.filter((f) => kept.includes(f.slice(0, f.indexOf('?'))));
  // The usual refusal (`_typeFilter`) is tried first, so an EHR that only refuses that one
  // still exports every type; then without the non-compartment types (queries kept), then
  // without both.
  const attempts: { types: readonly string[]; typeFilter: readonly string[] }[] = [
    { types, typeFilter },
  ];
  if (typeFilter.length > 0) attempts.push({ types, typeFilter: [] });
  if (dropped.length > 0 && inCompartment.length > 0) {
    const kept = filtersOf(inCompartment);
    attempts.push({ types: inCompartment, typeFilter: kept });
    if (kept.length > 0) attempts.push({ types: inCompartment, typeFilter: [] });
  }
  const unsupported = new Set<string>();
  const withoutUnsupported = (a: { types: readonly string[]; typeFilter: readonly string[] }) => ({
    types: a.types.filter((t) => !unsupported.has(t)),
    typeFilter: a.typeFilter.filter((f) => !unsupported.has(f.slice(0, f.indexOf('?')))),
  });
  for (let i = 0; ;) {
    const planned = attempts[i]!;
    const attempt = withoutUnsupported(planned);
    try {
      const statusUrl = await kickOffExport(client, exportUrl(attempt), options);
      return {
        statusUrl,
        typeFilterRefused: typeFilter.length > 0 && planned.typeFilter.length === 0,
        typesDropped: types.filter((t) => !planned.types.includes(t)),
        typesUnsupported: types.filter((t) => unsupported.has(t)),
      };
    } catch (err) {
      if (!(err instanceof FhirHttpError && err.status === 400)) throw err;
      const named = typesNamedUnsupported(err.issues, attempt.types);
      if (named.length > 0 && named.length < attempt.types.length) {
        for (const t of named) unsupported.add(t);
        continue;
      }
      i += 1;
      if (i >= attempts.length) throw err;
    }
  }
}

/** Sends DELETE to a status URL (cancel, or "done with the files"); never throws. */
export async function cancelExport(
  client: FhirClient,
  statusUrl: URL,
  logger: Logger = silentLogger,
): Promise<boolean> {
  try {
    const response = await client.request(statusUrl, {
      method: 'DELETE',
      purpose: 'bulk-status',
      resourceType: '$export-status',
      maxRetries: 1,
      // Cleanup: also when the sync window has closed, or the job stays running on the EHR.
      cleanup: true,
    });
    await response.body?.cancel();
    return true;
  } catch (err) {
    if (err instanceof FhirHttpError && (err.status === 404 || err.status === 410)) return true;
    logger.warn(
      { centre: client.centreId, err: (err as Error).message },
      'could not delete the bulk export job on the EHR',
    );
    return false;
  }
}

/**
 * Runs one bulk export and yields its content: resources, deleted entries and error-file
 * outcomes. The generator owns the export job: breaking out of the loop, aborting the
 * signal or any failure cancels it on the EHR.
 */
export async function* pullBulk(options: PullBulkOptions): AsyncGenerator<BulkItem> {
  const { client, centre } = options;
  const logger = options.logger ?? silentLogger;
  const now = options.now ?? Date.now;
  const sleep = options.sleep ?? sleepWithSignal;
  const signal = options.signal;
  const signalOpt = signal ? { signal } : {};
  const since =
    options.since === undefined
      ? undefined
      : options.since instanceof Date
        ? options.since.toISOString()
        : options.since;
  const timeoutMs = centre.pull.bulkTimeoutMinutes * 60_000;
  let deadline = now() + timeoutMs;

  let patientFilter = options.patientFilter;
  if (!patientFilter && 'roster' in centre.cohort) {
    const cohort = await resolveCohort(client, centre, { ...signalOpt, logger });
    options.onCohort?.(cohort.patientIds);
    patientFilter = new Set(cohort.patientIds);
  }

  const bound = options.updatedSince;
  const boundIso = bound
    ? bound.since instanceof Date
      ? bound.since.toISOString()
      : bound.since
    : undefined;
  const boundMs = boundIso === undefined ? NaN : Date.parse(boundIso);
  const boundTypes = new Set(bound?.types ?? []);
  const typeFilter = [
    ...(options.typeFilter ?? []),
    ...narrowingFilters(
      centre,
      options.resourceTypes ?? centre.pull.resourceTypes,
      boundTypes,
      boundIso,
    ),
  ];
  const exportUrl = (parts: { types: readonly string[]; typeFilter: readonly string[] }) =>
    buildExportUrl(client.baseUrl, centre, {
      ...(since ? { since } : {}),
      resourceTypes: parts.types,
      ...(parts.typeFilter.length > 0 ? { typeFilter: parts.typeFilter } : {}),
    });
  const types = options.resourceTypes ?? centre.pull.resourceTypes;
  // The same export whatever the run's lookback bound: a job kicked off with an earlier
  // bound exports a superset, and the bound is enforced here on what arrives anyway.
  const request = exportUrl({
    types,
    typeFilter: [
      ...(options.typeFilter ?? []),
      ...narrowingFilters(centre, types, boundTypes, undefined),
    ],
  }).href;
  const store = options.pending;
  /** The status URL as kept in the store (what `clear` compares). */
  let keptHref: string | undefined;
  /** When the job in use was kicked off (BulkManifestSummary.kickedOffAt). */
  let kickedOffAt: number | undefined;
  const kickOff = async (): Promise<URL> => {
    const started = now();
    const kicked = await kickOffNarrowed(client, exportUrl, types, typeFilter, {
      ...signalOpt,
      sleep,
    });
    deadline = started + timeoutMs;
    if (kicked.typesDropped.length > 0)
      logger.warn(
        { centre: client.centreId, status: 400, types: kicked.typesDropped },
        'the EHR refused to export types outside the Patient compartment; exporting without them (referenced ones are read one by one)',
      );
    if (kicked.typesUnsupported.length > 0) {
      logger.warn(
        { centre: client.centreId, status: 400, types: kicked.typesUnsupported },
        'the EHR does not support exporting some configured types; exporting without them (remove them from pull.resourceTypes in the centre file)',
      );
      await options.onWarning?.(
        `the EHR's export kick-off refused ${kicked.typesUnsupported.join(', ')} as not supported: exported without (remove it from pull.resourceTypes in the centre file)`,
      );
    }
    if (kicked.typeFilterRefused)
      logger.warn(
        { centre: client.centreId, status: 400 },
        'the EHR refused the export with _typeFilter; exporting without it and applying the lookback here',
      );
    logger.info(
      { centre: client.centreId, incremental: since !== undefined },
      'bulk export started',
    );
    keptHref = kicked.statusUrl.href;
    kickedOffAt = started;
    if (store)
      await store
        .save(
          {
            request,
            bound: boundIso ?? null,
            statusUrl: kicked.statusUrl.href,
            startedAt: started,
          },
          timeoutMs,
        )
        .catch((err: unknown) =>
          logger.warn(
            { centre: client.centreId, err: (err as Error).message },
            'could not keep the export in progress (a crash now would start a new export)',
          ),
        );
    return kicked.statusUrl;
  };

  // A job a previous run started and did not finish with: the same request, its bound no
  // later than this run's, and still inside the bulk timeout counted from its kick-off.
  let resumed: PendingExport | null = null;
  if (store) {
    try {
      const p = await store.load();
      const sameOrigin =
        p !== null && client.resolveUrl(p.statusUrl).origin === new URL(client.baseUrl).origin;
      if (
        p !== null &&
        sameOrigin &&
        p.request === request &&
        (boundIso === undefined
          ? p.bound === null
          : p.bound !== null && Date.parse(p.bound) <= boundMs) &&
        now() < p.startedAt + timeoutMs
      )
        resumed = p;
      else if (p !== null) {
        // Another request (the centre file changed) or too old: drop the job on the EHR.
        if (sameOrigin) await cancelExport(client, new URL(p.statusUrl), logger);
        await store.clear(p.statusUrl);
      }
    } catch (err) {
      logger.warn(
        { centre: client.centreId, err: (err as Error).message },
        'could not read the export a previous run left in progress; starting a new one',
      );
    }
  }
  let statusUrl: URL;
  if (resumed) {
    statusUrl = new URL(resumed.statusUrl);
    keptHref = resumed.statusUrl;
    kickedOffAt = resumed.startedAt;
    deadline = resumed.startedAt + timeoutMs;
    logger.info(
      { centre: client.centreId, startedAt: new Date(resumed.startedAt).toISOString() },
      'resuming the bulk export a previous run started and did not finish',
    );
  } else statusUrl = await kickOff();
  let finished = false;
  try {
    let manifest: BulkManifest;
    try {
      manifest = await pollExport(statusUrl);
    } catch (err) {
      // The resumed job is gone, failed or unreadable: start afresh once, as a new run would.
      if (!resumed || signal?.aborted) throw err;
      logger.warn(
        { centre: client.centreId, err: (err as Error).message },
        'the resumed bulk export cannot be used; starting a new export',
      );
      await cancelExport(client, statusUrl, logger);
      resumed = null;
      statusUrl = await kickOff();
      manifest = await pollExport(statusUrl);
    }
    // A resumed job whose files have expired (file storage often keeps them for less time
    // than the job lives) fails on its first file: start afresh once, as for a job gone.
    let yielded = false;
    try {
      for await (const item of readExport(manifest)) {
        yielded = true;
        yield item;
      }
    } catch (err) {
      if (!resumed || yielded || signal?.aborted || !isExpiredFileError(err)) throw err;
      logger.warn(
        {
          centre: client.centreId,
          status: (err as FhirHttpError).status,
          err: (err as Error).message,
        },
        'the files of the resumed bulk export cannot be read (expired?); starting a new export',
      );
      await cancelExport(client, statusUrl, logger);
      resumed = null;
      statusUrl = await kickOff();
      manifest = await pollExport(statusUrl);
      yield* readExport(manifest);
    }
    finished = true;
  } finally {
    // Handed over (shutdown, lock lost): the job stays on the EHR and in the store for the
    // run that takes over, which resumes it.
    const handedOver =
      !finished &&
      signal?.aborted === true &&
      (options.keepExportOnAbort?.(signal.reason) ?? false);
    if (handedOver) {
      logger.info(
        { centre: client.centreId },
        'bulk pull handed over before the end; the export is left running for the next run to resume',
      );
    } else {
      if (!finished) {
        logger.warn(
          { centre: client.centreId },
          'bulk pull stopped before the end; cancelling the export',
        );
        await cancelExport(client, statusUrl, logger);
      } else if (options.deleteWhenDone ?? true) {
        await cancelExport(client, statusUrl, logger);
      }
      if (store && keptHref !== undefined)
        await store
          .clear(keptHref)
          .catch((err: unknown) =>
            logger.warn(
              { centre: client.centreId, err: (err as Error).message },
              'could not forget the finished export (the next run will find it gone and start anew)',
            ),
          );
    }
  }

  /** Reports the manifest (onManifest) and yields the content of its files. */
  async function* readExport(manifest: BulkManifest): AsyncGenerator<BulkItem> {
    const summary: BulkManifestSummary = {
      transactionTime: manifest.transactionTime,
      requiresAccessToken: manifest.requiresAccessToken,
      outputFiles: manifest.output.length,
      errorFiles: manifest.error.length,
      deletedFiles: manifest.deleted?.length ?? 0,
      announcedCounts: {},
      ...(kickedOffAt !== undefined ? { kickedOffAt } : {}),
    };
    for (const file of manifest.output)
      if (file.count !== undefined)
        summary.announcedCounts[file.type] = (summary.announcedCounts[file.type] ?? 0) + file.count;
    options.onManifest?.(summary);

    const counts = { resources: 0, deleted: 0, errors: 0, notices: 0, filtered: 0 };
    for (const [index, file] of manifest.output.entries()) {
      // Lines read (resources, filtered or not, and malformed lines) against the manifest's
      // `count`: a file cut short in storage or by a proxy must not pass as complete.
      let lines = 0;
      for await (const { line, text } of readFileLines(
        file,
        'bulk-file',
        manifest.requiresAccessToken,
        `${file.type} export file ${index + 1} (of ${manifest.output.length})`,
      )) {
        lines += 1;
        const item = parseResourceLine(text, file.type, line);
        if (
          item.kind === 'resource' &&
          ((patientFilter && !keepForPatients(item.resource, patientFilter)) ||
            (boundTypes.has(item.resource.resourceType) && updatedBefore(item.resource, boundMs)))
        ) {
          counts.filtered += 1;
          continue;
        }
        if (item.kind === 'resource') counts.resources += 1;
        else counts.errors += 1;
        yield item;
      }
      const mismatch = countMismatch(file, index + 1, manifest.output.length, lines);
      if (mismatch) {
        if (mismatch.kind === 'error') counts.errors += 1;
        else counts.notices += 1;
        yield mismatch;
      }
    }
    for (const [index, file] of (manifest.deleted ?? []).entries()) {
      for await (const { line, text } of readFileLines(
        file,
        'bulk-deleted-file',
        manifest.requiresAccessToken,
        `deleted-resources file ${index + 1} (of ${manifest.deleted!.length})`,
      )) {
        for (const item of parseDeletedLine(text, file.type, line)) {
          if (item.kind === 'deleted') counts.deleted += 1;
          else counts.errors += 1;
          yield item;
        }
      }
    }
    for (const [index, file] of manifest.error.entries()) {
      for await (const { line, text } of readFileLines(
        file,
        'bulk-error-file',
        manifest.requiresAccessToken,
        `export error file ${index + 1} (of ${manifest.error.length})`,
      )) {
        const item = parseErrorLine(text, file.type, line);
        if (item.kind === 'notice') counts.notices += 1;
        else counts.errors += 1;
        yield item;
      }
    }
    logger.info({ centre: client.centreId, ...counts }, 'bulk export read');
  }

  /** Polls until the manifest is ready, the deadline passes, or the signal aborts. */
  async function pollExport(url: URL): Promise<BulkManifest> {
    let interval = options.pollIntervalMs ?? 2_000;
    const maxInterval = options.maxPollIntervalMs ?? 60_000;
    const maxFailures = options.maxPollFailures ?? 20;
    let failures = 0;
    for (let polls = 1; ; polls++) {
      if (now() >= deadline)
        throw new BulkExportError(
          `the bulk export did not finish within ${centre.pull.bulkTimeoutMinutes} minute(s)`,
          'Raise pull.bulkTimeoutMinutes in the centre file, narrow the export (_type/_typeFilter), or ask centre IT why exports are slow',
        );
      let response: Response;
      try {
        // Retries are decided here, not by the client: a failing status URL is polled again
        // until the deadline unless the server says the job itself failed.
        response = await client.request(url, {
          purpose: 'bulk-status',
          resourceType: '$export-status',
          maxRetries: 0,
          ...signalOpt,
        });
      } catch (err) {
        if (signal?.aborted || !isTransientPollFailure(err)) throw failedExport(err);
        failures += 1;
        if (failures > maxFailures)
          throw new BulkExportError(
            `the export status URL failed ${failures} times in a row (last: ${(err as Error).message})`,
            'The EHR kept failing while the export ran; ask centre IT to check the bulk export service, then run the sync again',
            { cause: err },
          );
        const retryAfter = err instanceof FhirHttpError ? err.retryAfterSeconds : undefined;
        const wait = retryAfter !== undefined ? Math.min(retryAfter * 1000, maxInterval) : interval;
        interval = Math.min(maxInterval, Math.ceil(interval * 1.5));
        logger.warn(
          {
            centre: client.centreId,
            polls,
            failures,
            err: (err as Error).message,
            waitMs: wait,
          },
          'export status request failed; polling again',
        );
        await sleep(Math.max(0, Math.min(wait, deadline - now())), signal);
        continue;
      }
      failures = 0;
      if (response.status === 202) {
        await response.body?.cancel();
        const progress = sanitizeProgress(response.headers.get('x-progress'));
        logger.info({ centre: client.centreId, progress, polls }, 'bulk export in progress');
        options.onProgress?.({ progress, polls });
        const retryAfter = parseRetryAfter(response.headers.get('retry-after'), {
          now: now(),
          maxSeconds: maxInterval / 1000,
        });
        if (retryAfter?.capped)
          logger.warn(
            {
              centre: client.centreId,
              requestedSeconds: Math.round(retryAfter.requestedSeconds),
              cappedToSeconds: retryAfter.seconds,
            },
            'Retry-After on the export status longer than the polling maximum; capped',
          );
        const wait = retryAfter ? retryAfter.seconds * 1000 : interval;
        interval = Math.min(maxInterval, Math.ceil(interval * 1.5));
        await sleep(Math.max(0, Math.min(wait, deadline - now())), signal);
        continue;
      }
      const text = await response.text();
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        throw new MalformedFhirResponseError({
          url,
          reason: 'the export manifest is not valid JSON',
        });
      }
      const parsed = BulkManifestSchema.safeParse(body);
      if (!parsed.success)
        throw new MalformedFhirResponseError({
          url,
          reason: `the export manifest is invalid (${parsed.error.issues
            .slice(0, 3)
            .map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
            .join('; ')})`,
        });
      return parsed.data;
    }
  }

  /** Streams the lines of one file, resuming after a dropped connection. */
  async function* readFileLines(
    file: { type: string; url: string },
    purpose: OriginPurpose,
    requiresAccessToken: boolean,
    /** Which file, for the error (never its URL: a signed URL's query is a credential). */
    where: string,
  ): AsyncGenerator<{ line: number; text: string }> {
    const url = client.resolveUrl(file.url);
    const init: FhirRequestInit = {
      purpose,
      tokenRequired: requiresAccessToken,
      headers: { accept: 'application/fhir+ndjson' },
      resourceType: file.type,
      ...signalOpt,
    };
    let delivered = 0;
    for (let resumes = 0; ; resumes++) {
      let seen = 0;
      try {
        const response = await client.request(url, init);
        for await (const text of readLines(response, { url, type: file.type })) {
          seen += 1;
          if (seen <= delivered) continue;
          delivered = seen;
          if (text.trim() === '') continue;
          yield { line: seen, text };
        }
        return;
      } catch (err) {
        const code = networkErrorCode(err);
        if (signal?.aborted || !code || !isRetryableNetworkCode(code)) throw err;
        if (resumes >= (options.maxResumes ?? 3))
          // A body that breaks off fails outside the client's request (a bare "terminated"
          // from the stream): say which file, how far it got and what to do.
          throw new BulkExportError(
            `the download of the ${where} broke off ${resumes + 1} time(s) (${code}; ${delivered} line(s) read)`,
            'The connection to the EHR kept dropping while the file was sent; the next sync exports again. If it repeats, ask centre IT to check the proxy or load balancer in front of the bulk export files (timeouts, response size limits)',
            { cause: err },
          );
        logger.warn(
          {
            centre: client.centreId,
            fileType: file.type,
            code,
            linesRead: delivered,
            resume: resumes + 1,
          },
          'NDJSON download broke off; fetching the file again and skipping lines already read',
        );
      }
    }
  }
}

/**
 * Longest NDJSON line read, in characters (about bytes: NDJSON is mostly ASCII), 64 Mi. One
 * line is one resource; a longer one (a file without newlines, a runaway attachment) would
 * otherwise be held whole in memory, so the file fails instead.
 */
export const MAX_NDJSON_LINE_LENGTH = 64 * 1024 * 1024;

/**
 * Reads a body as lines without holding more than one chunk plus one partial line. CRLF line
 * ends are accepted, and a byte order mark at the start is dropped (TextDecoder). A line that
 * spans chunks is kept as parts and joined once (linear in its length); one longer than
 * `maxLineLength` fails with MalformedFhirResponseError, naming the file, not its content.
 */
export async function* readLines(
  response: Response,
  file: { url: string | URL; type: string },
  maxLineLength = MAX_NDJSON_LINE_LENGTH,
): AsyncGenerator<string> {
  if (!response.body) return;
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  /** The line read so far (parts of earlier chunks) and its length. */
  let parts: string[] = [];
  let partLength = 0;
  let lineNumber = 1;
  const tooLong = () =>
    new MalformedFhirResponseError({
      url: file.url,
      reason:
        `line ${lineNumber} of the ${file.type} export file is longer than ` +
        `${maxLineLength} characters (MAX_NDJSON_LINE_LENGTH); the file is not read further`,
      hint: 'Ask centre IT whether the export files are NDJSON (one resource per line)',
    });
  const take = (): string => {
    let line = parts.length === 1 ? parts[0]! : parts.join('');
    if (line.charCodeAt(line.length - 1) === 13) line = line.slice(0, -1);
    if (line.length > maxLineLength) throw tooLong();
    parts = [];
    partLength = 0;
    lineNumber += 1;
    return line;
  };
  let done = false;
  try {
    while (!done) {
      const chunk = await reader.read();
      done = chunk.done;
      const text = done ? decoder.decode() : decoder.decode(chunk.value, { stream: true });
      let start = 0;
      for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
        parts.push(text.slice(start, nl));
        yield take();
        start = nl + 1;
      }
      if (start < text.length) {
        partLength += text.length - start;
        // Longer than a line and its CR: fail before holding any more of it.
        if (partLength > maxLineLength + 1) throw tooLong();
        parts.push(text.slice(start));
      }
    }
    if (partLength > 0) yield take();
  } finally {
    if (!done) await reader.cancel().catch(() => undefined);
  }
}

function parseJsonLine(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function malformed(fileType: string, line: number, what: string): BulkItem {
  return {
    kind: 'error',
    source: 'malformed-line',
    fileType,
    line,
    issues: [{ severity: 'error', code: 'structure', details: what }],
    message: `line ${line} of the ${fileType} export file ${what} (skipped; content not shown)`,
  };
}

/**
 * Compares the lines of output file `k` (of `n`) with the manifest's `count`: fewer is an
 * error (resources missing: the run must fail, so nothing is retracted and the watermark
 * stays), more a notice. Undefined when the manifest gives no count or it matches.
 */
function countMismatch(
  file: { type: string; count?: number | undefined },
  k: number,
  n: number,
  lines: number,
): BulkItem | undefined {
  if (file.count === undefined || file.count === lines) return undefined;
  const where = `${file.type} resources in export file ${k} (of ${n})`;
  if (lines < file.count)
    return {
      kind: 'error',
      source: 'count-mismatch',
      fileType: file.type,
      line: lines,
      issues: [],
      message:
        `the EHR announced ${file.count} ${where} and sent ${lines}: the file was cut short ` +
        '(in storage, or by a proxy); the run fails so that nothing is retracted, and the next ' +
        'run exports again. If it repeats, ask centre IT to check the bulk export file storage',
    };
  return {
    kind: 'notice',
    fileType: file.type,
    line: lines,
    issues: [],
    message: `the EHR announced ${file.count} ${where} and sent ${lines} (more than announced; all were read)`,
  };
}

function parseResourceLine(text: string, fileType: string, line: number): BulkItem {
  const value = parseJsonLine(text);
  if (typeof value !== 'object' || value === null)
    return malformed(fileType, line, 'is not valid JSON');
  if (typeof (value as { resourceType?: unknown }).resourceType !== 'string')
    return malformed(fileType, line, 'has no resourceType');
  return { kind: 'resource', resource: value as FhirResource };
}

/** A `deleted` file line is a Bundle whose entries carry `request.url` = `Type/id`. */
function parseDeletedLine(text: string, fileType: string, line: number): BulkItem[] {
  const value = parseJsonLine(text) as { resourceType?: unknown; entry?: unknown } | undefined;
  if (typeof value !== 'object' || value === null)
    return [malformed(fileType, line, 'is not valid JSON')];
  if (value.resourceType !== 'Bundle' || !Array.isArray(value.entry))
    return [malformed(fileType, line, 'is not a Bundle of deleted entries')];
  return (value.entry as unknown[]).map((raw): BulkItem => {
    const entry = raw as { request?: { url?: unknown }; fullUrl?: unknown } | null;
    const url = typeof entry?.request?.url === 'string' ? entry.request.url : undefined;
    const ref = parseReference(
      url ?? (typeof entry?.fullUrl === 'string' ? entry.fullUrl : undefined),
    );
    return ref
      ? { kind: 'deleted', resourceType: ref.type, id: ref.id }
      : malformed(fileType, line, 'has a deleted entry without a Type/id request.url');
  });
}

/** Severities of an OperationOutcome issue that do not say something failed. */
const NOTICE_SEVERITIES = new Set(['information', 'warning']);

function parseErrorLine(text: string, fileType: string, line: number): BulkItem {
  const issues = parseOutcomeIssues(parseJsonLine(text));
  if (issues.length === 0) return malformed(fileType, line, 'is not an OperationOutcome');
  // The most severe issue leads the message.
  const failures = issues.filter((i) => !NOTICE_SEVERITIES.has(i.severity));
  const first = failures[0] ?? issues[0]!;
  const message =
    `export error file (${fileType}) line ${line}: ${first.severity} ${first.code}` +
    (first.details ? `: ${first.details.slice(0, 160)}` : '') +
    (issues.length > 1 ? ` (+${issues.length - 1} more issues)` : '');
  if (failures.length === 0) return { kind: 'notice', fileType, line, issues, message };
  return { kind: 'error', source: 'error-file', fileType, line, issues, message };
}

/**
 * Issue types that say "try again later" (FHIR IssueType `transient` and its children, but
 * `exception`, which servers also use for a job that crashed).
 */
const TRANSIENT_ISSUE_CODES = new Set([
  'transient',
  'throttled',
  'timeout',
  'lock-error',
  'no-store',
  'incomplete',
]);

/**
 * Whether a failed status poll is worth repeating. Bulk Data: a polling failure that does not
 * mean the job failed SHOULD carry a `transient` issue; a failed job answers 4xx/5xx with an
 * error OperationOutcome. So: 408, 429 and retryable network errors always; 5xx when an
 * issue is transient or there is no outcome at all (a gateway in between); never any other
 * 4xx (404/410: the job is gone).
 */
function isTransientPollFailure(err: unknown): boolean {
  if (err instanceof FhirHttpError) {
    if (err.status === 408 || err.status === 429) return true;
    if (err.status < 500) return false;
    if (err.issues.some((i) => TRANSIENT_ISSUE_CODES.has(i.code))) return true;
    return !err.issues.some((i) => i.severity === 'error' || i.severity === 'fatal');
  }
  const code = networkErrorCode(err);
  return code !== undefined && isRetryableNetworkCode(code);
}

/** A file request refused as a resumed job's expired file is (401/403/404/410). */
function isExpiredFileError(err: unknown): boolean {
  return err instanceof FhirHttpError && [401, 403, 404, 410].includes(err.status);
}

/** The error a failed status poll ends the pull with: the job's failure, said as such. */
function failedExport(err: unknown): unknown {
  if (!(err instanceof FhirHttpError)) return err;
  if (err.status === 404 || err.status === 410)
    return new BulkExportError(
      `the export job is gone: its status URL answered HTTP ${err.status}`,
      'The EHR dropped the job (expired or deleted); the next sync starts a new export',
      { cause: err },
    );
  if (err.status >= 400 && err.status !== 401 && err.status !== 403 && err.issues.length > 0)
    return new BulkExportError(
      `the EHR reports that the export failed (HTTP ${err.status}: ${err.issues
        .slice(0, 3)
        .map((i) => `${i.severity} ${i.code}${i.details ? ` ${i.details.slice(0, 120)}` : ''}`)
        .join('; ')})`,
      'The job failed on the EHR side; ask centre IT for the export logs, then run the sync again',
      { cause: err },
    );
  return err;
}

/** True when a resource belongs to one of the patients (or to no patient, e.g. Medication). */
function keepForPatients(resource: FhirResource, patients: ReadonlySet<string>): boolean {
  if (resource.resourceType === 'Patient')
    return resource.id !== undefined && patients.has(resource.id);
  const refs = [resource.subject, resource.patient]
    .map((r) => parseReference((r as { reference?: string } | undefined)?.reference))
    .filter((r) => r !== undefined);
  if (refs.length === 0) return true;
  return refs.some((r) => r.type === 'Patient' && patients.has(r.id));
}

/** X-Progress is free text from the server: keep it short and printable. */
function sanitizeProgress(value: string | null): string | undefined {
  if (!value) return undefined;
  return value.replace(/[^\x20-\x7e]/g, '').slice(0, 100);
}
