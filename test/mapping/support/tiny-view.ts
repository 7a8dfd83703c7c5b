// TEMPORARY stand-in for the view engine (src/mapping/view, engineer A) so the assembly can be
// tested before it lands. Handles only what the IBD pack's views use: member paths,
// ofType(X), first(), getResourceKey(), getReferenceKey(T), forEach/forEachOrNull/select.
type Json = any;

function evalPath(resource: Json, node: Json, path: string): Json[] {
  const steps = path.replace(/ofType\(FHIR\./g, 'ofType(').split('.');
  let current: Json[] = [node];
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i]!;
    if (step === 'getResourceKey()') {
      current = resource?.id !== undefined ? [resource.id] : [];
      continue;
    }
    const refMatch = /^getReferenceKey\((\w*)\)$/.exec(step);
    if (refMatch) {
      const type = refMatch[1];
      current = current.flatMap((r) => {
        const ref: string | undefined = r?.reference;
        if (!ref) return [];
        const parts = ref.split('/');
        if (parts.length < 2) return [];
        if (type && parts[parts.length - 2] !== type) return [];
        return [parts[parts.length - 1]];
      });
      continue;
    }
    if (step === 'first()') {
      current = current.slice(0, 1);
      continue;
    }
    const next = steps[i + 1];
    const ofType = next ? /^ofType\((?:FHIR\.)?(\w+)\)$/.exec(next) : null;
    const name = ofType ? step + ofType[1]![0]!.toUpperCase() + ofType[1]!.slice(1) : step;
    if (ofType) i++;
    current = current.flatMap((c) => {
      const v = c?.[name];
      if (v === undefined || v === null) return [];
      return Array.isArray(v) ? v : [v];
    });
  }
  return current;
}

function evalSelect(resource: Json, node: Json, select: Json): Record<string, unknown>[] {
  const nodes: Json[] = select.forEach
    ? evalPath(resource, node, select.forEach)
    : select.forEachOrNull
      ? evalPath(resource, node, select.forEachOrNull)
      : [node];
  if (select.forEachOrNull && nodes.length === 0) {
    const row: Record<string, unknown> = {};
    for (const name of columnNames(select)) row[name] = null;
    return [row];
  }
  const out: Record<string, unknown>[] = [];
  for (const n of nodes) {
    let rows: Record<string, unknown>[] = [{}];
    if (select.column) {
      const row: Record<string, unknown> = {};
      for (const c of select.column) {
        const v = evalPath(resource, n, c.path);
        row[c.name] = c.collection ? v : (v[0] ?? null);
      }
      rows = [row];
    }
    for (const sub of select.select ?? []) {
      const subRows = evalSelect(resource, n, sub);
      rows = rows.flatMap((r) => subRows.map((s) => ({ ...r, ...s })));
    }
    out.push(...rows);
  }
  return out;
}

function columnNames(select: Json): string[] {
  return [
    ...(select.column ?? []).map((c: Json) => c.name),
    ...(select.select ?? []).flatMap((s: Json) => columnNames(s)),
  ];
}

export function tinyCompileView(definition: Json) {
  return {
    name: definition.name,
    resource: definition.resource,
    columns: columnNames({ select: definition.select }).map((name) => ({ name })),
    rows(resource: Json) {
      if (resource?.resourceType !== definition.resource) return [];
      let rows: Record<string, unknown>[] = [{}];
      for (const s of definition.select) {
        const sub = evalSelect(resource, resource, s);
        rows = rows.flatMap((r) => sub.map((x) => ({ ...r, ...x })));
      }
      return rows;
    },
  };
}
