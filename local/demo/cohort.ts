/**
 * The demo cohort: the diabetes model's held-out patients (never seen in training), turned
 * into FHIR Patients and Observations the way an EHR would hold them: effective times spread
 * over the last months, some values in other units (mmol/L), some results missing or
 * unusable, so the demo shows conversions and `insufficient-data` as well as reports.
 * Deterministic: the same rows give the same resources (dates are relative to the day).
 */
import { readFileSync } from 'node:fs';
import type { BundleEntry, ImagingStudy, Observation, Patient } from '@medplum/fhirtypes';

export const DEMO_SYSTEM = 'urn:fhir-analytics:demo';
const LOINC = 'http://loinc.org';
const UCUM = 'http://unitsofmeasure.org';

interface HeldOutRow {
  rowId: number;
  values: Record<string, number>;
  target: number;
}

interface LabSpec {
  feature: string;
  code: string;
  display: string;
  unit: string;
  /** Molecular weight for the mmol/L variant (g/mol), when the demo sometimes sends one. */
  mmolEvery?: { every: number; mw: number };
  category: 'laboratory' | 'vital-signs';
  value: (v: Record<string, number>) => number;
}

const LABS: readonly LabSpec[] = [
  {
    feature: 'bmi',
    code: '39156-5',
    display: 'Body mass index (BMI) [Ratio]',
    unit: 'kg/m2',
    category: 'vital-signs',
    value: (v) => v.bmi ?? NaN,
  },
  {
    feature: 'mean_bp',
    code: '8478-0',
    display: 'Mean blood pressure',
    unit: 'mm[Hg]',
    category: 'vital-signs',
    value: (v) => v.mean_bp ?? NaN,
  },
  {
    feature: 'total_cholesterol',
    code: '2093-3',
    display: 'Cholesterol [Mass/volume] in Serum or Plasma',
    unit: 'mg/dL',
    mmolEvery: { every: 4, mw: 386.65 },
    category: 'laboratory',
    value: (v) => v.total_cholesterol ?? NaN,
  },
  {
    feature: 'ldl_cholesterol',
    code: '13457-7',
    display: 'Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation',
    unit: 'mg/dL',
    category: 'laboratory',
    value: (v) => v.ldl_cholesterol ?? NaN,
  },
  {
    feature: 'hdl_cholesterol',
    code: '2085-9',
    display: 'Cholesterol in HDL [Mass/volume] in Serum or Plasma',
    unit: 'mg/dL',
    mmolEvery: { every: 5, mw: 386.65 },
    category: 'laboratory',
    value: (v) => v.hdl_cholesterol ?? NaN,
  },
  {
    feature: 'tc_hdl_ratio',
    code: '9830-1',
    display: 'Cholesterol.total/Cholesterol in HDL [Mass Ratio] in Serum or Plasma',
    unit: '{ratio}',
    category: 'laboratory',
    value: (v) => v.tc_hdl_ratio ?? NaN,
  },
  {
    feature: 'ln_triglycerides',
    code: '2571-8',
    display: 'Triglyceride [Mass/volume] in Serum or Plasma',
    unit: 'mg/dL',
    mmolEvery: { every: 6, mw: 885.7 },
    category: 'laboratory',
    value: (v) => Math.exp(v.ln_triglycerides ?? NaN),
  },
  {
    feature: 'glucose',
    code: '2345-7',
    display: 'Glucose [Mass/volume] in Serum or Plasma',
    unit: 'mg/dL',
    mmolEvery: { every: 3, mw: 180.156 },
    category: 'laboratory',
    value: (v) => v.glucose ?? NaN,
  },
];

export interface DemoPatient {
  /** Business identifier value (`DEMO_SYSTEM|<value>`), used for conditional creates. */
  readonly key: string;
  /** The Patient, created conditionally on its identifier. */
  readonly patient: BundleEntry<Patient>;
  /** Its history, each created conditionally; `subject` points at the patient's `fullUrl`. */
  readonly observations: readonly BundleEntry<Observation>[];
  /** The new result(s) that arrive once the subscriptions are active (an Observation or an ImagingStudy). */
  readonly trigger: readonly BundleEntry<Observation | ImagingStudy>[];
  /** Why this patient should not get a report, when the demo made its data incomplete on purpose. */
  readonly expectedGap?: string;
}

export function loadHeldOutRows(file: string): HeldOutRow[] {
  const data = JSON.parse(readFileSync(file, 'utf8')) as { rows: HeldOutRow[] };
  return data.rows;
}

const DAY = 86_400_000;

function isoDay(ms: number): string {
  return new Date(Math.floor(ms / DAY) * DAY).toISOString().slice(0, 10);
}

/** Builds the demo cohort relative to `today`. */
export function buildDemoCohort(rows: readonly HeldOutRow[], today: Date): DemoPatient[] {
  const now = Math.floor(today.getTime() / DAY) * DAY;
  return rows.map((row, index) => buildPatient(row, index, now));
}

function buildPatient(row: HeldOutRow, index: number, now: number): DemoPatient {
  const key = `diabetes-${row.rowId}`;
  const patientUrl = `urn:uuid:00000000-0000-4000-8000-${String(row.rowId).padStart(12, '0')}`;
  const age = row.values.age ?? 50;
  // Born `age` years and a few (deterministic) days before today: the age on the day is `age`.
  const birth = new Date(now);
  birth.setUTCFullYear(birth.getUTCFullYear() - age);
  birth.setUTCDate(birth.getUTCDate() - 1 - ((row.rowId * 37) % 300));
  const patient: Patient = {
    resourceType: 'Patient',
    identifier: [{ system: DEMO_SYSTEM, value: key }],
    active: true,
    gender: row.values.sex === 1 ? 'female' : 'male',
    birthDate: birth.toISOString().slice(0, 10),
  };
  const patientEntry: BundleEntry<Patient> = {
    fullUrl: patientUrl,
    resource: patient,
    request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${DEMO_SYSTEM}|${key}` },
  };
  const entries: BundleEntry<Observation>[] = [];

  // Every 9th patient has no glucose on file; every 13th has an HDL in a unit nobody can convert.
  const gap = index % 9 === 8 ? 'no-glucose' : index % 13 === 12 ? 'unconvertible-hdl' : undefined;
  LABS.forEach((lab, k) => {
    if (gap === 'no-glucose' && lab.feature === 'glucose') return;
    const obsKey = `${key}-${lab.code}`;
    const effective =
      now - ((row.rowId * 7 + k * 11) % 120) * DAY - 5 * DAY - ((row.rowId * 13 + k) % 24) * 3_600_000;
    let value = lab.value(row.values);
    let unit = lab.unit;
    if (lab.mmolEvery && index % lab.mmolEvery.every === 0) {
      value = (value / lab.mmolEvery.mw) * 10; // mg/dL → mmol/L
      unit = 'mmol/L';
    }
    if (gap === 'unconvertible-hdl' && lab.feature === 'hdl_cholesterol') unit = 'mg/deciliter-ish';
    const observation: Observation = {
      resourceType: 'Observation',
      identifier: [{ system: DEMO_SYSTEM, value: obsKey }],
      status: 'final',
      category: [
        {
          coding: [
            { system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: lab.category },
          ],
        },
      ],
      code: { coding: [{ system: LOINC, code: lab.code, display: lab.display }], text: lab.display },
      subject: { reference: patientUrl },
      effectiveDateTime: new Date(effective).toISOString(),
      issued: new Date(effective + 3_600_000).toISOString(),
      valueQuantity: { value: Math.round(value * 1000) / 1000, unit, system: UCUM, code: unit },
    };
    entries.push({
      fullUrl: `urn:uuid:00000000-0000-4000-9${String(k).padStart(3, '0')}-${String(row.rowId).padStart(12, '0')}`,
      resource: observation,
      request: { method: 'POST', url: 'Observation', ifNoneExist: `identifier=${DEMO_SYSTEM}|${obsKey}` },
    });
  });

  // The newest result is the one that arrives after the subscriptions are active.
  const newest = entries.reduce<BundleEntry<Observation> | undefined>(
    (best, e) =>
      !best || (e.resource?.effectiveDateTime ?? '') > (best.resource?.effectiveDateTime ?? '') ? e : best,
    undefined,
  );
  return {
    key,
    patient: patientEntry,
    observations: entries.filter((e) => e !== newest),
    trigger: newest ? [newest] : [],
    ...(gap ? { expectedGap: gap } : {}),
  };
}

/** The day of a cohort build, for messages. */
export function cohortDay(today: Date): string {
  return isoDay(today.getTime());
}
