// Steroid recognition rules one by one (the golden fixtures show them end to end): which
// evidence names the ingredient, which signals make a form local, and when a course is
// active on the visit date.
import { beforeAll, describe, expect, it } from 'vitest';
import { createZoneCalendar } from '../../src/mapping/dates.js';
import { RXNORM, SNOMED } from '../../src/mapping/pack-schema.js';
import {
  endDateOf,
  isActiveOn,
  judgeSteroid,
  type MedicationInfo,
  type MedicationUse,
} from '../../src/mapping/steroids.js';
import { buildPackIndex, type PackIndex } from '../../src/mapping/value-sets.js';
import { loadIbdPack } from './support/pack.js';

let index: PackIndex;
beforeAll(async () => {
  index = buildPackIndex(await loadIbdPack());
});

function use(partial: Partial<MedicationUse>): MedicationUse {
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
    singleDate: null,
    versionId: null,
    lastUpdated: null,
    ...partial,
  };
}

function medication(partial: Partial<MedicationInfo>): MedicationInfo {
  return {
    id: 'med',
    codings: [],
    ingredientCodings: [],
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

  it('when words only contain a local-form word inside another word, then they do not count as local', () => {
    expect(
      judgeSteroid(
        index,
        use({ codings: [rx('8640')], text: 'prednisone, year-long taper, gelcap-free' }),
        undefined,
      )?.systemic,
    ).toBe(true);
  });
});

describe('isActiveOn', () => {
  const calendar = createZoneCalendar('America/Chicago');
  const dateOf = (v: string | null) => calendar.dateOf(v);

  it('when a period covers the visit date, then it is active; an open end stays active', () => {
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
        false,
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
