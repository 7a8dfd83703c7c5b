// The registry assembly: view rows, grouped by patient, become one submission per visit.
// Resources are reduced to small records as they arrive (streaming, memory bounded by what
// the rules need, not by input size); visits are assembled at the end because an
// observation may arrive before its encounter. Pure: no I/O, deterministic output order.
import { HashWriter, pseudonymKey, submissionId } from '../registry/keys.js';
import { buildRetraction } from '../registry/retraction.js';
import {
  VisitSubmissionSchema,
  type Diagnosis,
  type Finding,
  type FindingKind,
  type PgaCategory,
  type RegistrySubmission,
  type SourceRef,
  type VisitSubmission,
} from '../registry/submission.js';
import { createZoneCalendar, dayNumberOf, wholeMonthsBetween, type ZoneCalendar } from './dates.js';
import { applyCentreOverrides, parseCentreOverrides } from './overrides.js';
import {
  UCUM,
  type LinkRule,
  type MappingPack,
  type VitalField,
  type VitalFieldSpec,
} from './pack-schema.js';
import {
  endDateOf,
  isActiveOn,
  judgeSteroid,
  type MedicationInfo,
  type MedicationUse,
  type SteroidJudgement,
} from './steroids.js';
import { createUnitConverter, roundTo, type UnitConverter } from './units.js';
import {
  buildPackIndex,
  lookupCoding,
  lookupDiagnosis,
  normaliseText,
  type Coding,
  type CodingMap,
  type ObservationField,
  type PackIndex,
} from './value-sets.js';

/** Any FHIR resource; only `resourceType` is relied on before the views run. */
export interface FhirResource {
  resourceType: string;
  id?: string;
  [key: string]: unknown;
}

export interface MapperOptions {
  centreId: string;
  pseudonymSecret: string;
  /** IANA time zone of the centre: visit dates and same-day links use it. */
  timeZone: string;
  /** `centre.mapping.overrides`, validated here. */
  overrides?: unknown;
  /** Names the overrides' origin in errors (e.g. the centre file path). */
  overridesSource?: string;
  /**
   * Check every visit submission against the registry zod schema before returning it
   * (default false: the assembler builds them by construction; tests and the map command
   * turn it on).
   */
  validate?: boolean;
}

export interface MapStats {
  /** Resources seen (bundle entries counted one by one). */
  resources: number;
  /** Visit submissions produced. */
  visits: number;
  /** Retractions produced. */
  retractions: number;
  /** Findings by kind, over all submissions and unattached findings. */
  byKind: Record<string, number>;
  /** Resources seen by resourceType. */
  byResourceType: Record<string, number>;
}

export interface MapResult {
  submissions: RegistrySubmission[];
  /** Every finding: those carried by submissions, then those no submission could carry. */
  findings: Finding[];
  stats: MapStats;
}

export interface Assembler {
  add(resource: FhirResource): void;
  finish(): MapResult;
}

export interface Mapper {
  mapResources(resources: Iterable<FhirResource>): MapResult;
  createAssembler(): Assembler;
}

// ---------------------------------------------------------------------------------------
// Records kept per resource (small; only what the rules read)

interface Versioned {
  id: string;
  versionId: string | null;
  lastUpdated: string | null;
}

interface PatientRecord extends Versioned {
  birthDate: string | null;
  gender: string | null;
}

interface EncounterRecord extends Versioned {
  status: string | null;
  /** The visit type of its class (pack `visits.classes`), null when not a visit class. */
  visitType: string | null;
  periodStart: string | null;
}

interface ObservationRecord extends Versioned {
  field: ObservationField;
  encounter: string | null;
  /** The calendar day in the centre's zone (days since 1970-01-01), for day arithmetic. */
  day: number | null;
  instant: number | null;
  /** Vitals: converted value (unrounded) or why not. */
  value: number | null;
  problem: 'unconvertible' | null;
  unit: string | null;
  /** PGA: mapped category, or the unmapped answer. */
  category: PgaCategory | null;
  unmappedCode: string | null;
  unmappedText: boolean;
}

interface ConditionRecord extends Versioned {
  diagnosis: Diagnosis;
  date: string | null;
}

interface PatientBucket {
  patient: PatientRecord | null;
  encounters: Map<string, EncounterRecord>;
  observations: Map<string, ObservationRecord>;
  medications: Map<string, MedicationUse>;
  conditions: Map<string, ConditionRecord>;
}

interface Visit {
  encounter: EncounterRecord;
  date: string;
  day: number;
  instant: number;
  type: string;
}

interface Candidate {
  obs: ObservationRecord;
  strength: 3 | 2 | 1;
  distance: number;
}

type Row = Record<string, unknown>;

const SUBMISSION_SCHEMA = 'lhn-bridge/registry-submission/v1';

const str = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : null);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

// Objects that go into the content hash are built with their keys in sorted order, so that
// JSON.stringify gives the canonical JSON directly (keys.ts canonicalJson would sort them at
// several times the cost). test/mapping checks the two always agree.

function ref(type: string, rec: Versioned): SourceRef {
  const r = { id: rec.id } as SourceRef;
  if (rec.lastUpdated) r.lastUpdated = rec.lastUpdated;
  r.resourceType = type;
  if (rec.versionId) r.versionId = rec.versionId;
  return r;
}

function compareRefs(a: SourceRef, b: SourceRef): number {
  if (a.resourceType !== b.resourceType) return a.resourceType < b.resourceType ? -1 : 1;
  if (a.id !== b.id) return a.id < b.id ? -1 : 1;
  return 0;
}

// The canonical JSON (keys sorted at every level, as keys.ts canonicalJson writes it) of a
// visit's clinical content is written straight into a HashWriter: the keys below are in
// sorted order. test/mapping checks the hash against canonicalJson over many visits.

/** A SourceRef made by `ref` (same keys, same order). */
function writeRef(w: HashWriter, r: SourceRef): void {
  w.text('{"id":');
  w.str(r.id);
  if (r.lastUpdated !== undefined) {
    w.text(',"lastUpdated":');
    w.str(r.lastUpdated);
  }
  w.text(',"resourceType":');
  w.str(r.resourceType);
  if (r.versionId !== undefined) {
    w.text(',"versionId":');
    w.str(r.versionId);
  }
  w.text('}');
}

/** `{"unit":..,"value":..}` or `null`. */
function writeVital(w: HashWriter, v: { unit: string; value: number } | null): void {
  if (v === null) {
    w.text('null');
    return;
  }
  w.text('{"unit":');
  w.str(v.unit);
  w.text(',"value":');
  w.num(v.value);
  w.text('}');
}

function writeNullableString(w: HashWriter, v: string | null): void {
  if (v === null) w.text('null');
  else w.str(v);
}

/** A list of findings (keys in the order `finding` sets them). */
function writeFindings(w: HashWriter, items: readonly Finding[]): void {
  w.text('[');
  for (let i = 0; i < items.length; i++) {
    const f = items[i]!;
    if (i > 0) w.text(',');
    if (f.code !== undefined) {
      w.text('{"code":');
      w.str(f.code);
      w.text(',"field":');
    } else w.text('{"field":');
    w.str(f.field);
    w.text(',"kind":');
    w.str(f.kind);
    w.text(',"message":');
    w.str(f.message);
    if (f.resource !== undefined) {
      w.text(',"resource":');
      w.str(f.resource);
    }
    w.text('}');
  }
  w.text(']');
}

/** Adds a coding unless it is empty or already listed (lists are short: a scan beats a Set). */
function pushCoding(list: Coding[], system: unknown, code: unknown, display?: unknown): void {
  const s = str(system);
  const c = str(code);
  const d = str(display);
  if (!c && !d) return;
  for (const x of list) if (x.system === s && x.code === c && x.display === d) return;
  list.push({ system: s, code: c, display: d });
}

const SEX: Record<string, VisitSubmission['patient']['sex']> = {
  male: 'male',
  female: 'female',
  other: 'other',
  unknown: 'unknown',
};

// ---------------------------------------------------------------------------------------

/**
 * Creates a mapper for one centre: the pack (with the centre's overrides applied), lookup
 * tables and unit converters are built once here; mapping is then row-level work only.
 * Throws OverridesError when the overrides are invalid.
 */
export function createMapper(pack: MappingPack, options: MapperOptions): Mapper {
  const effective =
    options.overrides === undefined
      ? pack
      : applyCentreOverrides(
          pack,
          parseCentreOverrides(options.overrides, options.overridesSource ?? 'centre file'),
        );
  const calendar = createZoneCalendar(options.timeZone);
  const index = buildPackIndex(effective);
  const spec = effective.assembly;
  const converters: Record<VitalField, UnitConverter> = {
    height: createUnitConverter('cm', spec.units.synonyms),
    weight: createUnitConverter('kg', spec.units.synonyms),
    bmi: createUnitConverter('kg/m2', spec.units.synonyms),
  };
  const context: Context = {
    pack: effective,
    index,
    calendar,
    converters,
    centreId: options.centreId,
    secret: options.pseudonymSecret,
    visitClasses: visitClassMap(spec.visits.classes),
    visitStatuses: new Set(spec.visits.statuses),
    retractStatuses: new Set(spec.visits.retractStatuses),
    observationStatuses: new Set(spec.observations.statuses),
    validate: options.validate ?? false,
    writer: new HashWriter(),
  };
  return {
    createAssembler: () => createAssemblerFor(context),
    mapResources(resources) {
      const assembler = createAssemblerFor(context);
      for (const r of resources) assembler.add(r);
      return assembler.finish();
    },
  };
}

function visitClassMap(
  classes: { system: string; code: string; type: string }[],
): CodingMap<string> {
  const map: CodingMap<string> = new Map();
  for (const c of classes) {
    let codes = map.get(c.system);
    if (!codes) {
      codes = new Map();
      map.set(c.system, codes);
    }
    codes.set(c.code, c.type);
  }
  return map;
}

interface Context {
  pack: MappingPack;
  index: PackIndex;
  calendar: ZoneCalendar;
  converters: Record<VitalField, UnitConverter>;
  centreId: string;
  secret: string;
  /** system -> code -> visit type. */
  visitClasses: CodingMap<string>;
  visitStatuses: Set<string>;
  retractStatuses: Set<string>;
  observationStatuses: Set<string>;
  validate: boolean;
  /** Writes and hashes each visit's canonical JSON (one per mapper; mapping is synchronous). */
  writer: HashWriter;
}

function createAssemblerFor(ctx: Context): Assembler {
  const { pack, index, calendar } = ctx;
  const views = pack.views;
  const buckets = new Map<string, PatientBucket>();
  const medications = new Map<string, MedicationInfo>();
  const unattributed = new Map<string, EncounterRecord>();
  const byResourceType: Record<string, number> = {};
  let resources = 0;
  let finished = false;

  // Resources mostly arrive grouped by patient (searches are per patient; export files are
  // usually in patient order), so the last bucket is checked before the map.
  let lastPatientId: string | null = null;
  let lastBucket: PatientBucket | null = null;
  const bucketOf = (patientId: string): PatientBucket => {
    if (patientId === lastPatientId && lastBucket !== null) return lastBucket;
    let b = buckets.get(patientId);
    lastPatientId = patientId;
    if (!b) {
      b = {
        patient: null,
        encounters: new Map(),
        observations: new Map(),
        medications: new Map(),
        conditions: new Map(),
      };
      buckets.set(patientId, b);
    }
    lastBucket = b;
    return b;
  };

  const readMedication = (resource: unknown): MedicationInfo | null => {
    const rows = views.medication.rows(resource);
    const first = rows[0];
    if (!first || !str(first.id)) return null;
    const info: MedicationInfo = {
      id: str(first.id) ?? '',
      versionId: str(first.version_id),
      lastUpdated: str(first.last_updated),
      codings: [],
      ingredientCodings: [],
      formCodings: [],
      text: str(first.code_text),
      formText: str(first.form_text),
    };
    for (const row of rows) {
      pushCoding(info.codings, row.code_system, row.code, row.code_display);
      pushCoding(
        info.ingredientCodings,
        row.ingredient_system,
        row.ingredient_code,
        row.ingredient_display,
      );
      pushCoding(info.formCodings, row.form_system, row.form_code, row.form_display);
    }
    return info;
  };

  const addObservation = (resource: FhirResource): void => {
    const rows = views.observation.rows(resource);
    let field: ObservationField | undefined;
    for (const row of rows) {
      field = lookupCoding(index.observationField, row.code_system, row.code);
      if (field) break;
    }
    const first = rows[0];
    if (!field || !first) return;
    const status = str(first.status);
    const patient = str(first.patient);
    const id = str(first.id);
    if (!status || !ctx.observationStatuses.has(status) || !patient || !id) return;
    const when =
      str(first.effective_datetime) ?? str(first.effective_instant) ?? str(first.effective_start);
    const instant = calendar.instantOf(when);
    const rec: ObservationRecord = {
      id,
      versionId: str(first.version_id),
      lastUpdated: str(first.last_updated),
      field,
      encounter: str(first.encounter),
      day: calendar.dayOf(when, instant),
      instant,
      value: null,
      problem: null,
      unit: null,
      category: null,
      unmappedCode: null,
      unmappedText: false,
    };
    if (field === 'pga') {
      classifyPga(rec, rows, first);
    } else {
      const value = num(first.value_number);
      if (value === null) return; // no quantity (e.g. dataAbsentReason): not a candidate
      const unitCode = str(first.value_unit_system) === UCUM ? str(first.value_unit_code) : null;
      const unit = unitCode ?? str(first.value_unit) ?? str(first.value_unit_code);
      rec.unit = unit;
      const factor = unit ? ctx.converters[field].factor(unit) : null;
      if (factor === null) rec.problem = 'unconvertible';
      else rec.value = value * factor;
    }
    bucketOf(patient).observations.set(id, rec);
  };

  const classifyPga = (rec: ObservationRecord, rows: Row[], first: Row): void => {
    let firstUnmapped: string | null = null;
    for (const row of rows) {
      const system = str(row.answer_system);
      const code = str(row.answer_code);
      if (!code) continue;
      const category = index.pgaAnswerByCode.get(system ?? '')?.get(code);
      if (category) {
        rec.category = category;
        return;
      }
      firstUnmapped ??= `${system ?? ''}|${code}`;
    }
    const text = str(first.value_text) ?? str(first.value_string);
    if (text) {
      const category = index.pgaAnswerByText.get(normaliseText(text));
      if (category) {
        rec.category = category;
        return;
      }
    }
    if (firstUnmapped) rec.unmappedCode = firstUnmapped;
    else rec.unmappedText = text !== null;
  };

  const addMedicationUse = (resource: FhirResource, type: MedicationUse['resourceType']): void => {
    const view =
      type === 'MedicationStatement' ? views.medicationStatement : views.medicationRequest;
    const rows = view.rows(resource);
    const first = rows[0];
    const patient = first ? str(first.patient) : null;
    const id = first ? str(first.id) : null;
    if (!first || !patient || !id) return;
    const use: MedicationUse = {
      resourceType: type,
      id: str(first.id) ?? '',
      versionId: str(first.version_id),
      lastUpdated: str(first.last_updated),
      status: str(first.status),
      intent: str(first.intent),
      codings: [],
      text: str(first.medication_text),
      medicationReference: str(first.medication_reference),
      contained: new Map(),
      routeCodings: [],
      routeTexts: [],
      periods: [],
      singleDate:
        type === 'MedicationStatement' ? str(first.effective_datetime) : str(first.authored_on),
    };
    for (const row of rows) {
      pushCoding(use.codings, row.med_system, row.med_code, row.med_display);
      pushCoding(use.routeCodings, row.route_system, row.route_code, row.route_display);
      const routeText = str(row.route_text);
      if (routeText && !use.routeTexts.includes(routeText)) use.routeTexts.push(routeText);
      const start = str(row.effective_start) ?? str(row.bounds_start);
      const end = str(row.effective_end) ?? str(row.bounds_end);
      if ((start || end) && !use.periods.some((p) => p.start === start && p.end === end)) {
        use.periods.push({ start, end });
      }
    }
    const vStart = str(first.validity_start);
    const vEnd = str(first.validity_end);
    if (vStart || vEnd) use.periods.push({ start: vStart, end: vEnd });
    const contained = resource.contained;
    if (Array.isArray(contained)) {
      for (const c of contained as FhirResource[]) {
        if (c?.resourceType !== 'Medication') continue;
        const info = readMedication(c);
        if (info) use.contained.set(`#${info.id}`, info);
      }
    }
    bucketOf(patient).medications.set(`${type}/${id}`, use);
  };

  const addCondition = (resource: FhirResource): void => {
    const rows = views.condition.rows(resource);
    const first = rows[0];
    const patient = first ? str(first.patient) : null;
    if (!first || !patient || !str(first.id)) return;
    const verification = str(first.verification_status);
    if (
      verification &&
      pack.assembly.fields.diagnosis.excludeVerificationStatuses.includes(verification)
    )
      return;
    let diagnosis: Diagnosis | null = null;
    for (const row of rows) {
      diagnosis = lookupDiagnosis(index, { system: str(row.code_system), code: str(row.code) });
      if (diagnosis) break;
    }
    if (!diagnosis) return;
    const rec: ConditionRecord = {
      id: str(first.id) ?? '',
      versionId: str(first.version_id),
      lastUpdated: str(first.last_updated),
      diagnosis,
      date: str(first.recorded_date) ?? str(first.onset_datetime),
    };
    bucketOf(patient).conditions.set(rec.id, rec);
  };

  const add = (resource: FhirResource): void => {
    if (finished) throw new Error('this assembler has finished; create a new one');
    const type = resource?.resourceType;
    if (type === 'Bundle') {
      const entries = (resource as { entry?: { resource?: FhirResource }[] }).entry ?? [];
      for (const e of entries) if (e?.resource) add(e.resource);
      return;
    }
    resources += 1;
    byResourceType[type] = (byResourceType[type] ?? 0) + 1;
    switch (type) {
      case 'Observation':
        addObservation(resource);
        return;
      case 'Encounter': {
        const first = views.encounter.rows(resource)[0];
        if (!first || !str(first.id)) return;
        const rec: EncounterRecord = {
          id: str(first.id) ?? '',
          versionId: str(first.version_id),
          lastUpdated: str(first.last_updated),
          status: str(first.status),
          visitType: lookupCoding(ctx.visitClasses, first.class_system, first.class_code) ?? null,
          periodStart: str(first.period_start),
        };
        const patient = str(first.patient);
        if (patient) bucketOf(patient).encounters.set(rec.id, rec);
        else unattributed.set(rec.id, rec);
        return;
      }
      case 'Patient': {
        const first = views.patient.rows(resource)[0];
        const id = first ? str(first.id) : null;
        if (!first || !id) return;
        bucketOf(id).patient = {
          id: str(first.id) ?? '',
          versionId: str(first.version_id),
          lastUpdated: str(first.last_updated),
          birthDate: str(first.birth_date),
          gender: str(first.gender),
        };
        return;
      }
      case 'MedicationStatement':
      case 'MedicationRequest':
        addMedicationUse(resource, type);
        return;
      case 'Medication': {
        const info = readMedication(resource);
        if (info) medications.set(info.id, info);
        return;
      }
      case 'Condition':
        addCondition(resource);
        return;
      default:
        return;
    }
  };

  const finish = (): MapResult => {
    if (finished) throw new Error('finish() was already called on this assembler');
    finished = true;
    const submissions: RegistrySubmission[] = [];
    const orphanFindings: Finding[] = [];
    // A visit without a patient cannot be keyed; say so rather than drop it silently.
    for (const enc of [...unattributed.values()].sort((a, b) => (a.id < b.id ? -1 : 1))) {
      if (enc.visitType === null || !enc.status) continue;
      if (!ctx.visitStatuses.has(enc.status) && !ctx.retractStatuses.has(enc.status)) continue;
      orphanFindings.push(
        finding(
          'missing-value',
          'visit.patient',
          'visit encounter has no patient (subject) reference, so it was not submitted',
          `Encounter/${enc.id}`,
        ),
      );
    }
    const patientIds = [...buckets.keys()].sort();
    for (const patientId of patientIds) {
      assemblePatient(
        ctx,
        patientId,
        buckets.get(patientId)!,
        medications,
        submissions,
        orphanFindings,
      );
    }
    const findings: Finding[] = [];
    for (const s of submissions) if (s.kind === 'visit') findings.push(...s.findings);
    findings.push(...orphanFindings);
    const byKind: Record<string, number> = {};
    for (const f of findings) byKind[f.kind] = (byKind[f.kind] ?? 0) + 1;
    let visits = 0;
    for (const s of submissions) if (s.kind === 'visit') visits += 1;
    return {
      submissions,
      findings,
      stats: {
        resources,
        visits,
        retractions: submissions.length - visits,
        byKind,
        byResourceType,
      },
    };
  };

  return { add, finish };
}

// ---------------------------------------------------------------------------------------
// Per-patient assembly

function finding(
  kind: FindingKind,
  field: string,
  message: string,
  resource?: string,
  code?: string,
): Finding {
  const f = (code ? { code } : {}) as Finding;
  f.field = field;
  f.kind = kind;
  f.message = message;
  if (resource) f.resource = resource;
  return f;
}

function assemblePatient(
  ctx: Context,
  patientId: string,
  bucket: PatientBucket,
  medications: Map<string, MedicationInfo>,
  out: RegistrySubmission[],
  orphans: Finding[],
): void {
  const { calendar } = ctx;
  const visits: Visit[] = [];
  const retracted: EncounterRecord[] = [];
  const visitIds = new Set<string>();
  for (const enc of bucket.encounters.values()) {
    if (enc.status && ctx.retractStatuses.has(enc.status)) {
      retracted.push(enc);
      continue;
    }
    const type = enc.visitType;
    if (!type || !enc.status || !ctx.visitStatuses.has(enc.status)) continue;
    const date = calendar.dateOf(enc.periodStart);
    if (!date) {
      orphans.push(
        finding(
          'missing-value',
          'visit.date',
          'visit encounter has no period.start, so it has no visit date and was not submitted',
          `Encounter/${enc.id}`,
        ),
      );
      continue;
    }
    visits.push({
      encounter: enc,
      date,
      day: dayNumberOf(date)!,
      instant: calendar.instantOf(enc.periodStart) ?? 0,
      type,
    });
    visitIds.add(enc.id);
  }
  visits.sort((a, b) =>
    a.date !== b.date ? (a.date < b.date ? -1 : 1) : a.encounter.id < b.encounter.id ? -1 : 1,
  );
  if (visits.length === 0 && retracted.length === 0) return;

  const patientKey = pseudonymKey(ctx.secret, ctx.centreId, 'Patient', patientId);
  const patient = describePatient(ctx, patientKey, bucket.patient);
  const byField: Record<ObservationField, FieldObservations> = {
    pga: { list: [], atVisit: [] },
    height: { list: [], atVisit: [] },
    weight: { list: [], atVisit: [] },
    bmi: { list: [], atVisit: [] },
  };
  for (const o of bucket.observations.values()) {
    const f = byField[o.field];
    f.list.push(o);
    f.atVisit.push(o.encounter !== null && visitIds.has(o.encounter));
  }
  const judgements = new Map<string, SteroidJudgement | null>();
  // Sorted once per patient: the order of steroid evidence must not depend on input order.
  const meds = [...bucket.medications.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const diagnosis = chooseDiagnosis(bucket);

  for (const visit of visits) {
    out.push(assembleVisit(ctx, patient, visit, byField, medications, judgements, meds, diagnosis));
  }
  retracted.sort((a, b) => (a.id < b.id ? -1 : 1));
  for (const enc of retracted) {
    out.push(
      buildRetraction({
        centreId: ctx.centreId,
        pseudonymSecret: ctx.secret,
        patientId,
        encounterId: enc.id,
        reason: 'entered-in-error',
        provenance: [ref('Encounter', enc)],
      }),
    );
  }
}

interface DiagnosisChoice {
  value: Diagnosis | null;
  winner: ConditionRecord | null;
  conflicting: boolean;
}

function chooseDiagnosis(bucket: PatientBucket): DiagnosisChoice {
  let winner: ConditionRecord | null = null;
  const seen = new Set<Diagnosis>();
  for (const c of bucket.conditions.values()) {
    seen.add(c.diagnosis);
    if (
      !winner ||
      (c.date ?? '') > (winner.date ?? '') ||
      ((c.date ?? '') === (winner.date ?? '') && c.id > winner.id)
    )
      winner = c;
  }
  return { value: winner?.diagnosis ?? null, winner, conflicting: seen.size > 1 };
}

/** A patient's observations of one field, and which reference one of its visits. */
interface FieldObservations {
  list: ObservationRecord[];
  /** atVisit[i]: list[i].encounter names a visit of this patient (known once per patient). */
  atVisit: boolean[];
}

/** Observations of one field that link to the visit, with their link strength. */
function linkCandidates(field: FieldObservations, visit: Visit, rule: LinkRule): Candidate[] {
  const out: Candidate[] = [];
  const { list, atVisit } = field;
  for (let i = 0; i < list.length; i++) {
    const obs = list[i]!;
    if (atVisit[i]) {
      // An observation documented at a visit belongs to that visit only.
      if (obs.encounter === visit.encounter.id && rule.encounterReference) {
        out.push({ obs, strength: 3, distance: 0 });
      }
      continue;
    }
    if (obs.day === null) continue;
    const days = obs.day - visit.day;
    if (days === 0 && rule.sameDay) out.push({ obs, strength: 2, distance: 0 });
    else if (rule.windowDays > 0 && Math.abs(days) <= rule.windowDays) {
      out.push({ obs, strength: 1, distance: Math.abs((obs.instant ?? 0) - visit.instant) });
    }
  }
  return out;
}

/** Candidates at the strongest link, best first (closest within a window, then latest). */
function rankCandidates(
  candidates: Candidate[],
  winner: 'strongest-closest-latest' | 'strongest-latest',
): Candidate[] {
  if (candidates.length <= 1) return candidates;
  let best = 0;
  for (const c of candidates) if (c.strength > best) best = c.strength;
  const group = candidates.filter((c) => c.strength === best);
  group.sort((a, b) => {
    if (winner === 'strongest-closest-latest' && a.distance !== b.distance)
      return a.distance - b.distance;
    const ai = a.obs.instant ?? -Infinity;
    const bi = b.obs.instant ?? -Infinity;
    if (ai !== bi) return bi - ai;
    return a.obs.id < b.obs.id ? -1 : a.obs.id > b.obs.id ? 1 : 0;
  });
  return group;
}

/** What every visit of one patient shares: computed once per patient. */
interface PatientInfo {
  patientKey: string;
  /** Provenance of the Patient, named by its pseudonymous key (not the source id). */
  ref: SourceRef | null;
  fullBirthDate: string | null;
  missingBirthDate: string | null;
  birthDate: string | null;
  sex: VisitSubmission['patient']['sex'];
}

function describePatient(ctx: Context, patientKey: string, p: PatientRecord | null): PatientInfo {
  const spec = ctx.pack.assembly;
  const fullBirthDate = p?.birthDate ?? null;
  const birthDate =
    fullBirthDate && spec.settings.birthDatePrecision === 'month'
      ? fullBirthDate.slice(0, 7)
      : fullBirthDate;
  const sex = SEX[p?.gender ?? 'unknown'] ?? 'unknown';
  // The Patient's own id is a patient identifier at the source: provenance names it by its
  // pseudonymous key instead (its version still tells the registry what changed).
  const patientRef = p
    ? ref('Patient', { id: patientKey, versionId: p.versionId, lastUpdated: p.lastUpdated })
    : null;
  return {
    patientKey,
    ref: patientRef,
    fullBirthDate,
    missingBirthDate: fullBirthDate
      ? null
      : p
        ? 'the patient has no birth date'
        : 'no Patient resource for this visit',
    birthDate,
    sex,
  };
}

function assembleVisit(
  ctx: Context,
  info: PatientInfo,
  visit: Visit,
  byField: Record<ObservationField, FieldObservations>,
  medications: Map<string, MedicationInfo>,
  judgements: Map<string, SteroidJudgement | null>,
  meds: [string, MedicationUse][],
  diagnosis: DiagnosisChoice,
): VisitSubmission {
  const spec = ctx.pack.assembly;
  const findings: Finding[] = [];
  const patientKey = info.patientKey;
  // One entry per record: each source resource has exactly one record.
  const used: Versioned[] = [];
  const provenance: SourceRef[] = [];
  const use = (type: string, rec: Versioned) => {
    if (used.includes(rec)) return;
    used.push(rec);
    provenance.push(ref(type, rec));
  };
  use('Encounter', visit.encounter);

  // Patient
  if (info.ref) provenance.push(info.ref);
  if (info.missingBirthDate) {
    findings.push(finding('missing-birth-date', 'birthDate', info.missingBirthDate));
  }
  const fullBirthDate = info.fullBirthDate;
  const patient: VisitSubmission['patient'] = {
    ageAtVisitMonths: fullBirthDate ? wholeMonthsBetween(fullBirthDate, visit.date) : null,
    birthDate: info.birthDate,
    sex: info.sex,
  };

  // PGA and remission
  const pgaRanked = rankCandidates(
    linkCandidates(byField.pga, visit, spec.fields.pga.link),
    spec.fields.pga.winner,
  );
  let pga: PgaCategory | null = null;
  if (pgaRanked.length === 0) {
    findings.push(finding('missing-pga', 'pga', 'no PGA observation links to this visit'));
  } else {
    const mapped = pgaRanked.filter((c) => c.obs.category !== null);
    for (const c of pgaRanked) {
      if (c.obs.category !== null) continue;
      findings.push(
        c.obs.unmappedCode
          ? finding(
              'unmapped-code',
              'pga',
              'PGA answer code is not mapped to a PGA category; add it to the centre file under mapping.overrides.valueSets.pga.answers',
              `Observation/${c.obs.id}`,
              c.obs.unmappedCode,
            )
          : finding(
              'unmapped-code',
              'pga',
              c.obs.unmappedText
                ? 'PGA answer text matches no PGA category synonym; add it to the centre file under mapping.overrides.valueSets.pga.answers as { text, category }'
                : 'PGA observation has no answer',
              `Observation/${c.obs.id}`,
            ),
      );
    }
    const winner = mapped[0];
    if (winner) {
      pga = winner.obs.category;
      use('Observation', winner.obs);
      const categories = new Set(mapped.map((c) => c.obs.category));
      if (categories.size > 1) {
        findings.push(
          finding(
            'conflicting-values',
            'pga',
            `${mapped.length} PGA observations link equally strongly to this visit with different categories (${[...categories].sort().join(', ')}); the ${winner.strength === 1 ? 'closest' : 'latest'} one was used`,
            `Observation/${winner.obs.id}`,
          ),
        );
      }
    }
  }
  const remission = pga === null ? null : spec.derivations.remission.whenCategories.includes(pga);

  // Vitals
  const vitals = {} as Pick<VisitSubmission, VitalField>;
  for (const field of ['height', 'weight', 'bmi'] as const) {
    vitals[field] = chooseVital(field, spec.fields[field], byField[field], visit, findings, use);
  }

  // Steroid use
  const steroids: VisitSubmission['steroids'] = [];
  const steroidSpec = spec.fields.steroidUse;
  const dateOf = (v: string | null) => ctx.calendar.dateOf(v);
  for (const [key, m] of meds) {
    let openEnded: boolean;
    if (m.resourceType === 'MedicationStatement') {
      if (m.status && steroidSpec.statementStatuses.includes(m.status))
        openEnded = m.status === 'active';
      else if (m.status && steroidSpec.statementStatusesIfEndedAfterVisit.includes(m.status)) {
        const end = endDateOf(m, dateOf);
        if (!end || end < visit.date) continue;
        openEnded = false;
      } else continue;
    } else {
      if (!m.status || !steroidSpec.requestStatuses.includes(m.status)) continue;
      if (!m.intent || !steroidSpec.requestIntents.includes(m.intent)) continue;
      openEnded = m.status === 'active';
    }
    if (!isActiveOn(m, visit.date, dateOf, openEnded)) continue;
    const medication = resolveMedication(m, medications);
    let judgement = judgements.get(key);
    if (judgement === undefined) {
      judgement = judgeSteroid(ctx.index, m, medication);
      judgements.set(key, judgement);
    }
    if (!judgement) {
      if (m.medicationReference && !medication && m.codings.length === 0 && !m.text) {
        findings.push(
          finding(
            'missing-value',
            'steroidUse',
            'the medication reference could not be resolved (Medication not in the input), so it could not be checked for corticosteroids',
            `${m.resourceType}/${m.id}`,
          ),
        );
      }
      continue;
    }
    if (!judgement.systemic) continue;
    if (judgement.ingredient === 'budesonide' && !spec.settings.budesonideCountsAsSteroid) continue;
    const source = ref(m.resourceType, m);
    steroids.push({
      ingredient: judgement.ingredient,
      matchedBy: judgement.matchedBy,
      source,
    });
    use(m.resourceType, m);
    if (medication && m.medicationReference && !m.medicationReference.startsWith('#'))
      use('Medication', medication);
    if (judgement.matchedBy === 'text') {
      findings.push(
        finding(
          'text-only-medication',
          'steroidUse',
          `counted as ${judgement.ingredient} from its text alone (no recognised code); add its code to the systemic-corticosteroids value set`,
          `${m.resourceType}/${m.id}`,
        ),
      );
    }
  }

  // Diagnosis
  if (diagnosis.winner) use('Condition', diagnosis.winner);
  if (!diagnosis.value) {
    findings.push(
      finding(
        'missing-diagnosis',
        'diagnosis',
        'no IBD diagnosis (Condition) recognised for this patient',
      ),
    );
  } else if (diagnosis.conflicting) {
    findings.push(
      finding(
        'conflicting-values',
        'diagnosis',
        `the patient's Conditions name different IBD diagnoses; the latest recorded (${diagnosis.value}) was used`,
        `Condition/${diagnosis.winner!.id}`,
      ),
    );
  }

  const visitKey = pseudonymKey(ctx.secret, ctx.centreId, 'Encounter', visit.encounter.id);
  provenance.sort(compareRefs);
  const steroidUse = steroids.length > 0;
  const w = ctx.writer;
  w.text('{"bmi":');
  writeVital(w, vitals.bmi);
  w.text(',"centreId":');
  w.str(ctx.centreId);
  w.text(',"diagnosis":');
  writeNullableString(w, diagnosis.value);
  w.text(',"findings":');
  writeFindings(w, findings);
  w.text(',"height":');
  writeVital(w, vitals.height);
  w.text(',"kind":"visit","patient":{"ageAtVisitMonths":');
  w.num(patient.ageAtVisitMonths);
  w.text(',"birthDate":');
  writeNullableString(w, patient.birthDate);
  w.text(',"sex":');
  w.str(patient.sex);
  w.text('},"patientKey":');
  w.str(patientKey);
  w.text(',"pga":');
  writeNullableString(w, pga);
  w.text(',"provenance":[');
  for (let i = 0; i < provenance.length; i++) {
    if (i > 0) w.text(',');
    writeRef(w, provenance[i]!);
  }
  w.text('],"remission":');
  w.text(remission === null ? 'null' : String(remission));
  w.text(',"schema":');
  w.str(SUBMISSION_SCHEMA);
  w.text(steroidUse ? ',"steroidUse":true,"steroids":[' : ',"steroidUse":false,"steroids":[');
  for (let i = 0; i < steroids.length; i++) {
    const e = steroids[i]!;
    w.text(i > 0 ? ',{"ingredient":' : '{"ingredient":');
    w.str(e.ingredient);
    w.text(',"matchedBy":');
    w.str(e.matchedBy);
    w.text(',"source":');
    writeRef(w, e.source);
    w.text('}');
  }
  w.text('],"visit":{"date":');
  w.str(visit.date);
  w.text(',"type":');
  w.str(visit.type);
  w.text('},"visitKey":');
  w.str(visitKey);
  w.text(',"weight":');
  writeVital(w, vitals.weight);
  w.text('}');
  const hash = w.sha256Hex();
  const submission: VisitSubmission = {
    schema: SUBMISSION_SCHEMA,
    kind: 'visit',
    submissionId: submissionId(visitKey, hash),
    centreId: ctx.centreId,
    patientKey,
    visitKey,
    contentHash: hash,
    visit: { date: visit.date, type: visit.type },
    patient,
    diagnosis: diagnosis.value,
    pga,
    remission,
    steroidUse,
    steroids,
    height: vitals.height,
    weight: vitals.weight,
    bmi: vitals.bmi,
    findings,
    provenance,
  };
  const checked = ctx.validate ? VisitSubmissionSchema.safeParse(submission) : null;
  if (checked && !checked.success) {
    throw new Error(
      `internal error: assembled submission for Encounter/${visit.encounter.id} violates the registry schema: ${checked.error.issues
        .map((i) => `${i.path.join('.')}: ${i.message}`)
        .join('; ')}`,
    );
  }
  return submission;
}

function resolveMedication(
  use: MedicationUse,
  medications: Map<string, MedicationInfo>,
): MedicationInfo | undefined {
  const reference = use.medicationReference;
  if (!reference) return undefined;
  if (reference.startsWith('#')) return use.contained.get(reference);
  const parts = reference.split('/');
  const id = parts[parts.length - 1];
  const type = parts[parts.length - 2];
  if (!id || (type !== undefined && type !== 'Medication')) return undefined;
  return medications.get(id);
}

function chooseVital(
  field: VitalField,
  spec: VitalFieldSpec,
  observations: FieldObservations,
  visit: Visit,
  findings: Finding[],
  use: (type: string, rec: Versioned) => void,
): { value: number; unit: string } | null {
  const ranked = rankCandidates(linkCandidates(observations, visit, spec.link), spec.winner);
  if (ranked.length === 0) {
    if (spec.reportMissing)
      findings.push(finding('missing-value', field, `no ${field} observation links to this visit`));
    return null;
  }
  const valid: { obs: ObservationRecord; value: number; strength: number }[] = [];
  for (const c of ranked) {
    const o = c.obs;
    if (o.value === null) {
      findings.push(
        finding(
          'unconvertible-unit',
          field,
          `${field} unit ${o.unit ? `"${o.unit}"` : '(none)'} cannot be converted to ${spec.unit}`,
          `Observation/${o.id}`,
        ),
      );
      continue;
    }
    const value = roundTo(o.value, spec.decimals);
    if (value < spec.plausible.min || value > spec.plausible.max) {
      findings.push(
        finding(
          'implausible-value',
          field,
          `${field} ${value} ${spec.unit} is outside the plausible range ${spec.plausible.min}-${spec.plausible.max} ${spec.unit}`,
          `Observation/${o.id}`,
        ),
      );
      continue;
    }
    valid.push({ obs: o, value, strength: c.strength });
  }
  const winner = valid[0];
  if (!winner) return null;
  use('Observation', winner.obs);
  let min = Infinity;
  let max = -Infinity;
  for (const v of valid) {
    const raw = v.obs.value!;
    if (raw < min) min = raw;
    if (raw > max) max = raw;
  }
  if (valid.length > 1 && min > 0 && ((max - min) / min) * 100 > spec.conflictTolerancePercent) {
    findings.push(
      finding(
        'conflicting-values',
        field,
        `${valid.length} ${field} observations link equally strongly to this visit and differ by more than ${spec.conflictTolerancePercent}%; the ${winner.strength === 1 ? 'closest' : 'latest'} one was used`,
        `Observation/${winner.obs.id}`,
      ),
    );
  }
  return { unit: spec.unit, value: winner.value };
}
