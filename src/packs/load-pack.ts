// Loads a mapping pack from its folder: the assembly spec, the value sets and the views,
// each validated, with every problem reported at once as file + path + what was expected,
// so a data manager can fix a pack in one pass. The mapping core stays free of files.
import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import {
  AssemblySpecSchema,
  DiagnosisValueSetSchema,
  NonSystemicValueSetSchema,
  PgaValueSetSchema,
  SteroidValueSetSchema,
  VIEW_ROLES,
  VitalsValueSetSchema,
  type AssemblySpec,
  type MappingPack,
  type PackValueSets,
  type ViewRole,
} from '../mapping/pack-schema.js';
import { compileView as defaultCompileView, type CompiledView } from '../mapping/view/index.js';

export {
  applyCentreOverrides,
  parseCentreOverrides,
  OverridesError,
  type CentreOverrides,
} from '../mapping/overrides.js';
import { readTextFile } from '../config/text.js';

export interface PackIssue {
  /** File relative to the pack folder, e.g. `valuesets/pga.json`. */
  file: string;
  /** Dotted path inside the file, e.g. `concepts[3].source`; empty for the whole file. */
  path: string;
  message: string;
}

/** A mapping pack that cannot be used; `issues` lists every problem found. */
export class MappingPackError extends Error {
  constructor(
    readonly dir: string,
    readonly issues: PackIssue[],
    /** Replaces the per-file list, for a problem with the pack as a whole (no such folder). */
    summary?: string,
  ) {
    super(
      summary ??
        `mapping pack ${dir}: ${issues.length} problem${issues.length === 1 ? '' : 's'}\n` +
          issues.map((i) => `  - ${i.file}${i.path ? ` ${i.path}` : ''}: ${i.message}`).join('\n'),
    );
    this.name = 'MappingPackError';
  }
}

/**
 * Why `dir` cannot be a pack folder at all (absent, or a file), naming the pack and the
 * absolute folder it was looked for in; undefined when it is a folder.
 */
async function missingPackMessage(dir: string): Promise<string | undefined> {
  const where = `${basename(resolve(dir))} in ${dirname(resolve(dir))}`;
  try {
    if ((await stat(dir)).isDirectory()) return undefined;
    return `no mapping pack ${where} (that is a file, not a pack folder)`;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return `no mapping pack ${where}`;
    return `cannot read mapping pack ${where} (${code ?? (err as Error).message})`;
  }
}

/** The folder of a centre's `mapping.pack`: an absolute path as given, else under `mappingsDir`. */
export function resolvePackDir(mappingsDir: string, pack: string): string {
  return isAbsolute(pack) ? pack : join(mappingsDir, pack);
}

export interface LoadPackOptions {
  /** The view compiler; defaults to the project's SQL-on-FHIR engine. */
  compileView?: (definition: unknown, options?: { source?: string }) => CompiledView;
}

const VIEW_RESOURCE: Record<ViewRole, string> = {
  patient: 'Patient',
  encounter: 'Encounter',
  observation: 'Observation',
  medicationStatement: 'MedicationStatement',
  medicationRequest: 'MedicationRequest',
  medication: 'Medication',
  condition: 'Condition',
};

const VALUE_SET_FILES = {
  steroids: ['systemic-corticosteroids.json', SteroidValueSetSchema],
  nonSystemic: ['non-systemic-forms.json', NonSystemicValueSetSchema],
  pga: ['pga.json', PgaValueSetSchema],
  vitals: ['vitals.json', VitalsValueSetSchema],
  diagnoses: ['ibd-diagnoses.json', DiagnosisValueSetSchema],
} as const;

function zodPath(path: PropertyKey[]): string {
  return path
    .map((p) => (typeof p === 'number' ? `[${p}]` : String(p)))
    .join('.')
    .replace(/\.\[/g, '[');
}

async function readText(dir: string, file: string, issues: PackIssue[]): Promise<string | null> {
  try {
    return await readTextFile(join(dir, file));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    issues.push({
      file,
      path: '',
      message: code === 'ENOENT' ? 'file is missing' : `cannot read file (${code ?? 'error'})`,
    });
    return null;
  }
}

function parseJson(text: string, file: string, issues: PackIssue[]): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    issues.push({ file, path: '', message: `not valid JSON: ${(err as Error).message}` });
    return undefined;
  }
}

function validate<T extends z.ZodType>(
  schema: T,
  data: unknown,
  file: string,
  issues: PackIssue[],
): z.infer<T> | undefined {
  const result = schema.safeParse(data);
  if (result.success) return result.data;
  for (const issue of result.error.issues) {
    issues.push({ file, path: zodPath(issue.path), message: issue.message });
  }
  return undefined;
}

/** Checks that every `source` key in a value set names an entry of its `sources` table. */
function checkSources(
  valueSet: { sources: Record<string, unknown> } & Record<string, unknown>,
  file: string,
  issues: PackIssue[],
): void {
  const known = new Set(Object.keys(valueSet.sources));
  for (const [listName, list] of Object.entries(valueSet)) {
    if (!Array.isArray(list)) continue;
    list.forEach((entry: unknown, i) => {
      const source = (entry as { source?: unknown }).source;
      if (typeof source === 'string' && !known.has(source)) {
        issues.push({
          file,
          path: `${listName}[${i}].source`,
          message: `unknown source "${source}"; expected one of: ${[...known].join(', ')}`,
        });
      }
    });
  }
  const synonymsSource = (valueSet as { synonymsSource?: unknown }).synonymsSource;
  if (typeof synonymsSource === 'string' && !known.has(synonymsSource)) {
    issues.push({ file, path: 'synonymsSource', message: `unknown source "${synonymsSource}"` });
  }
}

async function loadAssembly(dir: string, issues: PackIssue[]): Promise<AssemblySpec | undefined> {
  let file = 'assembly.yaml';
  let text: string | null = null;
  for (const candidate of ['assembly.yaml', 'assembly.yml', 'assembly.json']) {
    try {
      text = await readTextFile(join(dir, candidate));
      file = candidate;
      break;
    } catch {
      // try the next name
    }
  }
  if (text === null) {
    issues.push({ file, path: '', message: 'file is missing (assembly.yaml, .yml or .json)' });
    return undefined;
  }
  let data: unknown;
  try {
    data = file.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    issues.push({
      file,
      path: '',
      message: `not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message}`,
    });
    return undefined;
  }
  return validate(AssemblySpecSchema, data, file, issues);
}

/**
 * Reads and validates the mapping pack in `dir`: `assembly.yaml`, `valuesets/*.json` and the
 * `views/*.json` the assembly names (each compiled once). Throws MappingPackError listing
 * every problem with its file and path, or saying "no mapping pack <name> in <absolute
 * folder>" when the pack folder itself does not exist.
 */
export async function loadMappingPack(
  dir: string,
  options: LoadPackOptions = {},
): Promise<MappingPack> {
  const issues: PackIssue[] = [];
  const compile = options.compileView ?? defaultCompileView;
  // A missing folder is one problem, not one "file is missing" per file of the pack.
  const missing = await missingPackMessage(dir);
  if (missing !== undefined)
    throw new MappingPackError(resolve(dir), [{ file: '', path: '', message: missing }], missing);
  const assembly = await loadAssembly(dir, issues);

  const valueSets: Partial<PackValueSets> = {};
  for (const [key, [name, schema]] of Object.entries(VALUE_SET_FILES)) {
    const file = `valuesets/${name}`;
    const text = await readText(dir, file, issues);
    if (text === null) continue;
    const data = parseJson(text, file, issues);
    if (data === undefined) continue;
    const parsed = validate(schema as z.ZodType, data, file, issues);
    // Checked on the raw data too, so a bad citation shows up alongside schema problems.
    if (
      typeof data === 'object' &&
      data !== null &&
      typeof (data as { sources?: unknown }).sources === 'object'
    ) {
      checkSources(data as never, file, issues);
    }
    if (parsed) (valueSets as Record<string, unknown>)[key] = parsed;
  }
  try {
    const expected = new Set<string>(Object.values(VALUE_SET_FILES).map(([name]) => name));
    for (const f of await readdir(join(dir, 'valuesets'))) {
      if (f.endsWith('.json') && !expected.has(f)) {
        issues.push({
          file: `valuesets/${f}`,
          path: '',
          message: `unexpected value set file; expected only: ${[...expected].join(', ')}`,
        });
      }
    }
  } catch {
    // a missing folder is already reported per file
  }

  const views: Partial<Record<ViewRole, CompiledView>> = {};
  if (assembly) {
    for (const role of VIEW_ROLES) {
      const file = `views/${assembly.views[role]}.json`;
      const text = await readText(dir, file, issues);
      if (text === null) continue;
      const data = parseJson(text, file, issues);
      if (data === undefined) continue;
      try {
        const view = compile(data, { source: file });
        if (view.resource !== VIEW_RESOURCE[role]) {
          issues.push({
            file,
            path: 'resource',
            message: `the assembly uses this view for ${VIEW_RESOURCE[role]} resources, but it is a view of ${view.resource}`,
          });
        } else views[role] = view;
      } catch (err) {
        issues.push({ file, path: '', message: (err as Error).message });
      }
    }
  }

  if (issues.length > 0 || !assembly)
    throw new MappingPackError(relative(process.cwd(), dir) || dir, issues);
  return {
    name: assembly.name,
    views: views as Record<ViewRole, CompiledView>,
    valueSets: valueSets as PackValueSets,
    assembly,
  };
}
