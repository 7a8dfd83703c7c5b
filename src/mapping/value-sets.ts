// Lookup tables built once per mapper from the pack's value sets: every per-row question
// ("is this coding a PGA question? a height? which steroid?") is one Map lookup on
// `system|code`, never a scan of a list.
import type { Diagnosis, PgaCategory } from '../registry/submission.js';
import type {
  MappingPack,
  NonSystemicValueSet,
  SteroidValueSet,
  VitalField,
} from './pack-schema.js';

export type ObservationField = 'pga' | VitalField;
export type SteroidConcept = SteroidValueSet['concepts'][number];
export type SteroidIngredient = SteroidConcept['ingredient'];

/** A coding as it arrives in rows: any part may be missing. */
export interface Coding {
  system: string | null;
  code: string | null;
  display?: string | null;
}

/** A lookup by system then code (no key strings built per row). */
export type CodingMap<T> = Map<string, Map<string, T>>;

export interface PackIndex {
  observationField: CodingMap<ObservationField>;
  /** system -> code -> PGA category. */
  pgaAnswerByCode: CodingMap<PgaCategory>;
  pgaAnswerByText: Map<string, PgaCategory>;
  /** Numeric PGA answers (valueInteger, or a unitless valueQuantity) by value. */
  pgaAnswerByValue: Map<number, PgaCategory>;
  steroidByCode: Map<string, SteroidConcept>;
  /** Ingredient and brand names, longest first, as whole-word matchers. */
  steroidNames: { pattern: RegExp; ingredient: SteroidIngredient }[];
  nonSystemicText: RegExp;
  routeSystemic: Map<string, boolean>;
  /** Dose form codes (SNOMED CT, EDQM) by `system|code`: false for local forms. */
  formSystemic: Map<string, boolean>;
  /** Whole route texts (normalised) that mean a local route: PR, OU, AU... */
  localRouteTexts: Set<string>;
  diagnosisByCode: Map<string, Diagnosis>;
  /** Longest first; diagnosis null: a prefix that decides nothing (see the pack schema). */
  diagnosisPrefixes: { system: string; prefix: string; diagnosis: Diagnosis | null }[];
}

/** `system|code`, the key of every lookup table. */
export function codingKey(
  system: string | null | undefined,
  code: string | null | undefined,
): string {
  return `${system ?? ''}|${code ?? ''}`;
}

function setCoding<T>(map: CodingMap<T>, system: string, code: string, value: T): void {
  let codes = map.get(system);
  if (!codes) {
    codes = new Map();
    map.set(system, codes);
  }
  codes.set(code, value);
}

/** Looks a row's system and code up (either may be missing or not a string). */
export function lookupCoding<T>(map: CodingMap<T>, system: unknown, code: unknown): T | undefined {
  if (typeof code !== 'string') return undefined;
  return map.get(typeof system === 'string' ? system : '')?.get(code);
}

/**
 * Lower-cases, collapses spaces and drops trailing `.`, `,`, `;` and `:`, so ` In  Remission. `
 * matches `in remission`. Matching on the result stays exact (no substring match).
 */
export function normaliseText(text: string): string {
  let end = text.length;
  while (end > 0) {
    const c = text.charCodeAt(end - 1);
    // . , ; : and white space (a loop, not a regex: no backtracking on long input).
    if (c === 46 || c === 44 || c === 59 || c === 58 || c <= 32 || c === 160) end--;
    else break;
  }
  return text.slice(0, end).trim().toLowerCase().replace(/\s+/g, ' ');
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Other URIs EHRs use for the code systems the pack names, by the pack's (canonical) URI:
 * the HL7 OIDs (HL7 OID registry; FHIR R4 terminologies-systems) and the pre-R4 v3 URL. A
 * coding with an alias system is looked up as if it had the canonical one.
 */
export const SYSTEM_ALIASES: Readonly<Record<string, readonly string[]>> = {
  'http://loinc.org': ['urn:oid:2.16.840.1.113883.6.1'],
  'http://snomed.info/sct': ['urn:oid:2.16.840.1.113883.6.96'],
  'http://hl7.org/fhir/sid/icd-10-cm': ['urn:oid:2.16.840.1.113883.6.90'],
  'http://www.nlm.nih.gov/research/umls/rxnorm': ['urn:oid:2.16.840.1.113883.6.88'],
  'http://unitsofmeasure.org': ['urn:oid:2.16.840.1.113883.6.8'],
  'http://terminology.hl7.org/CodeSystem/v3-ActCode': [
    'http://hl7.org/fhir/v3/ActCode',
    'urn:oid:2.16.840.1.113883.5.4',
  ],
};

/**
 * Makes every entry of a canonical system reachable under its aliases too (the inner maps
 * are shared, so later additions show under both). `extra` adds aliases for this map only.
 */
export function addSystemAliases<T>(
  map: CodingMap<T>,
  extra: Readonly<Record<string, readonly string[]>> = {},
): CodingMap<T> {
  for (const [canonical, aliases] of Object.entries(SYSTEM_ALIASES)) {
    const codes = map.get(canonical);
    if (!codes) continue;
    for (const alias of [...aliases, ...(extra[canonical] ?? [])])
      if (!map.has(alias)) map.set(alias, codes);
  }
  return map;
}

/** The same for a map keyed by `codingKey(system, code)`. */
function addKeyedAliases<T>(map: Map<string, T>): void {
  for (const [key, value] of [...map]) {
    const bar = key.indexOf('|');
    const aliases = SYSTEM_ALIASES[key.slice(0, bar)];
    if (!aliases) continue;
    const code = key.slice(bar + 1);
    for (const alias of aliases)
      if (!map.has(`${alias}|${code}`)) map.set(`${alias}|${code}`, value);
  }
}

/**
 * Whole-word pattern for a word, or a word start when it ends in `*` (`inhal*`). A hyphen in
 * the word may be left out or be a space (intra-articular, intraarticular, intra articular).
 * With `forms` (the local-form words), a whole word also matches with `s` or `es` (enemas,
 * eyes, ears) and as its adverb: `ly` after `al` or `ous` (rectally, topically, cutaneously),
 * `ally` after `ic` (otically); never after other endings (ear, early).
 */
function wordPattern(word: string, forms = false): string {
  const open = word.endsWith('*');
  const body = escapeRegExp(open ? word.slice(0, -1) : word)
    .replace(/\\?\s+/g, '\\s+')
    .replace(/-/g, '[-\\s]?');
  if (open) return `(?<![a-z0-9])${body}`;
  if (!forms) return `(?<![a-z0-9])${body}(?![a-z0-9])`;
  const lower = word.toLowerCase();
  const adverb = /(?:al|ous)$/.test(lower) ? '|ly' : lower.endsWith('ic') ? '|ally' : '';
  return `(?<![a-z0-9])${body}(?:e?s${adverb})?(?![a-z0-9])`;
}

/**
 * A strength written as a percentage (`1 %`, `2.5%`, `0.3-0.1 %`), unless a diluent names it
 * just before (`sodium chloride 0.9 %`) or just after (`0.9% sodium chloride`).
 */
function percentPattern(rule: NonNullable<NonSystemicValueSet['percentStrength']>): string {
  const number = '(?<![0-9.])[0-9]*\\.?[0-9]+\\s*%';
  if (rule.diluents.length === 0) return number;
  const diluents = rule.diluents
    .map((d) => escapeRegExp(d.text.toLowerCase()).replace(/\\?\s+/g, '\\s+'))
    .join('|');
  return `(?<!(?<![a-z0-9])(?:${diluents})\\s*)${number}(?!\\s*(?:${diluents})(?![a-z0-9]))`;
}

/** Normalises an ICD-10-CM style code for prefix matching: upper case, no dot. */
export function normaliseIcdCode(code: string): string {
  return code.trim().toUpperCase().replace('.', '');
}

/** Builds every lookup table of a pack (after centre overrides are applied). */
export function buildPackIndex(pack: MappingPack): PackIndex {
  const { pga, vitals, steroids, nonSystemic, diagnoses } = pack.valueSets;
  const observationField: CodingMap<ObservationField> = new Map();
  for (const c of vitals.concepts) setCoding(observationField, c.system, c.code, c.field);
  for (const q of pga.questions) setCoding(observationField, q.system, q.code, 'pga');

  const pgaAnswerByCode: CodingMap<PgaCategory> = new Map();
  const pgaAnswerByText = new Map<string, PgaCategory>();
  for (const [category, words] of Object.entries(pga.synonyms) as [PgaCategory, string[]][]) {
    for (const w of words) pgaAnswerByText.set(normaliseText(w), category);
  }
  const pgaAnswerByValue = new Map<number, PgaCategory>();
  for (const a of pga.answers) {
    if ('text' in a) pgaAnswerByText.set(normaliseText(a.text), a.category);
    else if ('value' in a) pgaAnswerByValue.set(a.value, a.category);
    else setCoding(pgaAnswerByCode, a.system, a.code, a.category);
  }
  addSystemAliases(observationField);

  const steroidByCode = new Map<string, SteroidConcept>();
  for (const c of steroids.concepts) steroidByCode.set(codingKey(c.system, c.code), c);
  const names = new Map<string, SteroidIngredient>();
  for (const c of steroids.concepts) if (c.tty === 'IN') names.set(c.ingredient, c.ingredient);
  for (const n of steroids.names) names.set(n.text.toLowerCase(), n.ingredient);
  const steroidNames = [...names.entries()]
    .sort((a, b) => b[0].length - a[0].length)
    .map(([text, ingredient]) => ({ pattern: new RegExp(wordPattern(text), 'i'), ingredient }));

  // One pattern for every local-form signal in text (a single test per text): form words,
  // brands of local products, and a percent strength that is not a diluent's.
  const localAlternatives = nonSystemic.words.map((w) => wordPattern(w.word.toLowerCase(), true));
  for (const b of nonSystemic.brands) localAlternatives.push(wordPattern(b.text.toLowerCase()));
  if (nonSystemic.percentStrength)
    localAlternatives.push(percentPattern(nonSystemic.percentStrength));
  const nonSystemicText = new RegExp(localAlternatives.join('|'), 'i');
  const routeSystemic = new Map<string, boolean>();
  for (const r of nonSystemic.routes) routeSystemic.set(codingKey(r.system, r.code), r.systemic);
  const formSystemic = new Map<string, boolean>();
  for (const f of nonSystemic.forms) formSystemic.set(codingKey(f.system, f.code), f.systemic);
  const localRouteTexts = new Set(nonSystemic.routeTexts.map((r) => normaliseText(r.text)));

  const diagnosisByCode = new Map<string, Diagnosis>();
  for (const c of diagnoses.concepts) diagnosisByCode.set(codingKey(c.system, c.code), c.diagnosis);
  const diagnosisPrefixes = diagnoses.prefixes
    .map((p) => ({ system: p.system, prefix: normaliseIcdCode(p.prefix), diagnosis: p.diagnosis }))
    .sort((a, b) => b.prefix.length - a.prefix.length);

  addKeyedAliases(steroidByCode);
  addKeyedAliases(routeSystemic);
  addKeyedAliases(diagnosisByCode);
  for (const p of [...diagnosisPrefixes])
    for (const alias of SYSTEM_ALIASES[p.system] ?? [])
      diagnosisPrefixes.push({ ...p, system: alias });
  diagnosisPrefixes.sort((a, b) => b.prefix.length - a.prefix.length);

  return {
    observationField,
    pgaAnswerByCode,
    pgaAnswerByText,
    pgaAnswerByValue,
    steroidByCode,
    steroidNames,
    nonSystemicText,
    routeSystemic,
    formSystemic,
    localRouteTexts,
    diagnosisByCode,
    diagnosisPrefixes,
  };
}

/** The registry diagnosis of one coding, by exact code then by the longest matching prefix. */
export function lookupDiagnosis(index: PackIndex, coding: Coding): Diagnosis | null {
  if (!coding.code) return null;
  const exact = index.diagnosisByCode.get(codingKey(coding.system, coding.code));
  if (exact) return exact;
  const code = normaliseIcdCode(coding.code);
  for (const p of index.diagnosisPrefixes) {
    if (p.system === coding.system && code.startsWith(p.prefix)) return p.diagnosis;
  }
  return null;
}
