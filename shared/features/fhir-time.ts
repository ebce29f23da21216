/**
 * FHIR `date`, `dateTime` and `instant` strings → epoch milliseconds, rejecting impossible
 * dates (`2023-02-30`, month 13, hour 25) that `Date.parse` would quietly roll over.
 *
 * Partial dates (`2005`, `2005-07`, `2005-07-05`) stand for the start of that period in UTC.
 * A time without a zone offset (not valid FHIR, but EHRs send it) is read as UTC. A leap
 * second (`:60`) is read as `:59`.
 */

export interface FhirTime {
  /** Epoch milliseconds. */
  readonly ms: number;
  /** The value as a valid FHIR dateTime: the original when it was valid, else the UTC ISO form. */
  readonly text: string;
}

const DATE_TIME =
  /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/** Days in `month` (1-12) of a proleptic Gregorian `year`. */
function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return DAYS_IN_MONTH[month - 1] ?? 0;
}

/** `Math.floor(Number('0.' + ddd) * 1000)` for every three-digit fraction, as the general path computes it. */
const MILLIS_OF_FRACTION: readonly number[] = Array.from({ length: 1000 }, (_, k) =>
  Math.floor(Number(`0.${String(k).padStart(3, '0')}`) * 1000),
);

/** The digit at `i` of `s` (0-9), or -1. */
function digit(s: string, i: number): number {
  const d = s.charCodeAt(i) - 48;
  return d >= 0 && d <= 9 ? d : -1;
}

/**
 * The common UTC forms `YYYY-MM-DDTHH:MM:SSZ` and `YYYY-MM-DDTHH:MM:SS.sssZ` (what servers and
 * `toISOString` write), read without a regular expression; `undefined` for anything else, which
 * the general parser then reads. Gives exactly what the general parser gives for these forms.
 */
function parseUtcFast(value: string): FhirTime | undefined {
  const len = value.length;
  if (len !== 20 && len !== 24) return undefined;
  if (
    value.charCodeAt(4) !== 45 || // -
    value.charCodeAt(7) !== 45 ||
    value.charCodeAt(10) !== 84 || // T
    value.charCodeAt(13) !== 58 || // :
    value.charCodeAt(16) !== 58 ||
    value.charCodeAt(len - 1) !== 90 // Z
  ) {
    return undefined;
  }
  if (len === 24 && value.charCodeAt(19) !== 46) return undefined; // .
  const y0 = digit(value, 0);
  const y1 = digit(value, 1);
  const y2 = digit(value, 2);
  const y3 = digit(value, 3);
  const mo0 = digit(value, 5);
  const mo1 = digit(value, 6);
  const d0 = digit(value, 8);
  const d1 = digit(value, 9);
  const h0 = digit(value, 11);
  const h1 = digit(value, 12);
  const mi0 = digit(value, 14);
  const mi1 = digit(value, 15);
  const s0 = digit(value, 17);
  const s1 = digit(value, 18);
  if ((y0 | y1 | y2 | y3 | mo0 | mo1 | d0 | d1 | h0 | h1 | mi0 | mi1 | s0 | s1) < 0) return undefined;
  let millis = 0;
  if (len === 24) {
    const f0 = digit(value, 20);
    const f1 = digit(value, 21);
    const f2 = digit(value, 22);
    if ((f0 | f1 | f2) < 0) return undefined;
    millis = MILLIS_OF_FRACTION[f0 * 100 + f1 * 10 + f2] as number;
  }
  const year = y0 * 1000 + y1 * 100 + y2 * 10 + y3;
  const month = mo0 * 10 + mo1;
  const day = d0 * 10 + d1;
  const hour = h0 * 10 + h1;
  const minute = mi0 * 10 + mi1;
  const second = s0 * 10 + s1;
  // Years below 100, leap seconds and impossible values: the general path decides.
  if (year < 100 || second > 59) return undefined;
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined;
  if (hour > 23 || minute > 59) return undefined;
  return { ms: Date.UTC(year, month - 1, day, hour, minute, second, millis), text: value };
}

/** Parses a FHIR date/dateTime/instant; `undefined` when it is not one or names an impossible date. */
export function parseFhirDateTime(value: unknown): FhirTime | undefined {
  if (typeof value !== 'string') return undefined;
  const fast = parseUtcFast(value);
  if (fast !== undefined) return fast;
  const m = DATE_TIME.exec(value);
  if (!m) return undefined;
  const year = Number(m[1]);
  const month = m[2] === undefined ? 1 : Number(m[2]);
  const day = m[3] === undefined ? 1 : Number(m[3]);
  const hour = m[4] === undefined ? 0 : Number(m[4]);
  const minute = m[5] === undefined ? 0 : Number(m[5]);
  const second = m[6] === undefined ? 0 : Math.min(Number(m[6]), 59);
  const millis = m[7] === undefined ? 0 : Math.floor(Number(`0${m[7]}`) * 1000);
  const zone = m[8];
  if (year < 1 || month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined;
  if (hour > 23 || minute > 59 || Number(m[6] ?? 0) > 60) return undefined;
  let offsetMinutes = 0;
  if (zone !== undefined && zone !== 'Z') {
    const sign = zone.startsWith('-') ? -1 : 1;
    const oh = Number(zone.slice(1, 3));
    const om = Number(zone.slice(4, 6));
    if (oh > 14 || om > 59 || (oh === 14 && om > 0)) return undefined;
    offsetMinutes = sign * (oh * 60 + om);
  }
  let local: number;
  if (year >= 100) local = Date.UTC(year, month - 1, day, hour, minute, second, millis);
  else {
    // Date.UTC maps years 0-99 to 1900-1999.
    const d = new Date(0);
    d.setUTCFullYear(year, month - 1, day);
    d.setUTCHours(hour, minute, second, millis);
    local = d.getTime();
  }
  const ms = local - offsetMinutes * 60_000;
  if (!Number.isFinite(ms)) return undefined;
  const hasTime = m[4] !== undefined;
  const validFhir = !hasTime || (m[6] !== undefined && zone !== undefined && Number(m[6]) < 60);
  return { ms, text: validFhir ? value : new Date(ms).toISOString() };
}

/** Whole years from a FHIR `birthDate` (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`) to `asOf`, in UTC. */
export function wholeYearsBetween(birth: FhirTime, asOf: Date): number {
  const b = new Date(birth.ms);
  let years = asOf.getUTCFullYear() - b.getUTCFullYear();
  const beforeBirthday =
    asOf.getUTCMonth() < b.getUTCMonth() ||
    (asOf.getUTCMonth() === b.getUTCMonth() && asOf.getUTCDate() < b.getUTCDate());
  if (beforeBirthday) years -= 1;
  return years;
}
