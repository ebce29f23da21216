import type { Observation, Patient } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { MS_PER_YEAR } from '../../shared/features/aggregate.js';
import { DurationError, parseIsoDuration, subtractDuration } from '../../shared/features/duration.js';
import { FeatureSpecError } from '../../shared/features/errors.js';
import { compileTabular } from '../../shared/features/tabular.js';
import { UnitConverterCache } from '../../shared/features/units.js';
import { TabularInputSchema, type TabularInput } from '../../shared/inference/manifest.js';
import type { ExtractResult, FeatureRow } from '../../shared/types.js';
import { loadCorpus } from './helpers/corpus.js';

const LOINC = 'http://loinc.org';
const UCUM = 'http://unitsofmeasure.org';
const SNOMED = 'http://snomed.info/sct';
const LOINC_GLUCOSE = '2345-7'; // Glucose [Mass/volume] in Serum or Plasma
const LOINC_CHOLESTEROL = '2093-3'; // Cholesterol [Mass/volume] in Serum or Plasma
const LOINC_ALBUMIN = '1751-7'; // Albumin [Mass/volume] in Serum or Plasma
const LOINC_PREGNANCIES = '11996-6'; // [#] Pregnancies
const LOINC_SMOKING = '72166-2'; // Tobacco smoking status
const LOINC_SYSTOLIC = '8480-6'; // Systolic blood pressure
const LOINC_DIASTOLIC = '8462-4'; // Diastolic blood pressure
const LOINC_MEAN_BP = '8478-0'; // Mean blood pressure

const AS_OF = new Date('2024-06-15T12:00:00Z');

type FeatureInput = Record<string, unknown>;
/** Observation fields, malformed ones included: the extractor must survive what servers send. */
type Loose = Record<string, unknown>;

function input(...features: FeatureInput[]): TabularInput {
  return TabularInputSchema.parse({ kind: 'tabular', tensor: 'x', features });
}

const glucose = (extra: FeatureInput = {}): FeatureInput => ({
  name: 'glucose',
  source: 'observation',
  codes: [{ system: LOINC, code: LOINC_GLUCOSE }],
  unit: 'mg/dL',
  molecularWeight: 180.156,
  lookback: 'P1Y',
  required: true,
  ...extra,
});

const unitless = (extra: FeatureInput = {}): FeatureInput => ({
  name: 'pregnancies',
  source: 'observation',
  codes: [{ system: LOINC, code: LOINC_PREGNANCIES }],
  lookback: 'P10Y',
  required: true,
  ...extra,
});

const smoking: FeatureInput = {
  name: 'smoker',
  source: 'observation',
  codes: [{ system: LOINC, code: LOINC_SMOKING }],
  lookback: 'P5Y',
  required: true,
  valueMap: { [`${SNOMED}|428041000124106`]: 1, [`${SNOMED}|266919005`]: 0, true: 1, false: 0 },
};

let counter = 0;
/** A final glucose Observation of 76 mg/dL a month before AS_OF; `extra` overrides any field. */
function obs(extra: Loose = {}, code = LOINC_GLUCOSE): Observation {
  counter += 1;
  return {
    resourceType: 'Observation',
    id: `o${counter}`,
    meta: { versionId: '1' },
    status: 'final',
    code: { coding: [{ system: LOINC, code }] },
    effectiveDateTime: '2024-05-15T08:30:00Z',
    valueQuantity: { value: 76, unit: 'mg/dL', system: UCUM, code: 'mg/dL' },
    ...extra,
  };
}

function ok(result: ExtractResult): FeatureRow {
  if (result.status !== 'ok') throw new Error(`expected ok, got missing ${result.missing.join(',')}`);
  return result.row;
}

function extractOne(feature: FeatureInput, observations: Observation[], asOf = AS_OF): ExtractResult {
  return compileTabular(input(feature)).extract(undefined, observations, asOf);
}

/** Either the one value of a one-feature row, or the skip reason of its one observation. */
function outcome(feature: FeatureInput, observation: Observation, asOf = AS_OF): number | string {
  const result = extractOne(feature, [observation], asOf);
  if (result.status === 'ok') return result.row.values[0] as number;
  return result.skipped.map((s) => s.reason).join(',');
}

describe('value[x]', () => {
  const cases: [string, FeatureInput, Loose, number | string][] = [
    ['valueQuantity in the wanted unit', glucose(), {}, 76],
    [
      'valueQuantity mmol/L → mg/dL with MW',
      glucose(),
      { valueQuantity: { value: 5.5, system: UCUM, code: 'mmol/L' } },
      99.0858,
    ],
    [
      'valueQuantity without code falls back to a UCUM unit',
      glucose(),
      { valueQuantity: { value: 80, unit: 'mg/dL' } },
      80,
    ],
    [
      'valueQuantity whose code is not UCUM but whose unit is',
      glucose(),
      { valueQuantity: { value: 81, unit: 'mg/dL', system: 'urn:local', code: 'MGDL' } },
      81,
    ],
    [
      'valueQuantity with a non-UCUM unit only',
      glucose(),
      { valueQuantity: { value: 80, unit: 'mg per dl' } },
      'unit:unconvertible',
    ],
    ['valueQuantity without any unit', glucose(), { valueQuantity: { value: 80 } }, 'unit:missing'],
    [
      'valueQuantity in an incommensurable unit',
      glucose(),
      { valueQuantity: { value: 80, system: UCUM, code: 'kg' } },
      'unit:unconvertible',
    ],
    [
      'valueQuantity in an unknown unit',
      glucose(),
      { valueQuantity: { value: 80, system: UCUM, code: 'furlong' } },
      'unit:unconvertible',
    ],
    [
      'mmol/L without a molecular weight',
      glucose({ molecularWeight: undefined }),
      { valueQuantity: { value: 5.5, system: UCUM, code: 'mmol/L' } },
      'unit:unconvertible',
    ],
    [
      'valueQuantity with a comparator',
      glucose(),
      { valueQuantity: { value: 40, comparator: '<', system: UCUM, code: 'mg/dL' } },
      'value:comparator',
    ],
    [
      'valueQuantity without a value',
      glucose(),
      { valueQuantity: { system: UCUM, code: 'mg/dL' } },
      'value:missing',
    ],
    [
      'valueQuantity with text for a number',
      glucose(),
      { valueQuantity: { value: 'high', system: UCUM, code: 'mg/dL' } },
      'value:not-numeric',
    ],
    [
      'valueQuantity NaN',
      glucose(),
      { valueQuantity: { value: Number.NaN, system: UCUM, code: 'mg/dL' } },
      'value:not-finite',
    ],
    ['valueInteger, unitless feature', unitless(), { valueQuantity: undefined, valueInteger: 3 }, 3],
    [
      'valueInteger where a unit is needed',
      glucose(),
      { valueQuantity: undefined, valueInteger: 90 },
      'unit:missing',
    ],
    ['valueString holding a decimal', unitless(), { valueQuantity: undefined, valueString: ' 2.5 ' }, 2.5],
    [
      'valueString holding text',
      unitless(),
      { valueQuantity: undefined, valueString: 'two' },
      'value:not-numeric',
    ],
    [
      'valueString with a unit needed',
      glucose(),
      { valueQuantity: undefined, valueString: '90' },
      'unit:missing',
    ],
    [
      'valueCodeableConcept through valueMap',
      smoking,
      {
        valueQuantity: undefined,
        valueCodeableConcept: { coding: [{ system: SNOMED, code: '428041000124106' }] },
      },
      1,
    ],
    [
      'valueCodeableConcept not in valueMap',
      smoking,
      { valueQuantity: undefined, valueCodeableConcept: { coding: [{ system: SNOMED, code: '8517006' }] } },
      'value:unmapped',
    ],
    [
      'valueCodeableConcept without a valueMap',
      unitless(),
      { valueQuantity: undefined, valueCodeableConcept: { text: 'yes' } },
      'value:unsupported-type',
    ],
    ['valueBoolean through valueMap', smoking, { valueQuantity: undefined, valueBoolean: false }, 0],
    [
      'valueRange is not a number',
      glucose(),
      { valueQuantity: undefined, valueRange: { low: { value: 1 } } },
      'value:unsupported-type',
    ],
    ['no value at all', glucose(), { valueQuantity: undefined }, 'value:missing'],
    [
      'dataAbsentReason',
      glucose(),
      { valueQuantity: undefined, dataAbsentReason: { coding: [{ code: 'unknown' }] } },
      'value:absent',
    ],
  ];
  it.each(cases)('%s', (_name, feature, extra, expected) => {
    const code =
      feature === smoking
        ? LOINC_SMOKING
        : feature.name === 'pregnancies'
          ? LOINC_PREGNANCIES
          : LOINC_GLUCOSE;
    const got = outcome(feature, obs(extra, code));
    if (typeof expected === 'number') expect(got).toBeCloseTo(expected, 3);
    else expect(got).toBe(expected);
  });
});

describe('coding match', () => {
  const LOCAL = 'urn:oid:1.2.3.4.5'; // a hospital's local lab code system
  const multi = glucose({
    codes: [
      { system: LOINC, code: LOINC_GLUCOSE },
      { system: LOCAL, code: 'GLU' },
    ],
  });
  const cases: [string, Loose['code'], number | 'missing'][] = [
    ['LOINC coding', { coding: [{ system: LOINC, code: LOINC_GLUCOSE }] }, 76],
    ['local coding alone', { coding: [{ system: LOCAL, code: 'GLU' }] }, 76],
    [
      'local coding beside an unrelated one',
      {
        coding: [
          { system: 'urn:x', code: 'a' },
          { system: LOCAL, code: 'GLU' },
        ],
      },
      76,
    ],
    [
      'right code, wrong system',
      { coding: [{ system: 'http://snomed.info/sct', code: LOINC_GLUCOSE }] },
      'missing',
    ],
    ['right code, no system', { coding: [{ code: LOINC_GLUCOSE }] }, 'missing'],
    ['local code under LOINC', { coding: [{ system: LOINC, code: 'GLU' }] }, 'missing'],
    ['code only in text', { text: 'Glucose 2345-7' }, 'missing'],
  ];
  it.each(cases)('%s', (_name, code, expected) => {
    const result = extractOne(multi, [obs({ code })]);
    if (expected === 'missing') {
      expect(result.status).toBe('insufficient-data');
    } else {
      expect(ok(result).values[0]).toBeCloseTo(expected, 6);
    }
  });
});

describe('status', () => {
  const cases: [string | undefined, boolean, number | string][] = [
    ['final', false, 76],
    ['amended', false, 76],
    ['corrected', false, 76],
    ['preliminary', false, 'status:preliminary'],
    ['preliminary', true, 76],
    ['entered-in-error', true, 'status:entered-in-error'],
    ['cancelled', true, 'status:cancelled'],
    ['registered', true, 'status:registered'],
    ['unknown', true, 'status:unknown'],
    [undefined, true, 'status:missing'],
  ];
  it.each(cases)('%s (acceptPreliminary %s) → %s', (status, acceptPreliminary, expected) => {
    expect(outcome(glucose({ acceptPreliminary }), obs({ status: status as Observation['status'] }))).toBe(
      expected,
    );
  });
});

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

describe('US Core corpus', () => {
  const bp = (name: string, code: string, extra: FeatureInput = {}): FeatureInput => ({
    name,
    source: 'observation',
    codes: [{ system: LOINC, code }],
    unit: 'mm[Hg]',
    lookback: 'P50Y',
    required: true,
    ...extra,
  });
  const asOf = new Date('2000-01-01T00:00:00Z');

  it('reads systolic and diastolic from the BP panel components', () => {
    const panel = loadCorpus<Observation>('us-core/blood-pressure.json');
    const extractor = compileTabular(
      input(
        bp('systolic', LOINC_SYSTOLIC),
        bp('diastolic', LOINC_DIASTOLIC),
        bp('mean_bp', LOINC_MEAN_BP, { required: false, imputation: { strategy: 'nan' } }),
      ),
    );
    const row = ok(extractor.extract(undefined, [panel], asOf));
    expect([...row.values.slice(0, 2)]).toEqual([109, 44]);
    expect(row.values[2]).toBeNaN();
    expect(row.inputs).toEqual(['Observation/blood-pressure']);
    expect(row.effective).toBe('1999-07-02');
    expect(row.provenance).toEqual([
      { feature: 'systolic', imputed: false, inputs: ['Observation/blood-pressure'] },
      { feature: 'diastolic', imputed: false, inputs: ['Observation/blood-pressure'] },
      { feature: 'mean_bp', imputed: true, inputs: [] },
    ]);
  });

  it('uses the systolic of a panel whose diastolic is absent, and reports the diastolic missing', () => {
    const panel = loadCorpus<Observation>('us-core/bp-data-absent.json');
    const result = compileTabular(
      input(bp('systolic', LOINC_SYSTOLIC), bp('diastolic', LOINC_DIASTOLIC)),
    ).extract(undefined, [panel], asOf);
    expect(result).toEqual({
      status: 'insufficient-data',
      missing: ['diastolic'],
      skipped: [{ feature: 'diastolic', reference: 'Observation/bp-data-absent', reason: 'value:absent' }],
    });
    const optional = compileTabular(
      input(
        bp('systolic', LOINC_SYSTOLIC),
        bp('diastolic', LOINC_DIASTOLIC, {
          required: false,
          imputation: { strategy: 'constant', value: 80 },
        }),
      ),
    );
    const row = ok(optional.extract(undefined, [panel], asOf));
    expect([...row.values]).toEqual([109, 80]);
    expect(row.provenance[1]).toEqual({ feature: 'diastolic', imputed: true, inputs: [] });
  });

  it('reads the serum glucose whose effective is a date without a time', () => {
    const glucoseObs = loadCorpus<Observation>('us-core/observation-serum-glucose.json');
    const row = ok(extractOne(glucose(), [glucoseObs], new Date('2005-07-05T12:00:00Z')));
    expect(row.values[0]).toBe(76);
    expect(row.effective).toBe('2005-07-05');
    expect(row.inputs).toEqual(['Observation/serum-glucose']);
  });

  it('ignores corpus resources that match no feature, without throwing', () => {
    const files = [
      'bmi.json',
      'height.json',
      'heart-rate.json',
      'some-day-smoker.json',
      'observation-cbc-platelets.json',
    ];
    const result = extractOne(
      glucose(),
      files.map((f) => loadCorpus<Observation>(`us-core/${f}`)),
    );
    expect(result).toEqual({ status: 'insufficient-data', missing: ['glucose'], skipped: [] });
  });
});

describe('unit conversion', () => {
  const lab = (name: string, code: string, unit: string, molecularWeight?: number): FeatureInput => ({
    name,
    source: 'observation',
    codes: [{ system: LOINC, code }],
    unit,
    molecularWeight,
    lookback: 'P1Y',
    required: true,
  });
  const cases: [string, FeatureInput, string, number, string, number][] = [
    [
      'glucose 5.5 mmol/L',
      lab('glucose', LOINC_GLUCOSE, 'mg/dL', 180.156),
      LOINC_GLUCOSE,
      5.5,
      'mmol/L',
      99.09,
    ],
    [
      'cholesterol 5.0 mmol/L',
      lab('tc', LOINC_CHOLESTEROL, 'mg/dL', 386.65),
      LOINC_CHOLESTEROL,
      5.0,
      'mmol/L',
      193.325,
    ],
    ['albumin 1 g/dL', lab('albumin', LOINC_ALBUMIN, 'g/L'), LOINC_ALBUMIN, 1, 'g/dL', 10],
    [
      'glucose 180.156 mg/dL → mmol/L',
      lab('glucose', LOINC_GLUCOSE, 'mmol/L', 180.156),
      LOINC_GLUCOSE,
      180.156,
      'mg/dL',
      10,
    ],
  ];
  it.each(cases)('%s', (_name, feature, code, value, unit, expected) => {
    const got = outcome(feature, obs({ valueQuantity: { value, system: UCUM, code: unit } }, code));
    expect(got).toBeCloseTo(expected, 2);
  });

  it('averages a mix of mmol/L and mg/dL in mg/dL', () => {
    const row = ok(
      extractOne(glucose({ aggregate: 'mean' }), [
        obs({ valueQuantity: { value: 99, system: UCUM, code: 'mg/dL' } }),
        obs({ valueQuantity: { value: 5.5, system: UCUM, code: 'mmol/L' }, effectiveDateTime: '2024-04-01' }),
      ]),
    );
    expect(row.values[0]).toBeCloseTo((99 + 99.0858) / 2, 3);
  });

  it('resolves a unit pair once and then multiplies', () => {
    const units = new UnitConverterCache();
    const extractor = compileTabular(input(glucose({ aggregate: 'count' })), { units });
    const many = Array.from({ length: 50 }, (_, i) =>
      obs({ valueQuantity: { value: 4 + i / 10, system: UCUM, code: 'mmol/L' } }),
    );
    expect(ok(extractor.extract(undefined, many, AS_OF)).values[0]).toBe(50);
    expect(units.size).toBe(1);
    expect(units.convert(37, 'Cel', '[degF]')).toBeCloseTo(98.6, 6);
    expect(units.convert(1, 'mmHg', 'mm[Hg]')).toBeUndefined();
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

describe('patient features and provenance', () => {
  const age: FeatureInput = { name: 'age', source: 'patient.age', required: true };
  const sex: FeatureInput = {
    name: 'sex',
    source: 'patient.sex',
    required: true,
    valueMap: { female: 1, male: 2 },
  };
  const patient = (extra: Partial<Patient> = {}): Patient => ({
    resourceType: 'Patient',
    id: 'p1',
    meta: { versionId: '7' },
    birthDate: '1970-06-15',
    gender: 'female',
    ...extra,
  });
  const ageAt = (p: Patient, asOf: string): number | string => {
    const result = compileTabular(input(age)).extract(p, [], new Date(asOf));
    return result.status === 'ok' ? (result.row.values[0] as number) : (result.skipped[0]?.reason ?? '');
  };

  it.each([
    ['1970-06-15', '2024-06-14T23:59:59Z', 53],
    ['1970-06-15', '2024-06-15T00:00:00Z', 54],
    ['1970-06', '2024-05-31T00:00:00Z', 53],
    ['1970', '2024-01-01T00:00:00Z', 54],
    ['1970-02-30', '2024-01-01T00:00:00Z', 'birthDate:invalid'],
    ['2030-01-01', '2024-01-01T00:00:00Z', 'birthDate:future'],
  ])('age from birthDate %s at %s → %s (whole years)', (birthDate, asOf, expected) => {
    expect(ageAt(patient({ birthDate }), asOf)).toBe(expected);
  });

  it('sex through the valueMap; unmapped or absent is missing', () => {
    const extractor = compileTabular(input(sex));
    expect(ok(extractor.extract(patient(), [], AS_OF)).values[0]).toBe(1);
    expect(extractor.extract(patient({ gender: 'unknown' }), [], AS_OF).skipped).toEqual([
      { feature: 'sex', reference: 'Patient/p1/_history/7', reason: 'gender:unmapped' },
    ]);
    expect(extractor.extract(undefined, [], AS_OF).skipped[0]?.reason).toBe('patient:missing');
  });

  it('names each input with its version, sorted and de-duplicated; effective is the newest used', () => {
    const extractor = compileTabular(
      input(age, glucose(), glucose({ name: 'glucose_max', aggregate: 'max' })),
    );
    const newer = obs({ id: 'b', meta: { versionId: '3' }, effectiveDateTime: '2024-06-01T00:00:00Z' });
    const older = obs({
      id: 'a',
      meta: undefined,
      effectiveDateTime: '2024-01-01',
      valueQuantity: { value: 120, system: UCUM, code: 'mg/dL' },
    });
    const row = ok(extractor.extract(patient(), [newer, older], AS_OF));
    expect([...row.values]).toEqual([54, 76, 120]);
    expect(row.inputs).toEqual(['Observation/a', 'Observation/b/_history/3', 'Patient/p1/_history/7']);
    expect(row.provenance.map((p) => p.inputs)).toEqual([
      ['Patient/p1/_history/7'],
      ['Observation/b/_history/3'],
      ['Observation/a'],
    ]);
    expect(row.effective).toBe('2024-06-01T00:00:00Z');
    expect(row.shape).toEqual([3]);
  });
});

describe('malformed input never throws', () => {
  it.each([
    ['no code', { code: undefined }, '*', 'code:missing'],
    ['no id', { id: undefined }, 'glucose', 'id:missing'],
    ['coding not an array', { code: { coding: 'glucose' } }, '*', 'code:missing'],
  ] as const)('%s', (_name, extra, feature, reason) => {
    const result = extractOne(glucose(), [obs(extra)]);
    expect(result.status).toBe('insufficient-data');
    expect(result.skipped).toEqual([
      { feature, reference: expect.stringMatching(/^Observation/) as unknown, reason },
    ]);
  });

  it('survives nulls, strings and broken components among good data', () => {
    const junk = [
      null,
      'x',
      42,
      { resourceType: 'Observation', component: 'no' },
      { code: { coding: [null] } },
    ];
    const panel = obs({
      id: 'p',
      code: { coding: [{ system: LOINC, code: '85354-9' }] },
      component: [null, { code: 5 }],
    });
    const result = extractOne(glucose(), [...(junk as unknown as Observation[]), panel, obs({ id: 'good' })]);
    expect(ok(result).values[0]).toBe(76);
    expect(ok(result).inputs).toEqual(['Observation/good/_history/1']);
  });

  it('an invalid asOf gives insufficient data', () => {
    expect(extractOne(glucose(), [obs()], new Date('nope')).status).toBe('insufficient-data');
  });
});

describe('compile', () => {
  it('rejects specs it cannot honour', () => {
    expect(() => compileTabular(input(glucose({ unit: 'mg per dl' })))).toThrow(FeatureSpecError);
    expect(() => compileTabular(input(glucose(), glucose()))).toThrow(/listed twice/);
    expect(() => compileTabular(input({ name: 'sex', source: 'patient.sex', required: true }))).toThrow(
      FeatureSpecError,
    );
  });

  it('exposes feature names and the codes it reads', () => {
    const extractor = compileTabular(input(glucose(), smoking));
    expect(extractor.featureNames).toEqual(['glucose', 'smoker']);
    expect(extractor.codes).toEqual([`${LOINC}|${LOINC_GLUCOSE}`, `${LOINC}|${LOINC_SMOKING}`]);
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
