/**
 * A synthetic cohort for sweeps (tests and bench): patients resampled from the diabetes
 * held-out rows with seeded noise, each a Patient and the diabetes-gbm inputs as
 * Observations, written straight into an {@link IndexedRepository} (no HTTP: fast enough for
 * 100,000 patients). Deterministic: the same seed and count give the same resources.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Observation, Patient } from '@medplum/fhirtypes';
import { loadHeldOutRows } from '../demo/cohort.js';
import type { IndexedRepository } from './indexed-repository.js';
import { mulberry32 } from '../prng.js';

const LOINC = 'http://loinc.org';
const UCUM = 'http://unitsofmeasure.org';
export const SYNTHETIC_SYSTEM = 'urn:fhir-analytics:synthetic';
const HELD_OUT = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  'demo',
  'data',
  'diabetes-heldout.json',
);

const LABS: readonly { code: string; unit: string; value: (v: Record<string, number>) => number }[] = [
  { code: '39156-5', unit: 'kg/m2', value: (v) => v.bmi ?? NaN },
  { code: '8478-0', unit: 'mm[Hg]', value: (v) => v.mean_bp ?? NaN },
  { code: '2093-3', unit: 'mg/dL', value: (v) => v.total_cholesterol ?? NaN },
  { code: '13457-7', unit: 'mg/dL', value: (v) => v.ldl_cholesterol ?? NaN },
  { code: '2085-9', unit: 'mg/dL', value: (v) => v.hdl_cholesterol ?? NaN },
  { code: '9830-1', unit: '{ratio}', value: (v) => v.tc_hdl_ratio ?? NaN },
  { code: '2571-8', unit: 'mg/dL', value: (v) => Math.exp(v.ln_triglycerides ?? NaN) },
  { code: '2345-7', unit: 'mg/dL', value: (v) => v.glucose ?? NaN },
];
/** LOINC code of the glucose Observation (the one tests change). */
export const GLUCOSE_CODE = '2345-7';

export const syntheticPatientId = (i: number): string => `syn-${String(i).padStart(7, '0')}`;

export interface SyntheticCohortOptions {
  readonly patients: number;
  readonly seed?: number;
  /** Every n-th patient lacks glucose (insufficient data). Default 20; 0 for none. */
  readonly gapEvery?: number;
  /** Patient ids start here (to add more patients later). Default 0. */
  readonly offset?: number;
  readonly today?: Date;
}

/** The resources of patient `i`, as the repository will store them (ids assigned). */
export function syntheticPatient(
  i: number,
  rows: ReturnType<typeof loadHeldOutRows>,
  opts: SyntheticCohortOptions,
): { patient: Patient; observations: Observation[] } {
  const rand = mulberry32((opts.seed ?? 42) * 1_000_003 + i);
  const row = rows[Math.floor(rand() * rows.length)] ?? rows[0];
  if (!row) throw new Error('no held-out rows');
  const noise = (): number => 1 + (rand() + rand() + rand() - 1.5) * 0.06;
  const today = opts.today ?? new Date();
  const id = syntheticPatientId(i);
  const age = Math.max(18, Math.round((row.values.age ?? 50) * noise()));
  const birth = new Date(today.getTime());
  birth.setUTCFullYear(birth.getUTCFullYear() - age);
  birth.setUTCDate(birth.getUTCDate() - 1 - Math.floor(rand() * 300));
  const patient: Patient = {
    resourceType: 'Patient',
    id,
    identifier: [{ system: SYNTHETIC_SYSTEM, value: id }],
    active: true,
    gender: row.values.sex === 1 ? 'female' : 'male',
    birthDate: birth.toISOString().slice(0, 10),
  };
  const gapEvery = opts.gapEvery ?? 20;
  const observations: Observation[] = [];
  LABS.forEach((lab, k) => {
    if (gapEvery > 0 && i % gapEvery === gapEvery - 1 && lab.code === GLUCOSE_CODE) return;
    const effective = today.getTime() - (5 + Math.floor(rand() * 120)) * 86_400_000;
    const value = Math.round(lab.value(row.values) * noise() * 1000) / 1000;
    observations.push({
      resourceType: 'Observation',
      id: `${id}-${k}`,
      status: 'final',
      code: { coding: [{ system: LOINC, code: lab.code }] },
      subject: { reference: `Patient/${id}` },
      effectiveDateTime: new Date(effective).toISOString(),
      valueQuantity: { value, unit: lab.unit, system: UCUM, code: lab.unit },
    });
  });
  return { patient, observations };
}

/** Writes the cohort into the repository; returns the patient ids. */
export async function loadSyntheticCohort(
  repo: IndexedRepository,
  opts: SyntheticCohortOptions,
): Promise<string[]> {
  const rows = loadHeldOutRows(HELD_OUT);
  const ids: string[] = [];
  const offset = opts.offset ?? 0;
  for (let i = offset; i < offset + opts.patients; i++) {
    const { patient, observations } = syntheticPatient(i, rows, opts);
    await repo.createResource(patient, { assignedId: true });
    for (const o of observations) await repo.createResource(o, { assignedId: true });
    ids.push(patient.id ?? '');
  }
  return ids;
}
