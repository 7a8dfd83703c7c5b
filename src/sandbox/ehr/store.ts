// The sandbox EHR's resource store. It must hold a million resources for the sync
// benchmark, so each resource is kept as its JSON string (one compact V8 string, no object
// graph) with a few extracted fields for indexing: the patient it belongs to, its
// lastUpdated as a number, and its identifiers. Each type keeps an append-only order of ids
// so paging is a cursor into that order: stable while data changes, O(page) per page.

/** The minimal shape of a FHIR resource the sandbox needs. */
export interface SandboxResource {
  resourceType: string;
  id?: string;
  meta?: { versionId?: string; lastUpdated?: string; [key: string]: unknown };
  [element: string]: unknown;
}

/** One stored resource version. */
export interface StoredEntry {
  type: string;
  id: string;
  /** The resource as JSON (with meta.versionId and meta.lastUpdated set). */
  json: string;
  versionId: string;
  /** meta.lastUpdated in epoch ms. */
  lastUpdated: number;
  /** Position in the type's order (the paging cursor). */
  pos: number;
  patientId: string | undefined;
  /** For MedicationRequest / MedicationStatement: the referenced Medication id. */
  medicationId: string | undefined;
}

/** A deletion, kept for Bulk Data `deleted` output. */
export interface DeletionRecord {
  type: string;
  id: string;
  patientId: string | undefined;
  /** Epoch ms. */
  deletedAt: number;
}

interface TypeTable {
  order: string[];
  byId: Map<string, StoredEntry>;
  /** Positions of each patient's resources, ascending. */
  byPatient: Map<string, number[]>;
  /** `system|value` and `|value`-less keys to ids (Patient and Group identifiers). */
  byIdentifier: Map<string, Set<string>>;
}

const PATIENT_REF_FIELDS = ['subject', 'patient', 'beneficiary'];

/** Extracts the patient id a resource belongs to (Patient: itself). */
export function extractPatientId(resource: Record<string, unknown>): string | undefined {
  if (resource.resourceType === 'Patient') return resource.id as string | undefined;
  for (const field of PATIENT_REF_FIELDS) {
    const ref = (resource[field] as { reference?: unknown } | undefined)?.reference;
    if (typeof ref === 'string') {
      const id = referenceId(ref, 'Patient');
      if (id) return id;
    }
  }
  return undefined;
}

const REFERENCE_PATTERNS = new Map<string, RegExp>();

/** The id in a reference such as `Patient/1`, `http://x/fhir/Patient/1` or `Patient/1/_history/2`. */
export function referenceId(reference: string, type: string): string | undefined {
  let re = REFERENCE_PATTERNS.get(type);
  if (!re) {
    re = new RegExp(`(?:^|/)${type}/([A-Za-z0-9\\-.]{1,64})(?:/_history/[^/]+)?$`);
    REFERENCE_PATTERNS.set(type, re);
  }
  return re.exec(reference)?.[1];
}

function extractMedicationId(resource: Record<string, unknown>): string | undefined {
  const ref = (resource.medicationReference as { reference?: unknown } | undefined)?.reference;
  return typeof ref === 'string' && !ref.startsWith('#')
    ? referenceId(ref, 'Medication')
    : undefined;
}

function identifierKeys(resource: Record<string, unknown>): string[] {
  const ids = resource.identifier;
  if (!Array.isArray(ids)) return [];
  const keys: string[] = [];
  for (const ident of ids as { system?: unknown; value?: unknown }[]) {
    if (typeof ident?.value !== 'string') continue;
    if (typeof ident.system === 'string') keys.push(`${ident.system}|${ident.value}`);
    keys.push(`*|${ident.value}`);
  }
  return keys;
}

function insertSorted(list: number[], value: number): void {
  const last = list[list.length - 1];
  if (last === undefined || last < value) {
    list.push(value);
    return;
  }
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (list[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  if (list[lo] !== value) list.splice(lo, 0, value);
}

/** Index of the first element >= value in an ascending list. */
export function lowerBound(list: number[], value: number): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (list[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The in-memory resource store. */
export class ResourceStore {
  private readonly tables = new Map<string, TypeTable>();
  private lastStamp = 0;
  readonly deletions: DeletionRecord[] = [];

  constructor(private readonly now: () => number) {}

  /** A strictly increasing timestamp (epoch ms): no two writes share a lastUpdated. */
  stamp(): number {
    this.lastStamp = Math.max(this.now(), this.lastStamp + 1);
    return this.lastStamp;
  }

  private table(type: string): TypeTable {
    let t = this.tables.get(type);
    if (!t) {
      t = { order: [], byId: new Map(), byPatient: new Map(), byIdentifier: new Map() };
      this.tables.set(type, t);
    }
    return t;
  }

  /** Types that hold at least one resource (live or deleted). */
  types(): string[] {
    return [...this.tables.keys()];
  }

  /**
   * Stores a resource. With `keepMeta`, meta.versionId / meta.lastUpdated are kept when
   * present (initial fixtures); otherwise the version is bumped and lastUpdated is now.
   */
  put(resource: SandboxResource, keepMeta: boolean): StoredEntry {
    if (
      typeof resource.resourceType !== 'string' ||
      !/^[A-Z][A-Za-z]+$/.test(resource.resourceType)
    )
      throw new Error('sandbox store: resource without a valid resourceType');
    if (typeof resource.id !== 'string' || !/^[A-Za-z0-9\-.]{1,64}$/.test(resource.id))
      throw new Error(`sandbox store: ${resource.resourceType} without a valid id`);
    const t = this.table(resource.resourceType);
    const previous = t.byId.get(resource.id);
    let versionId: string;
    let lastUpdated: number;
    const given = resource.meta?.lastUpdated ? Date.parse(resource.meta.lastUpdated) : NaN;
    if (keepMeta && !Number.isNaN(given)) {
      lastUpdated = given;
      versionId = resource.meta?.versionId ?? '1';
      this.lastStamp = Math.max(this.lastStamp, given);
    } else {
      lastUpdated = this.stamp();
      versionId = previous ? String((Number.parseInt(previous.versionId, 10) || 0) + 1) : '1';
      if (keepMeta && resource.meta?.versionId) versionId = resource.meta.versionId;
    }
    const stored = {
      ...resource,
      meta: { ...resource.meta, versionId, lastUpdated: new Date(lastUpdated).toISOString() },
    } as Record<string, unknown>;
    const patientId = extractPatientId(stored);
    const pos = previous ? previous.pos : t.order.length;
    if (!previous) t.order.push(resource.id);
    const entry: StoredEntry = {
      type: resource.resourceType,
      id: resource.id,
      json: JSON.stringify(stored),
      versionId,
      lastUpdated,
      pos,
      patientId,
      medicationId: extractMedicationId(stored),
    };
    t.byId.set(resource.id, entry);
    if (patientId) {
      let list = t.byPatient.get(patientId);
      if (!list) t.byPatient.set(patientId, (list = []));
      insertSorted(list, pos);
    }
    for (const key of identifierKeys(stored)) {
      let set = t.byIdentifier.get(key);
      if (!set) t.byIdentifier.set(key, (set = new Set()));
      set.add(resource.id);
    }
    return entry;
  }

  /** Deletes a resource; the deletion is recorded for Bulk Data. Returns false if absent. */
  delete(type: string, id: string): boolean {
    const t = this.tables.get(type);
    const entry = t?.byId.get(id);
    if (!t || !entry) return false;
    t.byId.delete(id);
    this.deletions.push({ type, id, patientId: entry.patientId, deletedAt: this.stamp() });
    return true;
  }

  /** True when `type/id` existed and was deleted (read answers 410 Gone). */
  wasDeleted(type: string, id: string): boolean {
    const t = this.tables.get(type);
    return !!t && !t.byId.has(id) && this.deletions.some((d) => d.type === type && d.id === id);
  }

  get(type: string, id: string): StoredEntry | undefined {
    return this.tables.get(type)?.byId.get(id);
  }

  /** Number of live resources of a type (or of every type). */
  count(type?: string): number {
    if (type) return this.tables.get(type)?.byId.size ?? 0;
    let n = 0;
    for (const t of this.tables.values()) n += t.byId.size;
    return n;
  }

  /** Length of a type's order: positions run from 0 to this (exclusive). */
  size(type: string): number {
    return this.tables.get(type)?.order.length ?? 0;
  }

  /** The live entry at a position, or undefined (deleted / re-created elsewhere). */
  at(type: string, pos: number): StoredEntry | undefined {
    const t = this.tables.get(type);
    const id = t?.order[pos];
    if (!t || id === undefined) return undefined;
    const entry = t.byId.get(id);
    return entry && entry.pos === pos ? entry : undefined;
  }

  /** Positions of a patient's resources of a type, ascending (may include stale ones). */
  patientPositions(type: string, patientId: string): number[] {
    return this.tables.get(type)?.byPatient.get(patientId) ?? [];
  }

  /** Ids of resources of a type with an identifier `system|value` (or `*|value`). */
  idsByIdentifier(type: string, key: string): string[] {
    return [...(this.tables.get(type)?.byIdentifier.get(key) ?? [])];
  }
}
