// Row keys for joins between views: getResourceKey() and getReferenceKey([type]). Our key is
// the resource's logical id, and a reference's key is the id in its literal reference
// (`Patient/123`, `Patient/123/_history/2` or an absolute URL ending so). Contained (`#x`),
// `urn:` and identifier-only references have no key: the spec asks for empty in that case.
// Both the fast path and the fhirpath.js functions call these, so the two cannot disagree.
import { isResourceType } from './fhir-types.js';

const REFERENCE_RE =
  /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$/;

/** A character of FHIR id syntax: A-Z a-z 0-9 - . */
function isIdCharCode(c: number): boolean {
  return (
    (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45 || c === 46
  );
}

/** FHIR id syntax: 1-64 of A-Z a-z 0-9 - . */
function isValidId(id: string): boolean {
  const n = id.length;
  if (n === 0 || n > 64) return false;
  for (let i = 0; i < n; i++) {
    if (!isIdCharCode(id.charCodeAt(i))) return false;
  }
  return true;
}

/** The key of a resource: its logical id, or undefined when it has none. */
export function resourceKeyOf(resource: unknown): string | undefined {
  if (typeof resource !== 'object' || resource === null) return undefined;
  const id = (resource as { id?: unknown }).id;
  return typeof id === 'string' && id !== '' ? id : undefined;
}

/** Splits a literal reference into type and id, or undefined when it is not one. */
export function parseLiteralReference(reference: string): { type: string; id: string } | undefined {
  if (reference.startsWith('#') || reference.startsWith('urn:')) return undefined;
  // The common relative form `Type/id`, without a regular expression.
  const slash = reference.indexOf('/');
  if (slash > 0 && reference.indexOf('/', slash + 1) === -1) {
    const type = reference.slice(0, slash);
    const id = reference.slice(slash + 1);
    return isResourceType(type) && isValidId(id) ? { type, id } : undefined;
  }
  const match = REFERENCE_RE.exec(reference);
  if (!match) return undefined;
  const type = match[1] as string;
  if (!isResourceType(type)) return undefined;
  return { type, id: match[2] as string };
}

/**
 * The key a Reference points to, or undefined when it cannot be resolved or, with
 * `expectedType`, when it points to another resource type.
 */
export function referenceKeyOf(reference: unknown, expectedType?: string): string | undefined {
  if (typeof reference !== 'object' || reference === null) return undefined;
  const literal = (reference as { reference?: unknown }).reference;
  if (typeof literal !== 'string') return undefined;
  return referenceKeyOfLiteral(literal, expectedType);
}

/** referenceKeyOf for the `reference` string of a Reference. */
export function referenceKeyOfLiteral(literal: string, expectedType?: string): string | undefined {
  if (expectedType !== undefined) {
    // The common `Type/id` form of the expected type, in one pass over the characters (a
    // valid id has no '/'); anything else takes the general route below.
    const id = idAfterType(literal, expectedType);
    if (id !== undefined) return id;
    const n = expectedType.length;
    if (
      literal.charCodeAt(n) === 47 &&
      literal.startsWith(expectedType) &&
      literal.indexOf('/', n + 1) === -1
    ) {
      return undefined; // `Type/` followed by something that is not an id
    }
  }
  const parsed = parseLiteralReference(literal);
  if (!parsed) return undefined;
  if (expectedType !== undefined && parsed.type !== expectedType) return undefined;
  return parsed.id;
}

/** The id of `type/id` when `literal` is exactly that with a valid id, else undefined. */
function idAfterType(literal: string, type: string): string | undefined {
  const n = type.length;
  const length = literal.length;
  if (length <= n + 1 || length > n + 65 || literal.charCodeAt(n) !== 47) return undefined;
  for (let i = 0; i < n; i++) {
    if (literal.charCodeAt(i) !== type.charCodeAt(i)) return undefined;
  }
  for (let i = n + 1; i < length; i++) {
    if (!isIdCharCode(literal.charCodeAt(i))) return undefined;
  }
  return literal.slice(n + 1);
}

/**
 * getResourceKey() on a collection: the keys of the resources in it, or, when called on an
 * element inside a resource (e.g. within a forEach), the key of the resource being viewed.
 */
export function resourceKeysOf(items: readonly unknown[], root: unknown): string[] {
  if (items.length === 0) return [];
  const allResources = items.every(
    (i) => typeof i === 'object' && i !== null && 'resourceType' in i,
  );
  const sources = allResources ? items : [root];
  const keys: string[] = [];
  for (const source of sources) {
    const key = resourceKeyOf(source);
    if (key !== undefined) keys.push(key);
  }
  return keys;
}

/** Strips quotes or backticks from a type argument written as `Patient`, `'Patient'`. */
export function unquoteTypeArgument(text: string): string {
  const trimmed = text.trim();
  if (
    trimmed.length >= 2 &&
    ((trimmed.startsWith("'") && trimmed.endsWith("'")) ||
      (trimmed.startsWith('`') && trimmed.endsWith('`')))
  ) {
    return trimmed.slice(1, -1);
  }
  return trimmed;
}
