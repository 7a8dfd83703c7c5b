// The synthetic centre that bench:mapping and bench:mapping-floor map, as NDJSON text, and
// the CPU clock both measure with, so their figures compare.
import { generateCentre, type GeneratedCentre } from '../fixtures/generator/index.js';

export interface CentreNdjson {
  centre: GeneratedCentre;
  /** NDJSON text in chunks of about 8 MB (one string of several hundred MB strains V8). */
  chunks: string[];
  resources: number;
  observations: number;
  /** The first Observations (up to `sampleSize`), for the view-only figure. */
  observationSample: unknown[];
}

const BENCH_SEED = 20_240_305;
const CHUNK_CHARS = 8_000_000;

export function centreNdjson(patients: number, sampleSize = 0): CentreNdjson {
  const centre = generateCentre({ seed: BENCH_SEED, patients });
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
      if (observationSample.length < sampleSize) observationSample.push(resource);
    }
    if (currentSize > CHUNK_CHARS) {
      chunks.push(`${current.join('\n')}\n`);
      current = [];
      currentSize = 0;
    }
  }
  if (current.length > 0) chunks.push(`${current.join('\n')}\n`);
  if (observations < 200_000) {
    process.stderr.write(`warning: only ${observations} Observations; raise --patients\n`);
  }
  return { centre, chunks, resources, observations, observationSample };
}

/** Calls `fn` with each non-empty line of the chunks. */
export function forEachLine(chunks: readonly string[], fn: (line: string) => void): void {
  for (const chunk of chunks) {
    for (const line of chunk.split('\n')) if (line.length > 0) fn(line);
  }
}

/**
 * CPU milliseconds (user + system) used by this process while `fn` runs: other work on a
 * shared machine disturbs it less than wall time.
 */
export function cpuMs(fn: () => void): number {
  const before = process.cpuUsage();
  fn();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000;
}

/** JSON.parse of every line: the J that bench ratios divide by. */
export function parseOnly(chunks: readonly string[]): void {
  forEachLine(chunks, (line) => void JSON.parse(line));
}
