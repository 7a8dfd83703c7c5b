// The registry assembly: view rows, grouped by patient, become one submission per visit.
// Resources are reduced to small records as they arrive (streaming, memory bounded by what
// the rules need, not by input size); visits are assembled at the end because an
// observation may arrive before its encounter. Pure: no I/O, deterministic output order.
import {
  isPlainJsonText,
  jsonDecimal,
  jsonString,
  pseudonymKey,
  sha256Hex,
  submissionId,
} from '../registry/keys.js';
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
import {
  createZoneCalendar,
  dayNumberOf,
  isCalendarDate,
  wholeMonthsBetween,
  type ZoneCalendar,
} from './dates.js';
import { applyCentreOverrides, parseCentreOverrides } from './overrides.js';
import {
  UCUM,
  type LinkRule,
  type MappingPack,
  type VisitIncludeRule,
  type VitalField,
} from './pack-schema.js';
import {
  durationUnitOf,
  isActiveOnDates,
  judgeSteroid,
  useDatesOf,
  type MedicationInfo,
  type MedicationUse,
  type SteroidJudgement,
  type UseDates,
} from './steroids.js';
import { createUnitConverter, roundTo, unitForMessage, type UnitConverter } from './units.js';
import { SeenFilter } from './seen-filter.js';
import { parseLiteralReference } from './view/resource-keys.js';
import {
  SYSTEM_ALIASES,
  addSystemAliases,
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
  /** The US Core birth sex extension's code (F, M, UNK), when sent. */
  birthSex: string | null;
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
  /** Vitals: the quantity's value as sent (before conversion), for findings. */
  sentValue: number | null;
  /** `censored`: the quantity has a comparator (`>250 kg`): a bound, not a measurement. */
  problem: 'unconvertible' | 'censored' | null;
  /** Stands only for its version: a later version that does not count (entered-in-error...). */
  excluded: boolean;
  unit: string | null;
  /** PGA: mapped category, or the unmapped answer. */
  category: PgaCategory | null;
  unmappedCode: string | null;
  unmappedText: boolean;
  /** PGA: a numeric answer that no centre answer maps. */
  unmappedValue: number | null;
  /**
   * PGA without any answer: `panel` (hasMember, no value of its own), `absent` (a
   * dataAbsentReason), else null.
   */
  noAnswer: 'panel' | 'absent' | null;
  /**
   * The dataAbsentReason code of an `absent` PGA, when it has one; of a vital without a
   * value, when it is a code (DAR_CODE): such a vital is excluded but named when nothing
   * usable links.
   */
  absentReason: string | null;
  /** An excluded PGA in a pending status (preliminary...): that status, else null. */
  pendingStatus: string | null;
  /**
   * A final vital excluded for a value that is not a numeric Quantity (valueString,
   * valueInteger, a Quantity whose value is not a number), without a dataAbsentReason code:
   * what it has instead (never the value), for the missing-value finding; else null.
   */
  noValue: string | null;
}

interface ConditionRecord extends Versioned {
  /** Null: this version does not count (refuted, entered-in-error, no IBD code). */
  diagnosis: Diagnosis | null;
  /** In a preferred verification status (confirmed): outranks the others before dates. */
  preferred: boolean;
  /**
   * Clinical status rank (HL7 condition-clinical), compared after `preferred` and before
   * dates: 2 active, recurrence, relapse or remission (IBD in remission is still the
   * diagnosis), or none given; 1 inactive; 0 resolved (a resolved-only diagnosis still counts).
   */
  clinicalRank: number;
  date: string | null;
  /** Counts by status but has no IBD code: the missing-diagnosis finding points to it. */
  unrecognised: boolean;
}

interface PatientBucket {
  patient: PatientRecord | null;
  encounters: Map<string, EncounterRecord>;
  observations: Map<string, ObservationRecord>;
  medications: Map<string, MedicationUse>;
  conditions: Map<string, ConditionRecord>;
}

type Row = Record<string, unknown>;

/**
 * The resource types the assembler reads, in the order of their counters: `count(i, type)`
 * in the dispatch switch counts KNOWN_TYPES[i] (test/mapping checks every type's count).
 */
const KNOWN_TYPES = [
  'Observation',
  'Encounter',
  'Patient',
  'MedicationStatement',
  'MedicationRequest',
  'Medication',
  'Condition',
] as const;

/** SeenFilter tags (and `repeats` indexes) of the types kept per patient. */
const REPEAT_OBSERVATION = 0;
const REPEAT_ENCOUNTER = 1;
const REPEAT_MEDICATION_USE = 2;
const REPEAT_CONDITION = 3;

/**
 * The version-settling group of each resource type the assembler keeps per patient (its
 * REPEAT_* tag): ids repeat within a group, not across. The map command groups ids the same
 * way to tell which inputs move a resource between patients.
 */
export const REPEAT_GROUPS: Readonly<Record<string, number>> = {
  Observation: REPEAT_OBSERVATION,
  Encounter: REPEAT_ENCOUNTER,
  MedicationStatement: REPEAT_MEDICATION_USE,
  MedicationRequest: REPEAT_MEDICATION_USE,
  Condition: REPEAT_CONDITION,
};

const SUBMISSION_SCHEMA = 'lhn-bridge/registry-submission/v1';
/** What a dataAbsentReason code (asked-unknown, not-asked...) looks like; nothing else is echoed. */
const DAR_CODE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** UCUM's HL7 OID system (SYSTEM_ALIASES), sent by some EHRs for a Quantity's system. */
const UCUM_OID = SYSTEM_ALIASES[UCUM]![0]!;

const str = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : null);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** A FHIR integer versionId (the common `1`, `2`, ...), else NaN. */
function versionNumber(v: string): number {
  return /^\d{1,15}$/.test(v) ? Number(v) : NaN;
}

/**
 * Which of two versions of one resource is the later: > 0 `a`, < 0 `b`, 0 when neither the
 * numeric versionIds nor lastUpdated tell.
 */
function versionOrder(a: Versioned, b: Versioned): number {
  if (a.versionId !== null && b.versionId !== null && a.versionId !== b.versionId) {
    const x = versionNumber(a.versionId);
    const y = versionNumber(b.versionId);
    if (Number.isFinite(x) && Number.isFinite(y)) return x - y;
  }
  if (a.lastUpdated !== null && b.lastUpdated !== null) {
    const x = Date.parse(a.lastUpdated);
    const y = Date.parse(b.lastUpdated);
    if (Number.isFinite(x) && Number.isFinite(y) && x !== y) return x - y;
  }
  return 0;
}

/**
 * True when `next` should replace `current` (the same resource seen before): the later
 * version wins whatever the input order (HAPI _history, concatenated exports), judged by
 * numeric versionIds, else by lastUpdated; when neither tells, the one read last.
 */
function supersedes(next: Versioned, current: Versioned | undefined): boolean {
  return current === undefined || versionOrder(next, current) >= 0;
}

/** Puts `rec` under its id unless a later version of it is already there. */
function keepLatest<T extends Versioned>(map: Map<string, T>, key: string, rec: T): void {
  if (supersedes(rec, map.get(key))) map.set(key, rec);
}

/**
 * Version precedence across patients, for the ids read more than once (`lastRead`: each with
 * the version read last): where several patients' maps hold a version of one resource, only
 * the latest is kept (when the versions do not tell, the one read last), so a resource that a
 * later version moved to another patient (a wrong-patient correction) counts only there.
 */
function settleRepeats<T extends Versioned>(
  lastRead: ReadonlyMap<string, Versioned>,
  maps: Iterable<Map<string, T>>,
): void {
  if (lastRead.size === 0) return;
  const holders = new Map<string, Map<string, T>[]>();
  for (const map of maps)
    for (const key of map.keys()) {
      if (!lastRead.has(key)) continue;
      const list = holders.get(key);
      if (list) list.push(map);
      else holders.set(key, [map]);
    }
  for (const [key, list] of holders) {
    if (list.length < 2) continue;
    const last = lastRead.get(key);
    let best = list[0]!;
    for (let i = 1; i < list.length; i++) {
      const rec = list[i]!.get(key)!;
      const order = versionOrder(rec, best.get(key)!);
      if (order > 0 || (order === 0 && rec === last)) best = list[i]!;
    }
    for (const map of list) if (map !== best) map.delete(key);
  }
}

// Objects that go into the content hash are built with their keys in sorted order, so that
// JSON.stringify gives the canonical JSON directly (keys.ts canonicalJson would sort them at
// several times the cost). test/mapping checks the two always agree.

function ref(type: string, rec: Versioned): SourceRef {
  // Whole literals (one shape each, properties in the object) rather than properties added
  // one by one.
  const { id, lastUpdated, versionId } = rec;
  if (lastUpdated) {
    return versionId
      ? { id, lastUpdated, resourceType: type, versionId }
      : { id, lastUpdated, resourceType: type };
  }
  return versionId ? { id, resourceType: type, versionId } : { id, resourceType: type };
}

// The fixed finding texts, as `finding` is called with them.
const MISSING_PGA = 'no PGA observation links to this visit';
const MISSING_DIAGNOSIS = 'no IBD diagnosis (Condition) recognised for this patient';
const NO_BIRTH_DATE = 'the patient has no birth date';
const NO_PATIENT = 'no Patient resource for this visit';
const NO_SEX =
  'the patient has no administrative gender (Patient.gender), so sex is sent as unknown and growth z-scores cannot be computed';
const INVALID_SEX =
  'Patient.gender is not one of male, female, other, unknown (FHIR administrative-gender), so sex is sent as unknown and growth z-scores cannot be computed';
const BIRTH_YEAR_ONLY =
  'the birth date gives only the year, too imprecise for an age at the visit in months (age not sent)';
const NO_AGE =
  'no age at the visit can be computed from the birth date (it is after the visit date, or not a valid date)';
const INVALID_BIRTH_DATE =
  'Patient.birthDate is not a real calendar date (YYYY, YYYY-MM or YYYY-MM-DD with a day the month has: no 30 February), so neither it nor an age is sent; correct the birth date in the EHR';
/** Older than this at a visit is no patient's real age (months): a placeholder birth date. */
const MAX_AGE_MONTHS = 100 * 12;
const AGE_IMPLAUSIBLE = `the birth date gives an age at the visit of over ${MAX_AGE_MONTHS / 12} years, so it is taken for a placeholder (such as 1900-01-01) and no age is sent; correct the birth date in the EHR`;
const MISSING_VITAL: Record<VitalField, string> = {
  height: 'no height observation links to this visit',
  weight: 'no weight observation links to this visit',
  bmi: 'no bmi observation links to this visit',
};
const PGA_UNMAPPED_CODE =
  'PGA answer code is not mapped to a PGA category; add it to the centre file under mapping.overrides.valueSets.pga.answers';
const PGA_UNMAPPED_TEXT =
  'PGA answer text matches no PGA category synonym; add it to the centre file under mapping.overrides.valueSets.pga.answers as { text, category }';
const PGA_NO_ANSWER =
  'the PGA observation has no coded, text or numeric answer, so it gives no PGA for this visit';
const PGA_PANEL =
  "the PGA observation is a panel (hasMember) with no answer of its own; add its member observation's code to the centre file under mapping.overrides.valueSets.pga.questions";

/**
 * The canonical JSON of the findings that carry only a fixed message (no resource, no code)
 * by message, with the kind and field it is made with; and the JSON of the other fixed
 * messages. Most findings of a visit are of the first sort, and their text is the same for
 * every visit: made once here instead of escaping-tested per visit.
 */
const FIXED_FINDING_JSON = new Map<string, { kind: FindingKind; field: string; json: string }>();
const FIXED_MESSAGE_JSON = new Map<string, string>();
{
  const fixed: [FindingKind, string, string][] = [
    ['missing-pga', 'pga', MISSING_PGA],
    ['missing-diagnosis', 'diagnosis', MISSING_DIAGNOSIS],
    ['missing-birth-date', 'birthDate', NO_BIRTH_DATE],
    ['missing-birth-date', 'birthDate', NO_PATIENT],
    ['missing-birth-date', 'birthDate', BIRTH_YEAR_ONLY],
    ['missing-value', 'sex', NO_SEX],
    ['missing-value', 'sex', INVALID_SEX],
    ['implausible-value', 'birthDate', NO_AGE],
    ['implausible-value', 'birthDate', INVALID_BIRTH_DATE],
    ['implausible-value', 'birthDate', AGE_IMPLAUSIBLE],
    ['missing-value', 'height', MISSING_VITAL.height],
    ['missing-value', 'weight', MISSING_VITAL.weight],
    ['missing-value', 'bmi', MISSING_VITAL.bmi],
  ];
  for (const [kind, field, message] of fixed) {
    FIXED_FINDING_JSON.set(message, {
      kind,
      field,
      json: `{"field":${jsonString(field)},"kind":${jsonString(kind)},"message":${jsonString(message)}}`,
    });
  }
  for (const message of [PGA_UNMAPPED_CODE, PGA_UNMAPPED_TEXT, PGA_NO_ANSWER, PGA_PANEL]) {
    FIXED_MESSAGE_JSON.set(message, jsonString(message));
  }
}

/** The canonical JSON of a finding (keys in the order `finding` sets them: sorted). */
function findingJson(f: Finding): string {
  const code = f.code;
  const resource = f.resource;
  const message = f.message;
  if (code === undefined && resource === undefined) {
    const fixed = FIXED_FINDING_JSON.get(message);
    if (fixed !== undefined && fixed.kind === f.kind && fixed.field === f.field) return fixed.json;
  }
  // Kinds are FINDING_KINDS names (plain text).
  let json = code !== undefined ? `{"code":${jsonString(code)},"field":` : '{"field":';
  json += `${jsonString(f.field)},"kind":"${f.kind}","message":`;
  json += FIXED_MESSAGE_JSON.get(message) ?? jsonString(message);
  if (resource !== undefined) json += `,"resource":${jsonString(resource)}`;
  return `${json}}`;
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
    visitInclude: visitIncludeIndex(spec.visits.include),
    visitStatuses: new Set(spec.visits.statuses),
    retractStatuses: new Set(spec.visits.retractStatuses),
    observationStatuses: new Set(spec.observations.statuses),
    pendingStatuses: new Set(spec.observations.pendingStatuses),
    validate: options.validate ?? false,
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

const V3_ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';

/** The code system of Encounter.status (FHIR R4 EncounterStatus). */
const ENCOUNTER_STATUS_SYSTEM = 'http://hl7.org/fhir/encounter-status';

/**
 * Encounter statuses that are plainly no visit (yet): an appointment, a cancellation. Not
 * reported; any other status that is not a visit status of the pack is (visit.status).
 */
const QUIET_ENCOUNTER_STATUSES: ReadonlySet<string> = new Set(['planned', 'cancelled']);

/** What an Encounter.status code looks like (quoted in findings only then). */
const ENCOUNTER_STATUS_CODE = /^[a-z][a-z-]{0,30}$/;

/** system -> code -> visit type; HL7 ActCode classes also under its aliases and no system. */
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
  return addSystemAliases(map, { [V3_ACT_CODE]: [''] });
}

/** The visit include rules as lookups: one per element an encounter is matched on. */
interface VisitIncludeIndex {
  types: CodingMap<true>;
  serviceTypes: CodingMap<true>;
  /** Organization ids (Encounter.serviceProvider). */
  providers: Set<string>;
  /** Location ids (Encounter.location.location). */
  locations: Set<string>;
}

function visitIncludeIndex(rules: readonly VisitIncludeRule[]): VisitIncludeIndex | null {
  if (rules.length === 0) return null;
  const index: VisitIncludeIndex = {
    types: new Map(),
    serviceTypes: new Map(),
    providers: new Set(),
    locations: new Set(),
  };
  const addCoding = (map: CodingMap<true>, c: { system: string; code: string }): void => {
    let codes = map.get(c.system);
    if (!codes) {
      codes = new Map();
      map.set(c.system, codes);
    }
    codes.set(c.code, true);
  };
  const idOf = (reference: string): string => reference.slice(reference.indexOf('/') + 1);
  for (const r of rules) {
    if (r.type) addCoding(index.types, r.type);
    if (r.serviceType) addCoding(index.serviceTypes, r.serviceType);
    if (r.serviceProvider) index.providers.add(idOf(r.serviceProvider));
    if (r.location) index.locations.add(idOf(r.location));
  }
  for (const map of [index.types, index.serviceTypes]) {
    // A rule written with an alias system (the SNOMED CT OID) counts under the canonical URI,
    // then under every alias.
    for (const [canonical, aliases] of Object.entries(SYSTEM_ALIASES))
      for (const alias of aliases) {
        const codes = map.get(alias);
        if (!codes) continue;
        map.delete(alias);
        for (const code of codes.keys()) addCoding(map, { system: canonical, code });
      }
    addSystemAliases(map);
  }
  return index;
}

/** True when an include rule matches the encounter (its view rows). */
function matchesVisitInclude(index: VisitIncludeIndex, rows: readonly Row[]): boolean {
  const first = rows[0]!;
  const provider = first.service_provider;
  if (typeof provider === 'string' && index.providers.has(provider)) return true;
  const locations = first.locations;
  if (Array.isArray(locations) && index.locations.size > 0)
    for (const l of locations) if (typeof l === 'string' && index.locations.has(l)) return true;
  for (const row of rows) {
    if (lookupCoding(index.types, row.type_system, row.type_code)) return true;
    if (lookupCoding(index.serviceTypes, row.service_type_system, row.service_type_code))
      return true;
  }
  return false;
}

/**
 * The HL7 v3 ActEncounterCode classes (http://terminology.hl7.org/ValueSet/v3-ActEncounterCode,
 * the R4 Encounter.class extensible binding): an encounter of one of these that is not a
 * visit class of the pack is silently not a visit. Any other code under the HL7 system is
 * reported.
 */
const HL7_ENCOUNTER_CLASSES: ReadonlySet<string> = new Set([
  'AMB',
  'EMER',
  'FLD',
  'HH',
  'IMP',
  'ACUTE',
  'NONAC',
  'OBSENC',
  'PRENC',
  'SS',
  'VR',
]);

/** The HL7 ActCode system, one of its aliases, or no system (read as ActCode for classes). */
function isActCodeSystem(system: string): boolean {
  return (
    system === '' || system === V3_ACT_CODE || (SYSTEM_ALIASES[V3_ACT_CODE] ?? []).includes(system)
  );
}

/** The run finding text for `n` encounters in a visit status of class `key` (`system|code`). */
function unknownClassMessage(ctx: Context, key: string, n: number): string {
  const bar = key.indexOf('|');
  const system = key.slice(0, bar);
  const code = key.slice(bar + 1);
  if (code === '')
    return `${n} encounter(s) in a visit status have no class code, so they were not submitted; the EHR should send Encounter.class`;
  if (isActCodeSystem(system)) {
    const upper = code.toUpperCase();
    const type = lookupCoding(ctx.visitClasses, system, upper);
    if (type !== undefined && upper !== code)
      return `${n} encounter(s) in a visit status have the HL7 class code '${code}', which is not an HL7 ActCode (codes are case-sensitive: the ${type} visit class is '${upper}'), so they were not submitted; have the EHR send '${upper}', or if these are clinic visits add the class to the centre file under mapping.overrides.visits.classes`;
    return `${n} encounter(s) in a visit status have this class, which is not an HL7 encounter class (v3 ActEncounterCode) nor a visit class of the pack, so they were not submitted; if they are clinic visits, add the class to the centre file under mapping.overrides.visits.classes`;
  }
  return `${n} encounter(s) in a visit status have this class, which is not a visit class of the pack, so they were not submitted; if they are clinic visits, add the class to the centre file under mapping.overrides.visits.classes`;
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
  /** The visit include rules, null when there are none (every visit-class encounter counts). */
  visitInclude: VisitIncludeIndex | null;
  visitStatuses: Set<string>;
  retractStatuses: Set<string>;
  observationStatuses: Set<string>;
  /** Observation statuses of a PGA not final yet (preliminary...), named in missing-pga. */
  pendingStatuses: Set<string>;
  validate: boolean;
}

function createAssemblerFor(ctx: Context): Assembler {
  const { pack, index, calendar } = ctx;
  const views = pack.views;
  const buckets = new Map<string, PatientBucket>();
  const medications = new Map<string, MedicationInfo>();
  const unattributed = new Map<string, EncounterRecord>();
  // Version precedence over the whole input, not only per patient: ids read more than once
  // are noticed as they come (a Bloom filter, no map of every id) with the version read last,
  // by type (REPEAT_*), and settled across patients in finish().
  const repeats: Map<string, Versioned>[] = [new Map(), new Map(), new Map(), new Map()];
  const seen = new SeenFilter((add) => {
    for (const b of buckets.values()) {
      for (const key of b.observations.keys()) add(REPEAT_OBSERVATION, key);
      for (const key of b.encounters.keys()) add(REPEAT_ENCOUNTER, key);
      for (const key of b.medications.keys()) add(REPEAT_MEDICATION_USE, key);
      for (const key of b.conditions.keys()) add(REPEAT_CONDITION, key);
    }
    for (const key of unattributed.keys()) add(REPEAT_ENCOUNTER, key);
  });
  /** keepLatest in a patient's map, noting an id read before (in any patient's). */
  const keepLatestAcross = <T extends Versioned>(
    tag: number,
    map: Map<string, T>,
    key: string,
    rec: T,
  ): void => {
    if (seen.testAndAdd(tag, key)) repeats[tag]!.set(key, rec);
    keepLatest(map, key, rec);
  };
  // Resources by type, in first-seen order: the types the views read are counted in the
  // switch below (no keyed store per resource), others in a map.
  const typeOrder: string[] = [];
  const knownCounts = KNOWN_TYPES.map(() => 0);
  const otherCounts = new Map<string, number>();
  const count = (index: number, type: string): void => {
    const n = knownCounts[index]!;
    if (n === 0) typeOrder.push(type);
    knownCounts[index] = n + 1;
  };
  let resources = 0;
  let finished = false;
  /**
   * `system|code` of encounter classes that are not visit classes, on encounters in a visit
   * status, with how many: reported at the end when the system is not the HL7 one, because
   * a centre whose EHR uses a local class system would otherwise submit nothing, silently.
   */
  const unknownClasses = new Map<string, number>();
  const noteUnknownClass = (system: unknown, code: unknown): void => {
    const s = typeof system === 'string' ? system : '';
    const c = typeof code === 'string' ? code : '';
    // The HL7 encounter classes that are not visits (IMP, EMER...) are silent; any other code
    // under the HL7 system, a wrong-case 'amb' included (codes are case-sensitive), is not.
    if (HL7_ENCOUNTER_CLASSES.has(c) && isActCodeSystem(s)) return;
    const key = `${s}|${c}`;
    unknownClasses.set(key, (unknownClasses.get(key) ?? 0) + 1);
  };

  /**
   * Encounters of a visit class and status that no include rule matched, by their type coding
   * (`system|code` of the first type, else service type) and department (`Location/id`, else
   * `Organization/id`), with how many: reported at the end, so the rules' effect is seen.
   */
  const excludedVisits = new Map<string, number>();
  const noteExcludedVisit = (first: Row): void => {
    const typeCode = str(first.type_code);
    const serviceCode = str(first.service_type_code);
    const code =
      typeCode !== null
        ? `${str(first.type_system) ?? ''}|${typeCode}`
        : serviceCode !== null
          ? `${str(first.service_type_system) ?? ''}|${serviceCode}`
          : '';
    const locations = first.locations;
    const location = Array.isArray(locations) ? str(locations[0]) : null;
    const provider = str(first.service_provider);
    const department =
      location !== null
        ? `Location/${location}`
        : provider !== null
          ? `Organization/${provider}`
          : '';
    const key = `${code}\n${department}`;
    excludedVisits.set(key, (excludedVisits.get(key) ?? 0) + 1);
  };

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

  /** A Medication; `topLevel`: also its contained Medications (its `#id` references). */
  const readMedication = (resource: unknown, topLevel: boolean): MedicationInfo | null => {
    const rows = views.medication.rows(resource);
    const first = rows[0];
    if (!first || !str(first.id)) return null;
    const info: MedicationInfo = {
      id: str(first.id) ?? '',
      versionId: str(first.version_id),
      lastUpdated: str(first.last_updated),
      codings: [],
      ingredientCodings: [],
      ingredientReferences: [],
      contained: null,
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
      const reference = str(row.ingredient_reference);
      if (reference && !info.ingredientReferences.includes(reference))
        info.ingredientReferences.push(reference);
    }
    const contained = (resource as { contained?: unknown }).contained;
    if (topLevel && info.ingredientReferences.length > 0 && Array.isArray(contained)) {
      info.contained = readContainedMedications(contained);
    }
    return info;
  };

  const readContainedMedications = (contained: unknown[]): Map<string, MedicationInfo> => {
    const out = new Map<string, MedicationInfo>();
    for (const c of contained as FhirResource[]) {
      if (c?.resourceType !== 'Medication') continue;
      const info = readMedication(c, false);
      if (info) out.set(`#${info.id}`, info);
    }
    return out;
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
    if (!patient || !id) return;
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
      sentValue: null,
      problem: null,
      unit: null,
      excluded: false,
      category: null,
      unmappedCode: null,
      unmappedText: false,
      unmappedValue: null,
      noAnswer: null,
      absentReason: null,
      pendingStatus: null,
      noValue: null,
    };
    const value = num(first.value_number);
    if (!status || !ctx.observationStatuses.has(status)) {
      // Kept only to stand for its version: an older one read later must not count.
      rec.excluded = true;
      // A PGA or vital not final yet is named when the visit has none that counts.
      if (status && ctx.pendingStatuses.has(status)) rec.pendingStatus = status;
    } else if (field === 'pga') {
      classifyPga(rec, rows, first);
    } else if (value === null) {
      rec.excluded = true; // no quantity (e.g. dataAbsentReason): not a candidate
      const reason = str(first.data_absent_reason);
      if (reason !== null && DAR_CODE.test(reason)) rec.absentReason = reason;
      else rec.noValue = nonNumericValue(resource);
    } else {
      const system = str(first.value_unit_system);
      const code = str(first.value_unit_code);
      const unitCode = system === UCUM || system === UCUM_OID ? code : null;
      let unit = unitCode ?? str(first.value_unit) ?? code;
      // BMI is kg/m2 by definition: a BMI without a unit, or with a bare annotation, is that.
      if (field === 'bmi' && (unit === null || /^(\{[^}]*\}|1)$/.test(unit))) unit = 'kg/m2';
      rec.unit = unit;
      let factor = unit ? ctx.converters[field].factor(unit) : null;
      // A unit text the rules cannot read ('Pounds (lb)') next to a code in another or no
      // system ('[lb_av]'): the code is tried.
      if (factor === null && code !== null && code !== unit)
        factor = ctx.converters[field].factor(code);
      rec.sentValue = value;
      if (factor === null) rec.problem = 'unconvertible';
      else rec.value = value * factor;
      if (str(first.value_comparator) !== null) rec.problem = 'censored';
    }
    keepLatestAcross(REPEAT_OBSERVATION, bucketOf(patient).observations, id, rec);
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
      // A plain integer in text ("0") is a score: the centre's numeric answers apply.
      if (/^\s*\d{1,3}\s*$/.test(text)) {
        const byValue = index.pgaAnswerByValue.get(Number(text));
        if (byValue) {
          rec.category = byValue;
          return;
        }
      }
    }
    const score = num(first.value_integer) ?? num(first.value_number);
    if (score !== null) {
      const category = index.pgaAnswerByValue.get(score);
      if (category) {
        rec.category = category;
        return;
      }
    }
    if (firstUnmapped) rec.unmappedCode = firstUnmapped;
    else if (text === null && score !== null) rec.unmappedValue = score;
    else if (text !== null) rec.unmappedText = true;
    else if (first.has_member === true) rec.noAnswer = 'panel';
    else {
      // No answer the PGA can read: said so (with the EHR's dataAbsentReason), not 'unmapped'.
      rec.noAnswer = 'absent';
      rec.absentReason = str(first.data_absent_reason);
    }
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
      medicationReferenceDisplay: str(first.medication_reference_display),
      contained: new Map(),
      routeCodings: [],
      routeTexts: [],
      periods: [],
      durations: [],
      unreadDuration: null,
      validity: null,
      supply: null,
      singleDate:
        type === 'MedicationStatement' ? str(first.effective_datetime) : str(first.authored_on),
      dateAsserted: str(first.date_asserted),
      doNotPerform: first.do_not_perform === true,
      singleAdministration: true,
    };
    // Dosage timing bounds give the course of a request, and of a statement only when it has
    // no effective[x] (the statement's own dates say when it was taken; they win).
    const useBounds =
      type === 'MedicationRequest' ||
      (!str(first.effective_datetime) && !str(first.effective_start) && !str(first.effective_end));
    // A statement dated by a single effectiveDateTime still takes its course length from a
    // boundsDuration (counted from that date): "prednisone for 10 days" taken from that day.
    const useDurations = useBounds || (!str(first.effective_start) && !str(first.effective_end));
    for (const row of rows) {
      pushCoding(use.codings, row.med_system, row.med_code, row.med_display);
      pushCoding(use.routeCodings, row.route_system, row.route_code, row.route_display);
      const routeText = str(row.route_text);
      if (routeText && !use.routeTexts.includes(routeText)) use.routeTexts.push(routeText);
      if (use.singleAdministration) {
        const countMax = row.timing_count_max;
        use.singleAdministration =
          row.timing_count === 1 && (countMax === null || countMax === undefined || countMax === 1);
      }
      const start = str(row.effective_start) ?? (useBounds ? str(row.bounds_start) : null);
      const end = str(row.effective_end) ?? (useBounds ? str(row.bounds_end) : null);
      if ((start || end) && !use.periods.some((p) => p.start === start && p.end === end)) {
        use.periods.push({ start, end });
      }
      if (!useDurations) continue;
      // The dosage's step in a sequence (a taper): steroids.ts chains the steps.
      const sequence = num(row.dosage_sequence);
      // boundsDuration: a UCUM code (d, wk...), else a unit word (days, weeks...).
      let durationValue = num(row.bounds_duration_value);
      let element = 'dosage boundsDuration';
      let code = str(row.bounds_duration_code);
      let unitText = str(row.bounds_duration_unit);
      if (durationValue === null) {
        // A boundsPeriod is the schedule's outer limit (the count is spread within it), so a
        // count gives no course of its own then.
        if (str(row.bounds_start) || str(row.bounds_end)) continue;
        // No bounds: a count of doses at a frequency per period lasts count / frequency periods
        // (14 doses once a day is 14 days). A count of 1 is a single administration, above.
        const count = num(row.timing_count);
        const frequency = num(row.timing_frequency);
        const period = num(row.timing_period);
        if (count === null || count <= 1 || !frequency || frequency <= 0 || period === null) {
          // A step of a taper that says not how long ("20 mg daily until review"): the
          // course's end is not known.
          if (sequence !== null) use.openStep = true;
          continue;
        }
        durationValue = (count / frequency) * period;
        element = 'dosage timing.repeat.period';
        code = str(row.timing_period_unit);
        unitText = null;
      }
      const durationUnit = durationUnitOf(code, unitText);
      if (!durationUnit) {
        use.unreadDuration ??= { element, unit: code ?? unitText ?? '' };
        if (sequence !== null) use.openStep = true;
      } else if (
        !use.durations.some(
          (d) => d.value === durationValue && d.unit === durationUnit && d.sequence === sequence,
        )
      ) {
        use.durations.push({ value: durationValue, unit: durationUnit, sequence });
      }
    }
    const vStart = str(first.validity_start);
    const vEnd = str(first.validity_end);
    if (vStart || vEnd) use.validity = { start: vStart, end: vEnd };
    // expectedSupplyDuration (with its refills): the course when the dosage gives no bounds
    // (before the validity period, which says how long the prescription may be dispensed, not
    // when the drug is taken), and the end of an open boundsPeriod of a request no longer active.
    const supplyValue = type === 'MedicationRequest' ? num(first.supply_duration_value) : null;
    const openPeriod = use.periods.some((p) => !p.end);
    if (
      supplyValue !== null &&
      use.durations.length === 0 &&
      (use.periods.length === 0 || openPeriod)
    ) {
      const code = str(first.supply_duration_code);
      const unitText = str(first.supply_duration_unit);
      const unit = durationUnitOf(code, unitText);
      const repeats = num(first.repeats_allowed);
      if (unit) {
        const fills = repeats !== null && repeats > 0 ? 1 + Math.floor(repeats) : 1;
        use.supply = { value: supplyValue * fills, unit };
      } else {
        use.unreadDuration ??= {
          element: 'dispenseRequest.expectedSupplyDuration',
          unit: code ?? unitText ?? '',
        };
      }
    }
    // Dosage (MS dosage, MR dosageInstruction) text and patient instruction: local-form words
    // there ("1 enema rectally") judge
    // the form when no dosage gives a route (steroids.ts, anyText).
    const dosages = type === 'MedicationStatement' ? resource.dosage : resource.dosageInstruction;
    if (Array.isArray(dosages))
      for (const d of dosages as unknown[]) {
        if (!d || typeof d !== 'object') continue;
        const { text, patientInstruction } = d as Record<string, unknown>;
        for (const t of [text, patientInstruction])
          if (typeof t === 'string' && t.trim()) (use.dosageTexts ??= []).push(t);
      }
    const contained = resource.contained;
    if (Array.isArray(contained)) use.contained = readContainedMedications(contained);
    keepLatestAcross(REPEAT_MEDICATION_USE, bucketOf(patient).medications, `${type}/${id}`, use);
  };

  const addCondition = (resource: FhirResource): void => {
    const rows = views.condition.rows(resource);
    const first = rows[0];
    const patient = first ? str(first.patient) : null;
    if (!first || !patient || !str(first.id)) return;
    // Any of its codings (EHRs send a local one next to the HL7 one) can exclude it.
    const statuses = first.verification_statuses;
    const dxSpec = pack.assembly.fields.diagnosis;
    let excluded = false;
    let preferred = false;
    if (Array.isArray(statuses))
      for (const v of statuses) {
        if (typeof v !== 'string') continue;
        if (dxSpec.excludeVerificationStatuses.includes(v)) excluded = true;
        else if (dxSpec.preferVerificationStatuses.includes(v)) preferred = true;
      }
    // The lowest rank any coding gives (a local coding next to the HL7 one cannot raise it).
    let clinicalRank = 2;
    const clinical = first.clinical_statuses;
    if (Array.isArray(clinical))
      for (const v of clinical) {
        if (v === 'resolved') clinicalRank = 0;
        else if (v === 'inactive' && clinicalRank > 1) clinicalRank = 1;
      }
    let diagnosis: Diagnosis | null = null;
    if (!excluded)
      for (const row of rows) {
        diagnosis = lookupDiagnosis(index, { system: str(row.code_system), code: str(row.code) });
        if (diagnosis) break;
      }
    // A Condition the value set does not know: the missing-diagnosis finding points to it.
    const unrecognised = !excluded && diagnosis === null;
    // A version that does not count is kept too (diagnosis null): it stands in for an earlier
    // version read before or after it.
    const rec: ConditionRecord = {
      id: str(first.id) ?? '',
      versionId: str(first.version_id),
      lastUpdated: str(first.last_updated),
      diagnosis,
      preferred,
      clinicalRank,
      date: str(first.recorded_date) ?? str(first.onset_datetime),
      unrecognised,
    };
    keepLatestAcross(REPEAT_CONDITION, bucketOf(patient).conditions, rec.id, rec);
  };

  const add = (resource: FhirResource): void => {
    if (finished) throw new Error('this assembler has finished; create a new one');
    const type = resource?.resourceType;
    if (type === 'Bundle') {
      const entries =
        (resource as { entry?: { fullUrl?: unknown; resource?: FhirResource }[] }).entry ?? [];
      for (const r of bundleEntryResources(entries)) add(r);
      return;
    }
    resources += 1;
    switch (type) {
      case 'Observation':
        count(0, type);
        addObservation(resource);
        return;
      case 'Encounter': {
        count(1, type);
        const rows = views.encounter.rows(resource);
        const first = rows[0];
        if (!first || !str(first.id)) return;
        const rec: EncounterRecord = {
          id: str(first.id) ?? '',
          versionId: str(first.version_id),
          lastUpdated: str(first.last_updated),
          status: str(first.status),
          visitType: lookupCoding(ctx.visitClasses, first.class_system, first.class_code) ?? null,
          periodStart: str(first.period_start),
        };
        if (rec.status && ctx.visitStatuses.has(rec.status)) {
          if (rec.visitType === null) noteUnknownClass(first.class_system, first.class_code);
          else if (ctx.visitInclude !== null && !matchesVisitInclude(ctx.visitInclude, rows)) {
            // Of a visit class, but not a clinic the centre's rules include: not a visit.
            rec.visitType = null;
            noteExcludedVisit(first);
          }
        }
        const patient = str(first.patient);
        keepLatestAcross(
          REPEAT_ENCOUNTER,
          patient ? bucketOf(patient).encounters : unattributed,
          rec.id,
          rec,
        );
        return;
      }
      case 'Patient': {
        count(2, type);
        const first = views.patient.rows(resource)[0];
        const id = first ? str(first.id) : null;
        if (!first || !id) return;
        const bucket = bucketOf(id);
        const rec: PatientRecord = {
          id,
          versionId: str(first.version_id),
          lastUpdated: str(first.last_updated),
          birthDate: str(first.birth_date),
          gender: str(first.gender),
          birthSex: str(first.birth_sex),
        };
        if (supersedes(rec, bucket.patient ?? undefined)) bucket.patient = rec;
        return;
      }
      case 'MedicationStatement':
      case 'MedicationRequest':
        count(type === 'MedicationStatement' ? 3 : 4, type);
        addMedicationUse(resource, type);
        return;
      case 'Medication': {
        count(5, type);
        const info = readMedication(resource, true);
        if (info) keepLatest(medications, info.id, info);
        return;
      }
      case 'Condition':
        count(6, type);
        addCondition(resource);
        return;
      default: {
        const n = otherCounts.get(type) ?? 0;
        if (n === 0) typeOrder.push(type);
        otherCounts.set(type, n + 1);
        return;
      }
    }
  };

  const countsByType = (): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const type of typeOrder) {
      const known = (KNOWN_TYPES as readonly string[]).indexOf(type);
      out[type] = known >= 0 ? knownCounts[known]! : (otherCounts.get(type) ?? 0);
    }
    return out;
  };

  const finish = (): MapResult => {
    if (finished) throw new Error('finish() was already called on this assembler');
    finished = true;
    const all = [...buckets.values()];
    settleRepeats(
      repeats[REPEAT_OBSERVATION]!,
      all.map((b) => b.observations),
    );
    settleRepeats(repeats[REPEAT_ENCOUNTER]!, [...all.map((b) => b.encounters), unattributed]);
    settleRepeats(
      repeats[REPEAT_MEDICATION_USE]!,
      all.map((b) => b.medications),
    );
    settleRepeats(
      repeats[REPEAT_CONDITION]!,
      all.map((b) => b.conditions),
    );
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
    for (const [code, n] of [...unknownClasses].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      orphanFindings.push(
        finding(
          'unmapped-code',
          'visit.class',
          unknownClassMessage(ctx, code, n),
          undefined,
          code === '|' ? undefined : code,
        ),
      );
    }
    for (const [key, n] of [...excludedVisits].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      const cut = key.indexOf('\n');
      const code = key.slice(0, cut);
      const department = key.slice(cut + 1);
      const what =
        code !== ''
          ? department !== ''
            ? 'with this type (or service type) at this department'
            : 'with this type (or service type) and no location or service provider'
          : department !== ''
            ? 'at this department with no type or service type'
            : 'with no type, service type, location or service provider';
      orphanFindings.push(
        finding(
          'unmapped-code',
          'visit.include',
          `${n} encounter(s) of a visit class and status ${what} match no visit include rule, so they were not submitted; if they are GI clinic visits, add a rule for their type, service type, location or service provider to the centre file under mapping.overrides.visits.include`,
          department === '' ? undefined : department,
          code === '' ? undefined : code,
        ),
      );
    }
    // Encounters of a visit class whose status is neither a visit nor a retraction status, nor
    // one that plainly is no visit yet (planned, cancelled): an EHR that marks past clinic
    // visits 'unknown' (or sends an R5 'completed') would otherwise submit nothing, silently.
    const byStatus = new Map<string, number>();
    for (const bucket of all)
      for (const enc of bucket.encounters.values()) {
        if (enc.visitType === null) continue;
        const status = enc.status ?? '';
        if (ctx.visitStatuses.has(status) || ctx.retractStatuses.has(status)) continue;
        if (QUIET_ENCOUNTER_STATUSES.has(status)) continue;
        // A status is a code; anything else the EHR put there is not quoted (it could be prose).
        const key = status === '' || ENCOUNTER_STATUS_CODE.test(status) ? status : 'not-a-code';
        byStatus.set(key, (byStatus.get(key) ?? 0) + 1);
      }
    for (const [status, n] of [...byStatus].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      orphanFindings.push(
        status === ''
          ? finding(
              'missing-value',
              'visit.status',
              `${n} encounter(s) of a visit class have no status, so they were not submitted; the EHR should send Encounter.status`,
            )
          : finding(
              'unmapped-code',
              'visit.status',
              `${n} encounter(s) of a visit class have status '${status}', which is not a visit status of the pack (${[...ctx.visitStatuses].join(', ')}), so they were not submitted; if they are clinic visits that took place, ask centre IT why the EHR sends this status`,
              undefined,
              `${ENCOUNTER_STATUS_SYSTEM}|${status}`,
            ),
      );
    }
    const patientIds = [...buckets.keys()].sort();
    const run = createRun(ctx);
    for (const patientId of patientIds) {
      assemblePatient(
        run,
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
        byResourceType: countsByType(),
      },
    };
  };

  return { add, finish };
}

// ---------------------------------------------------------------------------------------
// Bundle-local references

/**
 * `urn:uuid:` / `urn:oid:` entry fullUrls of a Bundle and the `Type/id` each stands for (the
 * resource's id, else the uuid itself, a valid FHIR id): a transaction Bundle (Synthea, a
 * client's POST) refers to its own entries that way. Null when the Bundle has none.
 */
function bundleLocalIds(
  entries: readonly { fullUrl?: unknown; resource?: FhirResource }[],
): Map<string, string> | null {
  let local: Map<string, string> | null = null;
  for (const e of entries) {
    const url = e?.fullUrl;
    const r = e?.resource;
    if (typeof url !== 'string' || !url.startsWith('urn:') || typeof r?.resourceType !== 'string')
      continue;
    const id = typeof r.id === 'string' && r.id !== '' ? r.id : url.slice(url.lastIndexOf(':') + 1);
    if (!/^[A-Za-z0-9\-.]{1,64}$/.test(id)) continue;
    (local ??= new Map()).set(url, `${r.resourceType}/${id}`);
  }
  return local;
}

/**
 * The resources of a Bundle's entries, with references to other entries by their
 * `urn:uuid:` fullUrl made `Type/id` (entries without a resource are skipped).
 */
export function bundleEntryResources(
  entries: readonly ({ fullUrl?: unknown; resource?: FhirResource } | null | undefined)[],
): FhirResource[] {
  const present = entries.filter((e) => e?.resource !== undefined) as {
    fullUrl?: unknown;
    resource: FhirResource;
  }[];
  const local = bundleLocalIds(present);
  return present.map((e) =>
    local ? resolveLocalReferences(e.resource, e.fullUrl, local) : e.resource,
  );
}

/**
 * A copy of `resource` with every Reference to a Bundle-local fullUrl made `Type/id`, and
 * the id the Bundle gives it when it has none (objects without such references are shared,
 * not copied; the input is never changed).
 */
function resolveLocalReferences(
  resource: FhirResource,
  fullUrl: unknown,
  local: Map<string, string>,
): FhirResource {
  const rewrite = (value: unknown): unknown => {
    if (Array.isArray(value)) {
      let out: unknown[] | null = null;
      for (let i = 0; i < value.length; i++) {
        const item: unknown = value[i];
        const next = rewrite(item);
        if (next !== item) (out ??= [...value])[i] = next;
      }
      return out ?? value;
    }
    if (typeof value !== 'object' || value === null) return value;
    const record = value as Record<string, unknown>;
    let out: Record<string, unknown> | null = null;
    for (const key of Object.keys(record)) {
      const item = record[key];
      const next =
        key === 'reference' && typeof item === 'string' ? (local.get(item) ?? item) : rewrite(item);
      if (next !== item) (out ??= { ...record })[key] = next;
    }
    return out ?? value;
  };
  const resolved = rewrite(resource) as FhirResource;
  const own = typeof fullUrl === 'string' ? local.get(fullUrl) : undefined;
  if (own !== undefined && (typeof resolved.id !== 'string' || resolved.id === ''))
    return { ...resolved, id: own.slice(own.indexOf('/') + 1) };
  return resolved;
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
  // Keys in sorted order (findingJson relies on it), each shape made as one literal.
  if (code) {
    return resource ? { code, field, kind, message, resource } : { code, field, kind, message };
  }
  return resource ? { field, kind, message, resource } : { field, kind, message };
}

/**
 * A source resource as provenance: its SourceRef, made once per record (and shared by the
 * visits that use it), and the ref's canonical JSON, written into every visit that uses it.
 */
interface Source {
  ref: SourceRef;
  /** canonicalJson(ref). */
  json: string;
  /** The visit (Run.stamp) whose provenance last took it: a record is listed once. */
  stamp: number;
}

function sourceOf(type: string, rec: Versioned): Source {
  const r = ref(type, rec);
  const { id, lastUpdated, versionId } = r;
  // `type` is a resource type name (plain text). Each string is tested on its own: testing
  // them joined costs a flattening copy (measured 440 ns against 180 ns for three tests).
  let json: string;
  if (
    isPlainJsonText(id) &&
    (lastUpdated === undefined || isPlainJsonText(lastUpdated)) &&
    (versionId === undefined || isPlainJsonText(versionId))
  ) {
    json = `{"id":"${id}"`;
    if (lastUpdated !== undefined) json += `,"lastUpdated":"${lastUpdated}"`;
    json += `,"resourceType":"${type}"`;
    if (versionId !== undefined) json += `,"versionId":"${versionId}"`;
  } else {
    json = `{"id":${JSON.stringify(id)}`;
    if (lastUpdated !== undefined) json += `,"lastUpdated":${JSON.stringify(lastUpdated)}`;
    json += `,"resourceType":${JSON.stringify(type)}`;
    if (versionId !== undefined) json += `,"versionId":${JSON.stringify(versionId)}`;
  }
  return { ref: r, json: `${json}}`, stamp: 0 };
}

/** Provenance order: resource type, then id (keys.ts and the registry expect it sorted). */
function sourceBefore(a: Source, b: Source): boolean {
  const at = a.ref.resourceType;
  const bt = b.ref.resourceType;
  if (at !== bt) return at < bt;
  return a.ref.id < b.ref.id;
}

/** An observation as the visits of one patient see it, with what each visit would redo. */
interface LinkedObs {
  obs: ObservationRecord;
  /**
   * obs.encounter names a visit of this patient: the visit's index (Visit.index); it belongs
   * to that visit only. -1 otherwise.
   */
  visit: number;
  /** For ordering: obs.instant, -Infinity when unknown. */
  order: number;
  /** Vitals: 0 usable, 1 unconvertible unit, 2 implausible (before rounding), 3 a bound. */
  problem: 0 | 1 | 2 | 3;
  /** Vitals: the value rounded to the field's decimals. */
  rounded: number;
  /** Made when first used by a visit. */
  source: Source | null;
  /** Vitals: `{"unit":..,"value":..}` of the rounded value, made when first used. */
  vitalJson: string | null;
  /** Vitals: the submission's `{ unit, value }`, made with vitalJson (and shared by visits). */
  vital: { unit: string; value: number } | null;
}

/** A MedicationStatement/Request as the visits of one patient see it. */
interface LinkedMed {
  use: MedicationUse;
  /**
   * How its status (and intent) let it count: 0 never, 1 open-ended (active), 2 within its
   * dates, 3 within its dates if it ended on or after the visit (e.g. stopped).
   */
  mode: 0 | 1 | 2 | 3;
  dates: UseDates;
  medication: MedicationInfo | undefined;
  /**
   * Provenance of the referenced (not contained) Medication, when resolved, and of the
   * non-contained Medications its ingredients refer to.
   */
  medicationSources: Source[];
  /** Some Medication.ingredient.itemReference of its Medication could not be resolved. */
  unresolvedIngredient: boolean;
  /** Made when first needed (undefined until then). */
  judgement: SteroidJudgement | null | undefined;
  source: Source | null;
  /** `{"ingredient":..,"matchedBy":..,"source":..}` once judged. */
  steroidJson: string | null;
}

interface Visit {
  encounter: EncounterRecord;
  date: string;
  day: number;
  instant: number;
  type: string;
  /** jsonString(type). */
  typeJson: string;
  /** Its place in the patient's visits once sorted. */
  index: number;
}

/**
 * Sorts `list[0..count)` in place by insertion: stable, like Array.prototype.sort, and
 * cheaper for the short lists of one patient or visit (no comparator closure made per call).
 */
function insertionSort<T>(list: T[], count: number, before: (a: T, b: T) => boolean): void {
  for (let i = 1; i < count; i++) {
    const item = list[i]!;
    let j = i;
    while (j > 0 && before(item, list[j - 1]!)) {
      list[j] = list[j - 1]!;
      j--;
    }
    list[j] = item;
  }
}

function visitBefore(a: Visit, b: Visit): boolean {
  if (a.date !== b.date) return a.date < b.date;
  return a.encounter.id < b.encounter.id;
}

/** The index of the visit whose encounter is `id`, -1 when none (visits are few: a scan). */
function visitIndexOf(visits: readonly Visit[], byId: Map<string, number> | null, id: string) {
  if (byId !== null) return byId.get(id) ?? -1;
  for (let i = 0; i < visits.length; i++) if (visits[i]!.encounter.id === id) return i;
  return -1;
}

/** State of one finish(): settings read once and scratch lists reused by every visit. */
interface Run {
  ctx: Context;
  spec: MappingPack['assembly'];
  /** Increases per visit (Source.stamp). */
  stamp: number;
  /** Candidates of the field being linked, best first, and their distances. */
  candidates: LinkedObs[];
  distances: number[];
  /** The link strength of the candidates (3 encounter, 2 same day, 1 window). */
  strength: number;
  /** The sources of the visit being assembled: the first provenanceCount entries. */
  provenance: Source[];
  provenanceCount: number;
  closest: Record<ObservationField, boolean>;
  centreJson: string;
  /** jsonString of each visit type (a handful, from the pack). */
  typeJson: Map<string, string>;
  /** The centre-zone date of a FHIR date/dateTime. */
  dateOf: (value: string | null) => string | null;
}

function createRun(ctx: Context): Run {
  const spec = ctx.pack.assembly;
  const closest = {} as Record<ObservationField, boolean>;
  for (const field of ['pga', 'height', 'weight', 'bmi'] as const) {
    closest[field] = spec.fields[field].winner === 'strongest-closest-latest';
  }
  return {
    ctx,
    spec,
    stamp: 0,
    candidates: [],
    distances: [],
    strength: 0,
    provenance: [],
    provenanceCount: 0,
    closest,
    centreJson: jsonString(ctx.centreId),
    typeJson: new Map(),
    dateOf: (value) => ctx.calendar.dateOf(value),
  };
}

function assemblePatient(
  run: Run,
  patientId: string,
  bucket: PatientBucket,
  medications: Map<string, MedicationInfo>,
  out: RegistrySubmission[],
  orphans: Finding[],
): void {
  const ctx = run.ctx;
  const { calendar } = ctx;
  const visits: Visit[] = [];
  const retracted: EncounterRecord[] = [];
  for (const enc of bucket.encounters.values()) {
    if (enc.status && ctx.retractStatuses.has(enc.status)) {
      retracted.push(enc);
      continue;
    }
    const type = enc.visitType;
    if (!type || !enc.status || !ctx.visitStatuses.has(enc.status)) continue;
    const instant = calendar.instantOf(enc.periodStart);
    const date = calendar.dateOf(enc.periodStart, instant);
    if (!date) {
      orphans.push(
        finding(
          'missing-value',
          'visit.date',
          enc.periodStart
            ? 'visit encounter period.start is not a valid FHIR dateTime (YYYY-MM-DDThh:mm:ss with a time zone, or YYYY-MM-DD), so it has no visit date and was not submitted'
            : 'visit encounter has no period.start, so it has no visit date and was not submitted',
          `Encounter/${enc.id}`,
        ),
      );
      continue;
    }
    let typeJson = run.typeJson.get(type);
    if (typeJson === undefined) {
      typeJson = jsonString(type);
      run.typeJson.set(type, typeJson);
    }
    visits.push({
      encounter: enc,
      date,
      day: dayNumberOf(date)!,
      instant: instant ?? 0,
      type,
      typeJson,
      index: 0,
    });
  }
  if (visits.length === 0 && retracted.length === 0) return;
  insertionSort(visits, visits.length, visitBefore); // by date, then encounter id
  for (let i = 0; i < visits.length; i++) visits[i]!.index = i;

  if (visits.length > 0) {
    const patientKey = pseudonymKey(ctx.secret, ctx.centreId, 'Patient', patientId);
    const patient = describePatient(run, patientKey, bucket.patient);
    const byField = linkObservations(run, bucket, visits);
    const meds = linkMedications(run, bucket, medications);
    const diagnosis = chooseDiagnosis(run, bucket);
    for (const visit of visits) {
      out.push(assembleVisit(run, patient, visit, byField, meds, diagnosis));
    }
  }
  if (retracted.length > 1) retracted.sort((a, b) => (a.id < b.id ? -1 : 1));
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

/**
 * A patient's observations by field; `pending`: those not final yet (preliminary...) and the
 * vitals without a value that give a dataAbsentReason code or have a value that is not a
 * numeric Quantity (noValue), by
 * field, created only for a patient that has one (they are read only for a visit without a
 * value that counts).
 */
type LinkedByField = Record<ObservationField, LinkedObs[]> & {
  pending: Partial<Record<ObservationField, LinkedObs[]>> | null;
};

/** The patient's observations by field, with what every visit needs worked out once. */
function linkObservations(
  run: Run,
  bucket: PatientBucket,
  visits: readonly Visit[],
): LinkedByField {
  const fields = run.spec.fields;
  const byField: LinkedByField = {
    pga: [],
    height: [],
    weight: [],
    bmi: [],
    pending: null,
  };
  // Many visits: a map from encounter id rather than a scan per observation.
  let byId: Map<string, number> | null = null;
  if (visits.length > 16) {
    byId = new Map();
    for (let i = 0; i < visits.length; i++) byId.set(visits[i]!.encounter.id, i);
  }
  for (const o of bucket.observations.values()) {
    if (o.excluded && o.pendingStatus === null && o.absentReason === null && o.noValue === null)
      continue;
    const field = o.field;
    let problem: LinkedObs['problem'] = 0;
    let rounded = 0;
    if (field !== 'pga' && !o.excluded) {
      const spec = fields[field];
      if (o.problem === 'censored') problem = 3;
      else if (o.value === null) problem = 1;
      else {
        rounded = roundTo(o.value, spec.decimals);
        // The range holds for the value measured: 0.96 kg is under 1 kg although it rounds
        // to 1.0.
        if (o.value < spec.plausible.min || o.value > spec.plausible.max) problem = 2;
      }
    }
    let target = byField[field];
    if (o.excluded) {
      const pending = (byField.pending ??= {});
      target = pending[field] ??= [];
    }
    target.push({
      obs: o,
      visit: o.encounter === null ? -1 : visitIndexOf(visits, byId, o.encounter),
      order: o.instant ?? -Infinity,
      problem,
      rounded,
      source: null,
      vitalJson: null,
      vital: null,
    });
  }
  return byField;
}

/**
 * The patient's medication uses, sorted by key once (the order of steroid evidence must not
 * depend on input order), each with its status rule, centre-zone dates and Medication.
 */
function linkMedications(
  run: Run,
  bucket: PatientBucket,
  medications: Map<string, MedicationInfo>,
): LinkedMed[] {
  const out: LinkedMed[] = [];
  if (bucket.medications.size === 0) return out;
  const steroidSpec = run.spec.fields.steroidUse;
  const entries = [...bucket.medications.entries()];
  if (entries.length > 1) entries.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  let medicationSources: Map<MedicationInfo, Source> | undefined;
  const sourceOfMedication = (medication: MedicationInfo): Source => {
    medicationSources ??= new Map();
    let source = medicationSources.get(medication);
    if (!source) {
      source = sourceOf('Medication', medication);
      medicationSources.set(medication, source);
    }
    return source;
  };
  let expandedByMedication: Map<MedicationInfo, ExpandedMedication> | undefined;
  for (const [, m] of entries) {
    let mode: LinkedMed['mode'] = 0;
    if (m.resourceType === 'MedicationStatement') {
      if (m.status && steroidSpec.statementStatuses.includes(m.status))
        mode = m.status === 'active' ? 1 : 2;
      else if (m.status && steroidSpec.statementStatusesIfEndedAfterVisit.includes(m.status))
        mode = 3;
    } else if (m.status && m.intent && steroidSpec.requestIntents.includes(m.intent)) {
      if (steroidSpec.requestStatuses.includes(m.status)) mode = m.status === 'active' ? 1 : 2;
      else if (steroidSpec.requestStatusesIfEndedAfterVisit.includes(m.status)) mode = 3;
    }
    // doNotPerform (a modifier): the request is that the medication not be given.
    if (mode === 0 || m.doNotPerform) continue;
    const reference = m.medicationReference;
    const resolved = resolveMedication(reference, m.contained, medications);
    const isContained = reference !== null && reference.startsWith('#');
    const sources: Source[] = [];
    if (resolved && !isContained) sources.push(sourceOfMedication(resolved));
    let medication = resolved;
    let unresolvedIngredient = false;
    if (resolved && resolved.ingredientReferences.length > 0) {
      // A contained Medication's `#id` references name the use's other contained resources;
      // a top-level Medication's name its own. Top-level results are shared by the uses.
      let expanded = isContained ? undefined : expandedByMedication?.get(resolved);
      if (!expanded) {
        expanded = expandIngredients(
          resolved,
          isContained ? m.contained : resolved.contained,
          medications,
        );
        if (!isContained) (expandedByMedication ??= new Map()).set(resolved, expanded);
      }
      medication = expanded.medication;
      unresolvedIngredient = expanded.unresolved;
      for (const r of expanded.referenced) sources.push(sourceOfMedication(r));
    }
    out.push({
      use: m,
      mode,
      dates: useDatesOf(m, run.dateOf, mode === 1),
      medication,
      medicationSources: sources,
      unresolvedIngredient,
      judgement: undefined,
      source: null,
      steroidJson: null,
    });
  }
  return out;
}

/** The use's steroid judgement, worked out at its first visit and kept for the others. */
function judgeOnce(ctx: Context, lm: LinkedMed): SteroidJudgement | null {
  let judgement = lm.judgement;
  if (judgement === undefined) {
    const use = lm.use;
    // An unresolved reference (Medication not in the input) with no codings or text of the
    // use's own: its display is the only name of the medication, judged as text.
    judgement = judgeSteroid(
      ctx.index,
      usesReferenceDisplay(lm) ? { ...use, text: use.medicationReferenceDisplay! } : use,
      lm.medication,
    );
    lm.judgement = judgement;
  }
  return judgement;
}

/** Whether the use is judged by its medicationReference.display (see judgeOnce). */
function usesReferenceDisplay(lm: LinkedMed): boolean {
  const use = lm.use;
  return (
    !lm.medication &&
    use.medicationReference !== null &&
    !!use.medicationReferenceDisplay &&
    use.codings.length === 0 &&
    !use.text
  );
}

/** The earliest day a use's course is known to start: a period start, else its lone date. */
function courseStartOf(dates: UseDates): string | null {
  let start: string | null = null;
  for (const p of dates.periods) if (p.start && (!start || p.start < start)) start = p.start;
  return start ?? dates.single;
}

/** A Medication with its ingredients' referenced Medications read in (one level). */
interface ExpandedMedication {
  medication: MedicationInfo;
  /** The non-contained Medications the ingredients refer to (provenance). */
  referenced: MedicationInfo[];
  unresolved: boolean;
}

/**
 * Follows Medication.ingredient.itemReference one level: the codes of each referenced
 * Medication (and its code text, as a display) become ingredient codings of a copy of
 * `medication`, so that judgeSteroid sees them as it sees itemCodeableConcept codings. The
 * referenced Medication's own ingredients and form are not followed (its form is that of the
 * ingredient as supplied, not of the product the patient takes).
 */
function expandIngredients(
  medication: MedicationInfo,
  contained: Map<string, MedicationInfo> | null,
  medications: Map<string, MedicationInfo>,
): ExpandedMedication {
  const ingredientCodings = [...medication.ingredientCodings];
  const referenced: MedicationInfo[] = [];
  let unresolved = false;
  for (const reference of medication.ingredientReferences) {
    const item = resolveMedication(reference, contained, medications);
    if (!item || item === medication) {
      unresolved ||= !item;
      continue;
    }
    if (!reference.startsWith('#') && !referenced.includes(item)) referenced.push(item);
    for (const c of item.codings) pushCoding(ingredientCodings, c.system, c.code, c.display);
    if (item.text) pushCoding(ingredientCodings, null, null, item.text);
  }
  return { medication: { ...medication, ingredientCodings }, referenced, unresolved };
}

interface DiagnosisChoice {
  value: Diagnosis | null;
  winner: ConditionRecord | null;
  conflicting: boolean;
  /**
   * The rank decided over a later Condition naming another diagnosis: 'confirmed' (the winner
   * is confirmed, the later one not), 'clinical' (the later one is inactive or resolved), else
   * null.
   */
  overLater: 'confirmed' | 'clinical' | null;
  /** No diagnosis: the finding text (how many Conditions have codes not recognised). */
  missingMessage: string;
  /** No diagnosis: the first unrecognised Condition (`Condition/id`), if any. */
  missingResource: string | undefined;
  source: Source | null;
  /** `,"centreId":..,"diagnosis":..,"findings":` of the canonical JSON. */
  json: string;
}

/** True when Condition `a` was recorded after `b` (the id breaks a tie). */
function recordedAfter(a: ConditionRecord, b: ConditionRecord): boolean {
  const ad = a.date ?? '';
  const bd = b.date ?? '';
  return ad > bd || (ad === bd && a.id > b.id);
}

/** True when Condition `a` outranks `b`: verification, then clinical status, then date. */
function conditionBefore(a: ConditionRecord, b: ConditionRecord): boolean {
  if (a.preferred !== b.preferred) return a.preferred;
  if (a.clinicalRank !== b.clinicalRank) return a.clinicalRank > b.clinicalRank;
  return recordedAfter(a, b);
}

/**
 * The patient's diagnosis: a Condition in a preferred verification status (confirmed) first,
 * then by clinical status (active, recurrence, relapse, remission over inactive over
 * resolved), then the latest recorded.
 */
function chooseDiagnosis(run: Run, bucket: PatientBucket): DiagnosisChoice {
  let winner: ConditionRecord | null = null;
  const seen = new Set<Diagnosis>();
  for (const c of bucket.conditions.values()) {
    if (c.diagnosis === null) continue;
    seen.add(c.diagnosis);
    if (!winner || conditionBefore(c, winner)) winner = c;
  }
  const value = winner?.diagnosis ?? null;
  // Whether the rank decided over a later Condition naming another diagnosis.
  let overLater: DiagnosisChoice['overLater'] = null;
  if (winner !== null && seen.size > 1)
    for (const c of bucket.conditions.values())
      if (c.diagnosis !== null && c.diagnosis !== value && recordedAfter(c, winner)) {
        if (winner.preferred && !c.preferred) overLater = 'confirmed';
        else if (overLater === null && c.clinicalRank < winner.clinicalRank) overLater = 'clinical';
      }
  let missingMessage = MISSING_DIAGNOSIS;
  let missingResource: string | undefined;
  if (value === null) {
    const unknown: ConditionRecord[] = [];
    for (const c of bucket.conditions.values()) if (c.unrecognised) unknown.push(c);
    if (unknown.length > 0) {
      // Submissions go to the registry: the other Conditions' codes (asthma, HIV, a
      // psychiatric code...) are none of its business, so only the first one's reference
      // (a source id, as provenance carries) leads the data manager to them in the EHR.
      unknown.sort((a, b) => (a.id < b.id ? -1 : 1));
      missingMessage = `${MISSING_DIAGNOSIS}; ${unknown.length} of the patient's Conditions have a code the ibd-diagnoses value set does not know (the first is named); if one is an IBD diagnosis, add its code to the centre file under mapping.overrides.valueSets.ibd-diagnoses.include`;
      missingResource = `Condition/${unknown[0]!.id}`;
    }
  }
  return {
    value,
    winner,
    conflicting: seen.size > 1,
    overLater,
    missingMessage,
    missingResource,
    source: winner ? sourceOf('Condition', winner) : null,
    json: `,"centreId":${run.centreJson},"diagnosis":${value === null ? 'null' : jsonString(value)},"findings":`,
  };
}

/**
 * Puts the observations of one field that link to the visit, at the strongest link, into
 * run.candidates best first (closest within a window when `closest`, then latest, then
 * by id) and returns how many. An observation documented at a visit belongs to that visit
 * only; else same calendar day; else within the window. `below` (4 = no limit) keeps only
 * links weaker than that strength: the fallback when no candidate at a stronger link was
 * usable.
 */
function linkCandidates(
  run: Run,
  list: readonly LinkedObs[],
  visit: Visit,
  rule: LinkRule,
  closest: boolean,
  below = 4,
): number {
  const candidates = run.candidates;
  const distances = run.distances;
  const visitIndex = visit.index;
  let n = 0;
  let best = 0;
  for (let i = 0; i < list.length; i++) {
    const c = list[i]!;
    let strength: number;
    let distance = 0;
    // With encounterReference off (a centre whose encounter references are not to be
    // trusted), a referenced observation links by its date like any other.
    if (c.visit >= 0 && rule.encounterReference) {
      if (c.visit !== visitIndex) continue;
      strength = 3;
    } else {
      const day = c.obs.day;
      if (day === null) continue;
      const days = day - visit.day;
      if (days === 0 && rule.sameDay) strength = 2;
      else if (rule.windowDays > 0 && Math.abs(days) <= rule.windowDays) {
        strength = 1;
        distance = Math.abs((c.obs.instant ?? 0) - visit.instant);
      } else continue;
    }
    if (strength < best || strength >= below) continue;
    if (strength > best) {
      best = strength;
      n = 0;
    }
    // Insertion into the (short) ranked list.
    let j = n;
    while (j > 0) {
      const p = candidates[j - 1]!;
      const pd = distances[j - 1]!;
      let before: boolean;
      if (closest && distance !== pd) before = distance < pd;
      else if (c.order !== p.order) before = c.order > p.order;
      else before = c.obs.id < p.obs.id;
      if (!before) break;
      candidates[j] = p;
      distances[j] = pd;
      j--;
    }
    candidates[j] = c;
    distances[j] = distance;
    n++;
  }
  run.strength = best;
  return n;
}

/** What every visit of one patient shares: computed once per patient. */
interface PatientInfo {
  patientKey: string;
  /** Provenance of the Patient, named by its pseudonymous key (not the source id). */
  source: Source | null;
  fullBirthDate: string | null;
  missingBirthDate: string | null;
  /** INVALID_BIRTH_DATE when Patient.birthDate is not a calendar date (then not sent), else null. */
  invalidBirthDate: string | null;
  birthDate: string | null;
  sex: VisitSubmission['patient']['sex'];
  /** Why sex is unknown when the Patient gave no valid gender (NO_SEX, INVALID_SEX), else null. */
  missingSex: string | null;
  /** `,"birthDate":..,"sex":..},"patientKey":..,"pga":` of the canonical JSON. */
  afterAge: string;
}

function describePatient(run: Run, patientKey: string, p: PatientRecord | null): PatientInfo {
  const spec = run.spec;
  // An impossible date (2013-02-29) is not sent: a registry would reject it, or roll it over.
  const given = p?.birthDate ?? null;
  const validBirthDate = given === null || isCalendarDate(given);
  const fullBirthDate = validBirthDate ? given : null;
  const birthDate =
    fullBirthDate && spec.settings.birthDatePrecision === 'month'
      ? fullBirthDate.slice(0, 7)
      : fullBirthDate;
  const gender = p?.gender ?? null;
  const known = gender !== null && Object.hasOwn(SEX, gender) ? SEX[gender] : undefined;
  // Growth z-scores are charted by sex at birth: when the administrative gender is missing,
  // not a code, or 'unknown', the US Core birth sex (F, M) stands in. A gender the EHR gives
  // (male, female, other) is sent as given.
  const birthSex = p?.birthSex === 'F' ? 'female' : p?.birthSex === 'M' ? 'male' : null;
  const sex = known !== undefined && known !== 'unknown' ? known : (birthSex ?? known ?? 'unknown');
  // No Patient at all is reported once, as NO_PATIENT; a Patient without a valid gender here.
  const missingSex =
    p === null || known !== undefined || birthSex !== null
      ? null
      : gender === null
        ? NO_SEX
        : INVALID_SEX;
  // The Patient's own id is a patient identifier at the source: provenance names it by its
  // pseudonymous key instead (its version still tells the registry what changed).
  const source = p
    ? sourceOf('Patient', { id: patientKey, versionId: p.versionId, lastUpdated: p.lastUpdated })
    : null;
  return {
    patientKey,
    source,
    fullBirthDate,
    missingBirthDate: fullBirthDate || !validBirthDate ? null : p ? NO_BIRTH_DATE : NO_PATIENT,
    invalidBirthDate: validBirthDate ? null : INVALID_BIRTH_DATE,
    birthDate,
    sex,
    missingSex,
    afterAge: `,"birthDate":${birthDate === null ? 'null' : jsonString(birthDate)},"sex":${jsonString(sex)}},"patientKey":${jsonString(patientKey)},"pga":`,
  };
}

function addSource(run: Run, source: Source): void {
  if (source.stamp === run.stamp) return;
  source.stamp = run.stamp;
  run.provenance[run.provenanceCount++] = source;
}

function obsSource(c: LinkedObs): Source {
  return (c.source ??= sourceOf('Observation', c.obs));
}

function assembleVisit(
  run: Run,
  info: PatientInfo,
  visit: Visit,
  byField: LinkedByField,
  meds: readonly LinkedMed[],
  diagnosis: DiagnosisChoice,
): VisitSubmission {
  const ctx = run.ctx;
  const spec = run.spec;
  const findings: Finding[] = [];
  const patientKey = info.patientKey;
  run.stamp += 1;
  const provenance = run.provenance;
  run.provenanceCount = 0;
  addSource(run, sourceOf('Encounter', visit.encounter));

  // Patient
  if (info.source) addSource(run, info.source);
  if (info.missingBirthDate) {
    findings.push(finding('missing-birth-date', 'birthDate', info.missingBirthDate));
  }
  if (info.invalidBirthDate) {
    findings.push(finding('implausible-value', 'birthDate', info.invalidBirthDate));
  }
  const fullBirthDate = info.fullBirthDate;
  const patient: VisitSubmission['patient'] = {
    ageAtVisitMonths: fullBirthDate ? wholeMonthsBetween(fullBirthDate, visit.date) : null,
    birthDate: info.birthDate,
    sex: info.sex,
  };
  if (patient.ageAtVisitMonths !== null && patient.ageAtVisitMonths > MAX_AGE_MONTHS) {
    patient.ageAtVisitMonths = null;
    findings.push(finding('implausible-value', 'birthDate', AGE_IMPLAUSIBLE));
  } else if (fullBirthDate && patient.ageAtVisitMonths === null) {
    // A birth date that gives no age is said so, never a silent null.
    findings.push(
      /^\d{4}$/.test(fullBirthDate)
        ? finding('missing-birth-date', 'birthDate', BIRTH_YEAR_ONLY)
        : finding('implausible-value', 'birthDate', NO_AGE),
    );
  }
  if (info.missingSex) findings.push(finding('missing-value', 'sex', info.missingSex));

  // PGA and remission
  const pga = choosePga(run, byField.pga, byField.pending?.pga, visit, findings);
  const remission = pga === null ? null : spec.derivations.remission.whenCategories.includes(pga);

  // Vitals
  const height = chooseVital(
    run,
    'height',
    byField.height,
    byField.pending?.height,
    visit,
    findings,
  );
  const weight = chooseVital(
    run,
    'weight',
    byField.weight,
    byField.pending?.weight,
    visit,
    findings,
  );
  const bmi = chooseVital(run, 'bmi', byField.bmi, byField.pending?.bmi, visit, findings);

  // Steroid use
  const steroids: VisitSubmission['steroids'] = [];
  let steroidJson = '';
  const budesonideCounts = spec.settings.budesonideCountsAsSteroid;
  const singleCounts = spec.settings.singleAdministrationCountsAsSteroid;
  for (let i = 0; i < meds.length; i++) {
    const lm = meds[i]!;
    const undated = lm.dates.undated;
    if (lm.mode === 3 && !undated) {
      // A stopped use counts only when its course ended on or after the visit; one dated by
      // a single date (effectiveDateTime / authoredOn) ends on that date's last day.
      const end = lm.dates.periods.length > 0 ? lm.dates.end : lm.dates.singleEnd;
      if (!end || end < visit.date) continue;
    }
    const m = lm.use;
    if (m.unreadDuration !== null && !undated) {
      // A boundsDuration in a unit the rules cannot read was left out of the course: say so
      // at the visits from the course start on (where it could have counted), for a
      // corticosteroid that would count. Rare, so judged here before the date check.
      const judged = judgeOnce(ctx, lm);
      const start = courseStartOf(lm.dates);
      if (
        judged?.systemic &&
        (judged.ingredient !== 'budesonide' || budesonideCounts) &&
        start !== null &&
        start <= visit.date
      ) {
        findings.push(
          finding(
            'unconvertible-unit',
            'steroidUse',
            `the ${m.unreadDuration.element} unit ${m.unreadDuration.unit === '' ? '(none)' : unitForMessage(m.unreadDuration.unit)} is not a unit of time (h, d, wk, mo, a; hours, days, weeks, months, years), so the course length was not used and the course was placed by its other dates`,
            `${m.resourceType}/${m.id}`,
          ),
        );
      }
    }
    if (!undated && !isActiveOnDates(lm.dates, visit.date, lm.mode === 1)) continue;
    // One administration is given on one day, its start (an order still active, or a period
    // left open, does not make it a course): it concerns only a visit on that day.
    if (m.singleAdministration && !undated && courseStartOf(lm.dates) !== visit.date) continue;
    const judgement = judgeOnce(ctx, lm);
    if (undated) {
      // No usable date at all: it cannot be placed at any visit, so it is not counted, and
      // the visit says so (only for a systemic corticosteroid that would otherwise count).
      if (judgement?.systemic && (judgement.ingredient !== 'budesonide' || budesonideCounts)) {
        findings.push(
          finding(
            'missing-value',
            'steroidUse',
            lm.dates.inverted
              ? `the medication use names a systemic corticosteroid (${judgement.ingredient}) but its period ends before it starts, and nothing else dates it, so it could not be placed at this visit and was not counted; correct the dates in the EHR`
              : `the medication use names a systemic corticosteroid (${judgement.ingredient}) but has no usable date (${m.resourceType === 'MedicationStatement' ? 'effective[x] or dosage bounds with a start' : 'authoredOn or dosage bounds'}), so it could not be placed at this visit and was not counted`,
            `${m.resourceType}/${m.id}`,
          ),
        );
      }
      continue;
    }
    if (!judgement) {
      if (m.medicationReference && !lm.medication && m.codings.length === 0 && !m.text) {
        findings.push(
          finding(
            'missing-value',
            'steroidUse',
            'the medication reference could not be resolved (Medication not in the input), so it could not be checked for corticosteroids',
            `${m.resourceType}/${m.id}`,
          ),
        );
      } else if (
        lm.unresolvedIngredient &&
        m.codings.length === 0 &&
        !lm.medication!.codings.some((c) => c.code !== null)
      ) {
        // The Medication has no code of its own: its ingredients were the only way to tell.
        findings.push(
          finding(
            'missing-value',
            'steroidUse',
            'an ingredient reference of the Medication could not be resolved (Medication not in the input), so it could not be checked for corticosteroids',
            `${m.resourceType}/${m.id}`,
          ),
        );
      }
      continue;
    }
    if (!judgement.systemic) continue;
    if (judgement.ingredient === 'budesonide' && !budesonideCounts) continue;
    if (m.singleAdministration && !singleCounts) {
      findings.push(
        finding(
          'missing-value',
          'steroidUse',
          `the medication use names a systemic corticosteroid (${judgement.ingredient}) given once (dosage timing.repeat.count 1, such as a premedication before an infusion), so it was not counted (pack setting singleAdministrationCountsAsSteroid is false)`,
          `${m.resourceType}/${m.id}`,
        ),
      );
      continue;
    }
    let source = lm.source;
    if (!source) {
      source = sourceOf(m.resourceType, m);
      lm.source = source;
      lm.steroidJson = `{"ingredient":${jsonString(judgement.ingredient)},"matchedBy":${jsonString(judgement.matchedBy)},"source":${source.json}}`;
    }
    steroids.push({
      ingredient: judgement.ingredient,
      matchedBy: judgement.matchedBy,
      source: source.ref,
    });
    steroidJson = steroidJson === '' ? lm.steroidJson! : `${steroidJson},${lm.steroidJson!}`;
    addSource(run, source);
    for (const ms of lm.medicationSources) addSource(run, ms);
    if (judgement.matchedBy === 'text') {
      findings.push(
        finding(
          'text-only-medication',
          'steroidUse',
          usesReferenceDisplay(lm)
            ? `counted as ${judgement.ingredient} from the display of its medication reference alone (the Medication ${m.medicationReference!.slice(0, 80)} is not in the input, and no recognised code); check that the pull includes the referenced Medications`
            : `counted as ${judgement.ingredient} from its text alone (no recognised code); add its code to the systemic-corticosteroids value set`,
          `${m.resourceType}/${m.id}`,
        ),
      );
    }
  }

  // Diagnosis
  if (diagnosis.source) addSource(run, diagnosis.source);
  if (!diagnosis.value) {
    findings.push(
      finding(
        'missing-diagnosis',
        'diagnosis',
        diagnosis.missingMessage,
        diagnosis.missingResource,
      ),
    );
  } else if (diagnosis.conflicting) {
    findings.push(
      finding(
        'conflicting-values',
        'diagnosis',
        diagnosis.overLater === 'confirmed'
          ? `the patient's Conditions name different IBD diagnoses; the latest confirmed one (${diagnosis.value}) was used over a later one that is not confirmed`
          : diagnosis.overLater === 'clinical'
            ? `the patient's Conditions name different IBD diagnoses; ${diagnosis.value} was used over a later one whose clinical status is inactive or resolved`
            : `the patient's Conditions name different IBD diagnoses; the latest recorded (${diagnosis.value}) was used`,
        `Condition/${diagnosis.winner!.id}`,
      ),
    );
  }

  const visitKey = pseudonymKey(ctx.secret, ctx.centreId, 'Encounter', visit.encounter.id);
  const sources = run.provenanceCount;
  insertionSort(provenance, sources, sourceBefore);
  const refs: SourceRef[] = new Array<SourceRef>(sources);
  for (let i = 0; i < sources; i++) refs[i] = provenance[i]!.ref;
  const steroidUse = steroids.length > 0;

  // The canonical JSON (keys sorted at every level, as keys.ts canonicalJson writes it) of
  // the visit content, joined from pieces with the keys in sorted order; most pieces are
  // made once per record or patient. A joined string hashes faster here than bytes copied
  // piece by piece in JS. test/mapping checks the hash against canonicalJson.
  let json = `{"bmi":${bmi ? bmi.vitalJson! : 'null'}${diagnosis.json}[`;
  for (let i = 0; i < findings.length; i++) {
    if (i > 0) json += ',';
    json += findingJson(findings[i]!);
  }
  json += `],"height":${height ? height.vitalJson! : 'null'},"kind":"visit","patient":{"ageAtVisitMonths":`;
  const age = patient.ageAtVisitMonths;
  json += age !== null && Number.isFinite(age) ? String(age) : 'null';
  json += info.afterAge;
  // PGA categories (PGA_CATEGORIES) and keys (hex) are plain text.
  json += pga === null ? 'null' : `"${pga}"`;
  json += ',"provenance":[';
  for (let i = 0; i < sources; i++) {
    if (i > 0) json += ',';
    json += provenance[i]!.json;
  }
  json +=
    remission === null
      ? '],"remission":null,"schema":"lhn-bridge/registry-submission/v1"'
      : remission
        ? '],"remission":true,"schema":"lhn-bridge/registry-submission/v1"'
        : '],"remission":false,"schema":"lhn-bridge/registry-submission/v1"';
  json += steroidUse ? ',"steroidUse":true,"steroids":[' : ',"steroidUse":false,"steroids":[';
  json += `${steroidJson}],"visit":{"date":${jsonString(visit.date)},"type":${visit.typeJson}},"visitKey":"${visitKey}","weight":${weight ? weight.vitalJson! : 'null'}}`;
  const hash = sha256Hex(json);
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
    height: height ? height.vital : null,
    weight: weight ? weight.vital : null,
    bmi: bmi ? bmi.vital : null,
    findings,
    provenance: refs,
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

/** The PGA category of the visit (findings for unmapped and conflicting answers). */
function choosePga(
  run: Run,
  list: readonly LinkedObs[],
  pending: readonly LinkedObs[] | undefined,
  visit: Visit,
  findings: Finding[],
): PgaCategory | null {
  const rule = run.spec.fields.pga.link;
  let n = linkCandidates(run, list, visit, rule, run.closest.pga);
  if (n === 0) {
    // A PGA that would link but is not final yet (an unsigned note) is named, so the centre
    // can finalise it; else no PGA at all.
    const p = pending ? linkCandidates(run, pending, visit, rule, run.closest.pga) : 0;
    if (p === 0) findings.push(finding('missing-pga', 'pga', MISSING_PGA));
    for (let i = 0; i < p; i++) {
      const o = run.candidates[i]!.obs;
      findings.push(
        finding(
          'missing-pga',
          'pga',
          `a PGA observation links to this visit but its status is ${o.pendingStatus!} (only ${run.spec.observations.statuses.join(', ')} count), so the visit has no PGA; finalise (sign) the note in the EHR`,
          `Observation/${o.id}`,
        ),
      );
    }
    return null;
  }
  const candidates = run.candidates;
  let winner: LinkedObs | null = null;
  let mapped = 0;
  let conflicting = false;
  // When every PGA at the strongest link has no answer at all (not asked, an empty row), the
  // next strength is tried, as for vitals (the findings about the empty ones stay): an empty
  // PGA documented at the visit does not hide one answered the same day. An answer the centre
  // has not mapped is an answer: it is not passed over.
  for (;;) {
    let answered = false;
    for (let i = 0; i < n; i++) {
      const c = candidates[i]!;
      const category = c.obs.category;
      if (category !== null) {
        mapped += 1;
        if (winner === null) winner = c;
        else if (category !== winner.obs.category) conflicting = true;
        continue;
      }
      const f = pgaCandidateFinding(c.obs);
      // An unmapped answer is an answer: the next link strength is not tried for it.
      if (f.kind === 'unmapped-code') answered = true;
      findings.push(f);
    }
    if (winner !== null || answered || run.strength <= 1) break;
    n = linkCandidates(run, list, visit, rule, run.closest.pga, run.strength);
    if (n === 0) break;
  }
  if (winner === null) return null;
  addSource(run, obsSource(winner));
  if (conflicting) {
    const categories = new Set<PgaCategory>();
    for (let i = 0; i < n; i++) {
      const category = candidates[i]!.obs.category;
      if (category !== null) categories.add(category);
    }
    findings.push(
      finding(
        'conflicting-values',
        'pga',
        `${mapped} PGA observations link equally strongly to this visit with different categories (${[...categories].sort().join(', ')}); the ${run.strength === 1 ? 'closest' : 'latest'} one was used`,
        `Observation/${winner.obs.id}`,
      ),
    );
  }
  return winner.obs.category;
}

/** The finding of a PGA candidate without a category: an unmapped answer, or no answer. */
function pgaCandidateFinding(obs: ObservationRecord): Finding {
  return obs.unmappedCode
    ? finding('unmapped-code', 'pga', PGA_UNMAPPED_CODE, `Observation/${obs.id}`, obs.unmappedCode)
    : obs.unmappedValue !== null
      ? finding(
          'unmapped-code',
          'pga',
          `PGA answer ${obs.unmappedValue} is a number no PGA category is mapped to; add it to the centre file under mapping.overrides.valueSets.pga.answers as { value, category }`,
          `Observation/${obs.id}`,
        )
      : obs.unmappedText
        ? finding('unmapped-code', 'pga', PGA_UNMAPPED_TEXT, `Observation/${obs.id}`)
        : finding(
            'missing-value',
            'pga',
            obs.noAnswer === 'panel' ? PGA_PANEL : noAnswerMessage(obs.absentReason),
            `Observation/${obs.id}`,
          );
}

/** The finding text of a PGA without an answer, naming its dataAbsentReason code if any. */
function noAnswerMessage(reason: string | null): string {
  // A dataAbsentReason is a code (asked-unknown, not-asked...); anything else is not echoed.
  return reason !== null && DAR_CODE.test(reason)
    ? `the PGA observation has no answer (dataAbsentReason ${reason}), so it gives no PGA for this visit`
    : PGA_NO_ANSWER;
}

/**
 * The Medication a reference names: `#id` among `contained` (the resource that holds the
 * reference, or for a contained Medication the resource that contains it), else among the
 * input's Medications.
 */
function resolveMedication(
  reference: string | null,
  contained: Map<string, MedicationInfo> | null,
  medications: Map<string, MedicationInfo>,
): MedicationInfo | undefined {
  if (!reference) return undefined;
  if (reference.startsWith('#')) return contained?.get(reference);
  // `Medication/x`, `Medication/x/_history/2` or an absolute URL ending so (the view engine's
  // reference parser); a bare id is taken as a Medication id.
  const literal = parseLiteralReference(reference);
  if (literal) return literal.type === 'Medication' ? medications.get(literal.id) : undefined;
  return reference.includes('/') ? undefined : medications.get(reference);
}

/** Percentage points below which a difference is floating-point noise, not a conflict. */
const CONFLICT_EPSILON_PERCENT = 1e-9;

/**
 * An implausible vital as a finding quotes it: the value as sent with its unit when that is
 * safe to quote (unitForMessage), and the converted value to the field's decimals or with as
 * many significant digits as show it is outside the range (32 g: `32 "g" (0.032 kg)`, not `0 kg`); just `305 cm` when
 * sent in the target unit.
 */
function implausibleValue(
  o: ObservationRecord,
  spec: { unit: string; decimals: number; plausible: { min: number; max: number } },
): string {
  const value = o.value!;
  const sent = o.sentValue ?? value;
  if (o.unit === spec.unit && sent === value) return `${sent} ${spec.unit}`;
  const quoted = o.unit === null ? null : unitForMessage(o.unit);
  const asSent = quoted?.startsWith('"') ? `${sent} ${quoted}` : `${sent}`;
  if (sent === value && quoted?.startsWith('"')) return asSent;
  const outside = (v: number): boolean => v < spec.plausible.min || v > spec.plausible.max;
  // The field's decimals (453.6 kg) unless that hides the problem (0.032 kg rounds to 0.0,
  // 250.04 to 250.0): then more significant digits.
  let shown = roundTo(value, spec.decimals);
  if (Math.abs(value) < 1 || !outside(shown)) {
    for (let p = 3; p <= 15; p++) {
      shown = Number(value.toPrecision(p));
      if (outside(shown)) break;
    }
  }
  return `${asSent} (${shown} ${spec.unit})`;
}

/** FHIR Observation value[x] types other than Quantity (the names are quoted, never values). */
const OTHER_VALUE_TYPES = new Set(
  'CodeableConcept String Boolean Integer Range Ratio SampledData Time DateTime Period Attachment Reference'
    .split(' ')
    .map((t) => `value${t}`),
);

/**
 * Why a vital (an Observation with no numeric `valueQuantity.value`) has no usable value, as
 * a finding may say it: the value[x] type it has instead, or that its Quantity's value is
 * missing or not a number; null when it has no value at all (only a dataAbsentReason without
 * a code, or nothing): such a vital stands for its version only, as before.
 */
function nonNumericValue(resource: FhirResource): string | null {
  const quantity = (resource as { valueQuantity?: unknown }).valueQuantity;
  if (quantity !== undefined && quantity !== null) {
    const value = (quantity as { value?: unknown }).value;
    return value === undefined || value === null
      ? 'its valueQuantity has no value'
      : 'its valueQuantity.value is not a number';
  }
  for (const key of Object.keys(resource)) {
    if (OTHER_VALUE_TYPES.has(key)) return `it has a ${key} instead of a valueQuantity`;
  }
  return null;
}

/**
 * The vital of the visit: the first usable of the best linked observations (findings for
 * unusable and conflicting ones). Its vitalJson is set.
 */
function chooseVital(
  run: Run,
  field: VitalField,
  list: readonly LinkedObs[],
  pending: readonly LinkedObs[] | undefined,
  visit: Visit,
  findings: Finding[],
): LinkedObs | null {
  const spec = run.spec.fields[field];
  let n = linkCandidates(run, list, visit, spec.link, run.closest[field]);
  if (n === 0) {
    // A vital that would link but is not final yet (an unsigned flowsheet or note) is named,
    // so the centre can finalise it; this holds for BMI too although its plain missing-value
    // finding is off by default (reportMissing), since it is something the centre can fix.
    // One that has no value but a dataAbsentReason code is named as a PGA without an answer
    // is, and so is one whose value is not a numeric Quantity (valueString "140 cm"): it does
    // link, so 'no height observation links' would be false (both only where the plain
    // missing-value finding would be given).
    const p = pending ? linkCandidates(run, pending, visit, spec.link, run.closest[field]) : 0;
    let reported = 0;
    for (let i = 0; i < p; i++) {
      const o = run.candidates[i]!.obs;
      if (o.pendingStatus === null) {
        if (!spec.reportMissing) continue;
        reported += 1;
        findings.push(
          finding(
            'missing-value',
            field,
            o.absentReason !== null
              ? `the ${field} observation has no value (dataAbsentReason: ${o.absentReason}), so the visit has no ${field}`
              : `a ${field} observation links to this visit but has no numeric quantity value (${o.noValue!}), so the visit has no ${field}`,
            `Observation/${o.id}`,
          ),
        );
        continue;
      }
      reported += 1;
      findings.push(
        finding(
          'missing-value',
          field,
          `a ${field} observation links to this visit but its status is ${o.pendingStatus} (only ${run.spec.observations.statuses.join(', ')} count), so the visit has no ${field}; finalise (sign) the note in the EHR`,
          `Observation/${o.id}`,
        ),
      );
    }
    if (reported === 0 && spec.reportMissing)
      findings.push(finding('missing-value', field, MISSING_VITAL[field]));
    return null;
  }
  const candidates = run.candidates;
  let winner: LinkedObs | null = null;
  let valid = 0;
  let min = Infinity;
  let max = -Infinity;
  // When no candidate at the strongest link is usable, the next strength is tried (the
  // findings about the unusable ones stay): a mistyped weight documented at the visit does
  // not hide a valid one taken the same day.
  for (;;) {
    for (let i = 0; i < n; i++) {
      const c = candidates[i]!;
      const o = c.obs;
      if (c.problem === 1) {
        findings.push(
          finding(
            'unconvertible-unit',
            field,
            `${field} unit ${o.unit ? unitForMessage(o.unit) : '(none)'} cannot be converted to ${spec.unit}`,
            `Observation/${o.id}`,
          ),
        );
        continue;
      }
      if (c.problem === 3) {
        findings.push(
          finding(
            'implausible-value',
            field,
            `${field} is given as a bound (a quantity with a comparator such as > or <), not a measurement, so it was not used`,
            `Observation/${o.id}`,
          ),
        );
        continue;
      }
      if (c.problem === 2) {
        findings.push(
          finding(
            'implausible-value',
            field,
            `${field} ${implausibleValue(o, spec)} is outside the plausible range ${spec.plausible.min}-${spec.plausible.max} ${spec.unit}`,
            `Observation/${o.id}`,
          ),
        );
        continue;
      }
      winner ??= c;
      // Only values of the chosen one's calendar day can conflict: a growing child's weight
      // legitimately differs between days of a window.
      if (o.day !== winner.obs.day) continue;
      valid += 1;
      const raw = o.value!;
      if (raw < min) min = raw;
      if (raw > max) max = raw;
    }
    if (winner || run.strength <= 1) break;
    n = linkCandidates(run, list, visit, spec.link, run.closest[field], run.strength);
    if (n === 0) break;
  }
  if (!winner) return null;
  addSource(run, obsSource(winner));
  if (winner.vitalJson === null) {
    winner.vitalJson = `{"unit":${jsonString(spec.unit)},"value":${jsonDecimal(winner.rounded, spec.decimals)}}`;
    winner.vital = { unit: spec.unit, value: winner.rounded };
  }
  // A small tolerance: 140 and 141.4 cm are exactly 1% apart, 1.000000000000004% in binary.
  if (
    valid > 1 &&
    min > 0 &&
    ((max - min) / min) * 100 > spec.conflictTolerancePercent + CONFLICT_EPSILON_PERCENT
  ) {
    findings.push(
      finding(
        'conflicting-values',
        field,
        `${valid} ${field} observations link equally strongly to this visit and differ by more than ${spec.conflictTolerancePercent}%; the ${run.strength === 1 ? 'closest' : 'latest'} one was used`,
        `Observation/${winner.obs.id}`,
      ),
    );
  }
  return winner;
}
