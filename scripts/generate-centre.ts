// Writes a synthetic IBD centre to a directory: one NDJSON file per resource type (the shape
// of a Bulk Data export), truth.json (the registry values the generator intended for every
// visit) and centre-overrides.yaml (what the centre file carries under mapping.overrides).
// Streams with backpressure, so a million resources take little memory.
//
//   npx tsx scripts/generate-centre.ts --out /tmp/centre --seed 1 --patients 200
//   npx tsx scripts/generate-centre.ts --out /tmp/big --resources 1000000
import { once } from 'node:events';
import { createWriteStream, mkdirSync, writeFileSync, type WriteStream } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { stringify as stringifyYaml } from 'yaml';
import {
  generateCentre,
  patientsForResources,
  type GenerateCentreOptions,
} from '../fixtures/generator/index.js';

interface CliOptions {
  out: string;
  seed: number;
  patients?: number;
  resources?: number;
  centreId?: string;
  timeZone?: string;
  start?: string;
  end?: string;
  visits?: [number, number];
  budesonideCounts?: boolean;
}

function integer(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n)) throw new InvalidArgumentError('expected an integer');
  return n;
}

function range(value: string): [number, number] {
  const match = /^(\d+),(\d+)$/.exec(value);
  if (!match) throw new InvalidArgumentError('expected MIN,MAX, e.g. 3,10');
  return [Number(match[1]), Number(match[2])];
}

async function write(stream: WriteStream, text: string): Promise<void> {
  if (!stream.write(text)) await once(stream, 'drain');
}

async function close(stream: WriteStream): Promise<void> {
  stream.end();
  await once(stream, 'finish');
}

/** Generates the centre described by the options into `options.out`. */
async function generateToDirectory(options: CliOptions): Promise<void> {
  const base: Omit<GenerateCentreOptions, 'patients'> = {
    seed: options.seed,
    centreId: options.centreId,
    timeZone: options.timeZone,
    startDate: options.start,
    endDate: options.end,
    visitsPerPatient: options.visits,
    budesonideCountsAsSteroid: options.budesonideCounts,
  };
  const patients =
    options.patients ??
    (options.resources !== undefined ? patientsForResources(options.resources, base) : 100);
  const centre = generateCentre({ ...base, patients });
  const dir = resolve(options.out);
  mkdirSync(dir, { recursive: true });
  const started = Date.now();

  const streams = new Map<string, WriteStream>();
  const counts: Record<string, number> = {};
  for (const resource of centre.resources()) {
    let stream = streams.get(resource.resourceType);
    if (!stream) {
      stream = createWriteStream(join(dir, `${resource.resourceType}.ndjson`));
      streams.set(resource.resourceType, stream);
    }
    counts[resource.resourceType] = (counts[resource.resourceType] ?? 0) + 1;
    await write(stream, `${JSON.stringify(resource)}\n`);
  }
  for (const stream of streams.values()) await close(stream);

  // truth.json: a JSON array, one visit per line, written as it is computed.
  const truth = createWriteStream(join(dir, 'truth.json'));
  let visits = 0;
  await write(truth, '[');
  for (const visit of centre.iterateTruth()) {
    await write(truth, `${visits === 0 ? '\n' : ',\n'}${JSON.stringify(visit)}`);
    visits += 1;
  }
  await write(truth, '\n]\n');
  await close(truth);

  writeFileSync(
    join(dir, 'centre-overrides.yaml'),
    `# mapping.overrides for the synthetic centre ${centre.centreId} (seed ${centre.seed}, time zone ${centre.timeZone})\n` +
      stringifyYaml(centre.centreOverrides),
  );
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  process.stderr.write(
    `generated ${total} resources for ${patients} patients (${visits} expected visits) in ${Date.now() - started} ms into ${dir}\n` +
      Object.entries(counts)
        .map(([type, n]) => `  ${type}: ${n}\n`)
        .join(''),
  );
}

const program = new Command()
  .name('generate-centre')
  .description(
    'Write a deterministic synthetic IBD centre (NDJSON per type, truth.json, centre-overrides.yaml)',
  )
  .requiredOption('--out <dir>', 'output directory (created if missing)')
  .option('--seed <n>', 'random seed', integer, 1)
  .option('--patients <n>', 'number of patients (default 100)', integer)
  .option('--resources <n>', 'size the centre to at least this many resources', integer)
  .option('--centre-id <id>', 'centre id (default synthetic-ibd)')
  .option('--time-zone <zone>', 'IANA time zone (default America/New_York)')
  .option('--start <date>', 'first day YYYY-MM-DD (default 2022-01-01)')
  .option('--end <date>', 'last day YYYY-MM-DD (default 2024-12-31)')
  .option('--visits <min,max>', 'visits per patient (default 3,10)', range)
  .option('--budesonide-counts', 'the centre counts oral budesonide as a systemic steroid')
  .action(async (options: CliOptions) => {
    if (options.patients !== undefined && options.resources !== undefined) {
      throw new InvalidArgumentError('give --patients or --resources, not both');
    }
    await generateToDirectory(options);
  });

program.parseAsync(process.argv).catch((error: unknown) => {
  process.stderr.write(
    `generate-centre: ${error instanceof Error ? error.message : String(error)}\n`,
  );
  process.exitCode = 1;
});
