/**
 * The tabular extractor on whole resources: the US Core corpus, patient features and
 * provenance, malformed input, and what compile refuses and exposes.
 */
import type { Observation, Patient } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { FeatureSpecError } from '../../shared/features/errors.js';
import { compileTabular } from '../../shared/features/tabular.js';
import {
  AS_OF,
  extractOne,
  type FeatureInput,
  glucose,
  input,
  LOINC,
  LOINC_DIASTOLIC,
  LOINC_GLUCOSE,
  LOINC_MEAN_BP,
  LOINC_SMOKING,
  LOINC_SYSTOLIC,
  obs,
  ok,
  smoking,
  UCUM,
} from './features-tabular-fixtures.js';
import { loadCorpus } from './helpers/corpus.js';

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
