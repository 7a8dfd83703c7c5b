// Calendar dates in the centre's time zone. A visit at 23:30 in Chicago is that day in
// Chicago even though it is the next day in UTC, so every "same day" comparison goes
// through here. This runs for every observation, so it avoids Date.parse and Intl in the
// common case: FHIR timestamps are parsed by hand, and the zone's UTC offset is looked up
// once per UTC day and zone, for all calendars of that zone (Intl is asked again only on the
// days a DST change happens).

const DAY_MS = 86_400_000;
const SLOT_MS = 15 * 60 * 1000;

/** Converts FHIR date/dateTime strings to calendar dates (YYYY-MM-DD) in one IANA zone. */
export interface ZoneCalendar {
  readonly timeZone: string;
  /**
   * The calendar date in the zone, or null when the value has no day (e.g. `2024-03`) or is
   * not a FHIR date/dateTime. Pass `instant` when already known (saves parsing again).
   */
  dateOf(value: string | null | undefined, instant?: number | null): string | null;
  /** Milliseconds since the epoch, for ordering; a date-only value counts as UTC midnight. */
  instantOf(value: string | null | undefined): number | null;
  /**
   * The calendar date in the zone as a day number (days since 1970-01-01): the day of
   * `dateOf`, without making its text. Null exactly when `dateOf` is null.
   */
  dayOf(value: string | null | undefined, instant?: number | null): number | null;
}

const c0 = 48; // '0'

/** The number written by `count` digits at `start`, or -1 when any is not a digit. */
function digits(s: string, start: number, count: number): number {
  let n = 0;
  for (let i = start; i < start + count; i++) {
    const d = s.charCodeAt(i) - c0;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/** Two digits at `i`, or -1 (the common case of `digits`, unrolled). */
function digits2(s: string, i: number): number {
  const a = s.charCodeAt(i) - c0;
  const b = s.charCodeAt(i + 1) - c0;
  return a >= 0 && a <= 9 && b >= 0 && b <= 9 ? a * 10 + b : -1;
}

/**
 * Days since 1970-01-01 of a proleptic Gregorian date (days-from-civil arithmetic; `d` past
 * the month's end rolls over as in Date.UTC). Plain arithmetic: cheaper than a Date.UTC call.
 */
function daysFromCivil(y: number, m: number, d: number): number {
  const yy = m <= 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const doy = Math.floor((153 * (m > 2 ? m - 3 : m + 9) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146_097 + doe - 719_468;
}

/**
 * Parses FHIR `YYYY-MM-DD` and `YYYY-MM-DDThh:mm[:ss[.fff]](Z|±hh:mm)` to epoch ms; a
 * dateTime without offset is read as UTC (only used for ordering). Null when malformed.
 */
export function parseFhirInstant(s: string): number | null {
  const len = s.length;
  if (len < 10 || s.charCodeAt(4) !== 45 || s.charCodeAt(7) !== 45) return null;
  const y = digits(s, 0, 4);
  const mo = digits2(s, 5);
  const d = digits2(s, 8);
  // A day past the month's end (2024-02-30) is no date: it would roll over into the next month.
  if (y < 0 || mo < 1 || mo > 12 || d < 1 || d > daysInMonthOf(y, mo)) return null;
  const day = daysFromCivil(y, mo, d);
  if (len === 10) return day * DAY_MS;
  if (s.charCodeAt(10) !== 84 || len < 16 || s.charCodeAt(13) !== 58) return null; // 'T', ':'
  const h = digits2(s, 11);
  const mi = digits2(s, 14);
  if (h < 0 || h > 23 || mi < 0 || mi > 59) return null;
  let i = 16;
  let sec = 0;
  let ms = 0;
  if (s.charCodeAt(i) === 58) {
    sec = digits2(s, i + 1);
    if (sec < 0 || sec > 60) return null;
    i += 3;
    if (s.charCodeAt(i) === 46) {
      i++;
      let scale = 100;
      while (i < len) {
        const dd = s.charCodeAt(i) - c0;
        if (dd < 0 || dd > 9) break;
        ms += dd * scale;
        scale /= 10;
        i++;
      }
      ms = Math.floor(ms);
    }
  }
  let offsetMin = 0;
  if (i !== len) {
    const sign = s.charCodeAt(i);
    if (sign === 90 && i + 1 === len)
      offsetMin = 0; // 'Z'
    else if ((sign === 43 || sign === 45) && len === i + 6 && s.charCodeAt(i + 3) === 58) {
      const oh = digits2(s, i + 1);
      const om = digits2(s, i + 4);
      if (oh < 0 || om < 0) return null;
      offsetMin = (sign === 45 ? -1 : 1) * (oh * 60 + om);
    } else return null;
  }
  return day * DAY_MS + (h * 60 + mi - offsetMin) * 60_000 + sec * 1000 + ms;
}

/** True when a dateTime ends in `Z` or `±hh:mm`. */
function hasZone(s: string): boolean {
  const n = s.length;
  if (s.charCodeAt(n - 1) === 90) return true;
  if (n < 22) return false;
  const sign = s.charCodeAt(n - 6);
  return (sign === 43 || sign === 45) && s.charCodeAt(n - 3) === 58;
}

/** YYYY-MM-DD of a day number (days since 1970-01-01), by civil-from-days arithmetic. */
function civilDate(days: number): string {
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor(
    (doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365,
  );
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const m = mp < 10 ? mp + 3 : mp - 9;
  const y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  return `${String(y).padStart(4, '0')}-${m < 10 ? '0' : ''}${m}-${d < 10 ? '0' : ''}${d}`;
}

/** What a zone's calendars learn from Intl: kept per zone, so each mapper need not ask again. */
interface ZoneCache {
  format: Intl.DateTimeFormat;
  /**
   * Per UTC day: the offset when it is the same at both ends of the day, else NaN (a DST
   * change inside that day; then each 15-minute slot is asked separately).
   */
  dayOffset: Map<number, number>;
  slotOffset: Map<number, number>;
  /** Day number -> YYYY-MM-DD. */
  dates: Map<number, string>;
}

// A service maps many centres but few zones; the caches are bounded (cleared past 200k).
const zoneCaches = new Map<string, ZoneCache>();

function zoneCache(timeZone: string): ZoneCache {
  let cache = zoneCaches.get(timeZone);
  if (!cache) {
    cache = {
      format: new Intl.DateTimeFormat('en-US', {
        timeZone,
        hourCycle: 'h23',
        year: 'numeric',
        month: 'numeric',
        day: 'numeric',
        hour: 'numeric',
        minute: 'numeric',
      }),
      dayOffset: new Map(),
      slotOffset: new Map(),
      dates: new Map(),
    };
    if (zoneCaches.size > 1_000) zoneCaches.clear();
    zoneCaches.set(timeZone, cache);
  }
  return cache;
}

/** Builds a calendar for `timeZone`; throws RangeError for an unknown zone. */
export function createZoneCalendar(timeZone: string): ZoneCalendar {
  const { format, dayOffset, slotOffset, dates } = zoneCache(timeZone);
  /** The zone's offset from UTC in minutes at an instant (Intl; slow, so cached by callers). */
  const offsetAt = (ms: number): number => {
    const at = Math.floor(ms / 60_000) * 60_000;
    let y = 0;
    let mo = 0;
    let d = 0;
    let h = 0;
    let mi = 0;
    for (const p of format.formatToParts(new Date(at))) {
      if (p.type === 'year') y = Number(p.value);
      else if (p.type === 'month') mo = Number(p.value);
      else if (p.type === 'day') d = Number(p.value);
      else if (p.type === 'hour') h = Number(p.value);
      else if (p.type === 'minute') mi = Number(p.value);
    }
    return Math.round((Date.UTC(y, mo - 1, d, h, mi) - at) / 60_000);
  };
  /** The local day number of an instant. */
  const localDayOf = (ms: number): number => {
    const utcDay = Math.floor(ms / DAY_MS);
    let offset = dayOffset.get(utcDay);
    if (offset === undefined) {
      const start = offsetAt(utcDay * DAY_MS);
      const end = offsetAt(utcDay * DAY_MS + DAY_MS - 60_000);
      offset = start === end ? start : Number.NaN;
      if (dayOffset.size > 200_000) dayOffset.clear();
      dayOffset.set(utcDay, offset);
    }
    if (Number.isNaN(offset)) {
      const slot = Math.floor(ms / SLOT_MS);
      let o = slotOffset.get(slot);
      if (o === undefined) {
        o = offsetAt(slot * SLOT_MS);
        slotOffset.set(slot, o);
      }
      offset = o;
    }
    return Math.floor((ms + offset * 60_000) / DAY_MS);
  };
  const dateOfInstant = (ms: number): string => {
    const localDay = localDayOf(ms);
    let date = dates.get(localDay);
    if (date === undefined) {
      date = civilDate(localDay);
      if (dates.size > 200_000) dates.clear();
      dates.set(localDay, date);
    }
    return date;
  };
  return {
    timeZone,
    dateOf(value, instant) {
      if (!value || value.length < 10) return null;
      const ms = instant === undefined || instant === null ? parseFhirInstant(value) : instant;
      if (ms === null) return null;
      // A date, or a dateTime without an offset (FHIR requires one, some EHRs omit it), is
      // already local.
      if (value.length === 10 || !hasZone(value)) return value.slice(0, 10);
      return dateOfInstant(ms);
    },
    instantOf(value) {
      return value ? parseFhirInstant(value) : null;
    },
    dayOf(value, instant) {
      if (!value || value.length < 10) return null;
      const ms = instant === undefined || instant === null ? parseFhirInstant(value) : instant;
      if (ms === null) return null;
      // As in dateOf: a date, or a dateTime without an offset, is already local (and was
      // read as UTC, so its UTC day is its local day).
      if (value.length === 10 || !hasZone(value)) return Math.floor(ms / DAY_MS);
      return localDayOf(ms);
    },
  };
}

/** The day number (days since 1970-01-01) of a YYYY-MM-DD date, or null. */
export function dayNumberOf(date: string | null): number | null {
  if (date === null) return null;
  const ms = parseFhirInstant(date);
  return ms === null ? null : Math.floor(ms / DAY_MS);
}

/** Days from date `a` to date `b` (both YYYY-MM-DD); positive when b is later. */
export function daysBetween(a: string, b: string): number {
  if (a === b) return 0;
  return Math.round(((parseFhirInstant(b) ?? 0) - (parseFhirInstant(a) ?? 0)) / DAY_MS);
}

/**
 * Whole months from a birth date (YYYY-MM-DD or YYYY-MM) to a date; null when not computable
 * (a year-only birth date, a malformed one, a date before the birth).
 *
 * A year-month birth date is counted conservatively: the age that holds whatever the day of
 * birth in that month, i.e. as if born on its last day (born "2012-05", on 2024-03-05 the age
 * is 141 months, not the 142 a birth on 1 May would give). A date within the birth month
 * itself is 0 months (the only age that can hold then).
 */
export function wholeMonthsBetween(birthDate: string, date: string): number | null {
  // Read by character codes (this runs once per visit): the shapes are exactly
  // /^\d{4}-\d{2}(-\d{2})?$/ for the birth date and /^\d{4}-\d{2}-\d{2}$/ for the date.
  const bl = birthDate.length;
  if ((bl !== 7 && bl !== 10) || date.length !== 10) return null;
  if (birthDate.charCodeAt(4) !== 45 || (bl === 10 && birthDate.charCodeAt(7) !== 45)) return null;
  if (date.charCodeAt(4) !== 45 || date.charCodeAt(7) !== 45) return null;
  const by = digits(birthDate, 0, 4);
  const bm = digits(birthDate, 5, 2);
  const dy = digits(date, 0, 4);
  const dm = digits(date, 5, 2);
  const dd = digits(date, 8, 2);
  if (by < 0 || bm < 0 || dy < 0 || dm < 0 || dd < 0) return null;
  let months = (dy - by) * 12 + (dm - bm);
  if (bl === 10) {
    const bd = digits(birthDate, 8, 2);
    if (bm < 1 || bm > 12 || bd < 1 || bd > daysInMonthOf(by, bm)) return null;
    if (dd < bd) months -= 1;
    return months < 0 ? null : months;
  }
  // Year-month: as if born on the month's last day (the age whatever the day of birth).
  if (bm < 1 || bm > 12) return null;
  if (months === 0) return 0;
  if (dd < daysInMonthOf(by, bm)) months -= 1;
  return months < 0 ? null : months;
}

/**
 * True for a FHIR `date` that is a real calendar date: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, the
 * month 01-12 and the day within it (no 30 February, no 31 April).
 */
export function isCalendarDate(s: string): boolean {
  const len = s.length;
  if (len !== 4 && len !== 7 && len !== 10) return false;
  const y = digits(s, 0, 4);
  if (y < 0) return false;
  if (len === 4) return true;
  const m = s.charCodeAt(4) === 45 ? digits2(s, 5) : -1;
  if (m < 1 || m > 12) return false;
  if (len === 7) return true;
  const d = s.charCodeAt(7) === 45 ? digits2(s, 8) : -1;
  return d >= 1 && d <= daysInMonthOf(y, m);
}

/** Days in month `m` (1-12) of year `y` (proleptic Gregorian). */
function daysInMonthOf(y: number, m: number): number {
  if (m === 2) return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28;
  return m === 4 || m === 6 || m === 9 || m === 11 ? 30 : 31;
}
