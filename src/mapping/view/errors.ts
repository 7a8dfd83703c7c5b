// Errors of the ViewDefinition engine. A data manager edits views by hand, so every problem
// names where it is in the view (`select[0].column[2].path`) and what is wrong, and all
// problems found in one pass are reported together. Evaluation errors never carry resource
// content: only resource type, view path and a redacted cause.

/** One problem in a ViewDefinition: where it is and what is wrong. */
export interface ViewIssue {
  /** Path inside the ViewDefinition, e.g. `select[0].column[1].path`; empty for the root. */
  path: string;
  message: string;
}

function describeView(source: string | undefined, viewName: string | undefined): string {
  const name = viewName ? `ViewDefinition '${viewName}'` : 'ViewDefinition';
  return source ? `${name} (${source})` : name;
}

/** Thrown by `compileView` when a definition is invalid; `issues` lists every problem found. */
export class ViewDefinitionError extends Error {
  /** Path of the first problem, e.g. `select[0].forEach`. */
  readonly viewPath: string;
  /** What is wrong with the first problem. */
  readonly problem: string;

  constructor(
    readonly issues: ViewIssue[],
    readonly source?: string,
    readonly viewName?: string,
  ) {
    const lines = issues.map((i) => `${i.path || '(root)'}: ${i.message}`);
    super(
      issues.length === 1
        ? `${describeView(source, viewName)}: ${lines[0]}`
        : `${describeView(source, viewName)}: ${issues.length} problems\n` +
            lines.map((l) => `  - ${l}`).join('\n'),
    );
    this.name = 'ViewDefinitionError';
    this.viewPath = issues[0]?.path ?? '';
    this.problem = issues[0]?.message ?? 'invalid ViewDefinition';
  }
}

/**
 * Thrown by `CompiledView.rows` when a valid view meets data it cannot turn into rows
 * (several values in a non-collection column, a `where` that is not boolean, a FHIRPath
 * runtime failure). The message names the view path and resource type, never resource content.
 */
export class ViewEvaluationError extends Error {
  constructor(
    /** Path inside the ViewDefinition of the expression that failed. */
    readonly viewPath: string,
    /** What went wrong, free of resource content. */
    readonly problem: string,
    /** Resource type of the resource being processed. */
    readonly resourceType: string,
    readonly source?: string,
    readonly viewName?: string,
  ) {
    super(`${describeView(source, viewName)}: ${viewPath}: ${problem} (on a ${resourceType})`);
    this.name = 'ViewEvaluationError';
  }
}

/**
 * Shortens a FHIRPath library error message and removes quoted text and collection dumps, which
 * can contain resource values (names, identifiers).
 */
export function redactEngineMessage(message: string): string {
  const firstLine = message.split('\n')[0] ?? '';
  return firstLine
    .replace(/"(?:[^"\\]|\\.)*"/g, '"…"')
    .replace(/'(?:[^'\\]|\\.)*'/g, "'…'")
    .replace(/\[[^\]]*\]/g, '[…]')
    .replace(/\{[^}]*\}/g, '{…}')
    .slice(0, 200);
}
