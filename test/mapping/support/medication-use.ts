// A MedicationUse for the steroid rule tests: a MedicationStatement with nothing set, plus
// what the test gives.
import type { MedicationUse } from '../../../src/mapping/steroids.js';

export function medicationUse(partial: Partial<MedicationUse>): MedicationUse {
  return {
    resourceType: 'MedicationStatement',
    id: 'ms',
    status: 'active',
    intent: null,
    codings: [],
    text: null,
    medicationReference: null,
    contained: new Map(),
    routeCodings: [],
    routeTexts: [],
    periods: [],
    durations: [],
    unreadDuration: null,
    validity: null,
    supply: null,
    singleDate: null,
    dateAsserted: null,
    doNotPerform: false,
    singleAdministration: false,
    versionId: null,
    lastUpdated: null,
    ...partial,
  };
}
