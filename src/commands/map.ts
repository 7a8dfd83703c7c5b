// `lhn-bridge map`: runs a mapping pack over local FHIR data (a Bundle, an NDJSON file or a
// folder of NDJSON files) and writes registry submissions as NDJSON to stdout, with a data
// quality summary on stderr. For trying a pack or a centre's overrides without an EHR.
// Patients are mapped one at a time from a spool on disk, so a large folder fits in memory.
// Bad input stops with a message naming the file and line, never a stack trace.
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
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
  REPEAT_GROUPS,
  type FhirResource,
  type MapResult,
  type Mapper,
} from '../mapping/index.js';
import type { Finding } from '../registry/submission.js';
import { parseReference } from '../fhir/pull-search.js';
import { createPatientSpool, patientOf } from '../sync/bulk-spool.js';
import { SeenFilter } from '../mapping/seen-filter.js';
import { loadMappingPack, MappingPackError } from '../packs/load-pack.js';
import { CliError } from './cli-error.js';
import {
  describeIoError,
  describeJsonError,
  isIoError,
  locateJsonError,
} from '../config/parse-error.js';
import { stripBom, readTextFile } from '../config/text.js';

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

/**
 * Largest .json file (a Bundle or one resource) read, 256 MiB: a JSON file is parsed as one
 * value, so it is held whole in memory (several times its size once parsed), and V8 cannot
 * hold a string much over 512 MiB at all. NDJSON is read a line at a time, whatever its size.
 */
export const MAX_JSON_FILE_BYTES = 256 * 1024 * 1024;

const MIB = 1024 * 1024;

function tooLargeForJson(file: string, limit: number): CliError {
  const size = limit >= MIB ? `${Math.round(limit / MIB)} MiB` : `${limit} bytes`;
  return new CliError(
    `${basename(file)}: a Bundle over ${size} cannot be read as one JSON value; convert it to NDJSON, one resource per line (a .ndjson file is read a line at a time, whatever its size)`,
  );
}

/**
 * Reads resources from a Bundle/resource JSON file, an NDJSON file or a folder of them. A
 * .json file over `maxJsonBytes` (default MAX_JSON_FILE_BYTES) is refused.
 */
export async function* readFhirInput(
  path: string,
  options: { maxJsonBytes?: number } = {},
): AsyncGenerator<FhirResource> {
  const maxJsonBytes = options.maxJsonBytes ?? MAX_JSON_FILE_BYTES;
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
        // Quoted only when it looks like a type name: a mangled file may hold anything there.
        /^[A-Z][A-Za-z]{0,63}$/.test(type)
          ? `${where}: unknown resourceType "${type}" (not a FHIR R4 resource type)`
          : `${where}: unknown resourceType (not a FHIR R4 resource type name; its text is not shown)`,
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
          value = JSON.parse(n === 1 ? stripBom(line) : line);
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
      if ((await stat(file)).size > maxJsonBytes) throw tooLargeForJson(file, maxJsonBytes);
      text = await readTextFile(file);
    } catch (err) {
      if (err instanceof CliError) throw err;
      // Past V8's longest string, whatever the limit above was set to.
      if ((err as NodeJS.ErrnoException).code === 'ERR_STRING_TOO_LONG')
        throw tooLargeForJson(file, maxJsonBytes);
      throw new CliError(
        `${basename(file)}: ${isIoError(err) ? describeIoError(err) : 'cannot be read'}`,
      );
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      // Line, column and kind only: V8's message quotes the input (a patient's name, say).
      const where = locateJsonError(text);
      const ndjson =
        where?.line === 2 && where.kind === 'unexpected content after the JSON value'
          ? '; it looks like NDJSON (one resource per line): name it .ndjson'
          : '';
      throw new CliError(`${basename(file)}: ${describeJsonError(text)}${ndjson}`);
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

/**
 * The quality summary printed on stderr: counts, findings by kind, top unmapped codes (by
 * `field code`, counted from the result's findings unless given, in their order).
 */
export function formatMapSummary(result: MapResult, unmappedCodes?: Map<string, number>): string {
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
  const unmapped = unmappedCodes ?? new Map<string, number>();
  if (!unmappedCodes) for (const f of result.findings) countUnmapped(unmapped, f);
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
  if (!(await mapByPatient(mapper, options.input))) {
    // The same resource under two patients (a version moved to another patient): version
    // precedence is over the whole input, so one assembler maps it all in memory, as before.
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
}

/** Bytes of input (the files read), to size the filter of ids seen. */
async function inputBytes(path: string): Promise<number> {
  try {
    const info = await stat(path);
    if (!info.isDirectory()) return info.size;
    let total = 0;
    for (const f of await readdir(path))
      if (/\.(ndjson|jsonl|json)$/i.test(f)) total += (await stat(join(path, f))).size;
    return total;
  } catch {
    return 0; // reading the input says what is wrong with it
  }
}

/** Bundles (an NDJSON line may hold one) as their entries, as the assembler reads them. */
function* flatten(resource: FhirResource): Generator<FhirResource> {
  if (resource.resourceType !== 'Bundle') {
    yield resource;
    return;
  }
  const entries =
    (resource as { entry?: { fullUrl?: unknown; resource?: FhirResource }[] }).entry ?? [];
  for (const r of bundleEntryResources(entries)) yield* flatten(r);
}

/** Run-level findings (about the whole input, not a patient): made once per assembler. */
/** Fields of run-level findings, in the order one assembler gives them. */
const RUN_LEVEL_ORDER = ['visit.class', 'visit.include', 'visit.status'];
const RUN_LEVEL_FIELDS = new Set(RUN_LEVEL_ORDER);

/**
 * How an unmapped-code finding is listed in the summary, or undefined when it is not listed:
 * `field system|code`; an encounter left out by the include rules also names its department
 * (rules may match on it), and a class or type without a code says so rather than vanish.
 */
function unmappedEntry(f: Finding): string | undefined {
  if (f.kind !== 'unmapped-code') return undefined;
  if (f.field === 'visit.include')
    return `${f.field} ${f.code ?? '(no type code)'}${f.resource ? ` at ${f.resource}` : ''}`;
  if (f.field === 'visit.class') return `${f.field} ${f.code ?? '(no class code)'}`;
  return f.code ? `${f.field} ${f.code}` : undefined;
}

/**
 * Counts one finding into the unmapped list: a run-level finding stands for the encounters
 * its message counts ("58 encounter(s) ..."), any other for one.
 */
function countUnmapped(map: Map<string, number>, f: Finding): void {
  const entry = unmappedEntry(f);
  if (entry === undefined) return;
  const n = RUN_LEVEL_FIELDS.has(f.field) ? Number(/^\d+/.exec(f.message)?.[0] ?? 1) : 1;
  map.set(entry, (map.get(entry) ?? 0) + n);
}

/**
 * Maps the input one patient at a time, so memory holds one patient's data (and the
 * Medications, which belong to no patient), whatever the input's size: resources are spooled
 * to private temporary files grouped by patient, then each patient is assembled on its own and
 * its submissions written at once. Patients come in id order, as one assembler over the whole
 * input orders them; resources of no patient other than Medications (an Encounter without a
 * subject, say) go to one more assembler, mapped last. The summary is the one a single
 * assembler would give: run-level findings (unknown visit classes, visits no include rule
 * matched) are merged over the assemblers, with their counts, and made once.
 */
async function mapByPatient(mapper: Mapper, path: string): Promise<boolean> {
  // Ids read more than once (by the groups the assembler settles versions in), noticed with
  // a filter sized for the input (no set of every id); those are checked by a second read.
  const expected = Math.max(1024, Math.ceil((await inputBytes(path)) / 64));
  let saturated = false;
  const seen = new SeenFilter(
    () => {
      saturated = true;
    },
    Math.ceil(Math.log2(expected * 16)),
  );
  const candidates = new Set<string>();
  const spool = await createPatientSpool({ ordered: true });
  try {
    /** Medications by `Medication/id`, every version read (the assembler keeps the latest). */
    const medications = new Map<string, string[]>();
    const loose = mapper.createAssembler();
    let resources = 0;
    const byResourceType = new Map<string, number>();
    for await (const read of readFhirInput(path)) {
      for (const resource of flatten(read)) {
        resources += 1;
        const patientId = patientOf(resource);
        const group = REPEAT_GROUPS[resource.resourceType];
        if (group !== undefined && resource.id && seen.testAndAdd(group, resource.id))
          candidates.add(`${group}/${resource.id}`);
        if (patientId) await spool.add(patientId, resource);
        else if (resource.resourceType === 'Medication' && resource.id) {
          const key = `Medication/${resource.id}`;
          const versions = medications.get(key);
          if (versions) versions.push(JSON.stringify(resource));
          else medications.set(key, [JSON.stringify(resource)]);
        } else loose.add(resource);
        byResourceType.set(
          resource.resourceType,
          (byResourceType.get(resource.resourceType) ?? 0) + 1,
        );
      }
    }

    if (saturated) return false;
    if (candidates.size > 0) {
      /** Patient ('' for none) of each id read more than once. */
      const owners = new Map<string, string>();
      for await (const read of readFhirInput(path))
        for (const resource of flatten(read)) {
          const group = REPEAT_GROUPS[resource.resourceType];
          if (group === undefined || !resource.id) continue;
          const key = `${group}/${resource.id}`;
          if (!candidates.has(key)) continue;
          const patientId = patientOf(resource) ?? '';
          const owner = owners.get(key);
          if (owner === undefined) owners.set(key, patientId);
          else if (owner !== patientId) return false;
        }
    }

    let visits = 0;
    let retractions = 0;
    const byKind: Record<string, number> = {};
    // The top unmapped codes list keeps ties in the order one assembler's findings have:
    // those of submissions, then run-level ones, then the other findings of no submission.
    const fromSubmissions = new Map<string, number>();
    const fromOthers = new Map<string, number>();
    /** Run-level findings by their key (as one assembler sorts them), with their total. */
    const runLevel = new Map<string, { finding: Finding; n: number }>();
    const note = (map: Map<string, number>, f: Finding): void => {
      byKind[f.kind] = (byKind[f.kind] ?? 0) + 1;
      countUnmapped(map, f);
    };
    const take = async (result: MapResult): Promise<void> => {
      let chunk = '';
      let carried = 0;
      for (const s of result.submissions) {
        if (s.kind === 'visit') {
          visits += 1;
          carried += s.findings.length;
        } else retractions += 1;
        chunk += `${JSON.stringify(s)}\n`;
        if (chunk.length > 1 << 16) {
          await writeOut(chunk);
          chunk = '';
        }
      }
      if (chunk) await writeOut(chunk);
      result.findings.forEach((f, i) => {
        if (i < carried) return note(fromSubmissions, f);
        if (!RUN_LEVEL_FIELDS.has(f.field)) return note(fromOthers, f);
        // visit.class: the class `system|code` ('|' for none); visit.include: type code and
        // department. The count leads the message.
        const key = `${f.field}\n${f.code ?? ''}\n${f.resource ?? ''}`;
        const n = Number(/^\d+/.exec(f.message)?.[0] ?? 1);
        const seen = runLevel.get(key);
        if (seen) seen.n += n;
        else runLevel.set(key, { finding: f, n });
      });
    };

    for await (const patient of spool.patients()) {
      const assembler = mapper.createAssembler();
      for (const r of patient.resources) assembler.add(r);
      // The Medications referenced, and those their ingredients reference.
      const wanted = new Set<string>();
      const want = (reference: unknown): void => {
        const ref = parseReference((reference as { reference?: string } | undefined)?.reference);
        if (ref?.type === 'Medication') wanted.add(`Medication/${ref.id}`);
      };
      for (const r of patient.resources) want(r.medicationReference);
      for (const key of wanted)
        for (const text of medications.get(key) ?? []) {
          const medication = JSON.parse(text) as FhirResource;
          const ingredients = medication.ingredient;
          if (Array.isArray(ingredients))
            for (const i of ingredients) want((i as { itemReference?: unknown }).itemReference);
          assembler.add(medication);
        }
      await take(assembler.finish());
    }
    await take(loose.finish());

    const merged = new Map(fromSubmissions);
    const runKeys = [...runLevel.keys()].sort((a, b) => {
      const [fa, ...ka] = a.split('\n');
      const [fb, ...kb] = b.split('\n');
      if (fa !== fb) return RUN_LEVEL_ORDER.indexOf(fa!) - RUN_LEVEL_ORDER.indexOf(fb!);
      return sortKey(fa!, ka) < sortKey(fb!, kb) ? -1 : 1;
    });
    const findings: Finding[] = [];
    for (const key of runKeys) {
      const { finding: f, n } = runLevel.get(key)!;
      // The finding with the total over every patient's assembler, listed with that total.
      const total = { ...f, message: f.message.replace(/^\d+/, String(n)) };
      findings.push(total);
      note(merged, total);
    }
    for (const [k, n] of fromOthers) merged.set(k, (merged.get(k) ?? 0) + n);
    process.stderr.write(
      formatMapSummary(
        {
          submissions: [],
          findings,
          stats: {
            resources,
            visits,
            retractions,
            byKind,
            byResourceType: Object.fromEntries(byResourceType),
          },
        },
        merged,
      ),
    );
    return true;
  } finally {
    await spool.close();
  }
}

/** The key one assembler sorts a run-level finding by (visit.class: `system|code`). */
function sortKey(field: string, [code, location]: string[]): string {
  return field === 'visit.class' ? code || '|' : `${code}\n${location}`;
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
