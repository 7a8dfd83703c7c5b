// One compiled FHIRPath expression of a view: constants substituted, parsed once, analysed,
// and evaluated either by its fast-path closure or by fhirpath.js (compiled once, lazily per
// input form). A focus is either raw FHIR JSON (the resource, or items a fast forEach
// produced, whose static type is known) or a node fhirpath.js returned; each form gets the
// matching fhirpath.js function, so both paths see the same typed data.
import fhirpath, { type UserInvocationTable } from 'fhirpath';
import r4 from 'fhirpath/fhir-context/r4';
import {
  ExpressionAnalyzer,
  FALLBACK,
  type AstNode,
  type FastFn,
  type InlinePlan,
  type Scope,
} from './analyze.js';
import { substituteConstants, type ViewConstant } from './constants.js';
import { describeEngineFailure, ViewEvaluationError, type ViewIssue } from './errors.js';
import { isChoice, typeNameOf, type StaticType } from './fhir-types.js';
import type { EvaluationState } from './functions.js';

/** How an expression's fhirpath.js result is used. */
export type ResultForm = 'values' | 'nodes';

/** Context a view supplies when compiling an expression. */
export interface ExpressionContext {
  viewPath: string;
  scope: Scope;
  constants: ReadonlyMap<string, ViewConstant>;
  form: ResultForm;
  state: EvaluationState;
  invocationTable: UserInvocationTable;
  source?: string;
  viewName?: string;
}

type Evaluator = (resource: unknown, env?: Record<string, unknown>) => unknown[];

// fhirpath.js does not export its ResourceNode class; take it, and an evaluation context to
// build nodes with, from a result.
const templateNode = (
  fhirpath.compile('id', r4, { resolveInternalTypes: false })({
    resourceType: 'Basic',
    id: 'x',
  }) as { ctx?: unknown }[]
)[0];
const ResourceNode = templateNode?.constructor as
  | ((new (...args: never[]) => object) & {
      makeResNode?: (
        ctx: unknown,
        data: unknown,
        parent: null,
        path: string,
        meta: null,
        type: string,
      ) => object;
    })
  | undefined;
const engineContext = templateNode?.ctx;

/**
 * A raw number as the fhirpath.js node of FHIR type `type`, as a fhirpath.js result would give
 * it. fhirpath.js cannot take a number with a base type (it builds that node before its own
 * context can convert numbers: 'ctx.getDecimal is not a function'), so the node is built here
 * with a context of fhirpath.js's own, as nodes carried between evaluations already are.
 */
function typedNumberNode(value: number, type: string): unknown {
  const make = ResourceNode?.makeResNode;
  return make && engineContext ? make(engineContext, value, null, type, null, type) : value;
}

/** True for nodes fhirpath.js returns when asked not to resolve internal types. */
export function isEngineNode(value: unknown): boolean {
  return ResourceNode !== undefined && value instanceof ResourceNode;
}

/** A compiled expression, ready to evaluate on many resources. */
export class CompiledExpression {
  /** The expression after constants were substituted. */
  readonly text: string;
  readonly type: StaticType;
  readonly fast: FastFn | undefined;
  /** The inline form of `fast` for generated view code, when it has one. */
  readonly plan: InlinePlan | undefined;
  /** True when the focus is always the resource being viewed. */
  readonly atRoot: boolean;
  /** Why the fast path is not used, when it is not. */
  readonly reason: string | undefined;
  /** True when the expression reads %rowIndex. */
  readonly usesRowIndex: boolean;
  private readonly usesResource: boolean;
  private plain: Evaluator | undefined;
  private based: Evaluator | undefined;

  private constructor(
    readonly viewPath: string,
    readonly original: string,
    text: string,
    analysis: { type: StaticType; fast?: FastFn; plan?: InlinePlan; reason?: string },
    flags: { rowIndex: boolean; resource: boolean },
    private readonly context: ExpressionContext,
  ) {
    this.text = text;
    this.type = analysis.type;
    this.fast = analysis.fast;
    this.plan = analysis.fast ? analysis.plan : undefined;
    this.reason = analysis.fast ? undefined : (analysis.reason ?? 'not a simple path');
    this.usesRowIndex = flags.rowIndex;
    this.usesResource = flags.resource;
    this.atRoot = context.scope.atRoot;
    // Compile the fhirpath.js form the root uses now, so library errors surface at compile time.
    if (context.scope.atRoot) this.plain = this.compileEngine(undefined);
  }

  /**
   * Compiles `expression` in a context; problems go to `issues` and the result is undefined
   * when the expression cannot be used.
   */
  static compile(
    expression: string,
    context: ExpressionContext,
    issues: ViewIssue[],
  ): CompiledExpression | undefined {
    const { text, unknown } = substituteConstants(expression, context.constants);
    for (const name of unknown) {
      issues.push({
        path: context.viewPath,
        message: `%${name} is not a constant of this view (define it under constant)`,
      });
    }
    let ast: AstNode;
    try {
      ast = fhirpath.parse(text) as AstNode;
    } catch (error) {
      const detail =
        error instanceof Error && error.message.includes('line:')
          ? error.message
              .replace(/\s*expecting \{[^}]*\}/g, '')
              .replace(/\s*\n\s*/g, '; ')
              .slice(0, 300)
          : 'syntax error';
      issues.push({
        path: context.viewPath,
        message: `invalid FHIRPath '${expression}': ${detail}`,
      });
      return undefined;
    }
    const analyzer = new ExpressionAnalyzer();
    const analysis = analyzer.analyze(ast, context.scope);
    for (const message of analyzer.issues) issues.push({ path: context.viewPath, message });
    if (unknown.length > 0 || analyzer.issues.length > 0) return undefined;
    try {
      return new CompiledExpression(
        context.viewPath,
        expression,
        text,
        analysis,
        { rowIndex: analyzer.usesRowIndex, resource: analyzer.usesResourceVariable },
        context,
      );
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      issues.push({ path: context.viewPath, message: `FHIRPath '${expression}': ${detail}` });
      return undefined;
    }
  }

  private compileEngine(base: string | undefined): Evaluator {
    const options = {
      userInvocationTable: this.context.invocationTable,
      resolveInternalTypes: this.context.form === 'values',
    };
    const path = base === undefined ? this.text : { base, expression: this.text };
    return fhirpath.compile(path, r4, options) as Evaluator;
  }

  /** The fhirpath.js evaluation; used directly when there is no fast closure, or on FALLBACK. */
  evaluateWithEngine(focus: unknown, rowIndex: number, resource: unknown): unknown[] {
    let evaluator: Evaluator;
    const focusType = this.context.scope.focusType;
    if (
      this.context.scope.atRoot ||
      isEngineNode(focus) ||
      focusType === undefined ||
      isChoice(focusType) ||
      // A System type (`count()`, `join()`) has no base: the plain form types the raw value.
      focusType.startsWith('System.')
    ) {
      evaluator = this.plain ??= this.compileEngine(undefined);
    } else if (typeof focus === 'number') {
      focus = typedNumberNode(focus, typeNameOf(focusType));
      evaluator = this.plain ??= this.compileEngine(undefined);
    } else {
      evaluator = this.based ??= this.compileEngine(
        focusType.includes('.') ? focusType : typeNameOf(focusType),
      );
    }
    let env: Record<string, unknown> | undefined;
    if (this.usesRowIndex || this.usesResource) {
      env = this.usesResource ? { rowIndex, resource, rootResource: resource } : { rowIndex };
    }
    try {
      return evaluator(focus, env);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      throw new ViewEvaluationError(
        this.viewPath,
        `FHIRPath '${this.original}' failed: ${describeEngineFailure(message)}`,
        resourceTypeOf(resource),
        this.context.source,
        this.context.viewName,
      );
    }
  }

  /**
   * Evaluates on a focus. Returns a compact collection: undefined (empty), one item, or an
   * array (fhirpath.js results are always arrays).
   */
  evaluate(focus: unknown, rowIndex: number, resource: unknown): unknown {
    const fast = this.fast;
    if (fast !== undefined) {
      let raw = focus;
      // At the root the focus is always the resource itself, never a fhirpath.js node.
      if (!this.atRoot && isEngineNode(focus)) {
        // A node with primitive metadata (`_name`: extensions, id), without a value or holding
        // an array keeps fhirpath.js semantics; otherwise its plain JSON goes down the fast path.
        const node = focus as { data?: unknown; _data?: unknown };
        if (
          node.data === null ||
          node.data === undefined ||
          node._data != null ||
          Array.isArray(node.data)
        ) {
          return this.evaluateWithEngine(focus, rowIndex, resource);
        }
        raw = node.data;
      }
      try {
        return fast(raw, rowIndex, resource);
      } catch (error) {
        if (error !== FALLBACK) throw error;
      }
    }
    return this.evaluateWithEngine(focus, rowIndex, resource);
  }
}

function resourceTypeOf(resource: unknown): string {
  const type = (resource as { resourceType?: unknown } | null)?.resourceType;
  return typeof type === 'string' ? type : 'resource';
}
