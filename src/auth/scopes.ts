// SMART scope arithmetic: v1 (`system/Observation.read`) and v2 (`system/Observation.rs`)
// scopes name the same permissions differently, and EHRs may grant either form or a
// wildcard. The token client and the onboarding check compare what was asked with what was
// granted through this one function, so both agree on what "missing" means. SMART v2
// letters may also be granted one scope at a time (`.r` and `.s`); their union counts.

/** A parsed SMART resource scope. */
export interface ParsedScope {
  context: 'system' | 'user' | 'patient';
  /** Resource type, or `*`. */
  resourceType: string;
  /** Permission letters granted, a subset of c r u d s. */
  permissions: Set<string>;
  /** v2 query constraint (`?category=...`), if any: it narrows the scope. */
  constraint: string | undefined;
}

const SCOPE_RE = /^(system|user|patient)\/(\*|[A-Za-z]+)\.(read|write|\*|[cruds]+)(\?.*)?$/;

/** Parses a SMART v1/v2 resource scope; undefined for other scopes (openid, launch...). */
export function parseScope(scope: string): ParsedScope | undefined {
  const m = SCOPE_RE.exec(scope);
  if (!m) return undefined;
  const action = m[3]!;
  const permissions = new Set<string>(
    action === 'read'
      ? ['r', 's']
      : action === 'write'
        ? ['c', 'u', 'd']
        : action === '*'
          ? ['c', 'r', 'u', 'd', 's']
          : action.split(''),
  );
  return {
    context: m[1] as ParsedScope['context'],
    resourceType: m[2]!,
    permissions,
    constraint: m[4] ? m[4].slice(1) : undefined,
  };
}

/** True when `granted` allows everything `wanted` asks for. */
export function scopeCovers(granted: string, wanted: string): boolean {
  if (granted === wanted) return true;
  const g = parseScope(granted);
  const w = parseScope(wanted);
  if (!g || !w) return false;
  if (g.context !== w.context) return false;
  if (g.resourceType !== '*' && g.resourceType !== w.resourceType) return false;
  // A constrained grant is narrower than an unconstrained request.
  if (g.constraint && g.constraint !== w.constraint) return false;
  for (const p of w.permissions) if (!g.permissions.has(p)) return false;
  return true;
}

/**
 * True when the granted scopes together allow everything `wanted` asks for. SMART v2
 * permission letters are independent, so `system/Patient.r` plus `system/Patient.s` cover
 * `system/Patient.rs`: the letters of every grant that applies (same context, same type or
 * `*`, no other constraint) are pooled.
 */
export function scopesCover(granted: readonly string[], wanted: string): boolean {
  if (granted.some((g) => scopeCovers(g, wanted))) return true;
  const w = parseScope(wanted);
  if (!w) return false;
  const pooled = new Set<string>();
  for (const scope of granted) {
    const g = parseScope(scope);
    if (!g || g.context !== w.context) continue;
    if (g.resourceType !== '*' && g.resourceType !== w.resourceType) continue;
    if (g.constraint && g.constraint !== w.constraint) continue;
    for (const p of g.permissions) pooled.add(p);
  }
  for (const p of w.permissions) if (!pooled.has(p)) return false;
  return true;
}

/** The wanted scopes that the granted scopes (together) do not cover. */
export function findMissingScopes(granted: string[], wanted: string[]): string[] {
  return wanted.filter((w) => !scopesCover(granted, w));
}

/** True when the granted scopes allow `permission` (r or s) on `resourceType` for system use. */
export function scopesAllow(
  granted: Iterable<string>,
  resourceType: string,
  permission: 'r' | 's',
): boolean {
  for (const scope of granted) {
    const g = parseScope(scope);
    if (!g || g.context !== 'system') continue;
    if (g.resourceType !== '*' && g.resourceType !== resourceType) continue;
    if (g.permissions.has(permission)) return true;
  }
  return false;
}

/** Splits an OAuth `scope` string into its scopes. */
export function splitScopes(scope: string | undefined | null): string[] {
  return (scope ?? '').split(/\s+/).filter((s) => s.length > 0);
}
