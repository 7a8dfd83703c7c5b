// Config errors list every problem at once, each with the path that holds it, so that a
// person fixing a centre file or an environment fixes everything in one pass.
import type { z } from 'zod';

export interface ConfigIssue {
  /** Dotted path inside the file or environment, e.g. `limits.requestsPerSecond`. */
  path: string;
  message: string;
}

/** Thrown when a config source is invalid; `issues` holds every problem found. */
export class ConfigError extends Error {
  constructor(
    /** What was being read: a file path or `environment`. */
    readonly source: string,
    readonly issues: ConfigIssue[],
  ) {
    super(
      `${source}: ${issues.length} problem${issues.length === 1 ? '' : 's'}\n` +
        issues.map((i) => `  - ${i.path || '(root)'}: ${i.message}`).join('\n'),
    );
    this.name = 'ConfigError';
  }
}

const dotted = (path: readonly PropertyKey[]): string =>
  path
    .map((p) => (typeof p === 'number' ? `[${p}]` : String(p)))
    .join('.')
    .replace(/\.\[/g, '[');

/** Steps through wrappers (optional, default, pipe...) to the schemas a value is checked by. */
function unwrap(schema: z.ZodType): z.ZodType[] {
  const def = (schema as unknown as { def: Record<string, unknown> & { type: string } }).def;
  if (def.innerType) return unwrap(def.innerType as z.ZodType);
  if (def.type === 'pipe') return unwrap((def.out ?? def.in) as z.ZodType);
  if (def.type === 'union') return (def.options as z.ZodType[]).flatMap(unwrap);
  return [schema];
}

/** The setting names an object schema accepts at `path` (empty when unknown). */
export function keysAt(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  let nodes = unwrap(schema);
  for (const key of path) {
    nodes = nodes.flatMap((node) => {
      const def = (node as unknown as { def: Record<string, unknown> & { type: string } }).def;
      if (def.type === 'object') {
        const child = (def.shape as Record<string, z.ZodType>)[String(key)];
        return child ? unwrap(child) : [];
      }
      if (def.type === 'array') return unwrap(def.element as z.ZodType);
      if (def.type === 'record') return unwrap(def.valueType as z.ZodType);
      return [];
    });
  }
  return [
    ...new Set(
      nodes.flatMap((node) => {
        const def = (node as unknown as { def: Record<string, unknown> & { type: string } }).def;
        return def.type === 'object' ? Object.keys(def.shape as object) : [];
      }),
    ),
  ];
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}

/** "unknown setting", with the likely intended name or the names allowed there. */
function unknownKeyMessage(key: string, known: string[]): string {
  if (known.length === 0) return 'unknown setting (remove it)';
  const lower = key.toLowerCase();
  const close = known
    .map((k) => ({ k, d: k.toLowerCase() === lower ? 0 : distance(lower, k.toLowerCase()) }))
    .filter(({ k, d }) => d <= Math.max(1, Math.floor(k.length / 3)))
    .sort((x, y) => x.d - y.d)[0];
  return close
    ? `unknown setting; did you mean "${close.k}"?`
    : `unknown setting; allowed here: ${known.join(', ')}`;
}

/**
 * Turns zod issues into config issues with dotted paths. With the schema, an unknown key is
 * reported at its own path with the setting it was probably meant to be.
 */
export function issuesFromZod(error: z.ZodError, schema?: z.ZodType): ConfigIssue[] {
  return error.issues.flatMap((issue): ConfigIssue[] => {
    if (issue.code === 'unrecognized_keys') {
      const known = schema ? keysAt(schema, issue.path) : [];
      return issue.keys.map((key) => ({
        path: dotted([...issue.path, key]),
        message: unknownKeyMessage(key, known),
      }));
    }
    if (issue.code === 'invalid_type' && / received undefined$/.test(issue.message))
      return [{ path: dotted(issue.path), message: `required (expected ${issue.expected})` }];
    return [{ path: dotted(issue.path), message: issue.message }];
  });
}
