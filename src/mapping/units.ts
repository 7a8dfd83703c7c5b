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
        const converted = utils!.convertUnitTo(code, 1, target);
        result =
          converted.status === 'succeeded' &&
          typeof converted.toVal === 'number' &&
          Number.isFinite(converted.toVal)
            ? converted.toVal
            : null;
      }
      if (cache.size < 10_000) cache.set(unit, result);
      return result;
    },
  };
}

/** Rounds half away from zero to `decimals` places, avoiding binary artefacts like 1.005. */
export function roundTo(value: number, decimals: number): number {
  const f = 10 ** decimals;
  return Math.sign(value) * (Math.round(Math.abs(value) * f + 1e-9) / f);
}
