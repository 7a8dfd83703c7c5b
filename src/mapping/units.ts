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
 * (`in`, `lbs`) to UCUM codes; lookups are exact first, then case-insensitive, then without a
 * trailing full stop (`lbs.`).
 */
export function createUnitConverter(
  target: string,
  synonyms: Record<string, string>,
): UnitConverter {
  utils ??= ucum.UcumLhcUtils.getInstance();
  const lowerSynonyms = new Map<string, string>();
  for (const [k, v] of Object.entries(synonyms)) lowerSynonyms.set(k.toLowerCase(), v);
  const cache = new Map<string, number | null>();
  const factorOf = (trimmed: string): number | null => {
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
    return result;
  };
  return {
    factor(unit) {
      const cached = cache.get(unit);
      if (cached !== undefined) return cached;
      const trimmed = unit.trim();
      let result = factorOf(trimmed);
      // An abbreviation with a full stop, as flowsheets write them ("lbs.", "oz.", "ft."):
      // read without it when it is no unit as written.
      if (result === null && trimmed.length > 1 && trimmed.endsWith('.'))
        result = factorOf(trimmed.slice(0, -1));
      if (cache.size < 10_000) cache.set(unit, result);
      return result;
    },
  };
}

/**
 * What a finding may say of a unit sent by the EHR: the unit quoted when it is a UCUM unit
 * (`mg`, `[lb_av]`, `mo`) or a common unit word (`lbs`, `inches`, `days`), short and without
 * spaces; anything else is described by its length only (a unit field can hold a note with
 * names or numbers; finding messages never carry resource text, and the finding's resource
 * leads to the source).
 */
export function unitForMessage(unit: string): string {
  // A UCUM annotation ({...}) is free text inside a valid unit: never quoted (kg{Smith}).
  return UNIT_LIKE.test(unit) &&
    !/[{}]/.test(unit) &&
    /[A-Za-z%]/.test(unit) &&
    !/\d{4}/.test(unit) &&
    (UNIT_WORDS.has(unit.toLowerCase().replace(/\.$/, '')) || isUcumUnit(unit))
    ? `"${unit}"`
    : `(free text of ${unit.length} characters, not a unit code)`;
}
const UNIT_LIKE = /^[A-Za-z0-9[\]{}/.^*%_()'-]{1,16}$/;
/** English unit words EHRs put in unit fields (plain words, never identifying). */
const UNIT_WORDS = new Set(
  [
    'lb lbs pound pounds oz ounce ounces stone stones gram grams gm gms kilogram kilograms',
    'in inch inches ft foot feet metre metres meter meters centimetre centimetres',
    'centimeter centimeters hour hours day days week weeks month months year years',
  ]
    .join(' ')
    .split(' '),
);
const ucumValid = new Map<string, boolean>();

/** True when UCUM reads `unit` as a valid unit expression (cached; nothing logged). */
function isUcumUnit(unit: string): boolean {
  let valid = ucumValid.get(unit);
  if (valid === undefined) {
    utils ??= ucum.UcumLhcUtils.getInstance();
    const log = console.log;
    console.log = () => {};
    try {
      valid = utils.validateUnitString(unit, false).status === 'valid';
    } finally {
      console.log = log;
    }
    if (ucumValid.size < 10_000) ucumValid.set(unit, valid);
  }
  return valid;
}

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
