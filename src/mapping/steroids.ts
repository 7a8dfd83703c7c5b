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

function anyText(index: PackIndex, texts: (string | null | undefined)[]): boolean {
  for (const t of texts) if (t && index.nonSystemicText.test(t)) return true;
  return false;
}

function nameInText(
  index: PackIndex,
  texts: (string | null | undefined)[],
): SteroidIngredient | null {
  for (const t of texts) {
    if (!t) continue;
    for (const n of index.steroidNames) if (n.pattern.test(t)) return n.ingredient;
  }
  return null;
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
  const codings = medication ? [...use.codings, ...medication.codings] : use.codings;
  let ingredient: SteroidIngredient | null = null;
  let matchedBy: MatchedBy | null = null;
  let productSaysLocal = false;
  let productSaysSystemic = false;

  for (const c of codings) {
    const concept = index.steroidByCode.get(codingKey(c.system, c.code));
    if (!concept) continue;
    if (concept.tty === 'IN') {
      if (!ingredient) {
        ingredient = concept.ingredient;
        matchedBy = 'ingredient-code';
      }
      continue;
    }
    // A product code is the strongest evidence: it fixes ingredient and dose form.
    if (matchedBy !== 'product-code') {
      ingredient = concept.ingredient;
      matchedBy = 'product-code';
    }
    if (concept.systemic) productSaysSystemic = true;
    else productSaysLocal = true;
  }
  if (!ingredient && medication) {
    for (const c of medication.ingredientCodings) {
      const concept = index.steroidByCode.get(codingKey(c.system, c.code));
      if (!concept) continue;
      ingredient = concept.ingredient;
      matchedBy = 'medication-ingredient';
      if (concept.tty !== 'IN') {
        if (concept.systemic) productSaysSystemic = true;
        else productSaysLocal = true;
      }
      break;
    }
  }

  const texts: (string | null | undefined)[] = [use.text, ...codings.map((c) => c.display)];
  if (medication)
    texts.push(medication.text, ...medication.ingredientCodings.map((c) => c.display));
  const formTexts: (string | null | undefined)[] = [
    ...use.routeTexts,
    ...use.routeCodings.map((c) => c.display),
  ];
  if (medication)
    formTexts.push(medication.formText, ...medication.formCodings.map((c) => c.display));

  let routeSaysLocal = false;
  for (const r of use.routeCodings) {
    if (index.routeSystemic.get(codingKey(r.system, r.code)) === false) routeSaysLocal = true;
  }
  const formSaysLocal = routeSaysLocal || anyText(index, formTexts);

  if (!ingredient) {
    const named = nameInText(index, texts);
    if (!named) return null;
    return {
      ingredient: named,
      matchedBy: 'text',
      systemic: !formSaysLocal && !anyText(index, texts),
    };
  }
  // Text words only overrule when no product code vouches for a systemic form.
  const textSaysLocal = !productSaysSystemic && anyText(index, texts);
  return {
    ingredient,
    matchedBy: matchedBy!,
    systemic: !productSaysLocal && !formSaysLocal && !textSaysLocal,
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
