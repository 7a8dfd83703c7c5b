// The SQL on FHIR v2 conformance suite (read from ../shared, not copied here) through the same
// library function `npm run conformance` uses, with and without the fast path, so a failing
// test shows up in `vitest run` with its reason.
import { describe, expect, it } from 'vitest';
import { DEFAULT_SUITE_DIR, loadConformanceSuites } from '../../../scripts/conformance.js';
import {
  runConformanceSuite,
  summarizeConformance,
  type ConformanceSuiteResult,
} from '../../../src/mapping/view/conformance.js';

const suites = loadConformanceSuites(DEFAULT_SUITE_DIR);

describe('SQL on FHIR v2 conformance suite', () => {
  it('when the suite directory is read, then it holds suite files with tests', () => {
    expect(suites.length).toBeGreaterThan(10);
  });

  for (const fastPath of [true, false]) {
    const mode = fastPath ? 'with the fast path' : 'with fhirpath.js only';
    describe(mode, () => {
      const results: ConformanceSuiteResult[] = suites.map(({ suite }) =>
        runConformanceSuite(suite, { fastPath }),
      );
      suites.forEach(({ file }, index) => {
        const result = results[index] as ConformanceSuiteResult;
        for (const test of result.tests.filter((t) => t.tags.includes('shareable'))) {
          it(`when shareable test "${test.title}" of ${file} runs, then it passes`, () => {
            expect(test.reason ?? 'passed').toBe('passed');
            expect(test.passed).toBe(true);
          });
        }
      });

      it('when every test ran, then all shareable and at least 8 experimental tests pass', () => {
        const summary = summarizeConformance(results);
        expect(summary.shareable.total).toBeGreaterThan(100);
        expect(summary.shareable.passed).toBe(summary.shareable.total);
        expect(summary.experimental.passed).toBeGreaterThanOrEqual(8);
      });
    });
  }
});
