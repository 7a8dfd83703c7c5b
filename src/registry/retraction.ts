// Retractions: when a visit's source Encounter is deleted or marked entered-in-error, the
// registry must withdraw what it received. A retraction carries only the pseudonymous keys
// (the same HMACs as the visit it withdraws), the reason and the provenance that caused it.
import { contentHash, pseudonymKey, submissionId } from './keys.js';
import { RetractionSchema, type Retraction, type SourceRef } from './submission.js';

export interface BuildRetractionOptions {
  centreId: string;
  pseudonymSecret: string;
  /** Source Patient id (hashed here, never sent). */
  patientId: string;
  /** Source Encounter id (hashed here, never sent). */
  encounterId: string;
  reason: Retraction['reason'];
  /** The resources that caused the retraction (the Encounter version, or its deletion). */
  provenance: SourceRef[];
}

function compareRefs(a: SourceRef, b: SourceRef): number {
  if (a.resourceType !== b.resourceType) return a.resourceType < b.resourceType ? -1 : 1;
  if (a.id !== b.id) return a.id < b.id ? -1 : 1;
  return (a.versionId ?? '') < (b.versionId ?? '') ? -1 : 1;
}

/**
 * Builds a schema-valid retraction. Deterministic: the same inputs give the same
 * submissionId, so re-sending a retraction is idempotent.
 */
export function buildRetraction(options: BuildRetractionOptions): Retraction {
  const { centreId, pseudonymSecret, patientId, encounterId, reason } = options;
  const patientKey = pseudonymKey(pseudonymSecret, centreId, 'Patient', patientId);
  const visitKey = pseudonymKey(pseudonymSecret, centreId, 'Encounter', encounterId);
  const provenance = [...options.provenance].sort(compareRefs);
  const content = {
    schema: 'lhn-bridge/registry-submission/v1' as const,
    kind: 'retraction' as const,
    centreId,
    patientKey,
    visitKey,
    reason,
    provenance,
  };
  const hash = contentHash(content);
  const retraction = {
    schema: content.schema,
    kind: content.kind,
    submissionId: submissionId(visitKey, hash),
    centreId,
    patientKey,
    visitKey,
    contentHash: hash,
    reason,
    provenance,
  };
  // The keys, hash and id are well-formed by construction: when the rest is what the schema
  // asks for, the parse (which copies every ref into schema key order) is done here at a
  // fraction of its cost; otherwise the schema parses, and says what is wrong.
  const refs = plainRefs(provenance);
  if (refs && centreId.length > 0 && (reason === 'deleted' || reason === 'entered-in-error')) {
    retraction.provenance = refs;
    return retraction;
  }
  return RetractionSchema.parse(retraction);
}

const RESOURCE_TYPE = /^[A-Z][A-Za-z]+$/;

/**
 * The refs as RetractionSchema would return them (keys in schema order), or null when one
 * is not exactly a valid SourceRef (then the schema's own parse decides and explains).
 */
function plainRefs(provenance: readonly SourceRef[]): SourceRef[] | null {
  const out: SourceRef[] = [];
  for (const r of provenance) {
    if (r === null || typeof r !== 'object' || Object.getPrototypeOf(r) !== Object.prototype) {
      return null;
    }
    const { resourceType, id, versionId, lastUpdated } = r;
    let keys = 2;
    if (typeof resourceType !== 'string' || !RESOURCE_TYPE.test(resourceType)) return null;
    if (typeof id !== 'string' || id.length < 1 || id.length > 64) return null;
    const ref: SourceRef = { resourceType, id };
    if (versionId !== undefined) {
      if (typeof versionId !== 'string' || versionId.length > 64) return null;
      ref.versionId = versionId;
      keys += 1;
    }
    if (lastUpdated !== undefined) {
      if (typeof lastUpdated !== 'string') return null;
      ref.lastUpdated = lastUpdated;
      keys += 1;
    }
    if (Object.keys(r).length !== keys) return null;
    out.push(ref);
  }
  return out;
}
