// The centre-zone calendar must agree with Intl (the slow, trusted reference) for every
// instant, including DST changes and half-hour zones, and parse FHIR timestamps like Date.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { xorshift } from '../support/xorshift.js';
import {
  createZoneCalendar,
  dayNumberOf,
  daysBetween,
  isCalendarDate,
  parseFhirInstant,
  wholeMonthsBetween,
} from '../../src/mapping/dates.js';

function referenceDate(ms: number, timeZone: string): string {
  return new Intl.DateTimeFormat('en-CA', {
    timeZone,
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
  }).format(new Date(ms));
}

const ZONES = [
  'UTC',
  'America/Chicago',
  'America/New_York',
  'Europe/London',
  'Asia/Kolkata',
  'Australia/Adelaide',
  'Pacific/Chatham',
];

describe('zone calendar', () => {
  it('when any instant from 1990 to 2040 is dated in a zone, then the date equals the Intl date', () => {
    const calendars = new Map(ZONES.map((z) => [z, createZoneCalendar(z)]));
    fc.assert(
      fc.property(
        fc.integer({ min: Date.UTC(1990, 0, 1), max: Date.UTC(2040, 0, 1) }),
        fc.constantFrom(...ZONES),
        (ms, zone) => {
          const iso = new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
          expect(calendars.get(zone)!.dateOf(iso)).toBe(referenceDate(Date.parse(iso), zone));
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('when instants straddle the 2024 US DST changes, then Chicago dates match Intl minute by minute', () => {
    const calendar = createZoneCalendar('America/Chicago');
    for (const start of [Date.UTC(2024, 2, 10, 0), Date.UTC(2024, 10, 3, 0)]) {
      for (let ms = start; ms < start + 24 * 3_600_000; ms += 7 * 60_000) {
        const iso = new Date(ms).toISOString();
        expect(calendar.dateOf(iso), iso).toBe(referenceDate(ms, 'America/Chicago'));
      }
    }
  });

  it('when a late-evening Chicago visit is given in UTC, then its date is the Chicago day', () => {
    const calendar = createZoneCalendar('America/Chicago');
    expect(calendar.dateOf('2024-03-06T03:30:00Z')).toBe('2024-03-05');
    expect(calendar.dateOf('2024-03-05T21:30:00-06:00')).toBe('2024-03-05');
    expect(createZoneCalendar('UTC').dateOf('2024-03-06T03:30:00Z')).toBe('2024-03-06');
  });

  it('when a value is a date, a local dateTime without offset, partial or malformed, then it is handled without guessing', () => {
    const calendar = createZoneCalendar('Asia/Kolkata');
    expect(calendar.dateOf('2024-03-05')).toBe('2024-03-05');
    expect(calendar.dateOf('2024-03-05T23:30:00')).toBe('2024-03-05');
    expect(calendar.dateOf('2024-03')).toBeNull();
    expect(calendar.dateOf('2024')).toBeNull();
    expect(calendar.dateOf('yesterday')).toBeNull();
    expect(calendar.dateOf('2024-13-05T10:00:00Z')).toBeNull();
    expect(calendar.dateOf(null)).toBeNull();
  });

  it('when any value is given, then dayOf is the day number of dateOf (null alike)', () => {
    const calendars = ZONES.map((z) => createZoneCalendar(z));
    const value = fc.oneof(
      fc
        .integer({ min: Date.UTC(1990, 0, 1), max: Date.UTC(2040, 0, 1) })
        .chain((ms) =>
          fc.constantFrom(
            new Date(ms).toISOString(),
            new Date(ms).toISOString().slice(0, 19),
            new Date(ms).toISOString().slice(0, 10),
            new Date(ms).toISOString().slice(0, 7),
            `${new Date(ms).toISOString().slice(0, 19)}+05:30`,
            `${new Date(ms).toISOString().slice(0, 19)}-11:00`,
          ),
        ),
      fc.string({ maxLength: 30 }),
    );
    fc.assert(
      fc.property(value, fc.nat(ZONES.length - 1), (v, z) => {
        const calendar = calendars[z]!;
        expect(calendar.dayOf(v)).toBe(dayNumberOf(calendar.dateOf(v)));
        const instant = calendar.instantOf(v);
        expect(calendar.dayOf(v, instant)).toBe(dayNumberOf(calendar.dateOf(v, instant)));
      }),
      { numRuns: 3000 },
    );
    expect(calendars[0]!.dayOf(null)).toBeNull();
  });

  it('when an unknown time zone is given, then creating the calendar throws', () => {
    expect(() => createZoneCalendar('Mars/Olympus')).toThrow(RangeError);
  });
});

describe('parseFhirInstant', () => {
  it('when a FHIR dateTime with any offset and fraction is parsed, then it equals Date.parse', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: Date.UTC(1950, 0, 1), max: Date.UTC(2060, 0, 1) }),
        fc.integer({ min: -12 * 4, max: 14 * 4 }),
        fc.constantFrom('', '.5', '.123', '.123456'),
        (ms, quarterHours, fraction) => {
          const offsetMin = quarterHours * 15;
          const local = new Date(ms + offsetMin * 60_000).toISOString().slice(0, 19);
          const sign = offsetMin < 0 ? '-' : '+';
          const abs = Math.abs(offsetMin);
          const zone =
            offsetMin === 0 && quarterHours % 2 === 0
              ? 'Z'
              : `${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
          const value = `${local}${fraction}${zone}`;
          expect(parseFhirInstant(value)).toBe(Date.parse(value));
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('when any date from year 100 to 9999 is parsed, then it is Date.UTC midnight, and a day past the month end (2023-02-29, 2024-04-31) is no date', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 100, max: 9999 }),
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 1, max: 31 }),
        (y, m, d) => {
          const value = `${String(y).padStart(4, '0')}-${String(m).padStart(2, '0')}-${String(d).padStart(2, '0')}`;
          // Date.UTC rolls a day past the month end over into the next month.
          const real = new Date(Date.UTC(y, m - 1, d)).getUTCDate() === d;
          expect(parseFhirInstant(value), value).toBe(real ? Date.UTC(y, m - 1, d) : null);
          expect(parseFhirInstant(`${value}T23:59:59.999Z`), value).toBe(
            real ? Date.UTC(y, m - 1, d, 23, 59, 59, 999) : null,
          );
          expect(isCalendarDate(value), value).toBe(real);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('when a date or malformed text is parsed, then dates are UTC midnight and garbage is null', () => {
    expect(parseFhirInstant('2024-03-05')).toBe(Date.UTC(2024, 2, 5));
    expect(parseFhirInstant('2024-03-05T10:00Z')).toBe(Date.UTC(2024, 2, 5, 10));
    expect(parseFhirInstant('2024-03-05 10:00:00Z')).toBeNull();
    expect(parseFhirInstant('2024-03-05T10:00:00+0100')).toBeNull();
    expect(parseFhirInstant('not a date')).toBeNull();
  });
});

describe('date arithmetic', () => {
  it('when days and months are counted, then they follow the calendar', () => {
    expect(daysBetween('2024-02-28', '2024-03-01')).toBe(2);
    expect(daysBetween('2024-03-05', '2024-02-24')).toBe(-10);
    expect(wholeMonthsBetween('2012-05-20', '2024-03-05')).toBe(141);
    expect(wholeMonthsBetween('2012-05-20', '2024-05-20')).toBe(144);
    expect(wholeMonthsBetween('2025-01-01', '2024-05-01')).toBeNull();
    expect(wholeMonthsBetween('2012', '2024-05-01')).toBeNull();
  });

  it('when the birth date has only a year and month, then the age is the one that holds whatever the day of birth', () => {
    // Born some day in May 2012: on 5 March 2024 a birth on 1-5 May gives 142 whole months, a
    // later one 141; only 141 holds whatever the day (counting from 1 May overstated it).
    expect(wholeMonthsBetween('2012-05-01', '2024-03-05')).toBe(142);
    expect(wholeMonthsBetween('2012-05-31', '2024-03-05')).toBe(141);
    expect(wholeMonthsBetween('2012-05', '2024-03-05')).toBe(141);
    // On 1 May 2024 someone born on 1 May 2012 is 144 months, someone born on 31 May 143.
    expect(wholeMonthsBetween('2012-05-01', '2024-05-01')).toBe(144);
    expect(wholeMonthsBetween('2012-05', '2024-05-01')).toBe(143);
    expect(wholeMonthsBetween('2012-05', '2024-05-30')).toBe(143);
    expect(wholeMonthsBetween('2012-05', '2024-05-31')).toBe(144);
    // February: its last day in a leap year is the 29th.
    expect(wholeMonthsBetween('2012-02', '2024-03-28')).toBe(144);
    expect(wholeMonthsBetween('2012-02', '2024-03-29')).toBe(145);
    // Within the birth month only 0 months can hold; before it, no age.
    expect(wholeMonthsBetween('2024-03', '2024-03-05')).toBe(0);
    expect(wholeMonthsBetween('2024-03', '2024-02-28')).toBeNull();
    expect(wholeMonthsBetween('2012-13', '2024-03-05')).toBeNull();
  });

  it('when whole months are counted for well-formed and malformed dates, then they match the regular-expression definition', () => {
    // The definition by regular expressions: a year-month birth date is the minimum over
    // every day of birth in that month (the age that holds whatever the day).
    const reference = (birthDate: string, date: string): number | null => {
      const b = /^(\d{4})-(\d{2})(?:-(\d{2}))?$/.exec(birthDate);
      const d = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date);
      if (!b || !d) return null;
      const by = Number(b[1]);
      const bm = Number(b[2]);
      const months = (Number(d[1]) - by) * 12 + (Number(d[2]) - bm);
      const age = (bd: number): number | null => {
        const m = Number(d[3]) < bd ? months - 1 : months;
        return m < 0 ? null : m;
      };
      if (bm < 1 || bm > 12) return null;
      const last = new Date(Date.UTC(by, bm, 0)).getUTCDate();
      if (b[3]) {
        const bd = Number(b[3]);
        return bd >= 1 && bd <= last ? age(bd) : null;
      }
      if (months === 0) return 0;
      let min: number | null = Infinity;
      for (let bd = 1; bd <= last; bd++) {
        const a = age(bd);
        if (a === null || (min !== null && a < min)) min = a;
        if (min === null) break;
      }
      return min;
    };
    const next = xorshift(0x1234567).int;
    const chars = '0123456789-0123456789-/T x\u0660';
    const pick = (): string => {
      const kind = next(4);
      const y = String(1990 + next(40));
      const m = String(next(14)).padStart(2, '0');
      const d = String(next(33)).padStart(2, '0');
      if (kind === 0) return `${y}-${m}-${d}`;
      if (kind === 1) return `${y}-${m}`;
      let s = `${y}-${m}-${d}`;
      const i = next(s.length);
      s = s.slice(0, i) + chars[next(chars.length)]! + s.slice(i + (kind === 2 ? 1 : 0));
      return s;
    };
    const wrong: string[] = [];
    for (let i = 0; i < 20_000; i++) {
      const b = pick();
      const d = pick();
      if (wholeMonthsBetween(b, d) !== reference(b, d)) wrong.push(`${b} ${d}`);
    }
    expect(wrong).toEqual([]);
  });
});
