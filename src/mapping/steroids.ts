// Steroid recognition: is this MedicationStatement/Request a systemic corticosteroid, and
// was it active on the visit date? EHRs send ingredient codes, product (SCD/SBD) codes,
// several codings at once, a (contained) Medication, or only text; and the same ingredient
// comes as tablets or as a cream. Ingredient, form and route are judged separately so a
// hydrocortisone cream never counts and a prednisolone tablet always does.
import type { PackIndex, Coding, SteroidIngredient } from './value-sets.js';
import { codingKey, normaliseText } from './value-sets.js';

/** A Medication resource (top level or contained), reduced to what the rules need. */
export interface MedicationInfo {
  id: string;
  codings: Coding[];
  /**
   * Medication.ingredient.itemCodeableConcept codings; once resolved (assemble.ts), also the
   * codes (and code text, as a display) of the Medications its itemReferences point to.
   */
  ingredientCodings: Coding[];
  /** Medication.ingredient.itemReference references (`#id`, `Medication/id`, a URL). */
  ingredientReferences: string[];
  /** A top-level Medication's contained Medications by `#id` (what its `#id` references mean). */
  contained: Map<string, MedicationInfo> | null;
  formCodings: Coding[];
  text: string | null;
  formText: string | null;
  versionId: string | null;
  lastUpdated: string | null;
}

/** A MedicationStatement or MedicationRequest, reduced to what the rules need. */
export interface MedicationUse {
  resourceType: 'MedicationStatement' | 'MedicationRequest';
  id: string;
  status: string | null;
  intent: string | null;
  codings: Coding[];
  text: string | null;
  /** `#id` for a contained Medication, `Medication/id` (or a URL) otherwise. */
  medicationReference: string | null;
  /**
   * medicationReference.display (Epic always sends it): judged as the use's text when the
   * reference cannot be resolved and the use has no codings and no text of its own, or when
   * the resolved Medication has no recognised code and no text and the use no text.
   */
  medicationReferenceDisplay?: string | null;
  contained: Map<string, MedicationInfo>;
  routeCodings: Coding[];
  routeTexts: string[];
  /**
   * The dosages' text and patientInstruction ("Insert 1 enema rectally nightly"): read for
   * local-form words only when no dosage gives a route (a route, such as oral, decides).
   */
  dosageTexts?: string[];
  /**
   * The course periods: MS effectivePeriod (else, with no effective[x] at all, its dosage
   * boundsPeriod); MR dosage boundsPeriod.
   */
  periods: { start: string | null; end: string | null }[];
  /**
   * Dosage boundsDuration (UCUM code h, d, wk, mo, a...), else the length a timing.repeat
   * count gives (count / frequency * period periodUnit): of an MR, and of an MS with no
   * effective[x]. `sequence` is the dosage's Dosage.sequence: dosages with a sequence number
   * run one step after another (a taper), those without one each from the course start.
   */
  durations: { value: number; unit: string; sequence?: number | null }[];
  /**
   * A dosage with a sequence number gives no length it can be read by (no bounds, no dose
   * count, or a unit that is not one of time): the chained course has no known end.
   */
  openStep?: boolean;
  /**
   * A course length (dosage boundsDuration or dose-count period, MR expectedSupplyDuration when
   * it would be used) whose unit is not a unit of time the rules read (see durationUnitOf): the
   * element and its unit as sent ('' when it has none), else null. That length is left out of
   * the course, and the visits say so.
   */
  unreadDuration: { element: string; unit: string } | null;
  /**
   * MR dispenseRequest.validityPeriod: how long the prescription may be dispensed, not when the
   * drug is taken. Its start starts the expected supply; the period itself is the course only
   * when the dosage gives no bounds and there is no (readable) expected supply.
   */
  validity: { start: string | null; end: string | null } | null;
  /**
   * MR dispenseRequest.expectedSupplyDuration times (1 + numberOfRepeatsAllowed), UCUM unit:
   * the course from the validity start, else authoredOn, when the dosage gives no bounds; and
   * the end of an open boundsPeriod (from its start) once the request is no longer active.
   */
  supply: { value: number; unit: string } | null;
  /** MS.effectiveDateTime or MR.authoredOn, used when there is no period. */
  singleDate: string | null;
  /** MS.dateAsserted: by then a statement no longer active was over. */
  dateAsserted: string | null;
  /**
   * Every dosage gives timing.repeat.count 1 (and no countMax above 1): one administration,
   * such as an IV premedication before an infusion, not a course.
   */
  singleAdministration: boolean;
  /** MR.doNotPerform: the request asks for the medication not to be given. */
  doNotPerform: boolean;
  versionId: string | null;
  lastUpdated: string | null;
}

export type MatchedBy = 'ingredient-code' | 'product-code' | 'medication-ingredient' | 'text';

export interface SteroidJudgement {
  ingredient: SteroidIngredient;
  matchedBy: MatchedBy;
  /** False when a product code, form, route or text says the form acts locally. */
  systemic: boolean;
}

const NO_CODINGS: readonly Coding[] = [];

/** True when a text says the form acts locally (topical, inhaled, ...). */
function localText(index: PackIndex, t: string | null | undefined): boolean {
  return !!t && index.nonSystemicText.test(t);
}

/**
 * Words of the pack's local-form list that name a body site, or a route adjective that
 * instructions also use of other things, rather than how the drug is given. In a dosage
 * instruction they say why or where ("for skin rash", "report eye pain", "external
 * pharmacy", "steroids raise intraocular pressure", "stop before the epidural", "subconjunctival
 * bleeding"), so a dosage text is not judged by them (their adverbs, "intradermally", still
 * are); a route or form that names them is.
 */
const BODY_SITE_WORDS =
  /(?<![a-z0-9])(?:skin|eyes?|ears?|external|rectum|nostrils?|intraocular|epidural|peridural|intradermal|intracutaneous|periocular|subconjunctival)(?![a-z0-9])/gi;

/** A dosage text that names a systemic route or form: it is never judged local. */
const SYSTEMIC_DOSAGE =
  /(?<![a-z0-9])(?:by mouth|orally|oral|p\.?o\.?|tablets?|tabs?|capsules?|caps?|swallow\w*|iv|intravenous(?:ly)?|im|intramuscular(?:ly)?|infus\w*)(?![a-z0-9])/i;

/**
 * Whether a dosage instruction (text, patientInstruction) says the use is local: it names a
 * local route or form (an enema, rectally, a cream, topically) once body-site words are set
 * aside, and names no systemic route or form ("2 tablets by mouth ... for skin rash" is oral).
 */
function localDosageText(index: PackIndex, t: string): boolean {
  if (SYSTEMIC_DOSAGE.test(t)) return false;
  return localText(index, t.replace(BODY_SITE_WORDS, ' '));
}

function anyLocalDisplay(index: PackIndex, codings: readonly Coding[]): boolean {
  for (let i = 0; i < codings.length; i++) if (localText(index, codings[i]!.display)) return true;
  return false;
}

/**
 * The texts that may name the medicine, in order: the use's text, the displays of the use's
 * codings, the dosage texts when no dosage gives a route (for local-form words only), then
 * the displays of the Medication's codings, the Medication's text, its ingredient displays.
 * anyText tests them for local-form words, nameInText for a corticosteroid name (the first
 * text that names one decides). Walked in place: no list of them is made.
 */
function anyText(index: PackIndex, use: MedicationUse, medication: MedicationInfo | undefined) {
  if (localText(index, use.text) || anyLocalDisplay(index, use.codings)) return true;
  if (use.dosageTexts && use.routeCodings.length === 0 && use.routeTexts.length === 0)
    for (const t of use.dosageTexts) if (localDosageText(index, t)) return true;
  if (!medication) return false;
  return (
    anyLocalDisplay(index, medication.codings) ||
    localText(index, medication.text) ||
    anyLocalDisplay(index, medication.ingredientCodings)
  );
}

function nameOf(index: PackIndex, t: string | null | undefined): SteroidIngredient | null {
  if (!t) return null;
  for (const n of index.steroidNames) if (n.pattern.test(t)) return n.ingredient;
  return null;
}

function nameInDisplays(index: PackIndex, codings: readonly Coding[]): SteroidIngredient | null {
  for (let i = 0; i < codings.length; i++) {
    const named = nameOf(index, codings[i]!.display);
    if (named) return named;
  }
  return null;
}

function nameInText(
  index: PackIndex,
  use: MedicationUse,
  medication: MedicationInfo | undefined,
): SteroidIngredient | null {
  const named = nameOf(index, use.text) ?? nameInDisplays(index, use.codings);
  if (named || !medication) return named;
  return (
    nameInDisplays(index, medication.codings) ??
    nameOf(index, medication.text) ??
    nameInDisplays(index, medication.ingredientCodings)
  );
}

/** The form texts: the use's route texts and displays, the Medication's form text and displays. */
function anyFormText(
  index: PackIndex,
  use: MedicationUse,
  medication: MedicationInfo | undefined,
): boolean {
  const routeTexts = use.routeTexts;
  for (let i = 0; i < routeTexts.length; i++) {
    const t = routeTexts[i]!;
    if (localText(index, t) || index.localRouteTexts.has(normaliseText(t))) return true;
  }
  if (anyLocalDisplay(index, use.routeCodings)) return true;
  if (!medication) return false;
  return localText(index, medication.formText) || anyLocalDisplay(index, medication.formCodings);
}

/** A route or dose form coding listed as local by its code (no display needed). */
function anyLocalCode(map: Map<string, boolean>, codings: readonly Coding[]): boolean {
  for (let i = 0; i < codings.length; i++) {
    const c = codings[i]!;
    if (map.get(codingKey(c.system, c.code)) === false) return true;
  }
  return false;
}

interface CodeEvidence {
  ingredient: SteroidIngredient | null;
  matchedBy: MatchedBy | null;
  productSaysLocal: boolean;
  productSaysSystemic: boolean;
}

function codeEvidence(index: PackIndex, codings: readonly Coding[], e: CodeEvidence): void {
  for (let i = 0; i < codings.length; i++) {
    const c = codings[i]!;
    const concept = index.steroidByCode.get(codingKey(c.system, c.code));
    if (!concept) continue;
    if (concept.tty === 'IN') {
      if (!e.ingredient) {
        e.ingredient = concept.ingredient;
        e.matchedBy = 'ingredient-code';
      }
      continue;
    }
    // A product code is the strongest evidence: it fixes ingredient and dose form.
    if (e.matchedBy !== 'product-code') {
      e.ingredient = concept.ingredient;
      e.matchedBy = 'product-code';
    }
    if (concept.systemic) e.productSaysSystemic = true;
    else e.productSaysLocal = true;
  }
}

/**
 * Judges whether a medication use names a corticosteroid, which one, how it was recognised
 * and whether the form is systemic. `medication` is the resolved (contained or referenced)
 * Medication, if any. Returns null when nothing names a corticosteroid.
 */
export function judgeSteroid(
  index: PackIndex,
  use: MedicationUse,
  medication: MedicationInfo | undefined,
): SteroidJudgement | null {
  // The use's codings, then the Medication's.
  const e: CodeEvidence = {
    ingredient: null,
    matchedBy: null,
    productSaysLocal: false,
    productSaysSystemic: false,
  };
  codeEvidence(index, use.codings, e);
  codeEvidence(index, medication ? medication.codings : NO_CODINGS, e);
  if (!e.ingredient && medication) {
    for (const c of medication.ingredientCodings) {
      const concept = index.steroidByCode.get(codingKey(c.system, c.code));
      if (!concept) continue;
      e.ingredient = concept.ingredient;
      e.matchedBy = 'medication-ingredient';
      if (concept.tty !== 'IN') {
        if (concept.systemic) e.productSaysSystemic = true;
        else e.productSaysLocal = true;
      }
      break;
    }
  }

  const codeSaysLocal =
    anyLocalCode(index.routeSystemic, use.routeCodings) ||
    (!!medication && anyLocalCode(index.formSystemic, medication.formCodings));
  const formSaysLocal = codeSaysLocal || anyFormText(index, use, medication);

  const ingredient = e.ingredient;
  if (!ingredient) {
    const named = nameInText(index, use, medication);
    if (named)
      return {
        ingredient: named,
        matchedBy: 'text',
        systemic: !formSaysLocal && !anyText(index, use, medication),
      };
    // A resolved Medication with no recognised code and no text (only a local code), on a use
    // with no text of its own: the reference's display ("predniSONE 20 MG tablet") is the only
    // name of the medication, judged as text.
    const display = use.medicationReferenceDisplay;
    if (!medication || medication.text || use.text || !display) return null;
    const byDisplay = nameOf(index, display);
    if (!byDisplay) return null;
    return {
      ingredient: byDisplay,
      matchedBy: 'text',
      systemic: !formSaysLocal && !anyText(index, use, medication) && !localText(index, display),
    };
  }
  // Text words only overrule when no product code vouches for a systemic form.
  const textSaysLocal = !e.productSaysSystemic && anyText(index, use, medication);
  return {
    ingredient,
    matchedBy: e.matchedBy!,
    systemic: !e.productSaysLocal && !formSaysLocal && !textSaysLocal,
  };
}

/** A use's dates in the centre zone, worked out once for all the visits it is checked at. */
export interface UseDates {
  /** The periods that have a start or an end, as centre-zone dates (open ends closed, see useDatesOf). */
  periods: { start: string | null; end: string | null }[];
  /** The lone date (MS.effectiveDateTime or MR.authoredOn), used when there is no period. */
  single: string | null;
  /** The last day of the lone date's precision ("2024-02" ends 2024-02-29). */
  singleEnd: string | null;
  /** The latest end of its periods, null when open or unknown. */
  end: string | null;
  /** True when no usable date was found at all (no period, no lone date). */
  undated: boolean;
  /** True when a period was left out because it ends before it starts. */
  inverted: boolean;
}

const YEAR = /^\d{4}$/;
const YEAR_MONTH = /^\d{4}-\d{2}$/;

/** Days in a month (1-12) of a year. */
function daysInMonth(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

/**
 * The first and last day (YYYY-MM-DD, centre zone) a FHIR date or dateTime covers: a full
 * date or dateTime is one day; "2024-02" is 1-29 February, "2024" the whole year.
 */
function dayRangeOf(
  value: string | null,
  dateOf: (value: string | null) => string | null,
): { first: string; last: string } | null {
  if (!value) return null;
  if (YEAR.test(value)) return { first: `${value}-01-01`, last: `${value}-12-31` };
  if (YEAR_MONTH.test(value)) {
    const month = Number(value.slice(5, 7));
    if (month < 1 || month > 12) return null;
    const last = daysInMonth(Number(value.slice(0, 4)), month);
    return { first: `${value}-01`, last: `${value}-${String(last).padStart(2, '0')}` };
  }
  const date = dateOf(value);
  return date ? { first: date, last: date } : null;
}

const DAY_MS = 86_400_000;
/** Days per UCUM duration unit; months and years are calendar arithmetic (see addDuration). */
const DAYS_PER_UNIT: Record<string, number> = {
  s: 1 / 86_400,
  min: 1 / 1_440,
  h: 1 / 24,
  d: 1,
  wk: 7,
};

/**
 * The units of time a boundsDuration may give, by their UCUM code (FHIR R4 units-of-time,
 * http://hl7.org/fhir/ValueSet/units-of-time: s, min, h, d, wk, mo, a) and, for a Duration
 * sent with a unit word and no code (FHIR rule drt-1 asks for a code, but EHRs send one
 * without), by the English unit names, singular, plural and "(s)", meaning those UCUM codes
 * (UCUM, unitsofmeasure.org). Looked up after trimming and lower-casing: no pattern matching.
 */
const DURATION_UNITS: ReadonlyMap<string, string> = new Map([
  ['s', 's'],
  ['min', 'min'],
  ['h', 'h'],
  ['d', 'd'],
  ['wk', 'wk'],
  ['mo', 'mo'],
  ['a', 'a'],
  ['hour', 'h'],
  ['hours', 'h'],
  ['hour(s)', 'h'],
  ['day', 'd'],
  ['days', 'd'],
  ['day(s)', 'd'],
  ['week', 'wk'],
  ['weeks', 'wk'],
  ['week(s)', 'wk'],
  ['month', 'mo'],
  ['months', 'mo'],
  ['month(s)', 'mo'],
  ['year', 'a'],
  ['years', 'a'],
  ['year(s)', 'a'],
]);

function durationUnitFrom(text: string | null): string | undefined {
  if (!text) return undefined;
  return DURATION_UNITS.get(text) ?? DURATION_UNITS.get(text.trim().toLowerCase());
}

/**
 * The UCUM code of a boundsDuration's unit: its code when that is a unit of time (UCUM codes
 * are case-sensitive, but EHRs also put a unit word in `code`), else its unit word. Null when
 * neither is a unit of time the rules read.
 */
export function durationUnitOf(code: string | null, unit: string | null): string | null {
  return durationUnitFrom(code) ?? durationUnitFrom(unit) ?? null;
}

/**
 * The day a course of `value` `unit` (UCUM: s, min, h, d, wk, mo, a) starting on `start`
 * (YYYY-MM-DD) ends on: start plus the duration, a part day rounded up to a whole day
 * (a 5-day burst from 1 December ends on 6 December). Null for an unknown unit.
 */
export function addDuration(start: string, value: number, unit: string): string | null {
  if (!Number.isFinite(value) || value < 0) return null;
  const [y, m, d] = [
    Number(start.slice(0, 4)),
    Number(start.slice(5, 7)),
    Number(start.slice(8, 10)),
  ];
  const perUnit = DAYS_PER_UNIT[unit];
  let ms: number;
  if (perUnit !== undefined) {
    ms = Date.UTC(y, m - 1, d) + Math.ceil(value * perUnit - 1e-9) * DAY_MS;
  } else if (unit === 'mo' || unit === 'a') {
    const months = Math.ceil(value * (unit === 'a' ? 12 : 1) - 1e-9);
    const targetMonth = m - 1 + months;
    const ty = y + Math.floor(targetMonth / 12);
    const tm = ((targetMonth % 12) + 12) % 12;
    ms = Date.UTC(ty, tm, Math.min(d, daysInMonth(ty, tm + 1)));
  } else {
    return null;
  }
  return new Date(ms).toISOString().slice(0, 10);
}

/** The day before a YYYY-MM-DD date. */
function dayBefore(date: string): string {
  const ms = Date.parse(`${date}T00:00:00Z`) - DAY_MS;
  return new Date(ms).toISOString().slice(0, 10);
}

/**
 * A use's dates in the centre zone. Partial dates keep their precision (a start "2024-02" is
 * 1 February, an end "2024-02" is 29 February). A dosage boundsDuration gives a period from
 * the course start (the earliest boundsPeriod start, else MR authoredOn; an MS reads its
 * dosage bounds only when it has no effective[x], so it has no lone date); dosages with sequence
 * numbers are chained, each step starting where the one before ended. When the dosage gives
 * no bounds, the expected supply duration is the course, from the dispense validity start, else
 * authoredOn; the validity period (how long the prescription may be dispensed, not when the
 * drug is taken) is the course only when there is no expected supply. When `openEnded` is false
 * (a status that is no longer active: completed, stopped, intended), a period without an end
 * closes at the end of the expected supply from its start, else on the day before
 * MS.dateAsserted when that is on or after its start (the statement says the course was over
 * by then), else on its start date.
 */
export function useDatesOf(
  use: MedicationUse,
  dateOf: (value: string | null) => string | null,
  openEnded = true,
): UseDates {
  const periods: UseDates['periods'] = [];
  let inverted = false;
  const pushPeriod = (p: { start: string | null; end: string | null }): void => {
    const start = dayRangeOf(p.start, dateOf)?.first ?? null;
    const end = dayRangeOf(p.end, dateOf)?.last ?? null;
    // A period that ends before it starts (FHIR invariant per-1) says nothing reliable about
    // when the drug was taken: left out (and said, when nothing else dates the use).
    if (start && end && end < start) {
      inverted = true;
      return;
    }
    if (start || end) periods.push({ start, end });
  };
  for (const p of use.periods) pushPeriod(p);
  const singleRange = dayRangeOf(use.singleDate, dateOf);
  if (use.durations.length > 0) {
    let courseStart: string | null = null;
    for (const p of periods)
      if (p.start && (!courseStart || p.start < courseStart)) courseStart = p.start;
    courseStart ??= singleRange?.first ?? null;
    if (courseStart) {
      // Dosages with the same sequence number apply at the same time (the longest decides that
      // step), different numbers one after another (FHIR R4 Dosage.sequence): a taper of 7 days
      // at 40 mg then 7 days at 20 mg runs 14 days from the course start, not 7.
      const steps = new Map<number, { value: number; unit: string }[]>();
      for (const d of use.durations) {
        if (d.sequence === null || d.sequence === undefined) {
          const end = addDuration(courseStart, d.value, d.unit);
          if (end) periods.push({ start: courseStart, end });
          continue;
        }
        const step = steps.get(d.sequence);
        if (step) step.push(d);
        else steps.set(d.sequence, [d]);
      }
      if (steps.size > 0) {
        let stepStart = courseStart;
        let chained = false;
        for (const sequence of [...steps.keys()].sort((a, b) => a - b)) {
          let stepEnd: string | null = null;
          for (const d of steps.get(sequence)!) {
            const end = addDuration(stepStart, d.value, d.unit);
            if (end && (!stepEnd || end > stepEnd)) stepEnd = end;
          }
          if (stepEnd) {
            stepStart = stepEnd;
            chained = true;
          }
        }
        // A step of unknown length leaves the course's end unknown: open, as a period without
        // an end (a use no longer active then closes as such a period does).
        if (chained) periods.push({ start: courseStart, end: use.openStep ? null : stepStart });
      }
    }
  }
  const supply = use.supply;
  if (periods.length === 0) {
    // The expected supply (with its refills) from the validity start, else authoredOn: a
    // 30-day supply ordered on 28 February lasts to 29 March, and a 5-day burst whose
    // prescription may be dispensed for a year still ends after 5 days.
    const supplyStart =
      dayRangeOf(use.validity?.start ?? null, dateOf)?.first ?? singleRange?.first ?? null;
    const supplyEnd =
      supply && supplyStart ? addDuration(supplyStart, supply.value, supply.unit) : null;
    if (supplyEnd) periods.push({ start: supplyStart, end: supplyEnd });
    else if (use.validity) pushPeriod(use.validity);
  }
  if (!openEnded) {
    const asserted = dayRangeOf(use.dateAsserted, dateOf)?.first ?? null;
    for (const p of periods) {
      if (p.end || !p.start) continue;
      // A request no longer active ran for its expected supply from the course start.
      const supplyEnd = supply ? addDuration(p.start, supply.value, supply.unit) : null;
      const before = asserted ? dayBefore(asserted) : null;
      p.end = supplyEnd ?? (before && before >= p.start ? before : p.start);
    }
  }
  let end: string | null = null;
  for (const p of periods) {
    if (!p.end) {
      end = null;
      break;
    }
    if (!end || p.end > end) end = p.end;
  }
  return {
    periods,
    single: singleRange?.first ?? null,
    singleEnd: singleRange?.last ?? null,
    end,
    undated: periods.length === 0 && !singleRange,
    inverted,
  };
}

/** isActiveOn over dates from useDatesOf. */
export function isActiveOnDates(dates: UseDates, visitDate: string, openEnded: boolean): boolean {
  const periods = dates.periods;
  if (periods.length > 0) {
    for (let i = 0; i < periods.length; i++) {
      const p = periods[i]!;
      if ((!p.start || p.start <= visitDate) && (!p.end || p.end >= visitDate)) return true;
    }
    return false;
  }
  const single = dates.single;
  if (!single || single > visitDate) return false;
  return openEnded || dates.singleEnd! >= visitDate;
}

/**
 * True when the use is active on `visitDate` (YYYY-MM-DD). `dateOf` turns FHIR dateTimes
 * into centre-zone dates. A period counts when start <= date and (no end or end >= date);
 * a lone date counts from that date on while active, and within that day (or month, year
 * for a partial date) otherwise. See useDatesOf for durations, validity and open ends.
 */
export function isActiveOn(
  use: MedicationUse,
  visitDate: string,
  dateOf: (value: string | null) => string | null,
  openEnded: boolean,
): boolean {
  return isActiveOnDates(useDatesOf(use, dateOf, openEnded), visitDate, openEnded);
}

/** The latest end date of the use's periods (centre zone), or null when open or unknown. */
export function endDateOf(
  use: MedicationUse,
  dateOf: (value: string | null) => string | null,
  openEnded = true,
): string | null {
  return useDatesOf(use, dateOf, openEnded).end;
}
