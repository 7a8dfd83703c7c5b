import { describe, expect, it } from 'vitest';
import { EVENT_RESOURCE_TYPES, patientSearchParams } from '../../src/fhir/pull-search.js';

const lookback = '2024-01-01T00:00:00.000Z';

describe('the full-pull lookback window', () => {
  it('when pulling in full, then only event types are bounded by the lookback', () => {
    expect(patientSearchParams('Encounter', 'p1', { pageSize: 50, lookback })._lastUpdated).toBe(
      `ge${lookback}`,
    );
    expect(patientSearchParams('Observation', 'p1', { pageSize: 50, lookback })._lastUpdated).toBe(
      `ge${lookback}`,
    );
    for (const type of ['Patient', 'Condition', 'MedicationStatement', 'MedicationRequest']) {
      expect(patientSearchParams(type, 'p1', { pageSize: 50, lookback })).not.toHaveProperty(
        '_lastUpdated',
      );
    }
    expect([...EVENT_RESOURCE_TYPES].sort()).toEqual(['Encounter', 'Observation']);
  });

  it('when pulling incrementally, then every type is bounded by the watermark', () => {
    const since = '2025-06-01T00:00:00.000Z';
    for (const type of ['Patient', 'Condition', 'Encounter', 'MedicationStatement']) {
      expect(patientSearchParams(type, 'p1', { pageSize: 50, since, lookback })._lastUpdated).toBe(
        `ge${since}`,
      );
    }
  });
});
