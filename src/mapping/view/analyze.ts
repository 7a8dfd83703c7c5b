// Static analysis of one FHIRPath expression over fhirpath.js's own parse tree: it checks
// functions, elements and type names against the R4 model (so typos fail at compile time),
// infers the static type, and for the simple shapes views mostly use (member paths, choice
// types, where(x = 'literal'), first(), ofType(), exists(), join(), reference keys,
// indexers, and/or/not) builds a plain JS closure - the fast path. Anything else leaves
// `fast` undefined and is evaluated by fhirpath.js.
//
// Fast closures work on raw FHIR JSON and return a "collection" in a compact form:
// undefined (empty), a single item, or an array of two or more items (arrays coming straight
// from the resource are never mutated). When data has a shape where fhirpath.js semantics are
// subtle (primitive extensions in `_name`, nulls or arrays inside arrays, several choice
// properties at once, multi-valued booleans) the closure throws FALLBACK and the caller re-evaluates that
// expression with fhirpath.js, so results stay identical.
import {
  choiceSuffix,
  describeType,
  isBooleanLike,
  isChoice,
  isIntegerLike,
  isResourceType,
  isStringLike,
  isSubtypeOf,
  lookupMember,
  resolveTypeSpecifier,
  type ChoiceType,
  type StaticType,
} from './fhir-types.js';
import {
  referenceKeyOf,
  resourceKeyOf,
  resourceKeysOf,
  unquoteTypeArgument,
} from './resource-keys.js';

/** A fast-path closure: focus (raw JSON), %rowIndex and the resource being viewed. */
export type FastFn = (focus: unknown, rowIndex: number, resource: unknown) => unknown;

/** Thrown by fast closures when the data needs fhirpath.js's exact semantics. */
export const FALLBACK: unique symbol = Symbol('fast-path-fallback');

/** A node of fhirpath.js's parse tree (the shape `fhirpath.parse` returns). */
export interface AstNode {
  type: string;
  text?: string;
  children?: AstNode[];
}

/**
 * One step of an inline plan (see InlinePlan): navigate to a member (`_name` holds a
 * primitive's extensions), pick from a choice element the types `selected` marks (keys in
 * model order), or take the first / last item.
 */
export type PlanOp =
  | { op: 'member'; name: string; primitive: boolean }
  | { op: 'choice'; keys: string[]; selected: boolean[] }
  | { op: 'first' }
  | { op: 'last' };

/** What a path plan does with the collection its steps reach. */
export type PlanEnd =
  | { fn: 'count' }
  | { fn: 'exists' }
  | { fn: 'empty' }
  | { fn: 'referenceKey'; type: string | undefined }
  | { fn: 'resourceKey' };

/**
 * A description of a fast expression that the view code generator (`codegen.ts`) can turn
 * into straight-line JS: steps from the focus plus an optional final function, a literal, or
 * %rowIndex. It computes exactly what the `fast` closure computes, for the data shapes the
 * generated code accepts; on any other shape the generated code calls the expression.
 */
export type InlinePlan =
  | { kind: 'path'; ops: PlanOp[]; end?: PlanEnd }
  | { kind: 'literal'; value: string | number | boolean }
  | { kind: 'rowIndex' };

/** What the analyser knows about an expression or sub-expression. */
export interface Analysis {
  type: StaticType;
  fast?: FastFn;
  /** Set alongside `fast` when the expression has an inline form. */
  plan?: InlinePlan;
  /** For an untyped choice element: the plan of its input, so ofType() can pick the type. */
  choicePlan?: InlinePlan;
  /** Why there is no fast closure (first reason found). */
  reason?: string;
  /** For an untyped choice element: the closure of its input, so ofType() can pick the property. */
  choiceInput?: FastFn;
  /** Set for literal terms. */
  literal?: string | number | boolean;
  literalKind?: 'string' | 'integer' | 'decimal' | 'boolean';
}

/** Where an expression is evaluated. */
export interface Scope {
  /** Static type of the focus (`$this`). */
  focusType: StaticType;
  /** True when the focus is the resource being viewed. */
  atRoot: boolean;
  /** The view's resource type. */
  resourceType: string;
  /** When true, elements missing from the model are not reported (used for repeat paths). */
  lenient: boolean;
  /** When false, no fast closures are built. */
  fastEnabled: boolean;
}

/** Functions fhirpath.js 5 implements, plus the two SQL on FHIR functions. */
const KNOWN_FUNCTIONS = new Set(
  (
    'resolve memberOf empty not exists all allTrue anyTrue allFalse anyFalse subsetOf supersetOf ' +
    'isDistinct distinct count where extension select coalesce sort aggregate sum min max avg ' +
    'weight ordinal single first last type ofType is as tail take skip combine union intersect ' +
    'exclude iif trace defineVariable toInteger toLong toDecimal toString toDate toDateTime ' +
    'toTime toBoolean toQuantity hasValue getValue htmlChecks pathname convertsToBoolean ' +
    'convertsToInteger convertsToLong convertsToDecimal convertsToString convertsToDate ' +
    'convertsToDateTime convertsToTime convertsToQuantity indexOf lastIndexOf substring ' +
    'startsWith endsWith contains upper lower replace matches matchesFull replaceMatches length ' +
    'toChars join split trim encode decode escape unescape abs ceiling exp floor ln log power ' +
    'round sqrt truncate lowBoundary highBoundary precision now today timeOfDay yearOf monthOf ' +
    'dayOf hourOf minuteOf secondOf millisecondOf timezoneOffsetOf dateOf timeOf repeat ' +
    'children descendants comparable getResourceKey getReferenceKey'
  ).split(/\s+/),
);
/**
 * Number of arguments each function with arguments takes, as fhirpath.js's invocation table
 * (and ours, for the SQL on FHIR functions) allows: [min, max]. Every other known function
 * takes none. fhirpath.js only warns on a wrong count and gives empty, or throws on every
 * resource, so the count is checked when the view is compiled.
 */
const FUNCTION_ARITY = new Map<string, readonly [number, number]>();
for (const [range, names] of [
  [[0, 1], 'exists toQuantity pathname join round lowBoundary highBoundary getReferenceKey'],
  [
    [1, 1],
    'memberOf all subsetOf supersetOf where extension select ofType is as take skip combine ' +
      'union intersect exclude indexOf lastIndexOf startsWith endsWith contains split encode ' +
      'decode escape unescape log power repeat comparable',
  ],
  [[1, 2], 'aggregate trace defineVariable substring matches matchesFull'],
  [[2, 2], 'replace replaceMatches'],
  [[2, 3], 'iif'],
  [[1, Infinity], 'coalesce'],
  [[0, Infinity], 'sort'],
] as const) {
  for (const name of names.split(' ')) FUNCTION_ARITY.set(name, range);
}

/** What is wrong with calling `name` with `count` arguments, if anything. */
function arityProblem(name: string, count: number): string | undefined {
  const [min, max] = FUNCTION_ARITY.get(name) ?? [0, 0];
  if (count >= min && count <= max) return undefined;
  const plural = (n: number) => `${n} argument${n === 1 ? '' : 's'}`;
  const expected =
    max === 0
      ? 'no arguments'
      : min === max
        ? plural(min)
        : max === Infinity
          ? `at least ${plural(min)}`
          : `${min} to ${max} arguments`;
  return `${name}() takes ${expected}, not ${count}`;
}

/** Functions whose argument is evaluated once per input item (with `$this` = the item). */
const ITERATING_FUNCTIONS = new Set([
  'where',
  'exists',
  'all',
  'select',
  'repeat',
  'sort',
  'aggregate',
  'defineVariable',
]);
const BOOLEAN_FUNCTIONS = new Set(
  (
    'empty not exists all allTrue anyTrue allFalse anyFalse subsetOf supersetOf isDistinct is ' +
    'hasValue startsWith endsWith contains matches matchesFull memberOf comparable ' +
    'convertsToBoolean convertsToInteger convertsToLong convertsToDecimal convertsToString ' +
    'convertsToDate convertsToDateTime convertsToTime convertsToQuantity htmlChecks toBoolean'
  ).split(/\s+/),
);
const STRING_FUNCTIONS = new Set(
  'toString join substring upper lower replace replaceMatches trim encode decode escape unescape getResourceKey getReferenceKey'.split(
    ' ',
  ),
);
const INTEGER_FUNCTIONS = new Set(['count', 'length', 'indexOf', 'lastIndexOf', 'toInteger']);
const SAME_TYPE_FUNCTIONS = new Set([
  'first',
  'last',
  'single',
  'tail',
  'take',
  'skip',
  'distinct',
  'where',
  'trace',
]);

const isArray = Array.isArray;

const IDENTITY: FastFn = (focus) => focus;

const FOCUS_PLAN: InlinePlan = { kind: 'path', ops: [] };

/** `plan` followed by `op`, when `plan` is a path without a final function. */
function extendPlan(plan: InlinePlan | undefined, op: PlanOp): InlinePlan | undefined {
  if (plan?.kind !== 'path' || plan.end !== undefined) return undefined;
  return { kind: 'path', ops: [...plan.ops, op] };
}

/** `plan` ending with `end`, when `plan` is a path without a final function. */
function endPlan(plan: InlinePlan | undefined, end: PlanEnd): InlinePlan | undefined {
  if (plan?.kind !== 'path' || plan.end !== undefined) return undefined;
  return { kind: 'path', ops: plan.ops, end };
}

/** Spreads `{ plan }` only when there is one (exactOptionalPropertyTypes). */
function withPlan(plan: InlinePlan | undefined): { plan?: InlinePlan } {
  return plan ? { plan } : {};
}

// ---------------------------------------------------------------------------------------------
// Runtime helpers of the fast path.

/** One element of one item, normalised: undefined, a single value, or an array of >= 2. */
function memberOfItem(item: unknown, name: string): unknown {
  if (typeof item !== 'object' || item === null) return undefined;
  const value = (item as Record<string, unknown>)[name];
  if (value === undefined || value === null) return undefined;
  if (isArray(value)) {
    const n = value.length;
    if (n === 0) return undefined;
    for (let i = 0; i < n; i++) {
      const item: unknown = value[i];
      if (item === null || item === undefined || isArray(item)) throw FALLBACK;
    }
    return n === 1 ? value[0] : value;
  }
  return value;
}

/** Like memberOfItem for primitive elements, which may carry extensions in `_name`. */
function primitiveOfItem(item: unknown, name: string, meta: string): unknown {
  if (typeof item !== 'object' || item === null) return undefined;
  if ((item as Record<string, unknown>)[meta] !== undefined) throw FALLBACK;
  return memberOfItem(item, name);
}

/** Maps every item of a collection through `each` and flattens, without touching the input. */
function flatMapItems(collection: unknown, each: (item: unknown) => unknown): unknown {
  if (collection === undefined) return undefined;
  if (!isArray(collection)) return each(collection);
  let result: unknown = undefined;
  let owned = false;
  for (let i = 0; i < collection.length; i++) {
    const value = each(collection[i]);
    if (value === undefined) continue;
    if (result === undefined) {
      result = value;
      continue;
    }
    if (!owned) {
      result = isArray(result) ? result.slice() : [result];
      owned = true;
    }
    if (isArray(value)) for (const v of value) (result as unknown[]).push(v);
    else (result as unknown[]).push(value);
  }
  return result;
}

/** Number of items in a compact collection. */
function countOf(collection: unknown): number {
  if (collection === undefined) return 0;
  return isArray(collection) ? collection.length : 1;
}

/** Singleton boolean evaluation: true, false or undefined (empty); anything else falls back. */
function booleanOf(collection: unknown): boolean | undefined {
  if (collection === undefined) return undefined;
  let value = collection;
  if (isArray(collection)) {
    if (collection.length === 0) return undefined;
    if (collection.length > 1) throw FALLBACK;
    value = collection[0];
  }
  if (typeof value !== 'boolean') throw FALLBACK;
  return value;
}

function compact(items: unknown[]): unknown {
  if (items.length === 0) return undefined;
  return items.length === 1 ? items[0] : items;
}

// ---------------------------------------------------------------------------------------------
// Fast closure builders.

/** One member navigation of a fused path. */
interface PathStep {
  name: string;
  /** `_name` for primitive elements (whose extensions live there), else undefined. */
  meta: string | undefined;
  each: (item: unknown) => unknown;
}

/** Fused member chains: a closure built by memberStep, with the steps it walks. */
const memberChains = new WeakMap<FastFn, { input: FastFn; steps: PathStep[] }>();

/**
 * Navigates to element `name`. Consecutive members (`subject.reference`, `code.coding.code`)
 * are fused into one closure that walks all steps in a loop, so a path costs one call.
 */
function memberStep(input: FastFn, name: string, primitive: boolean): FastFn {
  const meta = primitive ? `_${name}` : undefined;
  const step: PathStep = {
    name,
    meta,
    each:
      meta === undefined
        ? (item: unknown) => memberOfItem(item, name)
        : (item: unknown) => primitiveOfItem(item, name, meta),
  };
  const prior = memberChains.get(input);
  const base = prior ? prior.input : input;
  const steps = prior ? [...prior.steps, step] : [step];
  const walk = (start: unknown): unknown => {
    let c = start;
    for (let i = 0; i < steps.length; i++) {
      if (c === undefined) return undefined;
      const s = steps[i] as PathStep;
      if (isArray(c)) c = flatMapItems(c, s.each);
      else c = s.meta === undefined ? memberOfItem(c, s.name) : primitiveOfItem(c, s.name, s.meta);
    }
    return c;
  };
  const fused: FastFn =
    base === IDENTITY
      ? (focus) => walk(focus)
      : (focus, rowIndex, resource) => walk(base(focus, rowIndex, resource));
  memberChains.set(fused, { input: base, steps });
  return fused;
}

/**
 * Reads a choice element the way fhirpath.js does: the first type, in model order, whose
 * property (or `_property`) is present is the element's value; `selected` says which types
 * the expression wants (all of them for a bare `value`, the matching ones for ofType()).
 */
function choiceStep(input: FastFn, keys: string[], selected: boolean[]): FastFn {
  const metas = keys.map((k) => `_${k}`);
  const each = (item: unknown) => {
    if (typeof item !== 'object' || item === null) return undefined;
    const record = item as Record<string, unknown>;
    for (let i = 0; i < keys.length; i++) {
      if (record[metas[i] as string] !== undefined) throw FALLBACK;
      if (record[keys[i] as string] === undefined) continue;
      return selected[i] ? memberOfItem(record, keys[i] as string) : undefined;
    }
    return undefined;
  };
  if (input === IDENTITY) return (focus) => flatMapItems(focus, each);
  return (focus, rowIndex, resource) => flatMapItems(input(focus, rowIndex, resource), each);
}

function choiceKeys(choice: ChoiceType): string[] {
  const base = choice.path.slice(choice.path.lastIndexOf('.') + 1);
  return choice.types.map((t) => base + choiceSuffix(t));
}

// ---------------------------------------------------------------------------------------------
// The analyser.

function identifierText(node: AstNode | undefined): string {
  const text = node?.text ?? '';
  return text.startsWith('`') && text.endsWith('`') ? text.slice(1, -1) : text;
}

/** Text of a type specifier argument such as `Quantity`, `FHIR.string`, `System.Boolean`. */
function typeArgumentText(node: AstNode): string {
  if (node.text !== undefined) return node.text;
  const parts: string[] = [];
  const walk = (n: AstNode) => {
    if (n.type === 'Identifier' && n.text !== undefined) parts.push(identifierText(n));
    else for (const c of n.children ?? []) walk(c);
  };
  walk(node);
  return parts.join('.');
}

function unescapeString(literal: string): string {
  const body = literal.slice(1, -1);
  return body.replace(/\\(u[0-9a-fA-F]{4}|.)/g, (_, esc: string) => {
    switch (esc.charAt(0)) {
      case 'n':
        return '\n';
      case 'r':
        return '\r';
      case 't':
        return '\t';
      case 'f':
        return '\f';
      case 'u':
        return String.fromCharCode(parseInt(esc.slice(1), 16));
      default:
        return esc;
    }
  });
}

function slow(type: StaticType, reason: string): Analysis {
  return { type, reason };
}

/** Analyses one expression; collects problems in `issues` and usage flags. */
export class ExpressionAnalyzer {
  readonly issues: string[] = [];
  usesRowIndex = false;
  usesResourceVariable = false;

  /** Analyses a parse tree (the value `fhirpath.parse` returns) in a scope. */
  analyze(node: AstNode, scope: Scope): Analysis {
    const result = this.node(node, scope);
    if (!scope.fastEnabled) return { type: result.type, reason: 'fast path disabled' };
    return result;
  }

  private node(node: AstNode, scope: Scope): Analysis {
    const children = node.children ?? [];
    switch (node.type) {
      case 'EntireExpression':
        return children[0] ? this.node(children[0], scope) : slow(undefined, 'empty expression');
      case 'TermExpression':
        return this.term(children[0] as AstNode, scope);
      case 'InvocationExpression': {
        const input = this.node(children[0] as AstNode, scope);
        return this.invoke(children[1] as AstNode, input, scope, false);
      }
      case 'IndexerExpression':
        return this.indexer(children, scope);
      case 'EqualityExpression':
        return this.equality(node, children, scope);
      case 'AndExpression':
      case 'OrExpression':
        return this.logic(node, children, scope);
      case 'ImpliesExpression':
      case 'InequalityExpression':
      case 'MembershipExpression':
        this.all(children, scope);
        return slow('System.Boolean', `${node.text ?? node.type} is evaluated by fhirpath.js`);
      case 'TypeExpression': {
        this.node(children[0] as AstNode, scope);
        const spec = typeArgumentText(children[1] as AstNode);
        if (!resolveTypeSpecifier(spec))
          this.issues.push(`unknown type '${spec}' after ${node.text}`);
        return slow(node.text === 'is' ? 'System.Boolean' : undefined, `${node.text} operator`);
      }
      default:
        this.all(children, scope);
        return slow(undefined, `${describeNode(node)} is evaluated by fhirpath.js`);
    }
  }

  private all(nodes: AstNode[], scope: Scope): void {
    for (const n of nodes) this.node(n, scope);
  }

  private term(term: AstNode, scope: Scope): Analysis {
    const children = term.children ?? [];
    switch (term.type) {
      case 'InvocationTerm':
        return this.invoke(
          children[0] as AstNode,
          { type: scope.focusType, fast: IDENTITY, plan: FOCUS_PLAN },
          scope,
          true,
        );
      case 'LiteralTerm':
        return literal(children[0] as AstNode);
      case 'ExternalConstantTerm': {
        const constant = children[0]?.children?.[0];
        const name =
          constant?.type === 'StringLiteral' && constant.text
            ? unescapeString(constant.text)
            : identifierText(constant);
        if (name === 'rowIndex') {
          this.usesRowIndex = true;
          return {
            type: 'System.Integer',
            fast: (_focus, rowIndex) => rowIndex,
            plan: { kind: 'rowIndex' },
          };
        }
        if (name === 'resource' || name === 'rootResource') this.usesResourceVariable = true;
        return slow(undefined, `%${name} is evaluated by fhirpath.js`);
      }
      case 'ParenthesizedTerm':
        return this.node(children[0] as AstNode, scope);
      default:
        this.all(children, scope);
        return slow(undefined, `${describeNode(term)} is evaluated by fhirpath.js`);
    }
  }

  private invoke(invocation: AstNode, input: Analysis, scope: Scope, first: boolean): Analysis {
    const children = invocation.children ?? [];
    switch (invocation.type) {
      case 'MemberInvocation':
        return this.member(identifierText(children[0]), input, scope, first);
      case 'FunctionInvocation': {
        const functn = children[0] as AstNode;
        const head = functn.children?.[0];
        // sort() is its own grammar rule: the node has the name as text and its arguments
        // (SortDirectionArgument: an expression, then asc/desc) as children, no Identifier.
        if (head?.type !== 'Identifier') {
          const params = (functn.children ?? []).map((arg) => arg.children?.[0] ?? arg);
          return this.call(functn.text ?? '', params, input, scope);
        }
        const name = identifierText(head);
        const params = functn.children?.[1]?.children ?? [];
        return this.call(name, params, input, scope);
      }
      case 'ThisInvocation':
        return { type: scope.focusType, fast: IDENTITY, plan: FOCUS_PLAN };
      default:
        return slow(undefined, `${describeNode(invocation)} is evaluated by fhirpath.js`);
    }
  }

  private member(name: string, input: Analysis, scope: Scope, first: boolean): Analysis {
    if (first && /^[A-Z]/.test(name)) {
      // `Observation.code`: a leading type name filters the focus by type.
      if (scope.atRoot && name === scope.resourceType) {
        return {
          type: scope.resourceType,
          ...(input.fast ? { fast: input.fast, ...withPlan(input.plan) } : {}),
        };
      }
      if (isResourceType(name) || name === 'Resource' || name === 'DomainResource') {
        return slow(name, `type name ${name} at the start of a path`);
      }
    }
    const type = input.type;
    if (type === undefined) {
      return slow(undefined, input.reason ?? `type of the input of '${name}' is unknown`);
    }
    if (isChoice(type)) {
      return slow(undefined, `'${name}' after ${describeType(type)} needs ofType()`);
    }
    const found = lookupMember(type, name);
    switch (found.kind) {
      case 'missing':
        if (!scope.lenient)
          this.issues.push(`'${name}' is not an element of ${describeType(type)}`);
        return slow(undefined, `unknown element ${name}`);
      case 'unknown':
        return slow(undefined, `elements of ${type} are only known at run time`);
      case 'choice': {
        if (!input.fast) return { type: found.type, reason: input.reason ?? 'slow input' };
        const keys = choiceKeys(found.type);
        return {
          type: found.type,
          fast: choiceStep(
            input.fast,
            keys,
            keys.map(() => true),
          ),
          ...withPlan(
            extendPlan(input.plan, {
              op: 'choice',
              keys,
              selected: keys.map(() => true),
            }),
          ),
          choiceInput: input.fast,
          ...(input.plan ? { choicePlan: input.plan } : {}),
        };
      }
      case 'element':
        if (!input.fast) return { type: found.type, reason: input.reason ?? 'slow input' };
        return {
          type: found.type,
          fast: memberStep(input.fast, name, found.primitive),
          ...withPlan(extendPlan(input.plan, { op: 'member', name, primitive: found.primitive })),
        };
    }
  }

  private itemScope(input: Analysis, scope: Scope): Scope {
    const itemType = isChoice(input.type) ? undefined : input.type;
    return {
      ...scope,
      focusType: itemType,
      atRoot: false,
      lenient: scope.lenient || itemType === undefined,
    };
  }

  private call(name: string, params: AstNode[], input: Analysis, scope: Scope): Analysis {
    if (!KNOWN_FUNCTIONS.has(name)) {
      this.issues.push(`unknown FHIRPath function '${name}()'`);
      return slow(undefined, `unknown function ${name}`);
    }
    const arity = arityProblem(name, params.length);
    if (arity !== undefined) {
      this.issues.push(arity);
      return slow(undefined, arity);
    }
    switch (name) {
      case 'ofType':
        return this.ofType(params, input);
      case 'getReferenceKey':
        return this.getReferenceKey(params, input);
      case 'is':
      case 'as': {
        const spec = params[0] ? typeArgumentText(params[0]) : '';
        if (!resolveTypeSpecifier(spec)) this.issues.push(`unknown type '${spec}' in ${name}()`);
        return slow(
          name === 'is' ? 'System.Boolean' : undefined,
          `${name}() is evaluated by fhirpath.js`,
        );
      }
      default:
        break;
    }
    const paramScope = ITERATING_FUNCTIONS.has(name) ? this.itemScope(input, scope) : scope;
    const args = params.map((p) => this.node(p, paramScope));
    const fast = input.fast;
    const resultType = (): StaticType => {
      if (BOOLEAN_FUNCTIONS.has(name)) return 'System.Boolean';
      if (STRING_FUNCTIONS.has(name)) return 'System.String';
      if (INTEGER_FUNCTIONS.has(name)) return 'System.Integer';
      if (SAME_TYPE_FUNCTIONS.has(name)) return input.type;
      if (name === 'extension') return 'Extension';
      return undefined;
    };
    const notFast = (why: string): Analysis => slow(resultType(), why);
    if (!fast) return notFast(input.reason ?? `input of ${name}() is evaluated by fhirpath.js`);
    switch (name) {
      case 'first':
      case 'last':
      case 'empty':
      case 'count':
      case 'getResourceKey':
        if (args.length > 0) return notFast(`${name}() takes no argument`);
        return {
          type: resultType(),
          fast: simpleFunction(name, fast),
          ...withPlan(simplePlan(name, input.plan)),
        };
      case 'exists': {
        if (args.length === 0)
          return {
            type: 'System.Boolean',
            fast: simpleFunction('exists', fast),
            ...withPlan(endPlan(input.plan, { fn: 'exists' })),
          };
        const criteria = args[0] as Analysis;
        if (!criteria.fast || !isBooleanLike(criteria.type)) {
          return notFast(criteria.reason ?? 'exists() criteria is not a simple boolean');
        }
        const filter = whereStep(fast, criteria.fast);
        return { type: 'System.Boolean', fast: simpleFunction('exists', filter) };
      }
      case 'not':
        if (!isBooleanLike(input.type)) return notFast('not() on a value that is not boolean');
        return {
          type: 'System.Boolean',
          fast: (focus, rowIndex, resource) => {
            const value = booleanOf(fast(focus, rowIndex, resource));
            return value === undefined ? undefined : !value;
          },
        };
      case 'where': {
        const criteria = args[0];
        if (!criteria?.fast || !isBooleanLike(criteria.type)) {
          return notFast(criteria?.reason ?? 'where() criteria is not a simple boolean');
        }
        return { type: input.type, fast: whereStep(fast, criteria.fast) };
      }
      case 'join': {
        if (!isStringLike(input.type)) return notFast('join() on values that are not strings');
        const separator = args[0];
        if (separator && separator.literalKind !== 'string') {
          return notFast('join() separator is not a string literal');
        }
        const sep = separator ? (separator.literal as string) : '';
        return { type: 'System.String', fast: joinStep(fast, sep) };
      }
      case 'extension': {
        const url = args[0];
        if (url?.literalKind !== 'string' || isChoice(input.type) || input.type === undefined) {
          return notFast('extension() needs a literal url on a known type');
        }
        const extensions = memberStep(fast, 'extension', false);
        const wanted = url.literal as string;
        const each = (item: unknown) =>
          typeof item === 'object' && item !== null && (item as { url?: unknown }).url === wanted
            ? item
            : undefined;
        return {
          type: 'Extension',
          fast: (focus, rowIndex, resource) =>
            flatMapItems(extensions(focus, rowIndex, resource), each),
        };
      }
      default:
        return notFast(`${name}() is evaluated by fhirpath.js`);
    }
  }

  private ofType(params: AstNode[], input: Analysis): Analysis {
    const text = params[0] ? typeArgumentText(params[0]) : '';
    const spec = resolveTypeSpecifier(text);
    if (!spec) {
      this.issues.push(`unknown type '${text}' in ofType()`);
      return slow(undefined, 'unknown type');
    }
    const type = input.type;
    if (type === undefined) return slow(undefined, 'ofType() on a value of unknown type');
    if (isChoice(type)) {
      const matching = type.types.filter((t) => isSubtypeOf(t, spec.name));
      const resultType = matching.length === 1 ? matching[0] : undefined;
      // `Quantity` names both FHIR.Quantity and System.Quantity, which fhirpath.js treats alike.
      if (spec.namespace === 'System') {
        return slow(resultType, `ofType(${text}) names a FHIRPath system type`);
      }
      if (!input.choiceInput) return slow(resultType, input.reason ?? 'slow input');
      const keys = choiceKeys(type);
      const selected = type.types.map((t) => matching.includes(t));
      const step = choiceStep(input.choiceInput, keys, selected);
      return {
        type: resultType,
        fast: step,
        ...withPlan(extendPlan(input.choicePlan, { op: 'choice', keys, selected })),
      };
    }
    if (spec.namespace === 'System' || type.startsWith('System.')) {
      return slow(undefined, `ofType(${text}) on ${type} is evaluated by fhirpath.js`);
    }
    if ((type === 'Resource' || type === 'DomainResource') && isResourceType(spec.name)) {
      if (!input.fast) return slow(spec.name, input.reason ?? 'slow input');
      const fast = input.fast;
      const wanted = spec.name;
      const each = (item: unknown) =>
        typeof item === 'object' &&
        item !== null &&
        (item as { resourceType?: unknown }).resourceType === wanted
          ? item
          : undefined;
      return {
        type: spec.name,
        fast: (focus, rowIndex, resource) => flatMapItems(fast(focus, rowIndex, resource), each),
      };
    }
    if (isSubtypeOf(type, spec.name)) {
      return input.fast
        ? { type, fast: input.fast, ...withPlan(input.plan) }
        : slow(type, input.reason ?? 'slow input');
    }
    return slow(undefined, `ofType(${text}) on ${type} is evaluated by fhirpath.js`);
  }

  private getReferenceKey(params: AstNode[], input: Analysis): Analysis {
    let expected: string | undefined;
    if (params[0]) {
      expected = unquoteTypeArgument(typeArgumentText(params[0]));
      if (!isResourceType(expected)) {
        this.issues.push(`getReferenceKey(${expected}): '${expected}' is not a FHIR resource type`);
        return slow('System.String', 'bad resource type');
      }
    }
    const type = input.type;
    if (typeof type === 'string' && type !== 'Reference') {
      this.issues.push(`getReferenceKey() applies to Reference elements, not ${type}`);
      return slow('System.String', 'not a Reference');
    }
    if (!input.fast || type !== 'Reference') {
      return slow('System.String', input.reason ?? 'input type is not known to be Reference');
    }
    const fast = input.fast;
    const each = (item: unknown) => referenceKeyOf(item, expected);
    return {
      type: 'System.String',
      fast: (focus, rowIndex, resource) => flatMapItems(fast(focus, rowIndex, resource), each),
      ...withPlan(endPlan(input.plan, { fn: 'referenceKey', type: expected })),
    };
  }

  private indexer(children: AstNode[], scope: Scope): Analysis {
    const base = this.node(children[0] as AstNode, scope);
    const index = this.node(children[1] as AstNode, scope);
    const type = isChoice(base.type) ? undefined : base.type;
    if (!base.fast) return slow(type, base.reason ?? 'slow input');
    if (index.literalKind !== 'integer') return slow(type, 'index is not an integer literal');
    const fast = base.fast;
    const n = index.literal as number;
    return {
      type,
      fast: (focus, rowIndex, resource) => {
        const c = fast(focus, rowIndex, resource);
        if (c === undefined) return undefined;
        if (isArray(c)) return c[n];
        return n === 0 ? c : undefined;
      },
    };
  }

  private equality(node: AstNode, children: AstNode[], scope: Scope): Analysis {
    const left = this.node(children[0] as AstNode, scope);
    const right = this.node(children[1] as AstNode, scope);
    const op = node.text;
    if (op !== '=' && op !== '!=')
      return slow('System.Boolean', `${op} is evaluated by fhirpath.js`);
    const [path, lit] = left.literalKind ? [right, left] : [left, right];
    if (!lit.literalKind || path.literalKind) {
      return slow('System.Boolean', 'comparison of two paths or two literals');
    }
    if (!path.fast) return slow('System.Boolean', path.reason ?? 'slow operand');
    const compatible =
      (lit.literalKind === 'string' && isStringLike(path.type)) ||
      (lit.literalKind === 'integer' && isIntegerLike(path.type)) ||
      (lit.literalKind === 'boolean' && isBooleanLike(path.type));
    if (!compatible) {
      return slow(
        'System.Boolean',
        `comparing ${describeType(path.type)} with a ${lit.literalKind}`,
      );
    }
    const fast = path.fast;
    const value = lit.literal;
    const negate = op === '!=';
    return {
      type: 'System.Boolean',
      fast: (focus, rowIndex, resource) => {
        const c = fast(focus, rowIndex, resource);
        if (c === undefined) return undefined;
        if (isArray(c)) {
          if (c.length === 0) return undefined;
          if (c.length > 1) return negate;
          return (c[0] === value) !== negate;
        }
        return (c === value) !== negate;
      },
    };
  }

  private logic(node: AstNode, children: AstNode[], scope: Scope): Analysis {
    const left = this.node(children[0] as AstNode, scope);
    const right = this.node(children[1] as AstNode, scope);
    const op = node.text;
    if (op !== 'and' && op !== 'or')
      return slow('System.Boolean', `${op} is evaluated by fhirpath.js`);
    if (!left.fast || !right.fast) {
      return slow('System.Boolean', left.reason ?? right.reason ?? 'slow operand');
    }
    if (!isBooleanLike(left.type) || !isBooleanLike(right.type)) {
      return slow('System.Boolean', `${op} on operands that are not boolean`);
    }
    const l = left.fast;
    const r = right.fast;
    if (op === 'and') {
      return {
        type: 'System.Boolean',
        fast: (focus, rowIndex, resource) => {
          const a = booleanOf(l(focus, rowIndex, resource));
          const b = booleanOf(r(focus, rowIndex, resource));
          if (a === false || b === false) return false;
          if (a === true && b === true) return true;
          return undefined;
        },
      };
    }
    return {
      type: 'System.Boolean',
      fast: (focus, rowIndex, resource) => {
        const a = booleanOf(l(focus, rowIndex, resource));
        const b = booleanOf(r(focus, rowIndex, resource));
        if (a === true || b === true) return true;
        if (a === false && b === false) return false;
        return undefined;
      },
    };
  }
}

/** The analysis of a string, number or boolean literal: its value, always. */
function constant(
  type: string,
  value: string | number | boolean,
  literalKind: NonNullable<Analysis['literalKind']>,
): Analysis {
  return { type, fast: () => value, plan: { kind: 'literal', value }, literal: value, literalKind };
}

function literal(node: AstNode): Analysis {
  const text = node.text ?? '';
  switch (node.type) {
    case 'StringLiteral':
      return constant('System.String', unescapeString(text), 'string');
    case 'NumberLiteral': {
      const integer = /^\d+$/.test(text);
      return integer
        ? constant('System.Integer', Number(text), 'integer')
        : constant('System.Decimal', Number(text), 'decimal');
    }
    case 'BooleanLiteral':
      return constant('System.Boolean', text === 'true', 'boolean');
    case 'NullLiteral':
      return { type: undefined, fast: () => undefined };
    case 'DateLiteral':
      return slow('System.Date', 'date literal');
    case 'DateTimeLiteral':
      return slow('System.DateTime', 'dateTime literal');
    case 'TimeLiteral':
      return slow('System.Time', 'time literal');
    case 'QuantityLiteral':
      return slow('System.Quantity', 'quantity literal');
    default:
      return slow(undefined, `${describeNode(node)} literal`);
  }
}

/** The inline plan of first(), last(), empty(), count() or getResourceKey() on `input`. */
function simplePlan(name: string, input: InlinePlan | undefined): InlinePlan | undefined {
  switch (name) {
    case 'first':
    case 'last':
      return extendPlan(input, { op: name });
    case 'empty':
    case 'count':
      return endPlan(input, { fn: name });
    case 'getResourceKey':
      return endPlan(input, { fn: 'resourceKey' });
    default:
      return undefined;
  }
}

function simpleFunction(name: string, input: FastFn): FastFn {
  switch (name) {
    case 'first':
      return (focus, rowIndex, resource) => {
        const c = input(focus, rowIndex, resource);
        return isArray(c) ? c[0] : c;
      };
    case 'last':
      return (focus, rowIndex, resource) => {
        const c = input(focus, rowIndex, resource);
        return isArray(c) ? c[c.length - 1] : c;
      };
    case 'exists':
      return (focus, rowIndex, resource) => countOf(input(focus, rowIndex, resource)) > 0;
    case 'empty':
      return (focus, rowIndex, resource) => countOf(input(focus, rowIndex, resource)) === 0;
    case 'count':
      return (focus, rowIndex, resource) => countOf(input(focus, rowIndex, resource));
    case 'getResourceKey':
      return (focus, rowIndex, resource) => {
        const c = input(focus, rowIndex, resource);
        if (c === undefined) return undefined;
        // The usual case: called on the resource itself.
        if (c === resource) return resourceKeyOf(resource);
        return compact(resourceKeysOf(isArray(c) ? c : [c], resource));
      };
    default:
      throw new Error(`no fast form for ${name}()`);
  }
}

function whereStep(input: FastFn, criteria: FastFn): FastFn {
  return (focus, rowIndex, resource) => {
    const c = input(focus, rowIndex, resource);
    if (c === undefined) return undefined;
    if (!isArray(c)) return booleanOf(criteria(c, rowIndex, resource)) === true ? c : undefined;
    let out: unknown[] | undefined;
    for (let i = 0; i < c.length; i++) {
      if (booleanOf(criteria(c[i], rowIndex, resource)) === true) (out ??= []).push(c[i]);
    }
    return out === undefined ? undefined : compact(out);
  };
}

function joinStep(input: FastFn, separator: string): FastFn {
  return (focus, rowIndex, resource) => {
    const c = input(focus, rowIndex, resource);
    if (c === undefined) return '';
    if (!isArray(c)) {
      if (typeof c !== 'string') throw FALLBACK;
      return c;
    }
    for (const item of c) if (typeof item !== 'string') throw FALLBACK;
    return c.join(separator);
  };
}

function describeNode(node: AstNode): string {
  return node.text
    ? `'${node.text}'`
    : node.type.replace(/(Expression|Term|Invocation)$/, '').toLowerCase();
}
