// Steroid recognition rules one by one (the golden fixtures show them end to end): which
// evidence names the ingredient, which signals make a form local, and when a course is
// active on the visit date.
import { beforeAll, describe, expect, it } from 'vitest';
import { createZoneCalendar } from '../../src/mapping/dates.js';
import { RXNORM, SNOMED } from '../../src/mapping/pack-schema.js';
import {
  addDuration,
  durationUnitOf,
  endDateOf,
  isActiveOn,
  useDatesOf,
  judgeSteroid,
  type MedicationInfo,
} from '../../src/mapping/steroids.js';
import { buildPackIndex, type PackIndex } from '../../src/mapping/value-sets.js';
import { medicationUse } from './support/medication-use.js';
import { loadIbdPack } from './support/pack.js';

let index: PackIndex;
beforeAll(async () => {
  index = buildPackIndex(await loadIbdPack());
});

const use = medicationUse;

function medication(partial: Partial<MedicationInfo>): MedicationInfo {
  return {
    id: 'med',
    codings: [],
    ingredientCodings: [],
    ingredientReferences: [],
    contained: null,
    formCodings: [],
    text: null,
    formText: null,
    versionId: null,
    lastUpdated: null,
    ...partial,
  };
}

const rx = (code: string, display?: string) => ({ system: RXNORM, code, display: display ?? null });

describe('judgeSteroid', () => {
  it('when a product code is given, then it fixes ingredient and form', () => {
    expect(judgeSteroid(index, use({ codings: [rx('259966')] }), undefined)).toEqual({
      ingredient: 'methylprednisolone',
      matchedBy: 'product-code',
      systemic: true,
    });
    expect(judgeSteroid(index, use({ codings: [rx('106258')] }), undefined)).toMatchObject({
      ingredient: 'hydrocortisone',
      systemic: false,
    });
  });

  it('when a product code and an ingredient code are both present, then the product code is the evidence', () => {
    const j = judgeSteroid(index, use({ codings: [rx('8640'), rx('312615')] }), undefined);
    expect(j).toEqual({ ingredient: 'prednisone', matchedBy: 'product-code', systemic: true });
  });

  it('when only an ingredient code is given, then the text decides the form', () => {
    expect(
      judgeSteroid(
        index,
        use({ codings: [rx('5492')], text: 'hydrocortisone 10 mg tablet' }),
        undefined,
      )?.systemic,
    ).toBe(true);
    expect(
      judgeSteroid(
        index,
        use({ codings: [rx('5492')], text: 'Hydrocortisone 2.5% OINTMENT' }),
        undefined,
      )?.systemic,
    ).toBe(false);
    expect(
      judgeSteroid(
        index,
        use({ codings: [rx('19831')], text: 'budesonide 0.5 mg/2 mL nebulizer suspension' }),
        undefined,
      )?.systemic,
    ).toBe(false);
  });

  it('when a systemic product is given by a non-systemic route, then the route wins', () => {
    const routeCodings = [{ system: SNOMED, code: '6064005', display: 'Topical route' }];
    expect(
      judgeSteroid(index, use({ codings: [rx('312615')], routeCodings }), undefined)?.systemic,
    ).toBe(false);
    expect(
      judgeSteroid(index, use({ codings: [rx('312615')], routeTexts: ['per rectum'] }), undefined)
        ?.systemic,
    ).toBe(false);
    expect(
      judgeSteroid(index, use({ codings: [rx('312615')], routeTexts: ['rectal'] }), undefined)
        ?.systemic,
    ).toBe(false);
  });

  it('when only a Medication resource names the drug, then its code, ingredients and form are used', () => {
    const viaIngredient = medication({
      codings: [{ system: 'local', code: 'X' }],
      ingredientCodings: [rx('6902')],
    });
    expect(judgeSteroid(index, use({ medicationReference: '#med' }), viaIngredient)).toEqual({
      ingredient: 'methylprednisolone',
      matchedBy: 'medication-ingredient',
      systemic: true,
    });
    const cream = medication({ ingredientCodings: [rx('5492')], formText: 'Cream' });
    expect(judgeSteroid(index, use({}), cream)?.systemic).toBe(false);
    const formCoded = medication({
      ingredientCodings: [rx('8638')],
      formCodings: [{ system: SNOMED, code: 'x', display: 'Eye drops' }],
    });
    expect(judgeSteroid(index, use({}), formCoded)?.systemic).toBe(false);
  });

  it('when only text names a steroid, then it counts as text unless a local-form word appears', () => {
    expect(judgeSteroid(index, use({ text: 'Medrol dose pack' }), undefined)).toEqual({
      ingredient: 'methylprednisolone',
      matchedBy: 'text',
      systemic: true,
    });
    expect(
      judgeSteroid(index, use({ text: 'methylprednisolone 4mg' }), undefined)?.ingredient,
    ).toBe('methylprednisolone');
    expect(
      judgeSteroid(index, use({ text: 'prednisoLONE 15 mg/5 mL syrup' }), undefined)?.ingredient,
    ).toBe('prednisolone');
    expect(
      judgeSteroid(index, use({ text: 'prednisolone acetate 1% ophthalmic suspension' }), undefined)
        ?.systemic,
    ).toBe(false);
    expect(judgeSteroid(index, use({ text: 'mesalamine 1.2 g' }), undefined)).toBeNull();
    expect(
      judgeSteroid(
        index,
        use({ codings: [rx('197388', 'azathioprine 50 MG Oral Tablet')] }),
        undefined,
      ),
    ).toBeNull();
  });

  it('when a use is coded only with an RxNorm code the pack does not list, with no display or text, then it is not a steroid (deliberately no finding: README, what is not verified)', () => {
    // Codes the pack does not list (no claim is made about what they are in RxNorm): to the
    // pack they look like every non-steroid medication an IBD patient takes.
    for (const code of ['999999', '9999999']) {
      expect(judgeSteroid(index, use({ codings: [rx(code)] }), undefined)).toBeNull();
      expect(
        judgeSteroid(
          index,
          use({ medicationReference: '#m' }),
          medication({ codings: [rx(code)], ingredientCodings: [rx(code)] }),
        ),
      ).toBeNull();
    }
  });

  it('when words only contain a local-form word inside another word, then they do not count as local', () => {
    expect(
      judgeSteroid(
        index,
        use({ codings: [rx('8640')], text: 'prednisone, year-long taper, gelcap-free' }),
        undefined,
      )?.systemic,
    ).toBe(true);
  });

  it('when a strength is a percentage, an Epic route+form pair or a local brand is named, then the form is local; a diluent percentage is not', () => {
    const systemic = (text: string, code?: string) =>
      judgeSteroid(index, use({ codings: code ? [rx(code)] : [], text }), undefined)?.systemic;
    expect(systemic('PREDNISOLONE ACETATE 1 % OP SUSP')).toBe(false);
    expect(systemic('HYDROCORTISONE 2.5% cream')).toBe(false);
    expect(systemic('prednisolone 0.12% drops')).toBe(false);
    expect(systemic('DEXAMETHASONE 0.1 % OT SUSP')).toBe(false);
    expect(systemic('BUDESONIDE 0.5 MG/2ML IN SUSP')).toBe(false);
    expect(systemic('budesonide', '19831')).toBe(true);
    expect(systemic('BUDESONIDE 0.5 MG/2ML IN SUSP', '19831')).toBe(false);
    expect(systemic('Pred Forte', '8638')).toBe(false);
    expect(systemic('PROCTOFOAM HC', '5492')).toBe(false);
    expect(systemic('Colocort', '5492')).toBe(false);
    // The two-letter route alone is no local form, nor is a diluent's percentage.
    expect(systemic('methylprednisolone 40 mg in sodium chloride 0.9 % IV')).toBe(true);
    expect(systemic('methylprednisolone 125 mg in 0.9% NaCl 50 mL')).toBe(true);
    expect(systemic('dexamethasone 10 mg in dextrose 5 % 50 mL')).toBe(true);
    expect(systemic('hydrocortisone 100 mg IV in NS')).toBe(true);
    expect(systemic('prednisone 20 mg tablet', '8640')).toBe(true);
  });
});

describe('isActiveOn', () => {
  const calendar = createZoneCalendar('America/Chicago');
  const dateOf = (v: string | null) => calendar.dateOf(v);

  it('when a period covers the visit date, then it is active; an open end stays active while active', () => {
    expect(
      isActiveOn(
        use({ periods: [{ start: '2024-03-01', end: '2024-03-05' }] }),
        '2024-03-05',
        dateOf,
        false,
      ),
    ).toBe(true);
    expect(
      isActiveOn(
        use({ periods: [{ start: '2024-03-06', end: null }] }),
        '2024-03-05',
        dateOf,
        false,
      ),
    ).toBe(false);
    expect(
      isActiveOn(
        use({ periods: [{ start: '2024-01-01', end: null }] }),
        '2024-03-05',
        dateOf,
        true,
      ),
    ).toBe(true);
    expect(
      isActiveOn(
        use({ periods: [{ start: null, end: '2024-03-04' }] }),
        '2024-03-05',
        dateOf,
        false,
      ),
    ).toBe(false);
  });

  it('when any of several periods covers the date, then it is active; periods override the single date', () => {
    const periods = [
      { start: '2024-01-01', end: '2024-01-10' },
      { start: '2024-03-01', end: '2024-03-10' },
    ];
    expect(isActiveOn(use({ periods }), '2024-03-05', dateOf, false)).toBe(true);
    expect(
      isActiveOn(
        use({ periods: periods.slice(0, 1), singleDate: '2024-03-05' }),
        '2024-03-05',
        dateOf,
        true,
      ),
    ).toBe(false);
  });

  it('when only a single date is known, then it opens a course only while active', () => {
    expect(isActiveOn(use({ singleDate: '2024-03-01' }), '2024-03-05', dateOf, true)).toBe(true);
    expect(isActiveOn(use({ singleDate: '2024-03-01' }), '2024-03-05', dateOf, false)).toBe(false);
    expect(isActiveOn(use({ singleDate: '2024-03-05' }), '2024-03-05', dateOf, false)).toBe(true);
    expect(isActiveOn(use({}), '2024-03-05', dateOf, true)).toBe(false);
  });

  it('when a period end is a UTC instant, then it is read as a centre-zone date', () => {
    // 2024-03-05T03:00Z is still 4 March in Chicago: the course ended the day before the visit.
    expect(
      isActiveOn(
        use({ periods: [{ start: '2024-03-01', end: '2024-03-05T03:00:00Z' }] }),
        '2024-03-05',
        dateOf,
        false,
      ),
    ).toBe(false);
  });

  it('when end dates are asked, then the latest end is returned, or null for an open period', () => {
    expect(
      endDateOf(
        use({
          periods: [
            { start: '2024-01-01', end: '2024-02-01' },
            { start: null, end: '2024-03-01' },
          ],
        }),
        dateOf,
      ),
    ).toBe('2024-03-01');
    expect(endDateOf(use({ periods: [{ start: '2024-01-01', end: null }] }), dateOf)).toBeNull();
  });
});

describe('course dates (review items 2, 3, 6, 11)', () => {
  const calendar = createZoneCalendar('America/Chicago');
  const dateOf = (v: string | null) => calendar.dateOf(v);

  it('when a status is no longer active and the period has no end, then it closes at its start date', () => {
    const open = use({ status: 'completed', periods: [{ start: '2023-01-10', end: null }] });
    expect(isActiveOn(open, '2024-03-05', dateOf, false)).toBe(false);
    expect(isActiveOn(open, '2023-01-10', dateOf, false)).toBe(true);
    expect(endDateOf(open, dateOf, false)).toBe('2023-01-10');
  });

  it('when a statement no longer active has dateAsserted, then its open period closes the day before', () => {
    const asserted = use({
      status: 'completed',
      periods: [{ start: '2024-02-20', end: null }],
      dateAsserted: '2024-03-10T15:00:00Z',
    });
    expect(useDatesOf(asserted, dateOf, false).periods).toEqual([
      { start: '2024-02-20', end: '2024-03-09' },
    ]);
    expect(isActiveOn(asserted, '2024-03-10', dateOf, false)).toBe(false);
    // Asserted before the start: the start date alone.
    const early = use({
      periods: [{ start: '2024-02-20', end: null }],
      dateAsserted: '2024-02-01',
    });
    expect(useDatesOf(early, dateOf, false).periods).toEqual([
      { start: '2024-02-20', end: '2024-02-20' },
    ]);
  });

  it('when a duration is added, then it counts calendar days, weeks, months and years, part days rounded up', () => {
    expect(addDuration('2023-12-01', 5, 'd')).toBe('2023-12-06');
    expect(addDuration('2024-02-26', 1, 'wk')).toBe('2024-03-04');
    expect(addDuration('2024-03-05', 36, 'h')).toBe('2024-03-07');
    expect(addDuration('2024-01-31', 1, 'mo')).toBe('2024-02-29');
    expect(addDuration('2024-02-29', 1, 'a')).toBe('2025-02-28');
    expect(addDuration('2024-03-05', 5, 'days')).toBeNull();
  });

  it('when a boundsDuration has a unit word and no UCUM code, then the word is read as its UCUM unit', () => {
    expect(durationUnitOf(null, 'days')).toBe('d');
    expect(durationUnitOf(null, 'Day(s)')).toBe('d');
    expect(durationUnitOf(null, ' weeks ')).toBe('wk');
    expect(durationUnitOf(null, 'month')).toBe('mo');
    expect(durationUnitOf(null, 'hours')).toBe('h');
    expect(durationUnitOf(null, 'year(s)')).toBe('a');
    expect(durationUnitOf('d', 'days')).toBe('d');
    expect(durationUnitOf('days', null)).toBe('d');
    expect(durationUnitOf('wk', 'fortnight')).toBe('wk');
    expect(durationUnitOf(null, 'fortnight')).toBeNull();
    expect(durationUnitOf('cycles', null)).toBeNull();
    expect(durationUnitOf(null, null)).toBeNull();
  });

  it('when a request has a boundsDuration, then its course runs from authoredOn (or the boundsPeriod start)', () => {
    const burst = use({
      resourceType: 'MedicationRequest',
      singleDate: '2023-12-01',
      durations: [{ value: 5, unit: 'd' }],
    });
    expect(isActiveOn(burst, '2023-12-06', dateOf, true)).toBe(true);
    expect(isActiveOn(burst, '2024-03-05', dateOf, true)).toBe(false);
    const fromPeriod = use({
      resourceType: 'MedicationRequest',
      singleDate: '2024-01-01',
      periods: [{ start: '2024-03-01', end: null }],
      durations: [{ value: 2, unit: 'wk' }],
    });
    expect(useDatesOf(fromPeriod, dateOf, true).periods).toContainEqual({
      start: '2024-03-01',
      end: '2024-03-15',
    });
  });

  it('when a request has dosage bounds, then the dispense validity period is not used', () => {
    const validity = { start: '2024-02-01', end: '2025-02-01' };
    const bounded = use({
      resourceType: 'MedicationRequest',
      status: 'completed',
      periods: [{ start: '2024-02-01', end: '2024-02-10' }],
      validity,
    });
    expect(isActiveOn(bounded, '2024-03-05', dateOf, false)).toBe(false);
    const validityOnly = use({ resourceType: 'MedicationRequest', status: 'completed', validity });
    expect(isActiveOn(validityOnly, '2024-03-05', dateOf, false)).toBe(true);
  });

  it('when a date is partial, then it keeps its precision (first day as a start, last day as an end)', () => {
    expect(
      useDatesOf(use({ periods: [{ start: '2024-02', end: '2024-02' }] }), dateOf).periods,
    ).toEqual([{ start: '2024-02-01', end: '2024-02-29' }]);
    const year = use({ singleDate: '2024' });
    expect(isActiveOn(year, '2024-03-05', dateOf, true)).toBe(true);
    expect(isActiveOn(year, '2024-12-31', dateOf, false)).toBe(true);
    expect(isActiveOn(year, '2025-01-01', dateOf, false)).toBe(false);
  });

  it('when there is no usable date at all, then the dates say undated', () => {
    expect(useDatesOf(use({}), dateOf).undated).toBe(true);
    expect(useDatesOf(use({ singleDate: 'not a date' }), dateOf).undated).toBe(true);
    expect(useDatesOf(use({ singleDate: '2024-03' }), dateOf).undated).toBe(false);
  });
});

describe('local forms (review item 4)', () => {
  const hydrocortisone = rx('5492');

  it('when the text uses a plural local form word, then the form is local', () => {
    for (const text of [
      'hydrocortisone 100 mg/60 mL enemas',
      'hydrocortisone 25 mg suppositories',
      'hydrocortisone 1% ointments',
      'hydrocortisone creams',
      'hydrocortisone ear drops, both ears',
      'Cortifoam 10% aerosol',
      'for external use',
    ]) {
      expect(
        judgeSteroid(index, use({ codings: [hydrocortisone], text }), undefined)?.systemic,
        text,
      ).toBe(false);
    }
  });

  it('when the route text is a local abbreviation or phrase, then the form is local; PO stays systemic', () => {
    for (const route of [
      'PR',
      'ou',
      'Both Eyes',
      'left eye',
      'Each Nostril',
      'Both Ears',
      'nasal',
    ]) {
      expect(
        judgeSteroid(index, use({ codings: [hydrocortisone], routeTexts: [route] }), undefined)
          ?.systemic,
        route,
      ).toBe(false);
    }
    expect(
      judgeSteroid(index, use({ codings: [hydrocortisone], routeTexts: ['PO'] }), undefined)
        ?.systemic,
    ).toBe(true);
  });

  it('when a dose form or route is coded without display, then its code decides', () => {
    const ointment = medication({
      codings: [hydrocortisone],
      formCodings: [{ system: SNOMED, code: '385101003', display: null }],
    });
    expect(judgeSteroid(index, use({ medicationReference: '#med' }), ointment)?.systemic).toBe(
      false,
    );
    const rectal = { system: 'http://standardterms.edqm.eu', code: '20061000', display: null };
    expect(
      judgeSteroid(index, use({ codings: [hydrocortisone], routeCodings: [rectal] }), undefined)
        ?.systemic,
    ).toBe(false);
    const oral = { system: 'http://standardterms.edqm.eu', code: '20053000', display: null };
    expect(
      judgeSteroid(index, use({ codings: [hydrocortisone], routeCodings: [oral] }), undefined)
        ?.systemic,
    ).toBe(true);
  });
});

describe('product codes and brands (review item 14)', () => {
  it('when a PEDSnet product code comes without display, then it is recognised by code', () => {
    expect(judgeSteroid(index, use({ codings: [rx('198148')] }), undefined)).toEqual({
      ingredient: 'prednisone',
      matchedBy: 'product-code',
      systemic: true,
    });
    expect(judgeSteroid(index, use({ codings: [rx('762675')] }), undefined)?.ingredient).toBe(
      'methylprednisolone',
    );
  });

  it('when only a brand name is written, then it names its ingredient', () => {
    expect(judgeSteroid(index, use({ text: 'Decadron 4 mg tablet' }), undefined)).toMatchObject({
      ingredient: 'dexamethasone',
      matchedBy: 'text',
      systemic: true,
    });
    expect(
      judgeSteroid(index, use({ text: 'Pediapred 5 mg/5 mL oral solution' }), undefined)
        ?.ingredient,
    ).toBe('prednisolone');
  });
});
