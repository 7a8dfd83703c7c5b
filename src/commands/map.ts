// `lhn-bridge map`: runs a mapping pack over local FHIR data (a Bundle, an NDJSON file or a
// folder of NDJSON files) and writes registry submissions as NDJSON to stdout, with a data
// quality summary on stderr. For trying a pack or a centre's overrides without an EHR.
// Bad input stops with a message naming the file and line, never a stack trace.
import { createReadStream } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import r4 from 'fhirpath/fhir-context/r4';
import { loadCentreFile } from '../config/centre.js';
import { ConfigError } from '../config/errors.js';
import { loadServiceConfig, pseudonymSecretProblem } from '../config/service.js';
import {
  bundleEntryResources,
  createMapper,
  OverridesError,
  type FhirResource,
  type MapResult,
} from '../mapping/index.js';
import { loadMappingPack, MappingPackError } from '../packs/load-pack.js';
import { CliError } from './cli-error.js';
import {
  describeIoError,
  describeJsonError,
  isIoError,
  locateJsonError,
} from '../config/parse-error.js';

interface MapCommandOptions {
  mapping: string;
  input: string;
  centre?: string;
  secret?: string;
  timeZone?: string;
  centreId?: string;
}

/** FHIR R4 resource type names (every type whose ancestry reaches Resource). */
function resourceTypeNames(): Set<string> {
  const parents = (r4 as { type2Parent: Record<string, string> }).type2Parent;
  const names = new Set<string>();
  for (const type of Object.keys(parents)) {
    let t: string | undefined = type;
    for (let depth = 0; t && depth < 10; depth++) {
      if (t === 'Resource') {
        names.add(type);
        break;
      }
      t = parents[t];
    }
  }
  names.delete('Resource');
  names.delete('DomainResource');
  return names;
}

/** Reads resources from a Bundle/resource JSON file, an NDJSON file or a folder of them. */
export async function* readFhirInput(path: string): AsyncGenerator<FhirResource> {
  const types = resourceTypeNames();
  let info;
  try {
    info = await stat(path);
  } catch {
    throw new CliError(`input ${path}: no such file or folder`);
  }
  const check = (value: unknown, where: string): FhirResource => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new CliError(
        `${where}: not a FHIR resource (expected a JSON object with a resourceType)`,
      );
    }
    const type = (value as { resourceType?: unknown }).resourceType;
    if (typeof type !== 'string')
      throw new CliError(`${where}: not a FHIR resource (no resourceType)`);
    if (!types.has(type)) {
      throw new CliError(
        `${where}: unknown resourceType "${type.slice(0, 60)}" (not a FHIR R4 resource type)`,
      );
    }
    return value as FhirResource;
  };

  const files: string[] = [];
  if (info.isDirectory()) {
    // Every FHIR file in the folder is read: a Bundle (.json) beside NDJSON files is data
    // too, and skipping it silently would drop its visits.
    const names = (await readdir(path)).filter((f) => /\.(ndjson|jsonl|json)$/i.test(f)).sort();
    if (names.length === 0)
      throw new CliError(`input ${path}: the folder has no .ndjson, .jsonl or .json files`);
    files.push(...names.map((f) => join(path, f)));
  } else files.push(path);

  for (const file of files) {
    const ext = extname(file).toLowerCase();
    if (ext === '.ndjson' || ext === '.jsonl') {
      const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
      let n = 0;
      const stream = (async function* () {
        try {
          yield* lines;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          throw new CliError(`${basename(file)}: cannot be read${code ? ` (${code})` : ''}`);
        }
      })();
      for await (const line of stream) {
        n++;
        if (line.trim() === '') continue;
        let value: unknown;
        try {
          value = JSON.parse(line);
        } catch {
          const where = locateJsonError(line);
          throw new CliError(
            `${basename(file)} line ${n}: not valid JSON` +
              (where ? ` at column ${where.column} (${where.kind})` : ''),
          );
        }
        yield check(value, `${basename(file)} line ${n}`);
      }
      continue;
    }
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new CliError(
        `${basename(file)}: ${isIoError(err) ? describeIoError(err) : 'cannot be read'}`,
      );
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      // Line, column and kind only: V8's message quotes the input (a patient's name, say).
      throw new CliError(`${basename(file)}: ${describeJsonError(text)}`);
    }
    if (file !== path && isBulkManifest(value)) {
      // A Bulk Data client's output folder holds its manifest beside the NDJSON files.
      process.stderr.write(
        `note: ${basename(file)} is a bulk export manifest, not data; skipped\n`,
      );
      continue;
    }
    const resource = check(value, basename(file));
    if (resource.resourceType !== 'Bundle') {
      yield resource;
      continue;
    }
    const entries = (resource as { entry?: unknown }).entry;
    if (!Array.isArray(entries) || entries.length === 0) {
      throw new CliError(`${basename(file)}: the Bundle has no entries`);
    }
    for (let i = 0; i < entries.length; i++) {
      const entryResource = (entries[i] as { resource?: unknown } | null)?.resource;
      if (entryResource === undefined)
        throw new CliError(`${basename(file)} entry[${i}]: no resource`);
      check(entryResource, `${basename(file)} entry[${i}]`);
    }
    // A transaction Bundle's entries refer to each other by urn:uuid fullUrls.
    yield* bundleEntryResources(entries as { fullUrl?: unknown; resource?: FhirResource }[]);
  }
}

/** True for a Bulk Data completion manifest (transactionTime, output[]), which is no FHIR. */
function isBulkManifest(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || 'resourceType' in value) return false;
  const v = value as { transactionTime?: unknown; output?: unknown };
  return typeof v.transactionTime === 'string' && Array.isArray(v.output);
}

/** The quality summary printed on stderr: counts, findings by kind, top unmapped codes. */
export function formatMapSummary(result: MapResult): string {
  const { stats } = result;
  const lines = [
    `mapped ${stats.resources} resources: ${stats.visits} visit submission${stats.visits === 1 ? '' : 's'}, ${stats.retractions} retraction${stats.retractions === 1 ? '' : 's'}`,
  ];
  const kinds = Object.entries(stats.byKind).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  lines.push(
    kinds.length === 0
      ? 'findings: none'
      : `findings: ${kinds.map(([k, n]) => `${k} ${n}`).join(', ')}`,
  );
  const unmapped = new Map<string, number>();
  for (const f of result.findings) {
    if (f.kind === 'unmapped-code' && f.code)
      unmapped.set(`${f.field} ${f.code}`, (unmapped.get(`${f.field} ${f.code}`) ?? 0) + 1);
  }
  const top = [...unmapped.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10);
  if (top.length > 0) {
    lines.push('unmapped codes (add them to the centre file, mapping.overrides):');
    for (const [code, n] of top) lines.push(`  ${code} (${n})`);
  }
  return `${lines.join('\n')}\n`;
}

async function writeOut(text: string): Promise<void> {
  if (!process.stdout.write(text))
    await new Promise((resolve) => process.stdout.once('drain', resolve));
}

async function runMap(options: MapCommandOptions): Promise<void> {
  let secret = options.secret;
  if (secret === undefined) {
    try {
      secret = loadServiceConfig(process.env).pseudonymSecret;
    } catch (err) {
      if (err instanceof ConfigError && err.issues.some((i) => i.path === 'pseudonymSecret')) {
        throw new CliError(
          'no pseudonym secret: set LHN_PSEUDONYM_SECRET (at least 32 characters) or pass --secret',
        );
      }
      throw err;
    }
  } else {
    const problem = pseudonymSecretProblem(secret);
    if (problem) throw new CliError(`--secret ${problem}`);
  }
  const centre = options.centre ? await loadCentreFile(options.centre) : undefined;
  const packInfo = await stat(options.mapping).catch(() => undefined);
  if (!packInfo?.isDirectory())
    throw new CliError(
      `--mapping ${options.mapping}: ${packInfo ? 'not a folder' : 'no such folder'} (give a mapping pack folder, e.g. mappings/ibd)`,
    );
  let pack;
  try {
    pack = await loadMappingPack(options.mapping);
  } catch (err) {
    if (err instanceof MappingPackError) throw new CliError(err.message);
    throw err;
  }
  let mapper;
  try {
    mapper = createMapper(pack, {
      centreId: options.centreId ?? centre?.id ?? 'local',
      pseudonymSecret: secret,
      timeZone: options.timeZone ?? centre?.timeZone ?? 'UTC',
      overrides: centre?.mapping.overrides,
      overridesSource: options.centre,
      validate: true,
    });
  } catch (err) {
    if (err instanceof OverridesError) throw new CliError(err.message);
    if (err instanceof RangeError) throw new CliError(`unknown time zone "${options.timeZone}"`);
    throw err;
  }
  const assembler = mapper.createAssembler();
  for await (const resource of readFhirInput(options.input)) assembler.add(resource);
  const result = assembler.finish();
  let chunk = '';
  for (const s of result.submissions) {
    chunk += `${JSON.stringify(s)}\n`;
    if (chunk.length > 1 << 16) {
      await writeOut(chunk);
      chunk = '';
    }
  }
  if (chunk) await writeOut(chunk);
  process.stderr.write(formatMapSummary(result));
}

export function registerMapCommand(program: Command): void {
  program
    .command('map')
    .description(
      'map local FHIR data (Bundle JSON, NDJSON file or folder) with a mapping pack; submissions as NDJSON on stdout, quality summary on stderr',
    )
    .requiredOption('--mapping <dir>', 'mapping pack folder, e.g. mappings/ibd')
    .requiredOption(
      '--input <path>',
      'a Bundle (.json), an NDJSON file, or a folder of .ndjson / .json files',
    )
    .option('--centre <file>', 'centre file: its id, time zone and mapping.overrides are used')
    .option(
      '--secret <secret>',
      'pseudonym secret (default: LHN_PSEUDONYM_SECRET; prefer the environment, arguments are visible to other users)',
    )
    .option(
      '--time-zone <zone>',
      'IANA time zone for visit dates (default: the centre file, else UTC)',
    )
    .option('--centre-id <id>', 'centre id used in keys (default: the centre file, else "local")')
    .action(async (options: MapCommandOptions) => {
      await runMap(options);
    });
}
