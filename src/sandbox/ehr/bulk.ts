// Bulk Data ($export) jobs for the sandbox EHR. A kick-off snapshots, at its transaction
// time, the JSON strings of every matching resource (strings are immutable, so the snapshot
// costs one pointer per resource, not a copy), split into NDJSON files per type. Deletions
// since `_since` become `deleted` Bundles of DELETE requests, as the Bulk Data spec asks.
// The snapshot is built in slices so a large export does not block other requests.
import { randomUUID } from 'node:crypto';
import { matchesQuery, parseSearch, type SearchError, type SearchQuery } from './search.js';
import type { ResourceStore, StoredEntry } from './store.js';

/** Types a patient-level export can produce. */
export const EXPORT_TYPES = [
  'Patient',
  'Encounter',
  'Observation',
  'MedicationStatement',
  'MedicationRequest',
  'Medication',
  'Condition',
];

export interface ExportFile {
  type: string;
  lines: string[];
  /** The file of injected notices (fault `exportNotices`), added once per job. */
  notices?: true;
}

export interface ExportJob {
  id: string;
  clientId: string;
  /** The kick-off URL as requested. */
  request: string;
  transactionTime: string;
  transactionMs: number;
  types: string[];
  since: number | undefined;
  status: 'in-progress' | 'complete' | 'failed' | 'cancelled';
  /** Why the job failed (status failed). */
  failure?: string;
  /** Status polls answered while in progress (jobs finish after `pollsBeforeDone`). */
  polls: number;
  /** Fraction of the snapshot done, 0..1. */
  progress: number;
  files: ExportFile[];
  errors: ExportFile[];
  deleted: ExportFile[];
}

export interface KickOffParams {
  clientId: string;
  request: string;
  /** Patient ids in scope (a Group's members), or undefined for every patient. */
  patients: string[] | undefined;
  types: string[];
  since: number | undefined;
  typeFilters: string[];
  transactionMs: number;
}

function chunk(lines: string[], size: number): string[][] {
  const out: string[][] = [];
  for (let i = 0; i < lines.length; i += size) out.push(lines.slice(i, i + size));
  return out.length > 0 ? out : [];
}

function outcomeLine(message: string): string {
  return JSON.stringify({
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code: 'not-supported', diagnostics: message }],
  });
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Runs export jobs against a store. */
export class ExportJobs {
  readonly jobs = new Map<string, ExportJob>();

  constructor(
    private readonly store: ResourceStore,
    private readonly maxLinesPerFile: number,
  ) {}

  /** Starts a job; the snapshot fills in asynchronously. */
  start(params: KickOffParams): ExportJob {
    const job: ExportJob = {
      id: randomUUID(),
      clientId: params.clientId,
      request: params.request,
      transactionMs: params.transactionMs,
      transactionTime: new Date(params.transactionMs).toISOString(),
      types: params.types,
      since: params.since,
      status: 'in-progress',
      polls: 0,
      progress: 0,
      files: [],
      errors: [],
      deleted: [],
    };
    this.jobs.set(job.id, job);
    this.build(job, params).catch((err: unknown) => {
      job.status = 'failed';
      job.failure = (err as Error).message;
    });
    return job;
  }

  private parseTypeFilters(params: KickOffParams, errors: string[]): Map<string, SearchQuery[]> {
    const filters = new Map<string, SearchQuery[]>();
    for (const filter of params.typeFilters) {
      const q = filter.indexOf('?');
      const type = q < 0 ? filter : filter.slice(0, q);
      if (!params.types.includes(type)) {
        errors.push(`_typeFilter ${type} ignored: type not exported`);
        continue;
      }
      try {
        const query = parseSearch(
          type,
          new URLSearchParams(q < 0 ? '' : filter.slice(q + 1)),
          true,
        );
        const list = filters.get(type) ?? [];
        list.push(query);
        filters.set(type, list);
      } catch (err) {
        errors.push(`_typeFilter for ${type} ignored: ${(err as SearchError).message}`);
      }
    }
    return filters;
  }

  private async build(job: ExportJob, params: KickOffParams): Promise<void> {
    const errorMessages: string[] = [];
    const filters = this.parseTypeFilters(params, errorMessages);
    const store = this.store;
    const since = params.since;
    const patientSet = params.patients ? new Set(params.patients) : undefined;
    const medicationIds = new Set<string>();
    const perType = new Map<string, string[]>();
    const accept = (entry: StoredEntry): boolean => {
      if (entry.lastUpdated > job.transactionMs) return false;
      if (since !== undefined && entry.lastUpdated <= since) return false;
      const typeFilters = filters.get(entry.type);
      return !typeFilters || typeFilters.some((q) => matchesQuery(entry, q));
    };
    const types = params.types.filter((t) => t !== 'Medication');
    let done = 0;
    const total = types.length + (params.types.includes('Medication') ? 1 : 0);
    let sinceYield = 0;
    for (const type of types) {
      const lines: string[] = [];
      const visit = (entry: StoredEntry | undefined) => {
        if (!entry) return;
        if (entry.medicationId) medicationIds.add(entry.medicationId);
        if (accept(entry)) lines.push(entry.json);
      };
      if (patientSet && type !== 'Patient') {
        for (const patient of patientSet) {
          for (const pos of store.patientPositions(type, patient)) {
            const entry = store.at(type, pos);
            if (entry?.patientId === patient) visit(entry);
          }
          if (++sinceYield >= 500) {
            sinceYield = 0;
            await yieldToEventLoop();
            if (job.status === 'cancelled') return;
          }
        }
      } else {
        const size = store.size(type);
        for (let pos = 0; pos < size; pos++) {
          const entry = store.at(type, pos);
          if (entry && (!patientSet || patientSet.has(entry.id))) visit(entry);
          if (++sinceYield >= 20_000) {
            sinceYield = 0;
            await yieldToEventLoop();
            if (job.status === 'cancelled') return;
          }
        }
      }
      perType.set(type, lines);
      job.progress = ++done / total;
    }
    if (params.types.includes('Medication')) {
      // Medications are outside the patient compartment: export the ones the exported
      // medication orders/statements reference (everything for a system-wide export).
      const lines: string[] = [];
      if (patientSet) {
        for (const id of medicationIds) {
          const entry = store.get('Medication', id);
          if (entry && accept(entry)) lines.push(entry.json);
        }
      } else {
        const size = store.size('Medication');
        for (let pos = 0; pos < size; pos++) {
          const entry = store.at('Medication', pos);
          if (entry && accept(entry)) lines.push(entry.json);
        }
      }
      perType.set('Medication', lines);
      job.progress = 1;
    }
    for (const [type, lines] of perType)
      for (const part of chunk(lines, this.maxLinesPerFile)) job.files.push({ type, lines: part });
    if (since !== undefined) {
      const deletedLines = store.deletions
        .filter(
          (d) =>
            d.deletedAt > since &&
            d.deletedAt <= job.transactionMs &&
            params.types.includes(d.type) &&
            (!patientSet || (d.patientId !== undefined && patientSet.has(d.patientId))),
        )
        .map((d) =>
          JSON.stringify({
            resourceType: 'Bundle',
            type: 'transaction',
            entry: [{ request: { method: 'DELETE', url: `${d.type}/${d.id}` } }],
          }),
        );
      for (const part of chunk(deletedLines, this.maxLinesPerFile))
        job.deleted.push({ type: 'Bundle', lines: part });
    }
    if (errorMessages.length > 0)
      job.errors.push({ type: 'OperationOutcome', lines: errorMessages.map(outcomeLine) });
    if (job.status === 'in-progress') job.status = 'complete';
  }

  /** Cancels a job; its files stop being served. Returns false if unknown. */
  cancel(id: string): boolean {
    const job = this.jobs.get(id);
    if (!job || job.status === 'cancelled') return false;
    job.status = 'cancelled';
    job.files = [];
    job.deleted = [];
    job.errors = [];
    this.jobs.delete(id);
    return true;
  }
}
