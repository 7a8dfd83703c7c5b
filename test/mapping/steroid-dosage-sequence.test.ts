// Course length from dosage steps (FHIR R4 Dosage.sequence: different numbers apply one after
// another, the same number at the same time) and from a count of doses with no bounds.
import { describe, expect, it } from 'vitest';
import { createZoneCalendar } from '../../src/mapping/dates.js';
import { isActiveOn, useDatesOf } from '../../src/mapping/steroids.js';
import { medicationUse } from './support/medication-use.js';

const calendar = createZoneCalendar('UTC');
const dateOf = (v: string | null) => calendar.dateOf(v);

describe('dosage steps and dose counts', () => {
  it('when a taper gives two 7-day steps with sequence 1 and 2, then the course runs 14 days', () => {
    const taper = medicationUse({
      resourceType: 'MedicationRequest',
      singleDate: '2024-02-25',
      durations: [
        { value: 7, unit: 'd', sequence: 1 },
        { value: 7, unit: 'd', sequence: 2 },
      ],
    });
    expect(useDatesOf(taper, dateOf, true).periods).toEqual([
      { start: '2024-02-25', end: '2024-03-10' },
    ]);
    expect(isActiveOn(taper, '2024-03-05', dateOf, true)).toBe(true);
    expect(isActiveOn(taper, '2024-03-11', dateOf, true)).toBe(false);
  });

  it('when dosages share a sequence number, then the longest decides that step', () => {
    const steps = medicationUse({
      resourceType: 'MedicationRequest',
      singleDate: '2024-02-25',
      durations: [
        { value: 3, unit: 'd', sequence: 1 },
        { value: 1, unit: 'wk', sequence: 1 },
        { value: 5, unit: 'd', sequence: 2 },
      ],
    });
    // 25 Feb + 7 days = 3 March, + 5 days = 8 March.
    expect(useDatesOf(steps, dateOf, true).end).toBe('2024-03-08');
  });

  it('when the steps are listed out of order, then they are chained by sequence number', () => {
    const steps = medicationUse({
      resourceType: 'MedicationRequest',
      singleDate: '2024-01-31',
      durations: [
        { value: 10, unit: 'd', sequence: 2 },
        { value: 1, unit: 'mo', sequence: 1 },
      ],
    });
    // 31 Jan + 1 month = 29 Feb (2024), + 10 days = 10 March.
    expect(useDatesOf(steps, dateOf, true).end).toBe('2024-03-10');
  });

  it('when dosages carry no sequence, then each still runs from the course start', () => {
    const parallel = medicationUse({
      resourceType: 'MedicationRequest',
      singleDate: '2024-02-25',
      durations: [
        { value: 7, unit: 'd' },
        { value: 5, unit: 'd', sequence: null },
      ],
    });
    expect(useDatesOf(parallel, dateOf, true).periods).toEqual([
      { start: '2024-02-25', end: '2024-03-03' },
      { start: '2024-02-25', end: '2024-03-01' },
    ]);
  });

  it('when some dosages are sequenced and one is not, then the chain and the unsequenced one both start at the course start', () => {
    const mixed = medicationUse({
      resourceType: 'MedicationRequest',
      periods: [{ start: '2024-03-01', end: null }],
      durations: [
        { value: 2, unit: 'd' },
        { value: 4, unit: 'd', sequence: 1 },
        { value: 4, unit: 'd', sequence: 2 },
      ],
    });
    expect(useDatesOf(mixed, dateOf, true).periods).toEqual([
      { start: '2024-03-01', end: null },
      { start: '2024-03-01', end: '2024-03-03' },
      { start: '2024-03-01', end: '2024-03-09' },
    ]);
  });
});
