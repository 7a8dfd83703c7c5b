// Compiles a SQL on FHIR v2 ViewDefinition into a row builder. Validation and FHIRPath
// compilation happen once here; `rows(resource)` then only evaluates. Selects become a tree
// of runners with fixed continuations: each runner writes its columns into one shared slot
// array and calls "the rest of the row" (next sibling select, then unionAll branches, then
// the parent's continuation), so the cartesian product of selects needs no intermediate
// partial-row lists, and a row object is built only when a complete row is emitted.
import type { Scope } from './analyze.js';
import { generateRows } from './codegen.js';
import {
  parseViewDefinition,
  type ColumnDef,
  type OutputColumn,
  type SelectDef,
  type ViewDefinitionModel,
} from './definition.js';
import { ViewDefinitionError, ViewEvaluationError, type ViewIssue } from './errors.js';
import { CompiledExpression, type ExpressionContext, type ResultForm } from './expression.js';
import { createInvocationTable, type EvaluationState } from './functions.js';
import {
  describeType,
  isChoice,
  isDefinitelyNotBoolean,
  isKnownTypeName,
  isResourceType,
  lookupMember,
  type MemberLookup,
  type StaticType,
} from './fhir-types.js';

/** Options of `compileView`. */
export interface CompileViewOptions {
  /** Where the definition came from (a file path), used in error messages. */
  source?: string;
  /**
   * Use the fast path for simple expressions (default true). With false every expression is
   * evaluated by fhirpath.js; results are the same, only slower.
   */
  fastPath?: boolean;
  /**
   * Generate one JS function for the whole view (default: same as fastPath). With false the
   * select runners evaluate it; results are the same. Meant for tests and benchmarks.
   */
  codegen?: boolean;
}

/** A column of a compiled view, in output order. */
export interface ViewColumn {
  name: string;
  /** The FHIR type declared in the view, if any. */
  type?: string;
  /** True when the column holds an array of values. */
  collection?: boolean;
}

/** How one expression of the view is evaluated. */
export interface ExpressionPlan {
  /** Where the expression is in the view, e.g. `select[0].column[2].path`. */
  viewPath: string;
  /** The expression as written in the view. */
  expression: string;
  /** True when the expression runs as a plain JS closure instead of through fhirpath.js. */
  fastPath: boolean;
  /** Why fhirpath.js is used, when it is. */
  reason?: string;
}

/** A compiled ViewDefinition. */
export interface CompiledView {
  name?: string;
  /** The FHIR resource type the view reads; other resources give no rows. */
  resource: string;
  columns: ViewColumn[];
  /**
   * The rows of one resource, each an object with every column, keys in column order; an
   * empty value is null (an empty array in a collection column). Throws ViewEvaluationError when the data breaks the view (e.g. several values
   * in a column that is not a collection).
   */
  rows(resource: any): Record<string, unknown>[];
  /** Every FHIRPath expression of the view and whether it uses the fast path. */
  expressions: ExpressionPlan[];
  /** True when rows() runs as one generated function (see README), false for the runners. */
  generated: boolean;
}

interface ColumnRunner {
  slot: number;
  name: string;
  viewPath: string;
  collection: boolean;
  expression: CompiledExpression;
}

/** Runtime node for one selection structure. */
class SelectRunner {
  focus: unknown = undefined;
  rowIndex = 0;
  /** Continuation after this select's part of the row is complete. */
  next: () => void = () => undefined;
  /** What runs once this select's own columns are written. */
  private afterColumns: () => void = () => undefined;

  constructor(
    private readonly view: ViewRuntime,
    readonly columns: ColumnRunner[],
    readonly iteration:
      | { kind: 'forEach' | 'forEachOrNull'; expression: CompiledExpression }
      | { kind: 'repeat'; expressions: CompiledExpression[] }
      | undefined,
    readonly children: SelectRunner[],
    readonly union: SelectRunner[],
    /** Every slot written by this select and its descendants (null-filled by forEachOrNull). */
    readonly subtreeSlots: number[],
  ) {}

  /** Wires the fixed continuations of this subtree; `next` is set by the parent first. */
  link(): void {
    const union = this.union;
    let tail: () => void;
    if (union.length > 0) {
      tail = () => {
        for (const branch of union) branch.run(this.focus, this.rowIndex);
      };
      for (const branch of union) branch.next = () => this.next();
    } else {
      tail = () => this.next();
    }
    const children = this.children;
    for (let i = children.length - 1; i >= 0; i--) {
      const child = children[i] as SelectRunner;
      child.next = tail;
      const start = child;
      tail = () => start.run(this.focus, this.rowIndex);
    }
    this.afterColumns = tail;
    for (const child of children) child.link();
    for (const branch of union) branch.link();
  }

  run(parentFocus: unknown, parentRowIndex: number): void {
    const iteration = this.iteration;
    if (iteration === undefined) {
      this.emit(parentFocus, parentRowIndex);
      return;
    }
    const resource = this.view.state.resource;
    if (iteration.kind === 'repeat') {
      const foci = this.view.repeatFoci(iteration.expressions, parentFocus, parentRowIndex);
      for (let i = 0; i < foci.length; i++) this.emit(foci[i], i);
      return;
    }
    const collection = iteration.expression.evaluate(parentFocus, parentRowIndex, resource);
    if (Array.isArray(collection)) {
      if (collection.length > 0) {
        for (let i = 0; i < collection.length; i++) this.emit(collection[i], i);
        return;
      }
    } else if (collection !== undefined) {
      this.emit(collection, 0);
      return;
    }
    if (iteration.kind === 'forEachOrNull') {
      // The "null row": every column of this subtree is null, except that %rowIndex is 0.
      const values = this.view.values;
      for (const slot of this.subtreeSlots) values[slot] = null;
      for (const column of this.columns) {
        if (!column.expression.usesRowIndex) continue;
        values[column.slot] = this.view.columnValue(
          column,
          column.expression.evaluate(undefined, 0, resource),
        );
      }
      this.focus = undefined;
      this.rowIndex = 0;
      this.next();
    }
  }

  private emit(focus: unknown, rowIndex: number): void {
    this.focus = focus;
    this.rowIndex = rowIndex;
    const values = this.view.values;
    const resource = this.view.state.resource;
    const columns = this.columns;
    for (let i = 0; i < columns.length; i++) {
      const column = columns[i] as ColumnRunner;
      values[column.slot] = this.view.columnValue(
        column,
        column.expression.evaluate(focus, rowIndex, resource),
      );
    }
    this.afterColumns();
  }
}

/** The mutable runtime of one compiled view. */
class ViewRuntime {
  readonly state: EvaluationState = { resource: undefined };
  values: unknown[] = [];
  out: Record<string, unknown>[] = [];

  constructor(
    readonly source: string | undefined,
    readonly viewName: string | undefined,
  ) {}

  columnValue(column: ColumnRunner, collection: unknown): unknown {
    if (collection === undefined) return column.collection ? [] : null;
    if (!Array.isArray(collection)) return column.collection ? [collection] : collection;
    if (column.collection) return collection.slice();
    if (collection.length === 0) return null;
    if (collection.length === 1) return collection[0];
    throw this.error(
      `${column.viewPath}.path`,
      `column '${column.name}' got ${collection.length} values; set "collection": true or narrow the path (e.g. with first() or where())`,
    );
  }

  repeatFoci(expressions: CompiledExpression[], start: unknown, rowIndex: number): unknown[] {
    const foci: unknown[] = [];
    const resource = this.state.resource;
    const visit = (node: unknown, depth: number) => {
      if (depth > 200) {
        throw this.error(
          expressions[0]?.viewPath ?? 'repeat',
          'repeat nested deeper than 200 levels',
        );
      }
      for (const expression of expressions) {
        const collection = expression.evaluate(node, rowIndex, resource);
        if (collection === undefined) continue;
        const items = Array.isArray(collection) ? collection : [collection];
        for (const item of items) {
          foci.push(item);
          visit(item, depth + 1);
        }
      }
    };
    visit(start, 0);
    return foci;
  }

  error(viewPath: string, problem: string): ViewEvaluationError {
    const type = (this.state.resource as { resourceType?: unknown } | undefined)?.resourceType;
    return new ViewEvaluationError(
      viewPath,
      problem,
      typeof type === 'string' ? type : 'resource',
      this.source,
      this.viewName,
    );
  }

  /** Builds a row object from the slot values; set once the columns are known. */
  buildRow: (values: unknown[]) => Record<string, unknown> = () => ({});

  emitRow = (): void => {
    this.out.push(this.buildRow(this.values));
  };
}

const COLUMN_NAME_RE = /^[A-Za-z][A-Za-z0-9_]*$/;

/**
 * Compiles the row constructor of a view: an object literal with the columns in order, so
 * every row has the same shape (hidden class) and is built without per-key dynamic stores.
 */
function compileRowBuilder(names: string[]): (values: unknown[]) => Record<string, unknown> {
  if (!names.every((n) => COLUMN_NAME_RE.test(n))) {
    return (values) => {
      const row: Record<string, unknown> = {};
      for (let i = 0; i < names.length; i++) row[names[i] as string] = values[i];
      return row;
    };
  }
  const body = `return { ${names.map((n, i) => `${n}: values[${i}]`).join(', ')} };`;
  // Safe: every name matched COLUMN_NAME_RE (letters, digits, _), so the generated source is
  // an object literal of plain identifiers and indexes, nothing else.
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  return new Function('values', body) as (values: unknown[]) => Record<string, unknown>;
}

/** Builds runners for a validated model, compiling every expression once. */
class ViewCompiler {
  readonly issues: ViewIssue[] = [];
  readonly plans: ExpressionPlan[] = [];
  private readonly invocationTable;

  constructor(
    private readonly model: ViewDefinitionModel,
    private readonly runtime: ViewRuntime,
    private readonly fastPath: boolean,
    private readonly source: string | undefined,
  ) {
    this.invocationTable = createInvocationTable(runtime.state);
  }

  expression(
    text: string,
    viewPath: string,
    focusType: StaticType,
    atRoot: boolean,
    form: ResultForm,
    lenient = false,
  ): CompiledExpression | undefined {
    const scope: Scope = {
      focusType,
      atRoot,
      resourceType: this.model.resource,
      lenient,
      fastEnabled: this.fastPath,
    };
    const context: ExpressionContext = {
      viewPath,
      scope,
      constants: this.model.constants,
      form,
      state: this.runtime.state,
      invocationTable: this.invocationTable,
      ...(this.source !== undefined ? { source: this.source } : {}),
      ...(this.model.name !== undefined ? { viewName: this.model.name } : {}),
    };
    const compiled = CompiledExpression.compile(text, context, this.issues);
    if (compiled) {
      this.plans.push({
        viewPath,
        expression: text,
        fastPath: compiled.fast !== undefined,
        ...(compiled.reason !== undefined ? { reason: compiled.reason } : {}),
      });
    }
    return compiled;
  }

  /** Compiles a select; `slots` hands out slot numbers in output column order. */
  select(
    def: SelectDef,
    focusType: StaticType,
    atRoot: boolean,
    slots: SlotAllocator,
  ): SelectRunner {
    let iteration: SelectRunner['iteration'];
    let childType = focusType;
    let childAtRoot = atRoot;
    const iterator = def.forEach ?? def.forEachOrNull;
    if (iterator !== undefined) {
      const key = def.forEach !== undefined ? 'forEach' : 'forEachOrNull';
      const expression = this.expression(
        iterator,
        `${def.viewPath}.${key}`,
        focusType,
        atRoot,
        'nodes',
      );
      if (expression) {
        iteration = { kind: key, expression };
        childType = isChoice(expression.type) ? undefined : expression.type;
      } else {
        childType = undefined;
      }
      childAtRoot = false;
    } else if (def.repeat !== undefined) {
      const expressions: CompiledExpression[] = [];
      def.repeat.forEach((text, i) => {
        const expression = this.expression(
          text,
          `${def.viewPath}.repeat[${i}]`,
          undefined,
          false,
          'nodes',
          true,
        );
        if (expression) expressions.push(expression);
      });
      iteration = { kind: 'repeat', expressions };
      childType = typeOfRepeat(def.repeat, focusType);
      childAtRoot = false;
    }
    const startSlot = slots.count;
    const columns: ColumnRunner[] = [];
    def.columns.forEach((column) => {
      const runner = this.column(column, childType, childAtRoot, slots);
      if (runner) columns.push(runner);
    });
    const children = def.select.map((child) => this.select(child, childType, childAtRoot, slots));
    let union: SelectRunner[] = [];
    if (def.unionAll.length > 0) {
      const unionStart = slots.count;
      const first = this.select(def.unionAll[0] as SelectDef, childType, childAtRoot, slots);
      const unionSlots = slots.since(unionStart);
      union = [first];
      for (const branch of def.unionAll.slice(1)) {
        union.push(this.select(branch, childType, childAtRoot, slots.reuse(unionSlots)));
      }
    }
    const subtreeSlots = slots.since(startSlot);
    return new SelectRunner(this.runtime, columns, iteration, children, union, subtreeSlots);
  }

  private column(
    def: ColumnDef,
    focusType: StaticType,
    atRoot: boolean,
    slots: SlotAllocator,
  ): ColumnRunner | undefined {
    if (
      def.type !== undefined &&
      /^[A-Za-z]+$/.test(def.type) &&
      !isKnownTypeName(def.type) &&
      def.type !== 'integer64'
    ) {
      this.issues.push({
        path: `${def.viewPath}.type`,
        message: `'${def.type}' is not a FHIR type`,
      });
    }
    const slot = slots.next();
    const expression = this.expression(
      def.expression,
      `${def.viewPath}.path`,
      focusType,
      atRoot,
      'values',
    );
    if (!expression) return undefined;
    return { slot, name: def.name, viewPath: def.viewPath, collection: def.collection, expression };
  }

  where(): CompiledExpression[] {
    const out: CompiledExpression[] = [];
    for (const where of this.model.where) {
      const expression = this.expression(
        where.expression,
        where.viewPath,
        this.model.resource,
        true,
        'values',
      );
      if (!expression) continue;
      if (isDefinitelyNotBoolean(expression.type)) {
        this.issues.push({
          path: where.viewPath,
          message: `a where path must give a boolean, but '${where.expression}' gives ${describeType(expression.type)}`,
        });
        continue;
      }
      out.push(expression);
    }
    return out;
  }
}

const SIMPLE_PATH_RE = /^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$/;

/**
 * Static type of the nodes a repeat reaches, when every repeat path is a plain member path and
 * all of them lead to one type (e.g. QuestionnaireResponse.item); otherwise unknown.
 */
function typeOfRepeat(paths: string[], start: StaticType): string | undefined {
  if (typeof start !== 'string' || !paths.every((p) => SIMPLE_PATH_RE.test(p))) return undefined;
  const reached = new Set<string>();
  const pending = [start];
  while (pending.length > 0 && reached.size < 20) {
    const from = pending.pop() as string;
    for (const path of paths) {
      let type: string | undefined = from;
      for (const name of path.split('.')) {
        const found: MemberLookup = lookupMember(type, name);
        if (found.kind === 'missing') {
          type = undefined;
          break;
        }
        if (found.kind !== 'element') return undefined;
        type = found.type;
      }
      if (type !== undefined && !reached.has(type)) {
        reached.add(type);
        pending.push(type);
      }
    }
  }
  return reached.size === 1 ? [...reached][0] : undefined;
}

/** Hands out column slots in output order; union branches after the first reuse its slots. */
class SlotAllocator {
  count = 0;
  private readonly handed: number[] = [];

  constructor(private readonly fixed?: number[]) {}

  next(): number {
    const slot = this.fixed ? (this.fixed[this.handed.length] ?? -1) : this.count++;
    this.handed.push(slot);
    if (this.fixed) this.count++;
    return slot;
  }

  since(start: number): number[] {
    return this.handed.slice(start);
  }

  reuse(slots: number[]): SlotAllocator {
    return new SlotAllocator(slots);
  }
}

/** Resource types of the model that no resource has as its resourceType. */
const ABSTRACT_RESOURCE_TYPES: ReadonlySet<string> = new Set(['Resource', 'DomainResource']);

/**
 * Compiles a SQL on FHIR v2 ViewDefinition. Throws ViewDefinitionError listing every problem
 * (with its path in the view) when the definition is invalid.
 */
export function compileView(definition: unknown, options: CompileViewOptions = {}): CompiledView {
  const source = options.source;
  const { model, columns, issues } = parseViewDefinition(definition);
  if (model.resource !== '' && !isResourceType(model.resource)) {
    issues.push({
      path: 'resource',
      message: `'${model.resource}' is not a FHIR R4 resource type`,
    });
  } else if (ABSTRACT_RESOURCE_TYPES.has(model.resource)) {
    // No resource has resourceType Resource or DomainResource, so such a view gives no rows.
    issues.push({
      path: 'resource',
      message: `'${model.resource}' is an abstract type that no resource has; name a concrete resource type, e.g. Patient`,
    });
  }
  if (issues.length > 0) throw new ViewDefinitionError(issues, source, model.name);

  const runtime = new ViewRuntime(source, model.name);
  const compiler = new ViewCompiler(model, runtime, options.fastPath !== false, source);
  const where = compiler.where();
  const slots = new SlotAllocator();
  const root = new SelectRunner(
    runtime,
    [],
    undefined,
    model.select.map((s) => compiler.select(s, model.resource, true, slots)),
    [],
    [],
  );
  if (compiler.issues.length > 0)
    throw new ViewDefinitionError(compiler.issues, source, model.name);
  root.next = runtime.emitRow;
  root.link();
  const names = columns.map((c) => c.name);
  runtime.buildRow = compileRowBuilder(names);
  runtime.values = new Array<unknown>(columns.length).fill(null);
  const generated =
    (options.codegen ?? options.fastPath !== false)
      ? generateRows(root, names, runtime)
      : undefined;

  const rows = (resource: any): Record<string, unknown>[] => {
    if (
      typeof resource !== 'object' ||
      resource === null ||
      resource.resourceType !== model.resource
    ) {
      return [];
    }
    runtime.state.resource = resource;
    for (const expression of where) {
      if (!passesWhere(expression, resource, runtime)) return [];
    }
    const out: Record<string, unknown>[] = [];
    if (generated !== undefined) {
      generated(resource, out);
    } else {
      runtime.out = out;
      root.run(resource, 0);
    }
    return out;
  };

  return {
    ...(model.name !== undefined ? { name: model.name } : {}),
    resource: model.resource,
    columns: columns.map(toViewColumn),
    rows,
    expressions: compiler.plans,
    generated: generated !== undefined,
  };
}

function toViewColumn(column: OutputColumn): ViewColumn {
  return {
    name: column.name,
    ...(column.type !== undefined ? { type: column.type } : {}),
    ...(column.collection ? { collection: true } : {}),
  };
}

function passesWhere(
  expression: CompiledExpression,
  resource: unknown,
  runtime: ViewRuntime,
): boolean {
  const result = expression.evaluate(resource, 0, resource);
  if (result === undefined) return false;
  let value = result;
  if (Array.isArray(result)) {
    if (result.length === 0) return false;
    if (result.length > 1) {
      throw runtime.error(
        expression.viewPath,
        `where gave ${result.length} values instead of one boolean`,
      );
    }
    value = result[0];
  }
  if (typeof value !== 'boolean') {
    throw runtime.error(expression.viewPath, `where gave a ${typeof value} instead of a boolean`);
  }
  return value;
}
