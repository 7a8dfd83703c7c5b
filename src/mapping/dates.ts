// Calendar dates in the centre's time zone. A visit at 23:30 in Chicago is that day in
// Chicago even though it is the next day in UTC, so every "same day" comparison goes
// through here. This runs for every observation, so it avoids Date.parse and Intl in the
// common case: FHIR timestamps are parsed by hand, and the zone's UTC offset is looked up
// once per UTC day (Intl is asked again only on the days a DST change happens).

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
}

const c0 = 48; // '0'

function digits(s: string, start: number, count: number): number {
  let n = 0;
  for (let i = start; i < start + count; i++) {
    const d = s.charCodeAt(i) - c0;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/**
 * Parses FHIR `YYYY-MM-DD` and `YYYY-MM-DDThh:mm[:ss[.fff]](Z|±hh:mm)` to epoch ms; a
 * dateTime without offset is read as UTC (only used for ordering). Null when malformed.
 */
export function parseFhirInstant(s: string): number | null {
  const len = s.length;
  if (len < 10 || s.charCodeAt(4) !== 45 || s.charCodeAt(7) !== 45) return null;
  const y = digits(s, 0, 4);
  const mo = digits(s, 5, 2);
  const d = digits(s, 8, 2);
  if (y < 0 || mo < 1 || mo > 12 || d < 1 || d > 31) return null;
  if (len === 10) return Date.UTC(y, mo - 1, d);
  if (s.charCodeAt(10) !== 84 || len < 16 || s.charCodeAt(13) !== 58) return null; // 'T', ':'
  const h = digits(s, 11, 2);
  const mi = digits(s, 14, 2);
  if (h < 0 || h > 23 || mi < 0 || mi > 59) return null;
  let i = 16;
  let sec = 0;
  let ms = 0;
  if (s.charCodeAt(i) === 58) {
    sec = digits(s, i + 1, 2);
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
      const oh = digits(s, i + 1, 2);
      const om = digits(s, i + 4, 2);
      if (oh < 0 || om < 0) return null;
      offsetMin = (sign === 45 ? -1 : 1) * (oh * 60 + om);
    } else return null;
  }
  return Date.UTC(y, mo - 1, d, h, mi, sec, ms) - offsetMin * 60_000;
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

/** Builds a calendar for `timeZone`; throws RangeError for an unknown zone. */
export function createZoneCalendar(timeZone: string): ZoneCalendar {
  const format = new Intl.DateTimeFormat('en-US', {
    timeZone,
    hourCycle: 'h23',
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
  });
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
  // Per UTC day: the offset when it is the same at both ends of the day, else NaN (a DST
  // change inside that day; then each 15-minute slot is asked separately).
  const dayOffset = new Map<number, number>();
  const slotOffset = new Map<number, number>();
  const dates = new Map<number, string>();
  const dateOfInstant = (ms: number): string => {
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
    const localDay = Math.floor((ms + offset * 60_000) / DAY_MS);
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

/** Whole months from a birth date (YYYY-MM-DD or YYYY-MM) to a date; null when not computable. */
export function wholeMonthsBetween(birthDate: string, date: string): number | null {
  // Read by character codes (this runs once per visit): the shapes are exactly
  // /^\d{4}-\d{2}(-\d{2})?$/ for the birth date and /^\d{4}-\d{2}-\d{2}$/ for the date.
  const bl = birthDate.length;
  if ((bl !== 7 && bl !== 10) || date.length !== 10) return null;
  if (birthDate.charCodeAt(4) !== 45 || (bl === 10 && birthDate.charCodeAt(7) !== 45)) return null;
  if (date.charCodeAt(4) !== 45 || date.charCodeAt(7) !== 45) return null;
  const by = digits(birthDate, 0, 4);
  const bm = digits(birthDate, 5, 2);
  const bd = bl === 10 ? digits(birthDate, 8, 2) : 1;
  const dy = digits(date, 0, 4);
  const dm = digits(date, 5, 2);
  const dd = digits(date, 8, 2);
  if (by < 0 || bm < 0 || bd < 0 || dy < 0 || dm < 0 || dd < 0) return null;
  let months = (dy - by) * 12 + (dm - bm);
  if (dd < bd) months -= 1;
  return months < 0 ? null : months;
}
