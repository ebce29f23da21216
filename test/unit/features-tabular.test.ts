/**
 * The tabular extractor, reading one value: value[x] types, coding match, status and unit
 * conversion. Windows and aggregates: features-tabular-windows.test.ts; the US Core corpus,
 * patient features, malformed input and compile: features-tabular-resources.test.ts.
 */
import type { Observation } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { compileTabular } from '../../shared/features/tabular.js';
import { UnitConverterCache } from '../../shared/features/units.js';
import {
  AS_OF,
  extractOne,
  type FeatureInput,
  glucose,
  input,
  LOINC,
  LOINC_ALBUMIN,
  LOINC_CHOLESTEROL,
  LOINC_GLUCOSE,
  LOINC_PREGNANCIES,
  LOINC_SMOKING,
  type Loose,
  obs,
  ok,
  outcome,
  SNOMED,
  smoking,
  UCUM,
  unitless,
} from './features-tabular-fixtures.js';

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
