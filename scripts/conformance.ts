// `npm run conformance`: runs the SQL on FHIR v2 conformance suite against the view engine.
// The suite is not copied into this repository (its licence and its upstream are separate);
// it is read from ../shared/conformance/sql-on-fhir-v2 next to the checkout, or --dir.
// Exits non-zero when a shareable test fails.
//
//   npx tsx scripts/conformance.ts [--dir <suite dir>] [--no-fast-path] [--quiet]
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  formatConformanceSummary,
  runConformanceSuite,
  summarizeConformance,
  type ConformanceSuiteResult,
} from '../src/mapping/view/conformance.js';

/** The suite directory used when --dir is not given. */
export const DEFAULT_SUITE_DIR = resolve(
  fileURLToPath(new URL('..', import.meta.url)),
  '../shared/conformance/sql-on-fhir-v2',
);

/** Reads every suite file (*.json except the schema) of a directory, sorted by name. */
export function loadConformanceSuites(dir: string): { file: string; suite: unknown }[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json') && f !== 'tests.schema.json')
    .sort()
    .map((file) => ({ file, suite: JSON.parse(readFileSync(join(dir, file), 'utf8')) as unknown }));
}

function main(): number {
  const { values } = parseArgs({
    options: {
      dir: { type: 'string', default: DEFAULT_SUITE_DIR },
      'no-fast-path': { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
    },
  });
  const dir = resolve(values.dir);
  let suites: { file: string; suite: unknown }[];
  try {
    suites = loadConformanceSuites(dir);
  } catch (error) {
    console.error(
      `conformance: cannot read the suite in ${dir} (use --dir <path>): ${String(error)}`,
    );
    return 2;
  }
  if (suites.length === 0) {
    console.error(`conformance: no suite files (*.json) in ${dir}`);
    return 2;
  }
  const results: ConformanceSuiteResult[] = [];
  for (const { file, suite } of suites) {
    const result = runConformanceSuite(suite, { fastPath: !values['no-fast-path'] });
    results.push(result);
    const passed = result.tests.filter((t) => t.passed).length;
    console.log(`${file.padEnd(24)} ${passed}/${result.tests.length} passed`);
    for (const test of result.tests) {
      if (test.passed) continue;
      const tag = test.tags.join(',') || 'untagged';
      console.log(`  FAIL [${tag}] ${test.title}`);
      if (!values.quiet && test.reason) console.log(`       ${test.reason.slice(0, 600)}`);
    }
  }
  const summary = summarizeConformance(results);
  console.log(formatConformanceSummary(summary));
  return summary.shareable.passed === summary.shareable.total ? 0 : 1;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.exitCode = main();
