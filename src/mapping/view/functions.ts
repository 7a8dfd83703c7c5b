// FHIRPath functions we add to or adjust in fhirpath.js for SQL on FHIR views:
// - getResourceKey() / getReferenceKey([type]): the row keys views use for joins;
// - join(): an empty input joins to '' (as the SQL on FHIR suite expects), not to empty;
// - lowBoundary() / highBoundary() on a dateTime without time zone: the FHIRPath spec gives
//   the boundary the widest offsets (+14:00 low, -12:00 high); fhirpath.js leaves it out.
//   Every other input is delegated to fhirpath.js unchanged.
import fhirpath, { type UserInvocationTable } from 'fhirpath';
import r4 from 'fhirpath/fhir-context/r4';
import { referenceKeyOf, resourceKeysOf, unquoteTypeArgument } from './resource-keys.js';

/** Mutable per-view state the custom functions read (the resource being viewed). */
export interface EvaluationState {
  resource: unknown;
}

type Evaluator = (resource: unknown, env?: Record<string, unknown>) => unknown[];

const unresolved = { resolveInternalTypes: false };
const builtinBoundary = {
  lowBoundary: fhirpath.compile('$this.lowBoundary()', r4, unresolved) as Evaluator,
  lowBoundaryAt: fhirpath.compile('$this.lowBoundary(%precision)', r4, unresolved) as Evaluator,
  highBoundary: fhirpath.compile('$this.highBoundary()', r4, unresolved) as Evaluator,
  highBoundaryAt: fhirpath.compile('$this.highBoundary(%precision)', r4, unresolved) as Evaluator,
};
const toDateTime = fhirpath.compile('%text.toDateTime()', r4, unresolved) as Evaluator;
const TIME_ZONE_RE = /(Z|[+-]\d{2}:\d{2})$/;

function boundary(kind: 'lowBoundary' | 'highBoundary') {
  return (inputs: unknown[], precision?: number): unknown[] => {
    if (inputs.length === 0) return [];
    if (inputs.length > 1) {
      throw new Error(`${kind}() expects a single value, got ${inputs.length}`);
    }
    const item = inputs[0];
    const result =
      precision === undefined
        ? builtinBoundary[kind](item)
        : builtinBoundary[kind === 'lowBoundary' ? 'lowBoundaryAt' : 'highBoundaryAt'](item, {
            precision,
          });
    const type = fhirpath.types([item])[0];
    if ((type !== 'FHIR.dateTime' && type !== 'System.DateTime') || result.length !== 1) {
      return result;
    }
    const input = (fhirpath.resolveInternalTypes([item]) as unknown[])[0];
    const bound = (fhirpath.resolveInternalTypes(result) as unknown[])[0];
    if (typeof input !== 'string' || typeof bound !== 'string') return result;
    if (TIME_ZONE_RE.test(input) || !bound.includes('T') || TIME_ZONE_RE.test(bound)) {
      return result;
    }
    const zoned = `${bound}${kind === 'lowBoundary' ? '+14:00' : '-12:00'}`;
    return toDateTime({}, { text: zoned });
  };
}

function joinStrings(inputs: unknown[], separator?: string): string {
  const strings: string[] = [];
  for (const value of inputs) {
    if (typeof value === 'string') strings.push(value);
    else if (value !== null && value !== undefined) {
      throw new Error('join() requires a collection of strings');
    }
  }
  return strings.join(separator ?? '');
}

/** Builds the user invocation table for one view; the functions read `state.resource`. */
export function createInvocationTable(state: EvaluationState): UserInvocationTable {
  return {
    getResourceKey: {
      fn: (inputs: unknown[]) => resourceKeysOf(inputs, state.resource),
      arity: { 0: [] },
    },
    getReferenceKey: {
      fn: (inputs: unknown[], type?: string) => {
        const expected = type === undefined ? undefined : unquoteTypeArgument(type);
        const keys: string[] = [];
        for (const input of inputs) {
          const key = referenceKeyOf(input, expected);
          if (key !== undefined) keys.push(key);
        }
        return keys;
      },
      arity: { 0: [], 1: ['Identifier'] },
    },
    join: {
      fn: (inputs: unknown[], separator?: string) => joinStrings(inputs, separator),
      arity: { 0: [], 1: ['String'] },
    },
    lowBoundary: {
      fn: boundary('lowBoundary'),
      arity: { 0: [], 1: ['Integer'] },
      internalStructures: true,
    },
    highBoundary: {
      fn: boundary('highBoundary'),
      arity: { 0: [], 1: ['Integer'] },
      internalStructures: true,
    },
  };
}
