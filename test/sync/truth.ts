// What the registry holds for a visit, compared field by field with the generator's truth.
import { expect } from 'vitest';
import type { ExpectedVisit } from '../../fixtures/generator/index.js';
import type { VisitSubmission } from '../../src/registry/submission.js';

/** Compares what the registry holds for a visit with the generator's truth. */
export function expectMatchesTruth(
  stored: VisitSubmission | undefined,
  truth: ExpectedVisit,
): void {
  expect(stored, `visit ${truth.encounterId}`).toBeDefined();
  expect({
    date: stored!.visit.date,
    type: stored!.visit.type,
    pga: stored!.pga,
    remission: stored!.remission,
    steroidUse: stored!.steroidUse,
    height: stored!.height?.value ?? null,
    weight: stored!.weight?.value ?? null,
    diagnosis: stored!.diagnosis,
  }).toEqual({
    date: truth.visitDate,
    type: truth.visitType,
    pga: truth.pga,
    remission: truth.remission,
    steroidUse: truth.steroidUse,
    height: truth.heightCm,
    weight: truth.weightKg,
    diagnosis: truth.diagnosis,
  });
}
