// FHIR search for the sandbox EHR: parses the parameters the bridge uses (patient/subject,
// _id, identifier, _lastUpdated with prefixes, code/category/status tokens, _count,
// _include) and walks the store from a cursor, so each page costs about its own size.
// Unknown parameters are ignored (FHIR's default "lenient" handling) and reported back, or
// rejected with `Prefer: handling=strict`.
import { lowerBound, type ResourceStore, type StoredEntry } from './store.js';

/** Resource types the sandbox serves. */
export const SUPPORTED_TYPES = [
  'Patient',
  'Encounter',
  'Observation',
  'MedicationStatement',
  'MedicationRequest',
  'Medication',
  'Condition',
  'Group',
] as const;

/** Types without a patient reference to search by. */
const NO_PATIENT_PARAM = new Set(['Patient', 'Medication', 'Group']);

/** Search parameters each type supports (besides the common ones). */
export const SEARCH_PARAMS: Record<string, string[]> = {
  Patient: ['identifier'],
  Encounter: ['patient', 'subject', 'status', 'identifier'],
  Observation: ['patient', 'subject', 'code', 'category', 'status'],
  MedicationStatement: ['patient', 'subject', 'status', 'code'],
  MedicationRequest: ['patient', 'subject', 'status', 'code'],
  Medication: ['code'],
  Condition: ['patient', 'subject', 'code', 'category'],
  Group: ['identifier'],
};

const COMMON_PARAMS = ['_id', '_lastUpdated', '_count', '_include', '_total', '_summary'];
/** Parameters that change nothing here and are silently accepted. */
const HARMLESS_PARAMS = new Set(['_format', '_pretty', '_page_token', '_sort', '_elements']);

export const DEFAULT_COUNT = 50;
export const MAX_COUNT = 1000;

export class SearchError extends Error {
  constructor(
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

interface DateBound {
  prefix: 'eq' | 'ne' | 'gt' | 'lt' | 'ge' | 'le';
  start: number;
  end: number;
}

interface TokenFilter {
  param: 'code' | 'category' | 'status';
  values: { system: string | undefined; code: string }[];
}

/** A parsed search. */
export interface SearchQuery {
  type: string;
  patients: string[] | undefined;
  ids: string[] | undefined;
  identifiers: string[] | undefined;
  lastUpdated: DateBound[];
  tokens: TokenFilter[];
  count: number;
  includeMedication: boolean;
  total: boolean;
  summaryCount: boolean;
  /** Parameters ignored (unknown to this server). */
  ignored: string[];
}

const DATE_RE =
  /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/** Parses a FHIR date/dateTime/instant into the range [start, end) it denotes (epoch ms). */
export function parseDateRange(value: string): { start: number; end: number } | undefined {
  const m = DATE_RE.exec(value);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  if (h === undefined) {
    const year = Number(y);
    if (mo === undefined) return { start: Date.UTC(year, 0, 1), end: Date.UTC(year + 1, 0, 1) };
    const month = Number(mo) - 1;
    if (d === undefined)
      return { start: Date.UTC(year, month, 1), end: Date.UTC(year, month + 1, 1) };
    const start = Date.UTC(year, month, Number(d));
    return { start, end: start + 86_400_000 };
  }
  const iso = `${y}-${mo}-${d}T${h}:${mi}:${s ?? '00'}${frac ? frac.slice(0, 4) : ''}${tz ?? 'Z'}`;
  const start = Date.parse(iso);
  if (Number.isNaN(start)) return undefined;
  const unit = frac ? 1 : s !== undefined ? 1000 : 60_000;
  return { start, end: start + unit };
}

function parseDateBound(raw: string): DateBound {
  const m = /^(eq|ne|gt|lt|ge|le|sa|eb|ap)?(.*)$/.exec(raw)!;
  const prefix = m[1] ?? 'eq';
  if (!['eq', 'ne', 'gt', 'lt', 'ge', 'le'].includes(prefix))
    throw new SearchError(
      `_lastUpdated prefix ${prefix} is not supported (use eq, ne, gt, ge, lt, le)`,
    );
  const range = parseDateRange(m[2] ?? '');
  if (!range) throw new SearchError(`_lastUpdated value "${m[2]}" is not a FHIR date or instant`);
  return { prefix: prefix as DateBound['prefix'], ...range };
}

function matchesDate(value: number, bound: DateBound): boolean {
  switch (bound.prefix) {
    case 'eq':
      return value >= bound.start && value < bound.end;
    case 'ne':
      return value < bound.start || value >= bound.end;
    case 'gt':
      return value >= bound.end;
    case 'ge':
      return value >= bound.start;
    case 'lt':
      return value < bound.start;
    case 'le':
      return value < bound.end;
  }
}

function splitValues(value: string): string[] {
  return value
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v.length > 0);
}

function patientIdFrom(value: string): string {
  const m = /(?:^|\/)Patient\/([^/]+)$/.exec(value);
  return m ? m[1]! : value;
}

/** Parses search parameters for `type`; throws SearchError for invalid values. */
export function parseSearch(type: string, params: URLSearchParams, strict: boolean): SearchQuery {
  const allowed = new Set([...COMMON_PARAMS, ...(SEARCH_PARAMS[type] ?? [])]);
  const query: SearchQuery = {
    type,
    patients: undefined,
    ids: undefined,
    identifiers: undefined,
    lastUpdated: [],
    tokens: [],
    count: DEFAULT_COUNT,
    includeMedication: false,
    total: false,
    summaryCount: false,
    ignored: [],
  };
  for (const [rawName, value] of params) {
    const name = rawName.split(':')[0]!;
    if (HARMLESS_PARAMS.has(name)) continue;
    if (!allowed.has(name)) {
      if (strict) throw new SearchError(`search parameter ${rawName} is not supported for ${type}`);
      query.ignored.push(rawName);
      continue;
    }
    switch (name) {
      case 'patient':
      case 'subject': {
        const ids = splitValues(value).map(patientIdFrom);
        query.patients = query.patients ? query.patients.filter((p) => ids.includes(p)) : ids;
        break;
      }
      case '_id': {
        const ids = splitValues(value);
        query.ids = query.ids ? query.ids.filter((i) => ids.includes(i)) : ids;
        break;
      }
      case 'identifier': {
        const keys = splitValues(value).map((v) => {
          const bar = v.indexOf('|');
          if (bar < 0) return `*|${v}`;
          const system = v.slice(0, bar);
          return system ? v : `*|${v.slice(bar + 1)}`;
        });
        query.identifiers = keys;
        break;
      }
      case '_lastUpdated':
        query.lastUpdated.push(parseDateBound(value));
        break;
      case '_count': {
        const n = Number(value);
        if (!Number.isInteger(n) || n < 0)
          throw new SearchError(`_count must be a whole number, got "${value}"`);
        query.count = Math.min(n, MAX_COUNT);
        break;
      }
      case '_include':
        if (value === 'MedicationRequest:medication' || value === 'MedicationStatement:medication')
          query.includeMedication = true;
        else if (strict) throw new SearchError(`_include ${value} is not supported`);
        else query.ignored.push(`_include=${value}`);
        break;
      case '_total':
        query.total = value === 'accurate' || value === 'estimate';
        break;
      case '_summary':
        if (value === 'count') query.summaryCount = true;
        break;
      case 'code':
      case 'category':
      case 'status':
        query.tokens.push({
          param: name,
          values: splitValues(value).map((v) => {
            const bar = v.indexOf('|');
            return bar < 0
              ? { system: undefined, code: v }
              : { system: v.slice(0, bar), code: v.slice(bar + 1) };
          }),
        });
        break;
      default:
        query.ignored.push(rawName);
    }
  }
  if (query.patients && NO_PATIENT_PARAM.has(type))
    throw new SearchError(`${type} has no patient search parameter`);
  return query;
}

interface Coding {
  system?: string;
  code?: string;
}

function codingsOf(resource: Record<string, unknown>, param: TokenFilter['param']): Coding[] {
  const out: Coding[] = [];
  const addConcept = (c: unknown) => {
    const codings = (c as { coding?: unknown } | undefined)?.coding;
    if (Array.isArray(codings)) out.push(...(codings as Coding[]));
  };
  if (param === 'status') {
    if (typeof resource.status === 'string') out.push({ code: resource.status });
  } else if (param === 'category') {
    const cats = resource.category;
    if (Array.isArray(cats)) cats.forEach(addConcept);
    else addConcept(cats);
  } else {
    addConcept(resource.code);
    addConcept(resource.medicationCodeableConcept);
  }
  return out;
}

function matchesTokens(json: string, tokens: TokenFilter[]): boolean {
  const resource = JSON.parse(json) as Record<string, unknown>;
  return tokens.every((t) => {
    const codings = codingsOf(resource, t.param);
    return t.values.some((v) =>
      codings.some(
        (c) => c.code === v.code && (v.system === undefined || (c.system ?? '') === v.system),
      ),
    );
  });
}

/** True when a stored entry satisfies the query's filters (everything but the cursor). */
export function matchesQuery(entry: StoredEntry, query: SearchQuery): boolean {
  if (query.ids && !query.ids.includes(entry.id)) return false;
  if (query.patients) {
    if (query.type === 'Patient') {
      if (!query.patients.includes(entry.id)) return false;
    } else if (!entry.patientId || !query.patients.includes(entry.patientId)) return false;
  }
  for (const bound of query.lastUpdated) if (!matchesDate(entry.lastUpdated, bound)) return false;
  if (query.tokens.length > 0 && !matchesTokens(entry.json, query.tokens)) return false;
  return true;
}

/**
 * Candidate positions for a query, ascending, starting at `from`: narrowed through the
 * patient, _id or identifier index when the query has one, else every position.
 */
function* candidatePositions(
  store: ResourceStore,
  query: SearchQuery,
  from: number,
): Generator<number> {
  const type = query.type;
  let narrowed: number[] | undefined;
  const idPositions = (ids: Iterable<string>) => {
    const out: number[] = [];
    for (const id of ids) {
      const e = store.get(type, id);
      if (e) out.push(e.pos);
    }
    return out;
  };
  if (query.ids) narrowed = idPositions(query.ids);
  if (query.identifiers) {
    const ids = new Set(query.identifiers.flatMap((k) => store.idsByIdentifier(type, k)));
    const positions = idPositions(ids);
    narrowed = narrowed ? narrowed.filter((p) => positions.includes(p)) : positions;
  }
  if (query.patients && !narrowed) {
    if (type === 'Patient') narrowed = idPositions(query.patients);
    else if (query.patients.length === 1) {
      const list = store.patientPositions(type, query.patients[0]!);
      for (let i = lowerBound(list, from); i < list.length; i++) yield list[i]!;
      return;
    } else narrowed = query.patients.flatMap((p) => store.patientPositions(type, p));
  }
  if (narrowed) {
    const sorted = [...new Set(narrowed)].sort((a, b) => a - b);
    for (let i = lowerBound(sorted, from); i < sorted.length; i++) yield sorted[i]!;
    return;
  }
  const size = store.size(type);
  for (let pos = from; pos < size; pos++) yield pos;
}

/** One page of matches and where the next page starts (undefined at the end). */
export interface SearchPage {
  entries: StoredEntry[];
  nextCursor: number | undefined;
}

/** Collects up to `count` matches from position `from`. */
export function searchPage(store: ResourceStore, query: SearchQuery, from: number): SearchPage {
  const entries: StoredEntry[] = [];
  for (const pos of candidatePositions(store, query, from)) {
    const entry = store.at(query.type, pos);
    if (!entry || !matchesQuery(entry, query)) continue;
    if (entries.length === query.count) return { entries, nextCursor: pos };
    entries.push(entry);
  }
  return { entries, nextCursor: undefined };
}

/** Counts every match (for _total / _summary=count). */
export function countMatches(store: ResourceStore, query: SearchQuery): number {
  let n = 0;
  for (const pos of candidatePositions(store, query, 0)) {
    const entry = store.at(query.type, pos);
    if (entry && matchesQuery(entry, query)) n++;
  }
  return n;
}
