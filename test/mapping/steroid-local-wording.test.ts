// Local-form wording in route and dosage text (the golden case
// steroid-local-route-adverbs-dosage-text shows it end to end): adverbs and unhyphenated
// spellings of local words are local, systemic routes stay systemic, and dosage text is read
// only when no route is given.
import { beforeAll, describe, expect, it } from 'vitest';
import { RXNORM, SNOMED } from '../../src/mapping/pack-schema.js';
import { judgeSteroid, type MedicationUse } from '../../src/mapping/steroids.js';
import { buildPackIndex, type PackIndex } from '../../src/mapping/value-sets.js';
import { medicationUse } from './support/medication-use.js';
import { loadIbdPack } from './support/pack.js';

let index: PackIndex;
beforeAll(async () => {
  index = buildPackIndex(await loadIbdPack());
});

function hydrocortisone(partial: Partial<MedicationUse>): MedicationUse {
  return medicationUse({
    resourceType: 'MedicationRequest',
    id: 'mr',
    intent: 'order',
    codings: [{ system: RXNORM, code: '5492', display: 'hydrocortisone' }],
    singleDate: '2024-03-01',
    ...partial,
  });
}

const systemic = (u: MedicationUse): boolean | undefined =>
  judgeSteroid(index, u, undefined)?.systemic;

describe('local-form wording', () => {
  it.each([
    'Rectally',
    'Topically',
    'Intraarticular',
    'Intra articular',
    'Intra-articular',
    'Intralesional',
    'Injection into joint',
    'Inject into the joint',
    'Nasally',
    'Otically',
    'Externally',
  ])('when the route text is %s, then the form is local', (t) => {
    expect(systemic(hydrocortisone({ routeTexts: [t] }))).toBe(false);
  });

  it.each([
    'Oral',
    'Orally',
    'By mouth',
    'Intramuscular',
    'Intramuscularly',
    'Intravenous',
    'Intravenously',
    'Subcutaneously',
    'Early morning',
  ])('when the route text is %s, then the form stays systemic', (t) => {
    expect(systemic(hydrocortisone({ routeTexts: [t] }))).toBe(true);
  });

  it('when the route is SNOMED CT 12130007 (Intra-articular route) without a display, then the form is local', () => {
    expect(systemic(hydrocortisone({ routeCodings: [{ system: SNOMED, code: '12130007' }] }))).toBe(
      false,
    );
  });

  it('when no route is given and the dosage text says enema rectally, then the form is local', () => {
    const u = hydrocortisone({ dosageTexts: ['Insert 1 enema (100 mg) rectally nightly'] });
    expect(systemic(u)).toBe(false);
  });

  it('when a route is given, then the dosage text is not read for local words', () => {
    const u = hydrocortisone({
      routeCodings: [{ system: SNOMED, code: '26643006', display: 'Oral route' }],
      dosageTexts: ['Take 10 mg by mouth twice daily. Eye exam yearly.'],
    });
    expect(systemic(u)).toBe(true);
    expect(systemic(hydrocortisone({ routeTexts: ['by mouth'], dosageTexts: ['rectally'] }))).toBe(
      true,
    );
  });

  it('when a systemic product code is given, then a local word in the dosage text does not overrule it', () => {
    const u = hydrocortisone({
      codings: [{ system: RXNORM, code: '312615', display: 'prednisone 20 MG Oral Tablet' }],
      dosageTexts: ['Take 40 mg daily; see eye clinic'],
    });
    expect(judgeSteroid(index, u, undefined)).toMatchObject({ systemic: true });
  });
});
