// Unit conversion for vitals through UCUM (@lhncbc/ucum-lhc). Every unit the registry needs
// (cm, kg, kg/m2) is a linear scale of what EHRs send, so each distinct source unit is
// converted once to a factor and cached: a million weights cost a handful of UCUM calls.
import ucum from '@lhncbc/ucum-lhc';

/** Converts values from arbitrary units to one target unit; null factor = unconvertible. */
export interface UnitConverter {
  /** The multiplier from `unit` to the target, or null when UCUM cannot convert it. */
  factor(unit: string): number | null;
}

let utils: ReturnType<typeof ucum.UcumLhcUtils.getInstance> | undefined;

/**
 * Builds a converter to `target` (a UCUM code). `synonyms` maps non-UCUM strings EHRs use
 * (`in`, `lbs`) to UCUM codes; lookups are exact first, then case-insensitive.
 */
export function createUnitConverter(
  target: string,
  synonyms: Record<string, string>,
): UnitConverter {
  utils ??= ucum.UcumLhcUtils.getInstance();
  const lowerSynonyms = new Map<string, string>();
  for (const [k, v] of Object.entries(synonyms)) lowerSynonyms.set(k.toLowerCase(), v);
  const cache = new Map<string, number | null>();
  return {
    factor(unit) {
      const cached = cache.get(unit);
      if (cached !== undefined) return cached;
      const trimmed = unit.trim();
      const code = synonyms[trimmed] ?? lowerSynonyms.get(trimmed.toLowerCase()) ?? trimmed;
      let result: number | null = null;
      if (code === target) result = 1;
      else if (code) {
        result = convert(code, target);
        // UCUM's case-insensitive forms (KG, CM, [LB_AV]) are the lower-case codes in upper
        // case for every unit used here: tried when the code as sent is not a UCUM unit.
        if (result === null && code !== code.toLowerCase())
          result = code.toLowerCase() === target ? 1 : convert(code.toLowerCase(), target);
      }
      if (cache.size < 10_000) cache.set(unit, result);
      return result;
    },
  };
}

/**
 * What a finding may say of a unit sent by the EHR: the unit quoted when it looks like a unit
 * code or word (short, no spaces: `kg.`, `[lb_av]`, `lbs`, `inches`, `days`), else that it
 * is free text and how long (a unit field can hold a note with names or numbers; finding
 * messages never carry resource text, and the finding's resource leads to the source).
 * Pure numbers and runs of 4 digits (a record number, a phone number) count as free text.
 */
export function unitForMessage(unit: string): string {
  return UNIT_LIKE.test(unit) && /[A-Za-z%"]/.test(unit) && !/\d{4}/.test(unit)
    ? `"${unit}"`
    : `(free text of ${unit.length} characters, not a unit code)`;
}
const UNIT_LIKE = /^(?:[A-Za-z0-9[\]{}/.^*%_()'-]{1,16}|")$/;

/** The factor from one UCUM code to another, or null when UCUM cannot convert it. */
function convert(code: string, target: string): number | null {
  // ucum-lhc logs the unit string on a parse error (console.log): the unit field may hold
  // free text from the EHR, which must not reach the logs. Once per distinct unit (cached).
  const log = console.log;
  console.log = () => {};
  let converted: ReturnType<NonNullable<typeof utils>['convertUnitTo']>;
  try {
    converted = utils!.convertUnitTo(code, 1, target);
  } finally {
    console.log = log;
  }
  return converted.status === 'succeeded' &&
    typeof converted.toVal === 'number' &&
    Number.isFinite(converted.toVal)
    ? converted.toVal
    : null;
}

/** Rounds half away from zero to `decimals` places, avoiding binary artefacts like 1.005. */
export function roundTo(value: number, decimals: number): number {
  const f = 10 ** decimals;
  return Math.sign(value) * (Math.round(Math.abs(value) * f + 1e-9) / f);
}
