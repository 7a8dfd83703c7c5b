// Steroid recognition: is this MedicationStatement/Request a systemic corticosteroid, and
// was it active on the visit date? EHRs send ingredient codes, product (SCD/SBD) codes,
// several codings at once, a (contained) Medication, or only text; and the same ingredient
// comes as tablets or as a cream. Ingredient, form and route are judged separately so a
// hydrocortisone cream never counts and a prednisolone tablet always does.
import type { PackIndex, Coding, SteroidIngredient } from './value-sets.js';
import { codingKey } from './value-sets.js';

/** A Medication resource (top level or contained), reduced to what the rules need. */
export interface MedicationInfo {
  id: string;
  codings: Coding[];
  ingredientCodings: Coding[];
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
  contained: Map<string, MedicationInfo>;
  routeCodings: Coding[];
  routeTexts: string[];
  /** Periods that make it active (MS effectivePeriod, MR boundsPeriod / validityPeriod). */
  periods: { start: string | null; end: string | null }[];
  /** MS.effectiveDateTime or MR.authoredOn, used when there is no period. */
  singleDate: string | null;
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

function anyLocalDisplay(index: PackIndex, codings: readonly Coding[]): boolean {
  for (let i = 0; i < codings.length; i++) if (localText(index, codings[i]!.display)) return true;
  return false;
}

/**
 * The texts that may name the medicine, in order: the use's text, the displays of the use's
 * codings and then of the Medication's, the Medication's text, its ingredient displays.
 * anyText tests them for local-form words, nameInText for a corticosteroid name (the first
 * text that names one decides). Walked in place: no list of them is made.
 */
function anyText(index: PackIndex, use: MedicationUse, medication: MedicationInfo | undefined) {
  if (localText(index, use.text) || anyLocalDisplay(index, use.codings)) return true;
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
  for (let i = 0; i < routeTexts.length; i++) if (localText(index, routeTexts[i])) return true;
  if (anyLocalDisplay(index, use.routeCodings)) return true;
  if (!medication) return false;
  return localText(index, medication.formText) || anyLocalDisplay(index, medication.formCodings);
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

  let routeSaysLocal = false;
  for (const r of use.routeCodings) {
    if (index.routeSystemic.get(codingKey(r.system, r.code)) === false) routeSaysLocal = true;
  }
  const formSaysLocal = routeSaysLocal || anyFormText(index, use, medication);

  const ingredient = e.ingredient;
  if (!ingredient) {
    const named = nameInText(index, use, medication);
    if (!named) return null;
    return {
      ingredient: named,
      matchedBy: 'text',
      systemic: !formSaysLocal && !anyText(index, use, medication),
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
  /** The periods that have a start or an end, as centre-zone dates. */
  periods: { start: string | null; end: string | null }[];
  /** The lone date (MS.effectiveDateTime or MR.authoredOn), used when there is no period. */
  single: string | null;
  /** endDateOf: the latest end of its periods, null when open or unknown. */
  end: string | null;
}

export function useDatesOf(
  use: MedicationUse,
  dateOf: (value: string | null) => string | null,
): UseDates {
  const periods: UseDates['periods'] = [];
  for (const p of use.periods) {
    const start = dateOf(p.start);
    const end = dateOf(p.end);
    if (start || end) periods.push({ start, end });
  }
  return { periods, single: dateOf(use.singleDate), end: endDateOf(use, dateOf) };
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
  if (!single) return false;
  return openEnded ? single <= visitDate : single === visitDate;
}

/**
 * True when the use is active on `visitDate` (YYYY-MM-DD). `dateOf` turns FHIR dateTimes
 * into centre-zone dates. A period counts when start <= date and (no end or end >= date);
 * a lone date counts from that date on while active, and on that day only otherwise.
 */
export function isActiveOn(
  use: MedicationUse,
  visitDate: string,
  dateOf: (value: string | null) => string | null,
  openEnded: boolean,
): boolean {
  return isActiveOnDates(useDatesOf(use, dateOf), visitDate, openEnded);
}

/** The latest end date of the use's periods (centre zone), or null when open or unknown. */
export function endDateOf(
  use: MedicationUse,
  dateOf: (value: string | null) => string | null,
): string | null {
  let latest: string | null = null;
  for (const p of use.periods) {
    const end = dateOf(p.end);
    if (!end) return null;
    if (!latest || end > latest) latest = end;
  }
  return latest;
}
