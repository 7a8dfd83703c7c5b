// Static FHIR R4 typing of FHIRPath paths, from the same model fhirpath.js uses. The compiler
// needs it to resolve choice elements (`value.ofType(Quantity)` is the JSON property
// `valueQuantity`), to know which elements are primitives (whose `_name` siblings carry
// extensions), to tell forEach children their base type, and to reject misspelt elements
// before any data is read.
import r4 from 'fhirpath/fhir-context/r4';

/** An element that is a choice (`value[x]`) whose type has not been chosen with ofType(). */
export interface ChoiceType {
  kind: 'choice';
  /** Element path, e.g. `Observation.value`. */
  path: string;
  /** FHIR type names allowed, e.g. `Quantity`, `string`, `dateTime`. */
  types: string[];
}

/**
 * A static type: a FHIR type name (`Coding`, `string`, `Observation`), an element path for
 * backbone elements (`Observation.component`), a FHIRPath system type (`System.Boolean`), a
 * choice, or undefined when unknown.
 */
export type StaticType = string | ChoiceType | undefined;

const path2Type = r4.path2Type as Record<string, string | undefined>;
const choiceTypePaths = r4.choiceTypePaths as Record<string, string[] | undefined>;
const pathsDefinedElsewhere = r4.pathsDefinedElsewhere as Record<string, string | undefined>;
const type2Parent = r4.type2Parent as Record<string, string | undefined>;
const availableTypes = (r4 as unknown as { availableTypes: Set<string> }).availableTypes;

const PRIMITIVES = new Set([...availableTypes].filter((t) => /^[a-z]/.test(t)));
/** FHIR primitive types whose values are strings in JSON. */
export const FHIR_STRING_TYPES: readonly string[] = [
  'string',
  'code',
  'id',
  'uri',
  'url',
  'canonical',
  'oid',
  'uuid',
  'markdown',
  'base64Binary',
];
const STRING_LIKE = new Set([...FHIR_STRING_TYPES, 'System.String']);
const INTEGER_LIKE = new Set(['integer', 'positiveInt', 'unsignedInt', 'System.Integer']);
const BOOLEAN_LIKE = new Set(['boolean', 'System.Boolean']);
/** Types whose members cannot be known statically (contained resources, bundle entries). */
const POLYMORPHIC = new Set(['Resource', 'DomainResource']);
const SYSTEM_TYPES = new Set([
  'Boolean',
  'String',
  'Integer',
  'Long',
  'Decimal',
  'Date',
  'DateTime',
  'Time',
  'Quantity',
]);

/** True for the choice form of a static type. */
export function isChoice(type: StaticType): type is ChoiceType {
  return typeof type === 'object';
}

/** Applies the model's "defined elsewhere" aliases, e.g. `QuestionnaireResponse.item.item`. */
export function normalizePath(path: string): string {
  let current = path;
  for (let guard = 0; guard < 20; guard++) {
    const direct = pathsDefinedElsewhere[current];
    if (direct) return direct;
    let changed = false;
    for (const [from, to] of Object.entries(pathsDefinedElsewhere)) {
      if (to && current.startsWith(`${from}.`)) {
        current = to + current.slice(from.length);
        changed = true;
        break;
      }
    }
    if (!changed) return current;
  }
  return current;
}

function parentOf(key: string): string | undefined {
  if (key.includes('.') && !key.startsWith('System.')) {
    return path2Type[key];
  }
  return type2Parent[key];
}

/** The FHIR type name behind a static type key (the backbone type for element paths). */
export function typeNameOf(key: string): string {
  if (key.includes('.') && !key.startsWith('System.')) return path2Type[key] ?? 'Element';
  return key;
}

/** Converts a choice type suffix from the model (`DateTime`) to the FHIR type (`dateTime`). */
function choiceSuffixToType(suffix: string): string {
  const lower = suffix.charAt(0).toLowerCase() + suffix.slice(1);
  return PRIMITIVES.has(lower) ? lower : suffix;
}

/** The JSON property suffix for a FHIR type in a choice element (`dateTime` -> `DateTime`). */
export function choiceSuffix(type: string): string {
  return type.charAt(0).toUpperCase() + type.slice(1);
}

/** Result of looking up an element on a static type. */
export type MemberLookup =
  | { kind: 'element'; type: string; primitive: boolean }
  | { kind: 'choice'; type: ChoiceType }
  | { kind: 'unknown' }
  | { kind: 'missing' };

/** Looks up element `name` on the static type `key`. */
export function lookupMember(key: string, name: string): MemberLookup {
  let current: string | undefined = key;
  for (let guard = 0; current && guard < 20; guard++) {
    const path = normalizePath(`${current}.${name}`);
    const choices = choiceTypePaths[path];
    if (choices) {
      return {
        kind: 'choice',
        type: { kind: 'choice', path, types: choices.map(choiceSuffixToType) },
      };
    }
    const type = path2Type[path];
    if (type) {
      if (type === 'BackboneElement' || type === 'Element') {
        return { kind: 'element', type: path, primitive: false };
      }
      return { kind: 'element', type, primitive: isPrimitiveType(type) };
    }
    current = parentOf(current);
  }
  if (POLYMORPHIC.has(key) || key.startsWith('System.')) return { kind: 'unknown' };
  return { kind: 'missing' };
}

/** True when `type` is a FHIR primitive or a FHIRPath system type. */
export function isPrimitiveType(type: string): boolean {
  return PRIMITIVES.has(type) || type.startsWith('System.');
}

/** True for string-valued types that compare as plain strings. */
export function isStringLike(type: StaticType): boolean {
  return typeof type === 'string' && STRING_LIKE.has(type);
}

/** True for integer-valued types. */
export function isIntegerLike(type: StaticType): boolean {
  return typeof type === 'string' && INTEGER_LIKE.has(type);
}

/** True for boolean-valued types. */
export function isBooleanLike(type: StaticType): boolean {
  return typeof type === 'string' && BOOLEAN_LIKE.has(type);
}

/** True when the static type is known and can never be a boolean. */
export function isDefinitelyNotBoolean(type: StaticType): boolean {
  if (type === undefined) return false;
  if (isChoice(type)) return !type.types.includes('boolean');
  return !isBooleanLike(type);
}

const RESOURCE_TYPES: ReadonlySet<string> = new Set(
  [...availableTypes].filter((name) => {
    let current: string | undefined = name;
    for (let guard = 0; current && guard < 10; guard++) {
      if (current === 'Resource') return true;
      current = type2Parent[current];
    }
    return false;
  }),
);

/** True when `name` is a FHIR resource type of the R4 model (including Resource itself). */
export function isResourceType(name: string): boolean {
  return RESOURCE_TYPES.has(name);
}

/** True when `type` is `ancestor` or derives from it (e.g. Age from Quantity, code from string). */
export function isSubtypeOf(type: string, ancestor: string): boolean {
  let current: string | undefined = typeNameOf(type);
  for (let guard = 0; current && guard < 10; guard++) {
    if (current === ancestor) return true;
    current = type2Parent[current];
  }
  return false;
}

/**
 * Resolves a type specifier as written in `ofType(X)`: a FHIR type (`Quantity`, `string`,
 * `FHIR.string`) or a FHIRPath system type (`System.Boolean`). Returns undefined when unknown.
 */
export function resolveTypeSpecifier(
  text: string,
): { namespace: 'FHIR' | 'System' | 'either'; name: string } | undefined {
  const stripped = text.replace(/`/g, '');
  const dot = stripped.indexOf('.');
  if (dot !== -1) {
    const namespace = stripped.slice(0, dot);
    const name = stripped.slice(dot + 1);
    if (namespace === 'FHIR' && availableTypes.has(name)) return { namespace: 'FHIR', name };
    if (namespace === 'System' && SYSTEM_TYPES.has(name)) return { namespace: 'System', name };
    return undefined;
  }
  const fhir = availableTypes.has(stripped);
  const system = SYSTEM_TYPES.has(stripped);
  if (fhir && system) return { namespace: 'either', name: stripped };
  if (fhir) return { namespace: 'FHIR', name: stripped };
  if (system) return { namespace: 'System', name: stripped };
  return undefined;
}

/** True when `name` is a type name fhirpath.js knows (FHIR R4 or System). */
export function isKnownTypeName(name: string): boolean {
  return availableTypes.has(name) || SYSTEM_TYPES.has(name);
}

/** Describes a static type for messages. */
export function describeType(type: StaticType): string {
  if (type === undefined) return 'unknown';
  if (isChoice(type)) return `${type.path}[x]`;
  return type;
}
