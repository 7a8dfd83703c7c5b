// `npm run bench:mapping`: how fast the IBD pack maps a large centre, against the cost of
// just parsing the same NDJSON. Generates a synthetic centre (fixtures/generator) as NDJSON
// text with at least 200k Observations plus its encounters, medications and the rest, then
// measures, on the same text: JSON.parse alone (J), and parse + view rows + assembly into
// submissions (M); plus the pack's Observation view alone (R, rows/s). Prints one line.
// CPU time (user + system) of this process is used, not wall time, so that other work on a
// shared machine disturbs the figures less; each figure is the best of several rounds.
import { parseArgs } from 'node:util';
import { generateCentre } from '../fixtures/generator/index.js';
import { createMapper, type FhirResource } from '../src/mapping/index.js';
import { loadMappingPack } from '../src/packs/load-pack.js';
import { measureViewRowsPerSecond } from './mapping-view.js';

const { values } = parseArgs({
  options: {
    patients: { type: 'string', default: '10000' },
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '3' },
  },
});
const patients = Number(values.patients);
const rounds = Math.max(1, Number(values.rounds));

/** CPU milliseconds (user + system) used by this process while `fn` runs. */
function cpuMs(fn: () => void): number {
  const before = process.cpuUsage();
  fn();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000;
}

// NDJSON text in chunks of ~8 MB (one string of several hundred MB would strain V8).
const centre = generateCentre({ seed: 20_240_305, patients });
const chunks: string[] = [];
let current: string[] = [];
let currentSize = 0;
let resources = 0;
let observations = 0;
const observationSample: unknown[] = [];
for (const resource of centre.resources()) {
  const line = JSON.stringify(resource);
  current.push(line);
  currentSize += line.length + 1;
  resources++;
  if (resource.resourceType === 'Observation') {
    observations++;
    if (observationSample.length < 50_000) observationSample.push(resource);
  }
  if (currentSize > 8_000_000) {
    chunks.push(`${current.join('\n')}\n`);
    current = [];
    currentSize = 0;
  }
}
if (current.length > 0) chunks.push(`${current.join('\n')}\n`);
if (observations < 200_000) {
  process.stderr.write(`warning: only ${observations} Observations; raise --patients\n`);
}

const pack = await loadMappingPack(new URL('../mappings/ibd', import.meta.url).pathname);
const mapperOptions = {
  centreId: centre.centreId,
  pseudonymSecret: 'bench-mapping-secret-0123456789abcdef',
  timeZone: centre.timeZone,
  overrides: centre.centreOverrides,
};

function parseOnly(): number {
  let n = 0;
  for (const chunk of chunks) {
    for (const line of chunk.split('\n')) {
      if (line.length === 0) continue;
      JSON.parse(line);
      n++;
    }
  }
  return n;
}

function parseAndMap(): number {
  const assembler = createMapper(pack, mapperOptions).createAssembler();
  for (const chunk of chunks) {
    for (const line of chunk.split('\n')) {
      if (line.length === 0) continue;
      assembler.add(JSON.parse(line) as FhirResource);
    }
  }
  return assembler.finish().submissions.length;
}

let bestJ = 0;
let bestM = 0;
for (let round = 0; round < rounds; round++) {
  const j = cpuMs(() => void parseOnly());
  const m = cpuMs(() => void parseAndMap());
  bestJ = Math.max(bestJ, resources / (j / 1000));
  bestM = Math.max(bestM, resources / (m / 1000));
}
const rowsPerSecond = measureViewRowsPerSecond(
  pack.views.observation,
  observationSample,
  Number(values.seconds),
);

console.log(
  `bench mapping: view ${Math.round(rowsPerSecond)} rows/s; parse+map ${Math.round(bestM)} res/s; ` +
    `JSON.parse ${Math.round(bestJ)} res/s; ratio ${(bestM / bestJ).toFixed(2)}`,
);
