// Calendar dates in the centre's time zone. A visit at 23:30 in Chicago is that day in
// Chicago even though it is the next day in UTC, so every "same day" comparison goes
// through here. Formatting with Intl is slow, so results are cached per 15-minute slot
// (every real zone offset is a multiple of 15 minutes).

const SLOT_MS = 15 * 60 * 1000;
const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/;
const HAS_ZONE = /(Z|[+-]\d{2}:\d{2})$/;

/** Converts FHIR date/dateTime strings to calendar dates (YYYY-MM-DD) in one IANA zone. */
export interface ZoneCalendar {
  readonly timeZone: string;
  /** The calendar date in the zone, or null when the value has no day (e.g. `2024-03`). */
  dateOf(value: string | null | undefined): string | null;
  /** Milliseconds since the epoch, for ordering; a date-only value counts as UTC midnight. */
  instantOf(value: string | null | undefined): number | null;
}

/** Builds a calendar for `timeZone`; throws RangeError for an unknown zone. */
export function createZoneCalendar(timeZone: string): ZoneCalendar {
  const format = new Intl.DateTimeFormat('en-CA', {
    timeZone,
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
  });
  const cache = new Map<number, string>();
  const dateOfInstant = (ms: number): string => {
    const slot = Math.floor(ms / SLOT_MS);
    let date = cache.get(slot);
    if (date === undefined) {
      const parts = format.formatToParts(new Date(slot * SLOT_MS));
      let y = '';
      let m = '';
      let d = '';
      for (const p of parts) {
        if (p.type === 'year') y = p.value;
        else if (p.type === 'month') m = p.value;
        else if (p.type === 'day') d = p.value;
      }
      date = `${y}-${m}-${d}`;
      if (cache.size > 100_000) cache.clear();
      cache.set(slot, date);
    }
    return date;
  };
  return {
    timeZone,
    dateOf(value) {
      if (!value || value.length < 10) return null;
      if (value.length === 10) return DATE_ONLY.test(value) ? value : null;
      // A dateTime without an offset is already local time (FHIR requires one, some EHRs omit it).
      if (!HAS_ZONE.test(value))
        return DATE_ONLY.test(value.slice(0, 10)) ? value.slice(0, 10) : null;
      const ms = Date.parse(value);
      return Number.isNaN(ms) ? null : dateOfInstant(ms);
    },
    instantOf(value) {
      if (!value) return null;
      const ms = Date.parse(value.length === 10 ? `${value}T00:00:00Z` : value);
      return Number.isNaN(ms) ? null : ms;
    },
  };
}

/** Days from date `a` to date `b` (both YYYY-MM-DD); positive when b is later. */
export function daysBetween(a: string, b: string): number {
  return Math.round((Date.parse(`${b}T00:00:00Z`) - Date.parse(`${a}T00:00:00Z`)) / 86_400_000);
}

/** Whole months from a birth date (YYYY-MM-DD or YYYY-MM) to a date; null when not computable. */
export function wholeMonthsBetween(birthDate: string, date: string): number | null {
  const b = /^(\d{4})-(\d{2})(?:-(\d{2}))?$/.exec(birthDate);
  const d = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date);
  if (!b || !d) return null;
  const by = Number(b[1]);
  const bm = Number(b[2]);
  const bd = b[3] ? Number(b[3]) : 1;
  let months = (Number(d[1]) - by) * 12 + (Number(d[2]) - bm);
  if (Number(d[3]) < bd) months -= 1;
  return months < 0 ? null : months;
}
