// Errors of the ViewDefinition engine. A data manager edits views by hand, so every problem
// names where it is in the view (`select[0].column[2].path`) and what is wrong, and all
// problems found in one pass are reported together. Evaluation errors never carry resource
// content: only resource type, view path and a fixed description of the cause.

/** One problem in a ViewDefinition: where it is and what is wrong. */
export interface ViewIssue {
  /** Path inside the ViewDefinition, e.g. `select[0].column[1].path`; empty for the root. */
  path: string;
  message: string;
}

function describeView(source: string | undefined, viewName: string | undefined): string {
  const name = viewName ? `ViewDefinition '${viewName}'` : 'ViewDefinition';
  return source ? `${name} (${source})` : name;
}

/** Thrown by `compileView` when a definition is invalid; `issues` lists every problem found. */
export class ViewDefinitionError extends Error {
  /** Path of the first problem, e.g. `select[0].forEach`. */
  readonly viewPath: string;
  /** What is wrong with the first problem. */
  readonly problem: string;

  constructor(
    readonly issues: ViewIssue[],
    readonly source?: string,
    readonly viewName?: string,
  ) {
    const lines = issues.map((i) => `${i.path || '(root)'}: ${i.message}`);
    super(
      issues.length === 1
        ? `${describeView(source, viewName)}: ${lines[0]}`
        : `${describeView(source, viewName)}: ${issues.length} problems\n` +
            lines.map((l) => `  - ${l}`).join('\n'),
    );
    this.name = 'ViewDefinitionError';
    this.viewPath = issues[0]?.path ?? '';
    this.problem = issues[0]?.message ?? 'invalid ViewDefinition';
  }
}

/**
 * Thrown by `CompiledView.rows` when a valid view meets data it cannot turn into rows
 * (several values in a non-collection column, a `where` that is not boolean, a FHIRPath
 * runtime failure). The message names the view path and resource type, never resource content.
 */
export class ViewEvaluationError extends Error {
  constructor(
    /** Path inside the ViewDefinition of the expression that failed. */
    readonly viewPath: string,
    /** What went wrong, free of resource content. */
    readonly problem: string,
    /** Resource type of the resource being processed. */
    readonly resourceType: string,
    readonly source?: string,
    readonly viewName?: string,
  ) {
    super(`${describeView(source, viewName)}: ${viewPath}: ${problem} (on a ${resourceType})`);
    this.name = 'ViewEvaluationError';
  }
}

// fhirpath.js builds many messages from the data it failed on (`Cannot convert Jane Roe to a
// number`, `Expected string, but got: [...]`), unquoted, so no amount of stripping makes its text
// safe. Each known kind of failure maps to a fixed description; anything else is generic. Only
// the fixed texts below ever reach a message, never a part of the library's.
const ENGINE_MESSAGE_CLASSES: readonly (readonly [RegExp, string])[] = [
  [
    /^Cannot convert a FHIR\.Quantity that has a comparator/,
    'a Quantity with a comparator cannot be used in arithmetic',
  ],
  [/^Cannot convert .* to (a number|a decimal|decimal|Decimal)\b/s, 'a value is not a number'],
  [/^Invalid decimal value/, 'a value is not a number'],
  [/^Expected a number or a Quantity\b/, 'a value is not a number or a Quantity'],
  [/^Expected a number\b/, 'a value is not a number'],
  [/^Expected string\b/, 'a value is not a string'],
  [/^Expected [a-z]+, but got\b/, 'a function argument has the wrong type'],
  [/^Cannot .* [-+*/] /s, 'the operands of an arithmetic operator have incompatible types'],
  [/^Cannot substract a date\/time/, 'a date/time cannot be subtracted from a quantity'],
  [
    /^(For date\/time arithmetic, the unit|Unsupported unit for \+)/,
    'date/time arithmetic needs a time-based unit',
  ],
  [
    /^Expected singleton on (right|left) side of/,
    'several values where one was expected (operator operand)',
  ],
  [/^Unexpected empty collection/, 'an empty collection where a value was expected'],
  [/^Unexpected collection/, 'several values where one was expected'],
  [
    /^[A-Za-z]+\(\) expects a single value\b/,
    'several values where one was expected (function input)',
  ],
  [/^[A-Za-z]+ expects no params$/, 'a function was given arguments it does not take'],
  [
    /^Join requires a collection of strings|^join\(\) requires a collection of strings/,
    'join() needs a collection of strings',
  ],
  [/^Cannot sort/, 'values cannot be sorted'],
  [
    /is not implemented|^Comparison not implemented/,
    'an operation is not supported for this type of value',
  ],
  [/^Invalid (date|date-time|time) literal/, 'invalid date/time literal'],
  [/^".*" is not an? [A-Za-z ]+\.$/s, 'a value is not a valid FHIR primitive of the expected type'],
  [/^matches\/matchesFull flags/, 'matches() flags must only contain i and/or m'],
  [
    /^Attempting to access an undefined environment variable/,
    'a %variable of the view is not defined (vs- and ext- names are not provided by the engine; use a constant)',
  ],
];

/** Description used when a fhirpath.js failure is of no known kind. */
export const GENERIC_ENGINE_FAILURE = 'fhirpath evaluation failed';

/**
 * Describes a FHIRPath library failure without any of the library's text: one of a fixed list
 * of descriptions, or `fhirpath evaluation failed`. Library messages embed resource values
 * (names, identifiers, dates) unquoted, so none of their text is kept.
 */
export function describeEngineFailure(message: string): string {
  for (const [pattern, description] of ENGINE_MESSAGE_CLASSES) {
    if (pattern.test(message)) return description;
  }
  return GENERIC_ENGINE_FAILURE;
}
