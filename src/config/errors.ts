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

/** Turns zod issues into config issues with dotted paths. */
export function issuesFromZod(error: z.ZodError): ConfigIssue[] {
  return error.issues.map((issue) => ({
    path: issue.path
      .map((p) => (typeof p === 'number' ? `[${p}]` : String(p)))
      .join('.')
      .replace(/\.\[/g, '['),
    message: issue.message,
  }));
}
