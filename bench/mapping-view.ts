// Benchmark of the ViewDefinition engine alone: rows per second of an Observation view
// (keys, value/unit, effective, status, one row per code.coding) over generated Observations,
// with the fast path and with fhirpath.js only. bench/mapping.ts reuses
// measureViewRowsPerSecond for its "view R rows/s" figure.
//
//   npx tsx bench/mapping-view.ts [--count 50000] [--seconds 3]
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { compileView, type CompiledView } from '../src/mapping/view/index.js';

/** The Observation view measured: one row per coding of Observation.code. */
export const OBSERVATION_BENCH_VIEW = {
  resourceType: 'ViewDefinition',
  name: 'observation_codings',
  resource: 'Observation',
  select: [
    {
      column: [
        { name: 'id', path: 'getResourceKey()', type: 'id' },
        { name: 'patient_key', path: 'subject.getReferenceKey(Patient)', type: 'string' },
        { name: 'encounter_key', path: 'encounter.getReferenceKey(Encounter)', type: 'string' },
        { name: 'value', path: 'value.ofType(Quantity).value', type: 'decimal' },
        { name: 'unit', path: 'value.ofType(Quantity).code', type: 'code' },
        { name: 'effective', path: 'effective.ofType(dateTime)', type: 'dateTime' },
        { name: 'status', path: 'status', type: 'code' },
      ],
    },
    {
      forEach: 'code.coding',
      column: [
        { name: 'code_system', path: 'system', type: 'uri' },
        { name: 'code', path: 'code', type: 'code' },
      ],
    },
  ],
};

/** Small deterministic PRNG (mulberry32) so runs are comparable. */
function createRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const LOINC = [
  ['8302-2', 'Body height', 'cm'],
  ['29463-7', 'Body weight', 'kg'],
  ['39156-5', 'BMI', 'kg/m2'],
  ['8867-4', 'Heart rate', '/min'],
] as const;

/** Generates `count` Observation resources shaped like an EHR export (1-2 codings each). */
export function generateObservations(count: number, seed = 42): Record<string, unknown>[] {
  const random = createRandom(seed);
  const out: Record<string, unknown>[] = [];
  for (let i = 0; i < count; i++) {
    const [code, display, unit] = LOINC[
      Math.floor(random() * LOINC.length)
    ] as (typeof LOINC)[number];
    const coding: Record<string, unknown>[] = [{ system: 'http://loinc.org', code, display }];
    if (random() < 0.4) {
      coding.push({ system: 'http://centre.example/flowsheet-row', code: String(1000 + (i % 50)) });
    }
    const day = 1 + Math.floor(random() * 28);
    const observation: Record<string, unknown> = {
      resourceType: 'Observation',
      id: `obs-${i}`,
      meta: { versionId: '1', lastUpdated: '2024-05-01T10:00:00Z' },
      status: random() < 0.95 ? 'final' : 'amended',
      category: [
        {
          coding: [
            {
              system: 'http://terminology.hl7.org/CodeSystem/observation-category',
              code: 'vital-signs',
            },
          ],
        },
      ],
      code: { coding, text: display },
      subject: { reference: `Patient/pat-${i % 1000}` },
      effectiveDateTime: `2024-04-${String(day).padStart(2, '0')}T09:30:00+02:00`,
      valueQuantity: {
        value: Math.round(random() * 2000) / 10,
        unit,
        system: 'http://unitsofmeasure.org',
        code: unit,
      },
    };
    if (random() < 0.8) observation.encounter = { reference: `Encounter/enc-${i % 5000}` };
    out.push(observation);
  }
  return out;
}

/**
 * Rows per second (of CPU time) of `view` over `resources`, measured for about `seconds` of
 * CPU time after a warm-up.
 * `view` is a CompiledView or a ViewDefinition (compiled here, outside the timing).
 */
export function measureViewRowsPerSecond(
  view: unknown,
  resources: readonly unknown[],
  seconds = 3,
): number {
  const compiled =
    typeof view === 'object' && view !== null && typeof (view as CompiledView).rows === 'function'
      ? (view as CompiledView)
      : compileView(view);
  if (resources.length === 0) return 0;
  const warmUpEnd = performance.now() + 300;
  while (performance.now() < warmUpEnd) {
    for (const resource of resources.slice(0, 2000)) compiled.rows(resource);
  }
  // CPU time of this process, not wall time: the machine is shared, and time spent
  // descheduled is not the engine's.
  const cpuMs = () => {
    const usage = process.cpuUsage();
    return (usage.user + usage.system) / 1000;
  };
  let rows = 0;
  const start = cpuMs();
  const end = start + seconds * 1000;
  let now = start;
  while (now < end) {
    for (const resource of resources) rows += compiled.rows(resource).length;
    now = cpuMs();
  }
  return rows / ((now - start) / 1000);
}

function main(): void {
  const { values } = parseArgs({
    options: {
      count: { type: 'string', default: '50000' },
      seconds: { type: 'string', default: '3' },
    },
  });
  const count = Number(values.count);
  const seconds = Number(values.seconds);
  const observations = generateObservations(count);
  const fast = compileView(OBSERVATION_BENCH_VIEW);
  const slow = compileView(OBSERVATION_BENCH_VIEW, { fastPath: false });
  const fastRate = measureViewRowsPerSecond(fast, observations, seconds);
  const slowRate = measureViewRowsPerSecond(slow, observations.slice(0, 5000), seconds);
  const fastExpressions = fast.expressions.filter((e) => e.fastPath).length;
  console.log(
    `bench mapping-view: ${Math.round(fastRate)} rows/s with the fast path ` +
      `(${fastExpressions}/${fast.expressions.length} expressions fast); ` +
      `${Math.round(slowRate)} rows/s fhirpath.js only; ${count} Observations`,
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main();
