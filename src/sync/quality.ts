// The per-centre data-quality report: what a data manager needs to fix a centre's mapping
// (unmapped local codes with counts and an example resource, visits without a PGA,
// implausible values). It covers everything currently submitted, not one run: each visit's
// findings are kept in its state entry (replaced when the visit changes, dropped when it is
// retracted), and the report is recomputed from them at the end of every run.
import type { Finding, RegistrySubmission } from '../registry/submission.js';
import type { QualityReport, UnmappedCode, FindingSummary } from './run-store.js';
import type { VisitState, VisitStateEntry } from './visit-state.js';

/** Examples kept for visits without PGA. */
const MAX_EXAMPLES = 10;

/** A visit's findings in the compact form kept in its state entry (undefined: none). */
export function compactFindings(submission: RegistrySubmission): VisitStateEntry['q'] {
  if (submission.kind === 'retraction' || submission.findings.length === 0) return undefined;
  return submission.findings.map((f: Finding) => [f.kind, f.field, f.code ?? '', f.resource ?? '']);
}

/** Recomputes a centre's report from the per-visit entries. */
export async function buildQualityReport(state: VisitState, runId: string): Promise<QualityReport> {
  const unmapped = new Map<string, UnmappedCode>();
  const implausible = new Map<string, FindingSummary>();
  const byKind: Record<string, number> = {};
  const withoutPga = { count: 0, exampleResources: [] as string[] };
  let visits = 0;

  for await (const pairs of state.scan()) {
    for (const [, entry] of pairs) {
      if (entry.r) continue;
      visits += 1;
      let missingPga = false;
      for (const [kind, field, code, resource] of entry.q ?? []) {
        byKind[kind] = (byKind[kind] ?? 0) + 1;
        if (kind === 'missing-pga') missingPga = true;
        if (kind === 'unmapped-code') {
          const key = `${field}\u0000${code}`;
          const u = unmapped.get(key) ?? { field, code, count: 0 };
          u.count += 1;
          if (!u.exampleResource && resource) u.exampleResource = resource;
          unmapped.set(key, u);
        } else if (kind === 'implausible-value') {
          const s = implausible.get(field) ?? { field, count: 0 };
          s.count += 1;
          if (!s.exampleResource && resource) s.exampleResource = resource;
          implausible.set(field, s);
        }
      }
      if (missingPga) {
        withoutPga.count += 1;
        if (entry.e && withoutPga.exampleResources.length < MAX_EXAMPLES)
          withoutPga.exampleResources.push(`Encounter/${entry.e}`);
      }
    }
  }

  return {
    centreId: state.centreId,
    runId,
    generatedAt: new Date().toISOString(),
    visits,
    unmappedCodes: [...unmapped.values()].sort((a, b) => b.count - a.count),
    visitsWithoutPga: withoutPga,
    implausibleValues: [...implausible.values()].sort((a, b) => b.count - a.count),
    findingsByKind: byKind,
  };
}
