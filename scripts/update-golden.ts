// Rewrites generated artefacts after a deliberate change: the golden fixtures' expected.ndjson
// (`--case <name>` or `--all`) and the registry JSON Schema (`--schema`). Review every diff:
// the golden test also checks each case against its hand-written clinical expectation.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { format, resolveConfig } from 'prettier';
import { listGoldenCases, runGoldenCase, toNdjson } from '../fixtures/golden/run-golden.js';
import { loadMappingPack } from '../src/packs/load-pack.js';
import {
  renderSubmissionJsonSchema,
  SUBMISSION_JSON_SCHEMA_PATH,
} from '../src/registry/json-schema.js';

const args = process.argv.slice(2);
const root = new URL('..', import.meta.url).pathname;

if (args.includes('--schema')) {
  const file = join(root, SUBMISSION_JSON_SCHEMA_PATH);
  const config = (await resolveConfig(file)) ?? {};
  writeFileSync(file, await format(renderSubmissionJsonSchema(), { ...config, parser: 'json' }));
  process.stdout.write(`wrote ${SUBMISSION_JSON_SCHEMA_PATH}\n`);
}
const only = args.includes('--case') ? args[args.indexOf('--case') + 1] : undefined;
if (args.includes('--all') || only) {
  const pack = await loadMappingPack(join(root, 'mappings/ibd'));
  const cases = listGoldenCases().filter((c) => !only || c.name === only);
  if (cases.length === 0) throw new Error(`no golden case named ${only}`);
  for (const c of cases) {
    writeFileSync(join(c.dir, 'expected.ndjson'), toNdjson(runGoldenCase(pack, c)));
    process.stdout.write(`wrote ${c.name}/expected.ndjson\n`);
  }
}
if (args.length === 0) {
  process.stdout.write(
    'usage: npx tsx scripts/update-golden.ts [--schema] [--all | --case <name>]\n',
  );
}
