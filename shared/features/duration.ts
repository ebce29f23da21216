/**
 * ISO 8601 durations (`P2Y`, `P6M`, `P30D`, `PT12H`) as the manifest writes them, and calendar
 * arithmetic on them in UTC. Years and months are calendar units (`2024-03-31` minus `P1M` is
 * `2024-02-29`: the day is clamped to the end of the shorter month); weeks, days and the time
 * part are exact (UTC has no daylight-saving jumps).
 */
import { FeatureError } from './errors.js';

export interface IsoDuration {
  readonly years: number;
  readonly months: number;
  readonly weeks: number;
  readonly days: number;
  readonly hours: number;
  readonly minutes: number;
  readonly seconds: number;
}

/** An ISO 8601 duration the parser cannot read: a manifest or programming error, never patient data. */
export class DurationError extends FeatureError {
  override name = 'DurationError';
}

const DURATION_PATTERN =
  /^P(?!$)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$/;

const MS_PER_SECOND = 1000;
const MS_PER_MINUTE = 60 * MS_PER_SECOND;
const MS_PER_HOUR = 60 * MS_PER_MINUTE;
const MS_PER_DAY = 24 * MS_PER_HOUR;

/** Parses `P2Y`, `P1Y6M`, `P2W`, `P30D`, `PT12H`, `P1DT30M`, … (integer parts only, as the manifest schema allows). */
export function parseIsoDuration(iso: string): IsoDuration {
  const m = DURATION_PATTERN.exec(iso);
  if (!m) throw new DurationError(`not an ISO 8601 duration: ${JSON.stringify(iso)}`);
  const part = (i: number): number => (m[i] === undefined ? 0 : Number(m[i]));
  return {
    years: part(1),
    months: part(2),
    weeks: part(3),
    days: part(4),
    hours: part(5),
    minutes: part(6),
    seconds: part(7),
  };
}

function daysInMonthUtc(year: number, month0: number): number {
  return new Date(Date.UTC(year, month0 + 1, 0)).getUTCDate();
}

/** `date` minus `duration` (an ISO string or a parsed duration), in UTC; returns a new Date. */
export function subtractDuration(date: Date, duration: string | IsoDuration): Date {
  const d = typeof duration === 'string' ? parseIsoDuration(duration) : duration;
  const totalMonths = date.getUTCFullYear() * 12 + date.getUTCMonth() - (d.years * 12 + d.months);
  const year = Math.floor(totalMonths / 12);
  const month0 = totalMonths - year * 12;
  const day = Math.min(date.getUTCDate(), daysInMonthUtc(year, month0));
  const shifted = new Date(date.getTime());
  shifted.setUTCFullYear(year, month0, day);
  const exactMs =
    (d.weeks * 7 + d.days) * MS_PER_DAY +
    d.hours * MS_PER_HOUR +
    d.minutes * MS_PER_MINUTE +
    d.seconds * MS_PER_SECOND;
  return new Date(shifted.getTime() - exactMs);
}
