/**
 * What the sequence extractor's tests (features-sequence*.test.ts) share: a small PBC-like
 * sequence input, a patient, Observations dated in days before AS_OF, and row helpers.
 */
import type { Observation, Patient } from '@medplum/fhirtypes';
import { SequenceInputSchema, type SequenceInput } from '../../shared/inference/manifest.js';
import type { ExtractResult, FeatureRow } from '../../shared/types.js';

export const LOINC = 'http://loinc.org';
export const UCUM = 'http://unitsofmeasure.org';
export const DAY = 86_400_000;
export const STEP_MS = 182.625 * DAY;
export const AS_OF = new Date('2024-06-15T12:00:00Z');

export type Loose = Record<string, unknown>;

export const lab = (name: string, code: string, unit: string, extra: Loose = {}): Loose => ({
  name,
  source: 'observation',
  codes: [{ system: LOINC, code }],
  unit,
  lookback: 'P8Y',
  required: false,
  imputation: { strategy: 'nan' },
  ...extra,
});

/** A small PBC-like input: age, sex, bilirubin, cholesterol (molar-convertible); P6M × 4, carry P1Y. */
export function seqInput(extra: Loose = {}, features?: Loose[]): SequenceInput {
  return SequenceInputSchema.parse({
    kind: 'sequence',
    tensor: 'x',
    maskTensor: 'mask',
    features: features ?? [
      { name: 'age', source: 'patient.age', required: true },
      { name: 'sex', source: 'patient.sex', required: true, valueMap: { female: 1, male: 0 } },
      lab('bili', '1975-2', 'mg/dL'),
      lab('chol', '2093-3', 'mg/dL', { molecularWeight: 386.65 }),
    ],
    step: 'P6M',
    steps: 4,
    alignment: 'newest',
    carryForward: 'P1Y',
    minSteps: 1,
    ...extra,
  });
}

export const patient: Patient = {
  resourceType: 'Patient',
  id: 'p1',
  meta: { versionId: '3' },
  birthDate: '1964-06-15',
  gender: 'female',
};

let counter = 0;
/** An Observation `daysBefore` days before AS_OF (noon UTC). */
export function o(
  code: string,
  value: number,
  daysBefore: number,
  extra: Loose = {},
  unit = 'mg/dL',
): Observation {
  counter += 1;
  return {
    resourceType: 'Observation',
    id: `s${counter}`,
    meta: { versionId: '1' },
    status: 'final',
    code: { coding: [{ system: LOINC, code }] },
    effectiveDateTime: new Date(AS_OF.getTime() - daysBefore * DAY).toISOString(),
    valueQuantity: { value, unit, system: UCUM, code: unit },
    ...extra,
  };
}
export const bili = (v: number, d: number, extra: Loose = {}): Observation => o('1975-2', v, d, extra);
export const chol = (v: number, d: number, extra: Loose = {}, unit = 'mg/dL'): Observation =>
  o('2093-3', v, d, extra, unit);

export function ok(result: ExtractResult): FeatureRow {
  if (result.status !== 'ok') throw new Error(`expected ok, got missing ${result.missing.join(',')}`);
  return result.row;
}

/** Row `step` of a `[steps, F]` row as plain numbers (NaN kept). */
export function step(row: FeatureRow, s: number): number[] {
  const f = row.shape[1] as number;
  return [...row.values.subarray(s * f, (s + 1) * f)];
}
