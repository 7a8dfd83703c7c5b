// Generates one straight-line JS function per view (with `new Function`) that turns a
// resource into rows: every select becomes inline code, a forEach a loop, sibling selects and
// unionAll branches nested code in row order, and every column a local variable; a complete
// row is one object literal pushed to the output. Expressions with an inline plan (member
// paths, choice types, first()/last(), count()/exists()/empty(), reference keys, literals,
// %rowIndex) become property reads on the raw JSON, with common prefixes (`value.ofType(Quantity)`
// for four columns) computed once per focus. Data the plan does not cover - primitive
// extensions in `_name`, nulls in arrays, several values where the code expects one, nested
// arrays, fhirpath.js nodes - makes that one expression call its CompiledExpression instead
// (its fast closure or fhirpath.js), exactly what the select runners do, so rows and errors
// are identical, in the same order. Views whose code would grow too large (continuations are
// copied into every forEachOrNull null row and unionAll branch) get no generated function;
// compile-view then uses the runners.
import type { InlinePlan, PlanOp } from './analyze.js';
import { isEngineNode, type CompiledExpression } from './expression.js';
import { referenceKeyOf, resourceKeyOf } from './resource-keys.js';

/** A column as the generator needs it (compile-view's ColumnRunner). */
export interface CodegenColumn {
  slot: number;
  collection: boolean;
  expression: CompiledExpression;
}

/** A select as the generator needs it (compile-view's SelectRunner). */
export interface CodegenSelect {
  readonly columns: readonly CodegenColumn[];
  readonly iteration:
    | { kind: 'forEach' | 'forEachOrNull'; expression: CompiledExpression }
    | { kind: 'repeat'; expressions: CompiledExpression[] }
    | undefined;
  readonly children: readonly CodegenSelect[];
  readonly union: readonly CodegenSelect[];
  readonly subtreeSlots: readonly number[];
}

/** What generated code calls back into (compile-view's ViewRuntime). */
export interface CodegenRuntime<C extends CodegenColumn> {
  columnValue(column: C, collection: unknown): unknown;
  repeatFoci(expressions: CompiledExpression[], start: unknown, rowIndex: number): unknown[];
}

/** Fills `out` with the rows of `resource` (already checked to be of the view's type). */
export type GeneratedRows = (resource: unknown, out: Record<string, unknown>[]) => void;

/** Generated source larger than this is not used (the runners take over). */
const MAX_SOURCE_LENGTH = 200_000;

const IDENTIFIER_RE = /^[A-Za-z][A-Za-z0-9_]*$/;

/** "Ask the expression": the inline code cannot decide this value. */
const DELEGATE: object = Object.freeze({});

const isArray = Array.isArray;

/** An engine node's plain JSON for the inline code, as CompiledExpression.evaluate unwraps it. */
function unwrap(focus: unknown): unknown {
  if (!isEngineNode(focus)) return focus;
  const node = focus as { data?: unknown; _data?: unknown };
  if (node.data === null || node.data === undefined || node._data != null || isArray(node.data)) {
    return DELEGATE;
  }
  return node.data;
}

/** An array of two or more items from the JSON, unless one is null or an array. */
function multiOf(items: unknown[]): unknown {
  for (let i = 0; i < items.length; i++) {
    const item: unknown = items[i];
    if (item === null || item === undefined || isArray(item)) return DELEGATE;
  }
  return items;
}

class TooLarge extends Error {}

/** Where generated code is: the focus variables of one select level. */
interface Focus {
  /** The focus as the runners would pass it (raw JSON or a fhirpath.js node). */
  f: string;
  /** The focus for inline plans: a JSON object (not an array), or D. */
  g: string;
  /** %rowIndex. */
  r: string;
  /** True when the focus is the resource itself. */
  root: boolean;
}

/**
 * Values computed in the current block, by key (focus variable + plan prefix), so later
 * columns reuse them. A nested block starts from a copy: what it adds is not visible after it.
 */
type Block = Map<string, string>;

class Generator {
  private readonly code: string[] = [];
  private length = 0;
  private counter = 0;
  readonly constants: unknown[] = [];
  private readonly constantIndex = new Map<unknown, number>();

  constructor(private readonly slotCount: number) {}

  private emit(text: string): void {
    this.code.push(text);
    this.length += text.length;
    if (this.length > MAX_SOURCE_LENGTH) throw new TooLarge();
  }

  private fresh(prefix: string): string {
    return `${prefix}${this.counter++}`;
  }

  private constant(value: unknown): string {
    let index = this.constantIndex.get(value);
    if (index === undefined) {
      index = this.constants.length;
      this.constants.push(value);
      this.constantIndex.set(value, index);
    }
    return `K[${index}]`;
  }

  source(root: CodegenSelect, rowSource: string): string {
    const slots = Array.from({ length: this.slotCount }, (_, i) => `c${i} = null`);
    if (slots.length > 0) this.emit(`let ${slots.join(', ')};\n`);
    const focus: Focus = { f: 'resource', g: 'resource', r: '0', root: true };
    this.select(root, focus, new Map(), () => this.emit(`out.push(${rowSource});\n`));
    return this.code.join('');
  }

  /** Code of a select (its columns, then the rest of the row via `next`) on `parent`'s focus. */
  private select(
    select: CodegenSelect,
    parent: Focus,
    block: Block,
    next: (block: Block) => void,
  ): void {
    const iteration = select.iteration;
    if (iteration === undefined) {
      this.body(select, parent, block, next);
      return;
    }
    if (iteration.kind === 'repeat') {
      const foci = this.fresh('a');
      const i = this.fresh('i');
      const focus = this.itemFocus(i);
      this.emit(
        `const ${foci} = rt.repeatFoci(${this.constant(iteration.expressions)}, ${parent.f}, ${parent.r});\n` +
          `for (let ${i} = 0; ${i} < ${foci}.length; ${i}++) {\n` +
          `const ${focus.f} = ${foci}[${i}];\n` +
          `let ${focus.g} = unwrap(${focus.f});\n`,
      );
      this.guardFocus(focus);
      this.body(select, focus, new Map(block), next);
      this.emit('}\n');
      return;
    }
    const expression = iteration.expression;
    const items = this.fresh('a');
    const raw = this.fresh('w');
    const count = this.fresh('n');
    const many = this.fresh('m');
    const state =
      expression.plan?.kind === 'path' ? this.plan(expression.plan, parent, block, true) : 'D';
    this.emit(
      `let ${items} = ${state}, ${raw} = true;\n` +
        `if (${items} === D) { ${items} = ${this.constant(expression)}.evaluate(${parent.f}, ${parent.r}, resource); ${raw} = false; }\n` +
        `const ${many} = isArray(${items});\n` +
        `const ${count} = ${many} ? ${items}.length : ${items} === undefined ? 0 : 1;\n` +
        `if (${count} > 0) {\n`,
    );
    const i = this.fresh('i');
    const focus = this.itemFocus(i);
    this.emit(
      `for (let ${i} = 0; ${i} < ${count}; ${i}++) {\n` +
        `const ${focus.f} = ${many} ? ${items}[${i}] : ${items};\n` +
        `let ${focus.g} = ${raw} ? ${focus.f} : unwrap(${focus.f});\n`,
    );
    this.guardFocus(focus);
    this.body(select, focus, new Map(block), next);
    this.emit('}\n}\n');
    if (iteration.kind === 'forEachOrNull') {
      // The "null row": every column of this subtree is null, except that %rowIndex is 0.
      this.emit('else {\n');
      for (const slot of select.subtreeSlots) this.emit(`c${slot} = null;\n`);
      for (const column of select.columns) {
        if (!column.expression.usesRowIndex) continue;
        this.emit(
          `c${column.slot} = rt.columnValue(${this.constant(column)}, ${this.constant(column.expression)}.evaluate(undefined, 0, resource));\n`,
        );
      }
      next(new Map(block));
      this.emit('}\n');
    }
  }

  private itemFocus(i: string): Focus {
    return { f: this.fresh('f'), g: this.fresh('g'), r: i, root: false };
  }

  /** Inline plans read only JSON objects; anything else goes to the expression. */
  private guardFocus(focus: Focus): void {
    this.emit(
      `if (typeof ${focus.g} !== 'object' || ${focus.g} === null || isArray(${focus.g})) ${focus.g} = D;\n`,
    );
  }

  /** A select's columns, then its nested selects, then its unionAll branches, then `next`. */
  private body(select: CodegenSelect, focus: Focus, block: Block, next: (block: Block) => void) {
    for (const column of select.columns) this.column(column, focus, block);
    const union = select.union;
    const tail =
      union.length === 0
        ? next
        : (b: Block) => {
            for (const branch of union) this.select(branch, focus, b, next);
          };
    const chain = (index: number, b: Block): void => {
      const child = select.children[index];
      if (child === undefined) tail(b);
      else this.select(child, focus, b, (after) => chain(index + 1, after));
    };
    chain(0, block);
  }

  private column(column: CodegenColumn, focus: Focus, block: Block): void {
    const target = `c${column.slot}`;
    const expression = column.expression;
    const generic = `rt.columnValue(${this.constant(column)}, ${this.constant(expression)}.evaluate(${focus.f}, ${focus.r}, resource))`;
    const plan = expression.plan;
    if (plan === undefined) {
      this.emit(`${target} = ${generic};\n`);
      return;
    }
    if (plan.kind !== 'path') {
      const value = plan.kind === 'rowIndex' ? focus.r : this.constant(plan.value);
      this.emit(`${target} = ${column.collection ? `[${value}]` : value};\n`);
      return;
    }
    const state = this.plan(plan, focus, block, column.collection);
    if (state === 'D') {
      this.emit(`${target} = ${generic};\n`);
    } else if (column.collection) {
      this.emit(
        `${target} = ${state} === undefined ? [] : ${state} === D ? ${generic} : isArray(${state}) ? ${state}.slice() : [${state}];\n`,
      );
    } else {
      this.emit(
        `${target} = ${state} === undefined ? null : ${state} === D ? ${generic} : ${state};\n`,
      );
    }
  }

  /**
   * Emits the code of a path plan and returns the variable holding its value: undefined
   * (empty), D, one item, or (only when `multiOk`) an array of two or more items - the
   * compact collection the fast closure would return.
   */
  private plan(
    plan: Extract<InlinePlan, { kind: 'path' }>,
    focus: Focus,
    block: Block,
    multiOk: boolean,
  ): string {
    const end = plan.end;
    if (end?.fn === 'resourceKey') {
      // getResourceKey() on the resource being viewed; elsewhere it needs resourceKeysOf().
      if (plan.ops.length > 0 || !focus.root) return 'D';
      return this.cached(block, `${focus.g}|resourceKey`, (v) =>
        this.emit(`const ${v} = resKey(resource);\n`),
      );
    }
    const endMulti = end !== undefined && end.fn !== 'referenceKey';
    const state = this.steps(plan.ops, focus, block, end === undefined ? multiOk : endMulti);
    if (end === undefined) return state;
    const key = `${focus.g}|${JSON.stringify(plan)}`;
    return this.cached(block, key, (v) => {
      const s = state;
      switch (end.fn) {
        case 'count':
        case 'exists':
        case 'empty': {
          const n = `(isArray(${s}) ? ${s}.length : ${s} === undefined ? 0 : 1)`;
          const test = end.fn === 'count' ? n : end.fn === 'exists' ? `${n} > 0` : `${n} === 0`;
          this.emit(`const ${v} = ${s} === D ? D : ${test};\n`);
          break;
        }
        case 'referenceKey':
          this.emit(
            `const ${v} = ${s} === D ? D : ${s} === undefined ? undefined : refKey(${s}, ${this.constant(end.type)});\n`,
          );
          break;
      }
    });
  }

  /** Emits the steps of a path (each prefix once per block) and returns the value variable. */
  private steps(ops: PlanOp[], focus: Focus, block: Block, lastMulti: boolean): string {
    let current = focus.g;
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i] as PlanOp;
      const following = ops[i + 1];
      const multi =
        following === undefined ? lastMulti : following.op === 'first' || following.op === 'last';
      const key = `${focus.g}|${JSON.stringify(ops.slice(0, i + 1))}|${multi}`;
      const input = current;
      current = this.cached(block, key, (v) => this.step(op, input, v, multi, block));
    }
    return current;
  }

  private step(op: PlanOp, s: string, v: string, multi: boolean, block: Block): void {
    switch (op.op) {
      case 'first':
      case 'last': {
        const item = op.op === 'first' ? `${s}[0]` : `${s}[${s}.length - 1]`;
        // Arrays here come from multiOf: no null or array items.
        this.emit(`let ${v} = isArray(${s}) ? ${item} : ${s};\n`);
        return;
      }
      case 'member': {
        const read = `${s}[${JSON.stringify(op.name)}]`;
        const value = op.primitive
          ? `${s}[${JSON.stringify(`_${op.name}`)}] !== undefined ? D : ${read}`
          : read;
        this.emit(
          `let ${v} = ${s} === undefined || ${s} === D ? ${s} : typeof ${s} !== 'object' ? undefined : ${value};\n`,
        );
        break;
      }
      case 'choice': {
        // The first type, in model order, whose property (or `_property`) is present.
        // Shared by every ofType() on the same input (`value.ofType(Quantity)`, `(string)`).
        const index = this.cached(block, `${s}|choice|${op.keys.join(',')}`, (ci) => {
          let chain = '-1';
          for (let k = op.keys.length - 1; k >= 0; k--) {
            const name = op.keys[k] as string;
            chain =
              `${s}[${JSON.stringify(`_${name}`)}] !== undefined ? -2 : ` +
              `${s}[${JSON.stringify(name)}] !== undefined ? ${k} : ${chain}`;
          }
          this.emit(
            `const ${ci} = ${s} === undefined || ${s} === D || typeof ${s} !== 'object' ? -1 : ${chain};\n`,
          );
        });
        let pick = 'undefined';
        for (let k = op.keys.length - 1; k >= 0; k--) {
          if (!op.selected[k]) continue;
          pick = `${index} === ${k} ? ${s}[${JSON.stringify(op.keys[k])}] : ${pick}`;
        }
        this.emit(`let ${v} = ${s} === D || ${index} === -2 ? D : ${pick};\n`);
        break;
      }
    }
    // A member as fhirpath.js sees it: null is empty, [x] is x, [] is empty; [null], nested
    // arrays and (unless the caller takes a collection) several items go to the expression.
    this.emit(
      `if (${v} === null) ${v} = undefined;\n` +
        `else if (isArray(${v})) {\n` +
        `if (${v}.length === 1) { ${v} = ${v}[0]; if (${v} === null || ${v} === undefined || isArray(${v})) ${v} = D; }\n` +
        `else ${v} = ${v}.length === 0 ? undefined : ${multi ? `multiOf(${v})` : 'D'};\n` +
        `}\n`,
    );
  }

  /** The variable of `key` in `block`, emitting its code with `make` the first time. */
  private cached(block: Block, key: string, make: (v: string) => void): string {
    const known = block.get(key);
    if (known !== undefined) return known;
    const v = this.fresh('s');
    make(v);
    block.set(key, v);
    return v;
  }
}

/**
 * Generates the row function of a view, or undefined when its source would be too large.
 * `names` are the output columns in slot order.
 */
export function generateRows<C extends CodegenColumn>(
  root: CodegenSelect,
  names: readonly string[],
  runtime: CodegenRuntime<C>,
): GeneratedRows | undefined {
  const generator = new Generator(names.length);
  // Column names are letters, digits and _ (checked by the definition parser), so they are
  // plain identifiers in an object literal; the check keeps this safe if that ever changes.
  if (!names.every((n) => IDENTIFIER_RE.test(n))) return undefined;
  const rowSource = `{ ${names.map((n, i) => `${n}: c${i}`).join(', ')} }`;
  let body: string;
  try {
    body = generator.source(root, rowSource);
  } catch (error) {
    if (error instanceof TooLarge) return undefined;
    throw error;
  }
  // Safe: the source is built from identifiers made here, JSON.stringify'd property names,
  // column names matching IDENTIFIER_RE, and K[n] references to values held in `constants`.
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  const factory = new Function(
    'D',
    'K',
    'rt',
    'isArray',
    'unwrap',
    'multiOf',
    'refKey',
    'resKey',
    `return function viewRows(resource, out) {\n${body}};`,
  ) as (...args: unknown[]) => GeneratedRows;
  return factory(
    DELEGATE,
    generator.constants,
    runtime,
    isArray,
    unwrap,
    multiOf,
    referenceKeyOf,
    resourceKeyOf,
  );
}
