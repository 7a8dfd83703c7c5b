// Runs the SQL on FHIR v2 conformance suite format (the JSON files of the official test
// suite: resources + tests with expect / expectCount / expectError / expectColumns) against
// our engine. Pure: callers read the files; both `npm run conformance` and the vitest suite
// call this, so they cannot disagree about what passes.
import { compileView, type CompileViewOptions, type CompiledView } from './compile-view.js';
import { ViewDefinitionError, ViewEvaluationError } from './errors.js';

/** Outcome of one conformance test. */
export interface ConformanceTestResult {
  title: string;
  /** The test's tags, or the suite's when the test has none (e.g. shareable, experimental). */
  tags: string[];
  passed: boolean;
  /** Why it failed. */
  reason?: string;
}

/** Outcome of one suite file. */
export interface ConformanceSuiteResult {
  title: string;
  tests: ConformanceTestResult[];
}

/** Pass counts per tag group. */
export interface ConformanceSummary {
  shareable: { passed: number; total: number };
  experimental: { passed: number; total: number };
}

interface SuiteTest {
  title?: unknown;
  tags?: unknown;
  view?: unknown;
  expect?: unknown;
  expectCount?: unknown;
  expectError?: unknown;
  expectColumns?: unknown;
}

function stringArray(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

/** Deep equality of JSON values; object key order does not matter. */
function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const other = b as unknown[];
    return a.length === other.length && a.every((v, i) => jsonEqual(v, other[i]));
  }
  const left = a as Record<string, unknown>;
  const right = b as Record<string, unknown>;
  const keys = Object.keys(left);
  if (keys.length !== Object.keys(right).length) return false;
  return keys.every((k) => Object.hasOwn(right, k) && jsonEqual(left[k], right[k]));
}

/** Compares row lists ignoring order (a multiset comparison); returns a reason or undefined. */
function compareRows(actual: unknown[], expected: unknown[]): string | undefined {
  if (actual.length !== expected.length) {
    return `expected ${expected.length} rows, got ${actual.length}: ${JSON.stringify(actual)}`;
  }
  const remaining = [...actual];
  for (const row of expected) {
    const index = remaining.findIndex((r) => jsonEqual(r, row));
    if (index === -1) {
      return `expected row ${JSON.stringify(row)} not found in ${JSON.stringify(actual)}`;
    }
    remaining.splice(index, 1);
  }
  return undefined;
}

function runRows(view: CompiledView, resources: unknown[]): Record<string, unknown>[] {
  const rows: Record<string, unknown>[] = [];
  for (const resource of resources) rows.push(...view.rows(resource));
  return rows;
}

function runTest(
  test: SuiteTest,
  resources: unknown[],
  options: CompileViewOptions,
): { passed: boolean; reason?: string } {
  if (test.expectError === true) {
    try {
      const view = compileView(test.view, options);
      runRows(view, resources);
      return { passed: false, reason: 'expected an error, but the view ran' };
    } catch (error) {
      if (error instanceof ViewDefinitionError || error instanceof ViewEvaluationError) {
        return { passed: true };
      }
      return { passed: false, reason: `unexpected error: ${String(error)}` };
    }
  }
  let view: CompiledView;
  let rows: Record<string, unknown>[];
  try {
    view = compileView(test.view, options);
    rows = runRows(view, resources);
  } catch (error) {
    return { passed: false, reason: error instanceof Error ? error.message : String(error) };
  }
  if (test.expectColumns !== undefined) {
    const expected = stringArray(test.expectColumns);
    const actual = view.columns.map((c) => c.name);
    if (!jsonEqual(actual, expected)) {
      return {
        passed: false,
        reason: `expected columns ${expected.join(', ')}, got ${actual.join(', ')}`,
      };
    }
  }
  if (typeof test.expectCount === 'number' && rows.length !== test.expectCount) {
    return { passed: false, reason: `expected ${test.expectCount} rows, got ${rows.length}` };
  }
  if (Array.isArray(test.expect)) {
    const reason = compareRows(rows, test.expect);
    if (reason) return { passed: false, reason };
  }
  return { passed: true };
}

/** Runs every test of one suite (the parsed JSON of one conformance file). */
export function runConformanceSuite(
  suite: unknown,
  options: CompileViewOptions = {},
): ConformanceSuiteResult {
  const record = (typeof suite === 'object' && suite !== null ? suite : {}) as {
    title?: unknown;
    tags?: unknown;
    resources?: unknown;
    tests?: unknown;
  };
  const suiteTags = stringArray(record.tags);
  const resources = Array.isArray(record.resources) ? record.resources : [];
  const tests = Array.isArray(record.tests) ? (record.tests as SuiteTest[]) : [];
  return {
    title: typeof record.title === 'string' ? record.title : '(untitled suite)',
    tests: tests.map((test) => {
      const own = stringArray(test.tags);
      const outcome = runTest(test, resources, options);
      return {
        title: typeof test.title === 'string' ? test.title : '(untitled test)',
        tags: own.length > 0 ? own : suiteTags,
        ...outcome,
      };
    }),
  };
}

/** Counts passed and total tests tagged shareable and experimental. */
export function summarizeConformance(results: ConformanceSuiteResult[]): ConformanceSummary {
  const summary: ConformanceSummary = {
    shareable: { passed: 0, total: 0 },
    experimental: { passed: 0, total: 0 },
  };
  for (const suite of results) {
    for (const test of suite.tests) {
      for (const group of ['shareable', 'experimental'] as const) {
        if (!test.tags.includes(group)) continue;
        summary[group].total += 1;
        if (test.passed) summary[group].passed += 1;
      }
    }
  }
  return summary;
}

/** The closing line of the conformance run. */
export function formatConformanceSummary(summary: ConformanceSummary): string {
  return (
    `sql-on-fhir-v2: shareable ${summary.shareable.passed}/${summary.shareable.total} passed, ` +
    `experimental ${summary.experimental.passed}/${summary.experimental.total} passed`
  );
}
