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

/** The factor from one UCUM code to another, or null when UCUM cannot convert it. */
function convert(code: string, target: string): number | null {
  const converted = utils!.convertUnitTo(code, 1, target);
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
