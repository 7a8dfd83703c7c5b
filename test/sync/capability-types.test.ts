import { describe, expect, it } from 'vitest';
import { listedResourceTypes } from '../../src/sync/run-sync.js';

describe('resource types listed by a CapabilityStatement', () => {
  it('when the server rest entry lists resources, then their types are returned', () => {
    const types = listedResourceTypes({
      resourceType: 'CapabilityStatement',
      rest: [
        { mode: 'client', resource: [{ type: 'MedicationStatement' }] },
        { mode: 'server', resource: [{ type: 'Patient' }, { type: 'Encounter' }] },
      ],
    });
    expect(types && [...types]).toEqual(['Patient', 'Encounter']);
  });

  it('when the CapabilityStatement lists no resources (or is not one), then nothing is judged from it', () => {
    expect(listedResourceTypes({ resourceType: 'CapabilityStatement' })).toBeUndefined();
    expect(
      listedResourceTypes({ resourceType: 'CapabilityStatement', rest: [{ mode: 'server' }] }),
    ).toBeUndefined();
    expect(
      listedResourceTypes({
        resourceType: 'CapabilityStatement',
        rest: [{ mode: 'server', resource: [] }],
      }),
    ).toBeUndefined();
    expect(listedResourceTypes({ resourceType: 'OperationOutcome' })).toBeUndefined();
    expect(listedResourceTypes(null)).toBeUndefined();
  });
});
