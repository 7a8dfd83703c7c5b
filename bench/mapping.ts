// `npm run bench:mapping`: how fast the IBD pack maps a large centre, against the cost of
// just parsing the same NDJSON. Generates a synthetic centre (fixtures/generator) as NDJSON
// text with at least 200k Observations plus its encounters, medications and the rest, then
// measures, on the same text: JSON.parse alone (J), and parse + view rows + assembly into
// submissions (M); plus the pack's Observation view alone (R, rows/s). Prints one line.
// CPU time (user + system) of this process is used, not wall time, so that other work on a
// shared machine disturbs the figures less; each figure is the best of several rounds.
import { parseArgs } from 'node:util';
import { createMapper, type FhirResource } from '../src/mapping/index.js';
import { loadMappingPack } from '../src/packs/load-pack.js';
import { centreNdjson, cpuMs, forEachLine, parseOnly } from './centre-ndjson.js';
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

const { centre, chunks, resources, observationSample } = centreNdjson(patients, 50_000);

const pack = await loadMappingPack(new URL('../mappings/ibd', import.meta.url).pathname);
const mapperOptions = {
  centreId: centre.centreId,
  pseudonymSecret: 'bench-mapping-secret-0123456789abcdef',
  timeZone: centre.timeZone,
  overrides: centre.centreOverrides,
};

function parseAndMap(): number {
  const assembler = createMapper(pack, mapperOptions).createAssembler();
  forEachLine(chunks, (line) => assembler.add(JSON.parse(line) as FhirResource));
  return assembler.finish().submissions.length;
}

let bestJ = 0;
let bestM = 0;
for (let round = 0; round < rounds; round++) {
  const j = cpuMs(() => parseOnly(chunks));
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
