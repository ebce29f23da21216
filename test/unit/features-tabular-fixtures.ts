/**
 * What the tabular extractor's tests (features-tabular*.test.ts) share: the LOINC codes, the
 * feature specs (glucose, a unitless count, smoking status through a valueMap), a glucose
 * Observation to vary field by field, and small helpers that extract one feature.
 */
import type { Observation } from '@medplum/fhirtypes';
import { compileTabular } from '../../shared/features/tabular.js';
import { TabularInputSchema, type TabularInput } from '../../shared/inference/manifest.js';
import type { ExtractResult, FeatureRow } from '../../shared/types.js';

export const LOINC = 'http://loinc.org';
export const UCUM = 'http://unitsofmeasure.org';
export const SNOMED = 'http://snomed.info/sct';
export const LOINC_GLUCOSE = '2345-7'; // Glucose [Mass/volume] in Serum or Plasma
export const LOINC_CHOLESTEROL = '2093-3'; // Cholesterol [Mass/volume] in Serum or Plasma
export const LOINC_ALBUMIN = '1751-7'; // Albumin [Mass/volume] in Serum or Plasma
export const LOINC_PREGNANCIES = '11996-6'; // [#] Pregnancies
export const LOINC_SMOKING = '72166-2'; // Tobacco smoking status
export const LOINC_SYSTOLIC = '8480-6'; // Systolic blood pressure
export const LOINC_DIASTOLIC = '8462-4'; // Diastolic blood pressure
export const LOINC_MEAN_BP = '8478-0'; // Mean blood pressure

export const AS_OF = new Date('2024-06-15T12:00:00Z');

export type FeatureInput = Record<string, unknown>;
/** Observation fields, malformed ones included: the extractor must survive what servers send. */
export type Loose = Record<string, unknown>;

export function input(...features: FeatureInput[]): TabularInput {
  return TabularInputSchema.parse({ kind: 'tabular', tensor: 'x', features });
}

export const glucose = (extra: FeatureInput = {}): FeatureInput => ({
  name: 'glucose',
  source: 'observation',
  codes: [{ system: LOINC, code: LOINC_GLUCOSE }],
  unit: 'mg/dL',
  molecularWeight: 180.156,
  lookback: 'P1Y',
  required: true,
  ...extra,
});

export const unitless = (extra: FeatureInput = {}): FeatureInput => ({
  name: 'pregnancies',
  source: 'observation',
  codes: [{ system: LOINC, code: LOINC_PREGNANCIES }],
  lookback: 'P10Y',
  required: true,
  ...extra,
});

export const smoking: FeatureInput = {
  name: 'smoker',
  source: 'observation',
  codes: [{ system: LOINC, code: LOINC_SMOKING }],
  lookback: 'P5Y',
  required: true,
  valueMap: { [`${SNOMED}|428041000124106`]: 1, [`${SNOMED}|266919005`]: 0, true: 1, false: 0 },
};

let counter = 0;
/** A final glucose Observation of 76 mg/dL a month before AS_OF; `extra` overrides any field. */
export function obs(extra: Loose = {}, code = LOINC_GLUCOSE): Observation {
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

export function ok(result: ExtractResult): FeatureRow {
  if (result.status !== 'ok') throw new Error(`expected ok, got missing ${result.missing.join(',')}`);
  return result.row;
}

export function extractOne(feature: FeatureInput, observations: Observation[], asOf = AS_OF): ExtractResult {
  return compileTabular(input(feature)).extract(undefined, observations, asOf);
}

/** Either the one value of a one-feature row, or the skip reason of its one observation. */
export function outcome(feature: FeatureInput, observation: Observation, asOf = AS_OF): number | string {
  const result = extractOne(feature, [observation], asOf);
  if (result.status === 'ok') return result.row.values[0] as number;
  return result.skipped.map((s) => s.reason).join(',');
}
