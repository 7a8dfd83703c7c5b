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
  return RetractionSchema.parse({
    schema: content.schema,
    kind: content.kind,
    submissionId: submissionId(visitKey, hash),
    centreId,
    patientKey,
    visitKey,
    contentHash: hash,
    reason,
    provenance,
  });
}
