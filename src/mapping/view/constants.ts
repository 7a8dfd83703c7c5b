// ViewDefinition constants. The spec says a `%name` placeholder is effectively replaced by
// the constant's value before the expression is evaluated, so we do exactly that: each
// constant becomes a FHIRPath literal of the right type (string, integer, decimal, date,
// time...) and is substituted into the expression text once, at compile time. The fast path
// then sees plain literals, and an undefined `%name` is a compile error, not a runtime one.
import type { ViewIssue } from './errors.js';
import { FHIR_STRING_TYPES } from './fhir-types.js';

/** A constant, validated, with the FHIRPath literal that replaces `%name`. */
export interface ViewConstant {
  name: string;
  /** The FHIR type of the value, e.g. `string`, `dateTime`, `integer`. */
  type: string;
  value: string | number | boolean;
  /** FHIRPath literal text, e.g. `'official'`, `@2016-11-12T`, `1.2`. */
  literal: string;
}

/** Environment variables FHIRPath or this engine define; constants cannot use these names. */
export const RESERVED_VARIABLES: ReadonlySet<string> = new Set([
  'rowIndex',
  'resource',
  'rootResource',
  'context',
  'ucum',
  'sct',
  'loinc',
  'factory',
  'terminologies',
]);

const STRING_TYPES = new Set(FHIR_STRING_TYPES);
const INTEGER_TYPES = new Set(['integer', 'positiveInt', 'unsignedInt', 'integer64']);

const DATE_RE = /^\d{4}(-\d{2}(-\d{2})?)?$/;
const DATETIME_RE =
  /^\d{4}(-\d{2}(-\d{2}(T\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;
const INSTANT_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const TIME_RE = /^\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?$/;
const NAME_RE = /^[A-Za-z][A-Za-z0-9_]*$/;
/** The numeric parts of a date, dateTime, instant or time that the patterns above accepted. */
const PARTS_RE =
  /^(?:(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?)?T?(?:(\d{2})(?::(\d{2})(?::(\d{2}))?)?)?(?:\.\d+)?(?:Z|[+-](\d{2}):(\d{2}))?$/;

/**
 * Why a value that has the shape of a date, dateTime, instant or time is still not one (month
 * 13, 30 February, hour 25, offset +15:00), or undefined. fhirpath.js rejects such literals on
 * every evaluation, so they are rejected when the view is compiled.
 */
function calendarProblem(value: string, isTime: boolean): string | undefined {
  const parts = PARTS_RE.exec(isTime ? `T${value}` : value);
  if (!parts) return undefined;
  const [, year, month, day, hour, minute, second, zoneHour, zoneMinute] = parts.map((p) =>
    p === undefined ? undefined : Number(p),
  );
  if (month !== undefined && (month < 1 || month > 12)) return `month ${month} does not exist`;
  if (day !== undefined && year !== undefined && month !== undefined) {
    const days = new Date(Date.UTC(year, month, 0)).getUTCDate();
    if (day < 1 || day > days) return `day ${day} does not exist in ${year}-${parts[2]}`;
  }
  if (hour !== undefined && hour > 23) return `hour ${hour} does not exist`;
  if (minute !== undefined && minute > 59) return `minute ${minute} does not exist`;
  // 60 is a leap second, which FHIR and fhirpath.js accept.
  if (second !== undefined && second > 60) return `second ${second} does not exist`;
  if (
    zoneHour !== undefined &&
    zoneMinute !== undefined &&
    (zoneHour > 14 || zoneMinute > 59 || (zoneHour === 14 && zoneMinute > 0))
  ) {
    return 'the time zone offset is beyond ±14:00';
  }
  return undefined;
}

/** The error for a date/time constant value of the right shape but not a real date or time. */
function calendarError(
  name: string,
  key: string,
  value: string,
  isTime = false,
): { error: string } | undefined {
  const problem = calendarProblem(value, isTime);
  if (problem === undefined) return undefined;
  return { error: `constant '${name}': ${key} '${value}' is not a real date or time (${problem})` };
}

/** Every `value[x]` a ViewDefinition constant may use, by FHIR type. */
export const CONSTANT_VALUE_TYPES: readonly string[] = [
  ...STRING_TYPES,
  ...INTEGER_TYPES,
  'boolean',
  'decimal',
  'date',
  'dateTime',
  'instant',
  'time',
];

/** Quotes text as a FHIRPath string literal. */
export function quoteFhirPathString(text: string): string {
  let out = "'";
  for (const ch of text) {
    switch (ch) {
      case "'":
        out += "\\'";
        break;
      case '\\':
        out += '\\\\';
        break;
      case '\n':
        out += '\\n';
        break;
      case '\r':
        out += '\\r';
        break;
      case '\t':
        out += '\\t';
        break;
      case '\f':
        out += '\\f';
        break;
      default:
        out += ch;
    }
  }
  return out + "'";
}

function decimalLiteral(value: number): string {
  let text = String(value);
  if (/e/i.test(text)) {
    text = value.toLocaleString('en-US', { useGrouping: false, maximumFractionDigits: 20 });
  }
  if (!text.includes('.')) text += '.0';
  return value < 0 ? `(${text})` : text;
}

/** Builds the FHIRPath literal for a constant value, or explains why the value is invalid. */
function literalFor(
  name: string,
  type: string,
  value: unknown,
): { literal: string } | { error: string } {
  if (STRING_TYPES.has(type)) {
    if (typeof value !== 'string') return { error: `value${cap(type)} must be a string` };
    return { literal: quoteFhirPathString(value) };
  }
  if (INTEGER_TYPES.has(type)) {
    const n = typeof value === 'string' && /^-?\d+$/.test(value) ? Number(value) : value;
    if (typeof n !== 'number' || !Number.isSafeInteger(n)) {
      return { error: `value${cap(type)} must be an integer` };
    }
    if (type === 'positiveInt' && n < 1) return { error: 'valuePositiveInt must be >= 1' };
    if (type === 'unsignedInt' && n < 0) return { error: 'valueUnsignedInt must be >= 0' };
    return { literal: n < 0 ? `(${n})` : String(n) };
  }
  switch (type) {
    case 'boolean':
      if (typeof value !== 'boolean') return { error: 'valueBoolean must be true or false' };
      return { literal: String(value) };
    case 'decimal':
      if (typeof value !== 'number' || !Number.isFinite(value)) {
        return { error: 'valueDecimal must be a number' };
      }
      return { literal: decimalLiteral(value) };
    case 'date':
      if (typeof value !== 'string' || !DATE_RE.test(value)) {
        return { error: 'valueDate must be a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)' };
      }
      return calendarError(name, 'valueDate', value) ?? { literal: `@${value}` };
    case 'dateTime':
      if (typeof value !== 'string' || !DATETIME_RE.test(value)) {
        return { error: 'valueDateTime must be a FHIR dateTime, e.g. 2016-11-12T10:00:00Z' };
      }
      // `@2016-11-12T` is a DateTime literal with day precision; `@2016-11-12` would be a Date.
      return (
        calendarError(name, 'valueDateTime', value) ?? {
          literal: value.includes('T') ? `@${value}` : `@${value}T`,
        }
      );
    case 'instant':
      if (typeof value !== 'string' || !INSTANT_RE.test(value)) {
        return { error: 'valueInstant must be a FHIR instant with seconds and a time zone' };
      }
      return calendarError(name, 'valueInstant', value) ?? { literal: `@${value}` };
    case 'time':
      if (typeof value !== 'string' || !TIME_RE.test(value)) {
        return { error: 'valueTime must be a FHIR time, e.g. 18:12:00' };
      }
      return calendarError(name, 'valueTime', value, true) ?? { literal: `@T${value}` };
    default:
      return { error: `value${cap(type)} is not a supported constant type` };
  }
}

function cap(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/**
 * Validates the `constant` array of a ViewDefinition and builds each constant's literal.
 * Problems are appended to `issues`; invalid constants are left out of the result.
 */
export function parseConstants(raw: unknown, issues: ViewIssue[]): Map<string, ViewConstant> {
  const constants = new Map<string, ViewConstant>();
  if (raw === undefined) return constants;
  if (!Array.isArray(raw)) {
    issues.push({ path: 'constant', message: 'must be an array of constants' });
    return constants;
  }
  raw.forEach((item: unknown, index) => {
    const path = `constant[${index}]`;
    if (typeof item !== 'object' || item === null || Array.isArray(item)) {
      issues.push({ path, message: 'must be an object with name and value[x]' });
      return;
    }
    const record = item as Record<string, unknown>;
    const name = record.name;
    if (typeof name !== 'string' || !NAME_RE.test(name)) {
      issues.push({
        path: `${path}.name`,
        message: 'must be a name of letters, digits and _ starting with a letter',
      });
      return;
    }
    if (RESERVED_VARIABLES.has(name)) {
      issues.push({ path: `${path}.name`, message: `'${name}' is reserved by FHIRPath` });
      return;
    }
    if (constants.has(name)) {
      issues.push({ path: `${path}.name`, message: `constant '${name}' is defined twice` });
      return;
    }
    const valueKeys = Object.keys(record).filter((k) => k.startsWith('value'));
    const unknownKeys = Object.keys(record).filter(
      (k) => !k.startsWith('value') && !['name', 'id', 'extension', 'description'].includes(k),
    );
    for (const key of unknownKeys) {
      issues.push({ path: `${path}.${key}`, message: 'is not a constant property' });
    }
    if (valueKeys.length !== 1) {
      issues.push({
        path,
        message:
          valueKeys.length === 0
            ? `constant '${name}' has no value[x] (e.g. valueString, valueInteger)`
            : `constant '${name}' has several values (${valueKeys.join(', ')}); give exactly one`,
      });
      return;
    }
    const key = valueKeys[0] as string;
    const type = key.charAt(5).toLowerCase() + key.slice(6);
    if (!CONSTANT_VALUE_TYPES.includes(type)) {
      issues.push({
        path: `${path}.${key}`,
        message: `${key} is not a constant value type (use one of ${CONSTANT_VALUE_TYPES.map((t) => `value${cap(t)}`).join(', ')})`,
      });
      return;
    }
    const built = literalFor(name, type, record[key]);
    if ('error' in built) {
      issues.push({ path: `${path}.${key}`, message: built.error });
      return;
    }
    constants.set(name, {
      name,
      type,
      value: record[key] as string | number | boolean,
      literal: built.literal,
    });
  });
  return constants;
}

/**
 * Replaces `%name` placeholders of view constants by their literals, leaving string literals,
 * comments, delimited identifiers and FHIRPath's own variables (`%rowIndex`, `%resource`...)
 * untouched. Unknown names are reported in `unknown`.
 */
export function substituteConstants(
  expression: string,
  constants: ReadonlyMap<string, ViewConstant>,
): { text: string; unknown: string[] } {
  let out = '';
  const unknown: string[] = [];
  // Variables the expression defines itself with defineVariable('name', ...).
  const defined = new Set(
    [...expression.matchAll(/defineVariable\(\s*'([^'\\]+)'/g)].map((m) => m[1] as string),
  );
  let i = 0;
  const n = expression.length;
  while (i < n) {
    const ch = expression[i] as string;
    if (ch === "'" || ch === '`') {
      const end = scanQuoted(expression, i, ch);
      out += expression.slice(i, end);
      i = end;
    } else if (ch === '/' && expression[i + 1] === '/') {
      const end = expression.indexOf('\n', i);
      const stop = end === -1 ? n : end;
      out += expression.slice(i, stop);
      i = stop;
    } else if (ch === '/' && expression[i + 1] === '*') {
      const end = expression.indexOf('*/', i + 2);
      const stop = end === -1 ? n : end + 2;
      out += expression.slice(i, stop);
      i = stop;
    } else if (ch === '%') {
      let name: string | undefined;
      let end = i + 1;
      const next = expression[i + 1];
      if (next === '`' || next === "'") {
        end = scanQuoted(expression, i + 1, next);
        name = expression.slice(i + 2, end - 1);
      } else {
        // A FHIRPath identifier: `%max-1` is %max minus 1. Names with '-' (`%'vs-x'`) are quoted.
        const match = /^[A-Za-z_][A-Za-z0-9_]*/.exec(expression.slice(i + 1));
        if (match) {
          name = match[0];
          end = i + 1 + name.length;
        }
      }
      if (name === undefined) {
        out += ch;
        i += 1;
        continue;
      }
      const constant = constants.get(name);
      if (constant) {
        out += constant.literal;
      } else {
        if (!isFhirPathVariable(name) && !defined.has(name)) unknown.push(name);
        out += expression.slice(i, end);
      }
      i = end;
    } else {
      out += ch;
      i += 1;
    }
  }
  return { text: out, unknown };
}

function isFhirPathVariable(name: string): boolean {
  return RESERVED_VARIABLES.has(name) || name.startsWith('vs-') || name.startsWith('ext-');
}

function scanQuoted(text: string, start: number, quote: string): number {
  let i = start + 1;
  while (i < text.length) {
    const ch = text[i];
    if (ch === '\\') i += 2;
    else if (ch === quote) return i + 1;
    else i += 1;
  }
  return text.length;
}
