// Structural validation of a ViewDefinition (SQL on FHIR v2): shapes, property names, column
// names and their uniqueness, unionAll consistency. It turns untrusted JSON into a small typed
// tree that the compiler walks, and collects every problem with its path in the view so a
// data manager can fix a view in one pass. FHIRPath checks happen later, in the compiler.
import { parseConstants, type ViewConstant } from './constants.js';
import type { ViewIssue } from './errors.js';

/** A column after validation. */
export interface ColumnDef {
  /** Path of this column inside the view, e.g. `select[0].column[1]`. */
  viewPath: string;
  name: string;
  /** FHIRPath expression as written (constants not yet substituted). */
  expression: string;
  type?: string;
  collection: boolean;
  description?: string;
}

/** A selection structure after validation. */
export interface SelectDef {
  viewPath: string;
  columns: ColumnDef[];
  select: SelectDef[];
  unionAll: SelectDef[];
  forEach?: string;
  forEachOrNull?: string;
  repeat?: string[];
}

/** A `where` entry after validation. */
export interface WhereDef {
  viewPath: string;
  expression: string;
}

/** A ViewDefinition after structural validation. */
export interface ViewDefinitionModel {
  name?: string;
  resource: string;
  constants: Map<string, ViewConstant>;
  select: SelectDef[];
  where: WhereDef[];
}

const NAME_RE = /^[A-Za-z][A-Za-z0-9_]*$/;
const STATUSES = ['draft', 'active', 'retired', 'unknown'];

const VIEW_KEYS = [
  'resourceType',
  'id',
  'meta',
  'implicitRules',
  'language',
  'text',
  'contained',
  'extension',
  'modifierExtension',
  'url',
  'identifier',
  'version',
  'name',
  'title',
  'status',
  'experimental',
  'date',
  'publisher',
  'contact',
  'description',
  'useContext',
  'jurisdiction',
  'purpose',
  'copyright',
  'resource',
  'resourceVersion',
  'fhirVersion',
  'profile',
  'constant',
  'select',
  'where',
];
const SELECT_KEYS = [
  'id',
  'extension',
  'modifierExtension',
  'column',
  'select',
  'forEach',
  'forEachOrNull',
  'repeat',
  'unionAll',
];
const COLUMN_KEYS = [
  'id',
  'extension',
  'modifierExtension',
  'name',
  'path',
  'type',
  'collection',
  'description',
  'tag',
];
const WHERE_KEYS = ['id', 'extension', 'modifierExtension', 'path', 'description'];

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j] as number;
      row[j] = Math.min(
        (row[j] as number) + 1,
        (row[j - 1] as number) + 1,
        prev + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
      prev = tmp;
    }
  }
  return row[b.length] as number;
}

function checkKeys(record: Json, allowed: readonly string[], path: string, issues: ViewIssue[]) {
  for (const key of Object.keys(record)) {
    if (allowed.includes(key)) continue;
    const suggestion = allowed.find(
      (k) => k.toLowerCase() === key.toLowerCase() || editDistance(k, key) <= 2,
    );
    issues.push({
      path: path ? `${path}.${key}` : key,
      message: `unknown property '${key}'${suggestion ? ` (did you mean '${suggestion}'?)` : ''}`,
    });
  }
}

function readExpression(
  record: Json,
  key: string,
  path: string,
  issues: ViewIssue[],
): string | undefined {
  const value = record[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.trim() === '') {
    issues.push({ path: `${path}.${key}`, message: 'must be a non-empty FHIRPath expression' });
    return undefined;
  }
  return value;
}

function parseColumn(raw: unknown, path: string, issues: ViewIssue[]): ColumnDef | undefined {
  if (!isObject(raw)) {
    issues.push({ path, message: 'must be an object with name and path' });
    return undefined;
  }
  checkKeys(raw, COLUMN_KEYS, path, issues);
  const expression = readExpression(raw, 'path', path, issues);
  if (raw.path === undefined) issues.push({ path: `${path}.path`, message: 'is required' });
  const name = raw.name;
  let validName: string | undefined;
  if (name === undefined) {
    issues.push({ path: `${path}.name`, message: 'is required' });
  } else if (typeof name !== 'string' || !NAME_RE.test(name)) {
    issues.push({
      path: `${path}.name`,
      message: 'must be letters, digits and _ starting with a letter (a database column name)',
    });
  } else {
    validName = name;
  }
  if (raw.collection !== undefined && typeof raw.collection !== 'boolean') {
    issues.push({ path: `${path}.collection`, message: 'must be true or false' });
  }
  if (raw.type !== undefined && (typeof raw.type !== 'string' || raw.type === '')) {
    issues.push({ path: `${path}.type`, message: 'must be a FHIR type name, e.g. string' });
  }
  if (raw.tag !== undefined && !Array.isArray(raw.tag)) {
    issues.push({ path: `${path}.tag`, message: 'must be an array of { name, value }' });
  }
  if (validName === undefined || expression === undefined) return undefined;
  return {
    viewPath: path,
    name: validName,
    expression,
    ...(typeof raw.type === 'string' && raw.type !== '' ? { type: raw.type } : {}),
    collection: raw.collection === true,
    ...(typeof raw.description === 'string' ? { description: raw.description } : {}),
  };
}

function parseSelectList(raw: unknown, path: string, issues: ViewIssue[]): SelectDef[] {
  if (!Array.isArray(raw)) {
    issues.push({ path, message: 'must be an array of selection structures' });
    return [];
  }
  if (raw.length === 0) {
    issues.push({ path, message: 'must not be empty' });
    return [];
  }
  const out: SelectDef[] = [];
  raw.forEach((item: unknown, index) => {
    const select = parseSelect(item, `${path}[${index}]`, issues);
    if (select) out.push(select);
  });
  return out;
}

function parseSelect(raw: unknown, path: string, issues: ViewIssue[]): SelectDef | undefined {
  if (!isObject(raw)) {
    issues.push({ path, message: 'must be an object (a selection structure)' });
    return undefined;
  }
  checkKeys(raw, SELECT_KEYS, path, issues);
  const iterators = ['forEach', 'forEachOrNull', 'repeat'].filter((k) => raw[k] !== undefined);
  if (iterators.length > 1) {
    issues.push({ path, message: `use only one of ${iterators.join(', ')} in one select` });
  }
  const forEach = readExpression(raw, 'forEach', path, issues);
  const forEachOrNull = readExpression(raw, 'forEachOrNull', path, issues);
  let repeat: string[] | undefined;
  if (raw.repeat !== undefined) {
    if (
      !Array.isArray(raw.repeat) ||
      raw.repeat.length === 0 ||
      !raw.repeat.every((r) => typeof r === 'string' && r.trim() !== '')
    ) {
      issues.push({
        path: `${path}.repeat`,
        message: 'must be a non-empty array of FHIRPath expressions',
      });
    } else {
      repeat = raw.repeat as string[];
    }
  }
  const columns: ColumnDef[] = [];
  if (raw.column !== undefined) {
    if (!Array.isArray(raw.column) || raw.column.length === 0) {
      issues.push({ path: `${path}.column`, message: 'must be a non-empty array of columns' });
    } else {
      raw.column.forEach((c: unknown, index) => {
        const column = parseColumn(c, `${path}.column[${index}]`, issues);
        if (column) columns.push(column);
      });
    }
  }
  const select =
    raw.select === undefined ? [] : parseSelectList(raw.select, `${path}.select`, issues);
  const unionAll =
    raw.unionAll === undefined ? [] : parseSelectList(raw.unionAll, `${path}.unionAll`, issues);
  if (raw.column === undefined && raw.select === undefined && raw.unionAll === undefined) {
    issues.push({ path, message: 'has no column, select or unionAll, so it produces nothing' });
  }
  return {
    viewPath: path,
    columns,
    select,
    unionAll,
    ...(forEach !== undefined ? { forEach } : {}),
    ...(forEachOrNull !== undefined ? { forEachOrNull } : {}),
    ...(repeat !== undefined ? { repeat } : {}),
  };
}

/** A column of the view's output, in output order. */
export interface OutputColumn {
  name: string;
  type?: string;
  collection: boolean;
  /** Where the column is defined in the view (the first unionAll branch for union columns). */
  viewPath: string;
}

/**
 * Lists the columns a selection produces, in output order (own columns, nested selects, then
 * the unionAll columns), checking that names are unique across the view and that every
 * unionAll branch produces the same columns.
 */
export function collectColumns(
  select: SelectDef,
  seen: Map<string, string>,
  issues: ViewIssue[],
): OutputColumn[] {
  const out: OutputColumn[] = [];
  const add = (column: OutputColumn) => {
    const previous = seen.get(column.name);
    if (previous !== undefined) {
      issues.push({
        path: `${column.viewPath}.name`,
        message: `column '${column.name}' is already defined at ${previous}`,
      });
      return;
    }
    seen.set(column.name, column.viewPath);
    out.push(column);
  };
  for (const column of select.columns) {
    add({
      name: column.name,
      collection: column.collection,
      viewPath: column.viewPath,
      ...(column.type !== undefined ? { type: column.type } : {}),
    });
  }
  for (const child of select.select) {
    for (const column of collectColumns(child, new Map(seen), issues)) add(column);
  }
  if (select.unionAll.length > 0) {
    const branches = select.unionAll.map((branch) => collectColumns(branch, new Map(seen), issues));
    const first = branches[0] as OutputColumn[];
    const firstNames = first.map((c) => c.name).join(', ');
    branches.slice(1).forEach((branch, i) => {
      const names = branch.map((c) => c.name).join(', ');
      const branchPath = `${select.viewPath}.unionAll[${i + 1}]`;
      if (names !== firstNames) {
        issues.push({
          path: branchPath,
          message: `unionAll branches must produce the same columns in the same order: unionAll[0] has (${firstNames}), this branch has (${names})`,
        });
        return;
      }
      branch.forEach((column, j) => {
        const reference = first[j] as OutputColumn;
        if (
          column.type !== undefined &&
          reference.type !== undefined &&
          column.type !== reference.type
        ) {
          issues.push({
            path: column.viewPath,
            message: `column '${column.name}' has type ${column.type} here but ${reference.type} in unionAll[0]`,
          });
        }
        if (column.collection !== reference.collection) {
          issues.push({
            path: column.viewPath,
            message: `column '${column.name}' is ${column.collection ? '' : 'not '}a collection here but ${reference.collection ? 'is' : 'not'} in unionAll[0]`,
          });
        }
      });
    });
    for (const column of first) add(column);
  }
  return out;
}

/**
 * Validates the shape of a ViewDefinition. Returns the typed model and the problems found;
 * the model is only meaningful when no problems were found.
 */
export function parseViewDefinition(raw: unknown): {
  model: ViewDefinitionModel;
  columns: OutputColumn[];
  issues: ViewIssue[];
} {
  const issues: ViewIssue[] = [];
  const empty: ViewDefinitionModel = {
    resource: '',
    constants: new Map(),
    select: [],
    where: [],
  };
  if (!isObject(raw)) {
    issues.push({ path: '', message: 'a ViewDefinition must be a JSON object' });
    return { model: empty, columns: [], issues };
  }
  checkKeys(raw, VIEW_KEYS, '', issues);
  if (raw.resourceType !== undefined && raw.resourceType !== 'ViewDefinition') {
    issues.push({ path: 'resourceType', message: "must be 'ViewDefinition'" });
  }
  let name: string | undefined;
  if (raw.name !== undefined) {
    if (typeof raw.name !== 'string' || raw.name === '') {
      issues.push({ path: 'name', message: 'must be a non-empty string' });
    } else {
      name = raw.name;
    }
  }
  if (raw.status !== undefined && !STATUSES.includes(raw.status as string)) {
    issues.push({ path: 'status', message: `must be one of ${STATUSES.join(', ')}` });
  }
  let resource = '';
  if (raw.resource === undefined) {
    issues.push({
      path: 'resource',
      message: 'is required (the FHIR resource type, e.g. Patient)',
    });
  } else if (typeof raw.resource !== 'string' || raw.resource === '') {
    issues.push({ path: 'resource', message: 'must be a FHIR resource type name, e.g. Patient' });
  } else {
    resource = raw.resource;
  }
  const constants = parseConstants(raw.constant, issues);
  let select: SelectDef[] = [];
  if (raw.select === undefined) {
    issues.push({ path: 'select', message: 'is required (at least one selection structure)' });
  } else {
    select = parseSelectList(raw.select, 'select', issues);
  }
  const where: WhereDef[] = [];
  if (raw.where !== undefined) {
    if (!Array.isArray(raw.where)) {
      issues.push({ path: 'where', message: 'must be an array of { path }' });
    } else {
      raw.where.forEach((w: unknown, index) => {
        const path = `where[${index}]`;
        if (!isObject(w)) {
          issues.push({ path, message: 'must be an object with a path' });
          return;
        }
        checkKeys(w, WHERE_KEYS, path, issues);
        const expression = readExpression(w, 'path', path, issues);
        if (w.path === undefined) issues.push({ path: `${path}.path`, message: 'is required' });
        if (expression !== undefined) where.push({ viewPath: `${path}.path`, expression });
      });
    }
  }
  const seen = new Map<string, string>();
  const columns: OutputColumn[] = [];
  select.forEach((s) => {
    for (const column of collectColumns(s, seen, issues)) columns.push(column);
  });
  return {
    model: { ...(name !== undefined ? { name } : {}), resource, constants, select, where },
    columns,
    issues,
  };
}
