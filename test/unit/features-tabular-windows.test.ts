/**
 * The tabular extractor over time: effective[x] and the lookback window, aggregates and
 * transforms, imputation and insufficient data, ISO 8601 durations.
 */
import { describe, expect, it } from 'vitest';
import { MS_PER_YEAR } from '../../shared/features/aggregate.js';
import { DurationError, parseIsoDuration, subtractDuration } from '../../shared/features/duration.js';
import { compileTabular } from '../../shared/features/tabular.js';
import {
  AS_OF,
  extractOne,
  type FeatureInput,
  glucose,
  input,
  LOINC,
  LOINC_PREGNANCIES,
  LOINC_SMOKING,
  type Loose,
  obs,
  ok,
  outcome,
  UCUM,
  unitless,
} from './features-tabular-fixtures.js';

describe('effective[x]', () => {
  const none = { effectiveDateTime: undefined };
  const cases: [string, Loose, string][] = [
    [
      'effectiveDateTime with a zone',
      { effectiveDateTime: '2024-05-15T08:30:00+02:00' },
      '2024-05-15T08:30:00+02:00',
    ],
    ['effectiveDateTime, a date without a time', { effectiveDateTime: '2024-05-15' }, '2024-05-15'],
    ['effectiveDateTime, year and month', { effectiveDateTime: '2024-05' }, '2024-05'],
    [
      'effectiveDateTime without a zone is read as UTC',
      { effectiveDateTime: '2024-05-15T08:30:00' },
      '2024-05-15T08:30:00.000Z',
    ],
    [
      'effectivePeriod: its end',
      { ...none, effectivePeriod: { start: '2024-05-01', end: '2024-05-02T10:00:00Z' } },
      '2024-05-02T10:00:00Z',
    ],
    ['effectivePeriod: start when open', { ...none, effectivePeriod: { start: '2024-05-01' } }, '2024-05-01'],
    [
      'effectiveInstant',
      { ...none, effectiveInstant: '2024-05-03T01:02:03.456Z' },
      '2024-05-03T01:02:03.456Z',
    ],
    ['issued when no effective[x]', { ...none, issued: '2024-05-04T00:00:00Z' }, '2024-05-04T00:00:00Z'],
  ];
  it.each(cases)('%s', (_name, extra, effective) => {
    const row = ok(extractOne(glucose(), [obs(extra)]));
    expect(row.values[0]).toBe(76);
    expect(row.effective).toBe(effective);
  });

  const rejected: [string, Loose, string][] = [
    ['an impossible day', { effectiveDateTime: '2023-02-30' }, 'effective:invalid'],
    ['month 13', { effectiveDateTime: '2023-13-01T00:00:00Z' }, 'effective:invalid'],
    ['hour 25', { effectiveDateTime: '2023-01-01T25:00:00Z' }, 'effective:invalid'],
    ['free text', { effectiveDateTime: 'last Tuesday' }, 'effective:invalid'],
    ['a period without edges', { ...none, effectivePeriod: {} }, 'effective:invalid'],
    ['no time at all', { ...none }, 'effective:missing'],
    ['in the future of asOf', { effectiveDateTime: '2024-06-15T12:00:01Z' }, 'effective:future'],
    ['older than the lookback', { effectiveDateTime: '2023-06-15T11:59:59Z' }, 'effective:before-lookback'],
  ];
  it.each(rejected)('skips %s', (_name, extra, reason) => {
    expect(outcome(glucose(), obs(extra))).toBe(reason);
  });

  it('keeps an observation exactly at the lookback edge and exactly at asOf', () => {
    expect(outcome(glucose(), obs({ effectiveDateTime: '2023-06-15T12:00:00Z' }))).toBe(76);
    expect(outcome(glucose(), obs({ effectiveDateTime: '2024-06-15T12:00:00Z' }))).toBe(76);
  });
});

describe('aggregates and transforms', () => {
  const base = Date.parse('2024-03-01T00:00:00Z');
  const series = [100, 110, 130].map((value, i) =>
    obs({
      id: `s${i}`,
      meta: { versionId: String(i + 1) },
      effectiveDateTime: new Date(base + ((i - 2) * MS_PER_YEAR) / 2).toISOString(),
      valueQuantity: { value, system: UCUM, code: 'mg/dL' },
    }),
  );
  const refs = ['Observation/s0/_history/1', 'Observation/s1/_history/2', 'Observation/s2/_history/3'];
  const cases: [string, FeatureInput, number, string[]][] = [
    ['latest', { aggregate: 'latest' }, 130, [refs[2] as string]],
    ['mean', { aggregate: 'mean' }, 340 / 3, refs],
    ['min', { aggregate: 'min' }, 100, [refs[0] as string]],
    ['max', { aggregate: 'max' }, 130, [refs[2] as string]],
    ['count', { aggregate: 'count' }, 3, refs],
    ['slope per year', { aggregate: 'slope' }, 30, refs],
    ['ln of the latest', { aggregate: 'latest', transform: 'ln' }, Math.log(130), [refs[2] as string]],
  ];
  it.each(cases)('%s', (_name, extra, expected, inputs) => {
    const row = ok(extractOne(glucose({ lookback: 'P3Y', ...extra }), [...series].reverse()));
    expect(row.values[0]).toBeCloseTo(expected, 4);
    expect(row.provenance[0]?.inputs).toEqual(inputs);
    expect(row.inputs).toEqual(inputs);
  });

  it('the lookback narrows the window: P6M keeps only the newest', () => {
    const result = extractOne(glucose({ aggregate: 'count', lookback: 'P6M' }), series);
    expect(ok(result).values[0]).toBe(1);
    expect(
      result.skipped.filter((s) => s.reason === 'effective:before-lookback').map((s) => s.reference),
    ).toEqual(refs.slice(0, 2));
  });

  it('slope of one point is missing, not zero', () => {
    const result = extractOne(glucose({ aggregate: 'slope' }), [obs({ id: 'one' })]);
    expect(result.status).toBe('insufficient-data');
    expect(result.skipped).toEqual([
      { feature: 'glucose', reference: 'Observation/one/_history/1', reason: 'slope:too-few-times' },
    ]);
  });

  it('ln of a non-positive value is missing', () => {
    const result = extractOne(glucose({ transform: 'ln' }), [
      obs({ id: 'zero', valueQuantity: { value: 0, system: UCUM, code: 'mg/dL' } }),
    ]);
    expect(result).toEqual({
      status: 'insufficient-data',
      missing: ['glucose'],
      skipped: [
        { feature: 'glucose', reference: 'Observation/zero/_history/1', reason: 'transform:non-positive' },
      ],
    });
  });

  it('count of nothing is 0, observed', () => {
    const row = ok(extractOne(glucose({ aggregate: 'count' }), []));
    expect(row.values[0]).toBe(0);
    expect(row.provenance[0]).toEqual({ feature: 'glucose', imputed: false, inputs: [] });
  });

  it('a duplicated Observation counts once', () => {
    const one = obs();
    expect(ok(extractOne(glucose({ aggregate: 'count' }), [one, one])).values[0]).toBe(1);
  });
});

describe('imputation and insufficient data', () => {
  const optional = (imputation: FeatureInput): FeatureInput =>
    unitless({
      name: 'optional',
      required: false,
      imputation,
      codes: [{ system: LOINC, code: LOINC_PREGNANCIES }],
    });

  it.each([
    ['constant', { strategy: 'constant', value: 2 }, 2],
    ['nan', { strategy: 'nan' }, Number.NaN],
  ] as const)('%s fills a missing optional feature and marks it imputed', (_n, imputation, expected) => {
    const row = ok(compileTabular(input(glucose(), optional(imputation))).extract(undefined, [obs()], AS_OF));
    expect(row.values[0]).toBe(76);
    if (Number.isNaN(expected)) expect(row.values[1]).toBeNaN();
    else expect(row.values[1]).toBe(expected);
    expect(row.provenance[1]).toEqual({ feature: 'optional', imputed: true, inputs: [] });
  });

  it('imputation none leaves nothing to send: insufficient data', () => {
    const result = compileTabular(input(glucose(), optional({ strategy: 'none' }))).extract(
      undefined,
      [obs()],
      AS_OF,
    );
    expect(result).toMatchObject({ status: 'insufficient-data', missing: ['optional'] });
  });

  it('lists every missing required feature, in manifest order, and never imputes them', () => {
    const extractor = compileTabular(
      input(
        unitless({ name: 'a' }),
        glucose({ imputation: { strategy: 'constant', value: 90 } }),
        unitless({ name: 'b', codes: [{ system: LOINC, code: LOINC_SMOKING }] }),
      ),
    );
    const result = extractor.extract(undefined, [], AS_OF);
    expect(result).toEqual({ status: 'insufficient-data', missing: ['a', 'glucose', 'b'], skipped: [] });
  });
});

describe('durations', () => {
  it.each([
    ['P2Y', '2024-06-15T12:00:00Z', '2022-06-15T12:00:00.000Z'],
    ['P1M', '2024-03-31T00:00:00Z', '2024-02-29T00:00:00.000Z'],
    ['P1Y6M', '2024-08-31T00:00:00Z', '2023-02-28T00:00:00.000Z'],
    ['P2W', '2024-01-10T00:00:00Z', '2023-12-27T00:00:00.000Z'],
    ['P30D', '2024-03-01T00:00:00Z', '2024-01-31T00:00:00.000Z'],
    ['PT12H', '2024-01-01T06:00:00Z', '2023-12-31T18:00:00.000Z'],
    ['P1DT30M', '2024-01-02T00:30:00Z', '2024-01-01T00:00:00.000Z'],
  ])('%s before %s is %s', (iso, from, expected) => {
    expect(subtractDuration(new Date(from), iso).toISOString()).toBe(expected);
  });

  it('parses parts and rejects what is not a duration', () => {
    expect(parseIsoDuration('P1Y2M3W4DT5H6M7S')).toEqual({
      years: 1,
      months: 2,
      weeks: 3,
      days: 4,
      hours: 5,
      minutes: 6,
      seconds: 7,
    });
    expect(() => parseIsoDuration('P')).toThrow(DurationError);
    expect(() => parseIsoDuration('2Y')).toThrow(DurationError);
  });
});
