/**
 * The PBC demo cohort: the sequence models' held-out patients (never seen in training), each
 * with their whole visit history as Observations (liver labs and clinical signs), the last
 * visit dated ten days ago. The newest bilirubin is the "new result" that arrives once the
 * subscriptions are active; the rest is history already on file.
 */
import { readFileSync } from 'node:fs';
import type { BundleEntry, Observation, Patient } from '@medplum/fhirtypes';
import { DEMO_SYSTEM, type DemoPatient } from './cohort.js';

const LOINC = 'http://loinc.org';
const UCUM = 'http://unitsofmeasure.org';
const PROJECT = 'urn:fhir-analytics:code';
const DAY = 86_400_000;

interface PbcVisit {
  day: number;
  [lab: string]: number | null;
}
interface PbcPatient {
  patientId: number;
  sex: 'female' | 'male';
  ageAtFirstVisit: number;
  visits: PbcVisit[];
}

const LABS: readonly { name: string; code: string; display: string; unit: string }[] = [
  {
    name: 'bilirubin',
    code: '1975-2',
    display: 'Bilirubin.total [Mass/volume] in Serum or Plasma',
    unit: 'mg/dL',
  },
  { name: 'albumin', code: '1751-7', display: 'Albumin [Mass/volume] in Serum or Plasma', unit: 'g/dL' },
  {
    name: 'alk_phos',
    code: '6768-6',
    display: 'Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma',
    unit: 'U/L',
  },
  {
    name: 'ast',
    code: '1920-8',
    display: 'Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma',
    unit: 'U/L',
  },
  {
    name: 'platelets',
    code: '777-3',
    display: 'Platelets [#/volume] in Blood by Automated count',
    unit: '10*3/uL',
  },
  { name: 'protime', code: '5902-2', display: 'Prothrombin time (PT)', unit: 's' },
  {
    name: 'cholesterol',
    code: '2093-3',
    display: 'Cholesterol [Mass/volume] in Serum or Plasma',
    unit: 'mg/dL',
  },
];
const SIGNS: readonly { name: string; code: string; display: string }[] = [
  { name: 'ascites', code: 'pbc-ascites', display: 'Ascites present' },
  { name: 'hepatomegaly', code: 'pbc-hepatomegaly', display: 'Hepatomegaly present' },
  { name: 'spiders', code: 'pbc-spiders', display: 'Spider angiomata present' },
];
const EDEMA: Record<string, string> = {
  '0': 'edema-none',
  '0.5': 'edema-untreated-or-resolved',
  '1': 'edema-despite-diuretics',
};

export function loadPbcPatients(file: string): PbcPatient[] {
  return (JSON.parse(readFileSync(file, 'utf8')) as { patients: PbcPatient[] }).patients;
}

export function buildPbcCohort(patients: readonly PbcPatient[], today: Date): DemoPatient[] {
  const now = Math.floor(today.getTime() / DAY) * DAY;
  return patients.map((p) => buildPatient(p, now));
}

function buildPatient(p: PbcPatient, now: number): DemoPatient {
  const key = `pbc-${p.patientId}`;
  const lastDay = p.visits.at(-1)?.day ?? 0;
  const lastVisit = now - 10 * DAY;
  const dateOf = (day: number): number => lastVisit - (lastDay - day) * DAY;
  const birth = new Date(dateOf(0) - p.ageAtFirstVisit * 365.25 * DAY);
  const patientUrl = `urn:uuid:00000000-0000-4000-8100-${String(p.patientId).padStart(12, '0')}`;
  const patient: BundleEntry<Patient> = {
    fullUrl: patientUrl,
    resource: {
      resourceType: 'Patient',
      identifier: [{ system: DEMO_SYSTEM, value: key }],
      active: true,
      gender: p.sex,
      birthDate: birth.toISOString().slice(0, 10),
    },
    request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${DEMO_SYSTEM}|${key}` },
  };
  const observations: BundleEntry<Observation>[] = [];
  const add = (
    visit: number,
    name: string,
    obs: Omit<Observation, 'resourceType' | 'status' | 'subject' | 'identifier'>,
  ): void => {
    const id = `${key}-v${visit}-${name}`;
    observations.push({
      fullUrl: `urn:uuid:${uuidFrom(id)}`,
      resource: {
        resourceType: 'Observation',
        identifier: [{ system: DEMO_SYSTEM, value: id }],
        status: 'final',
        subject: { reference: patientUrl },
        ...obs,
      },
      request: { method: 'POST', url: 'Observation', ifNoneExist: `identifier=${DEMO_SYSTEM}|${id}` },
    });
  };
  p.visits.forEach((v, i) => {
    const effectiveDateTime = new Date(dateOf(v.day) + 9 * 3_600_000).toISOString();
    for (const lab of LABS) {
      const value = v[lab.name];
      if (value === null || value === undefined) continue;
      add(i, lab.name, {
        code: { coding: [{ system: LOINC, code: lab.code, display: lab.display }] },
        effectiveDateTime,
        valueQuantity: { value, unit: lab.unit, system: UCUM, code: lab.unit },
      });
    }
    for (const sign of SIGNS) {
      const value = v[sign.name];
      if (value === null || value === undefined) continue;
      add(i, sign.name, {
        code: { coding: [{ system: PROJECT, code: sign.code, display: sign.display }] },
        effectiveDateTime,
        valueBoolean: value === 1,
      });
    }
    const edema = v.edema;
    const edemaCode = edema === null || edema === undefined ? undefined : EDEMA[String(edema)];
    if (edemaCode) {
      add(i, 'edema', {
        code: { coding: [{ system: PROJECT, code: 'pbc-edema', display: 'Edema (Mayo PBC edema score)' }] },
        effectiveDateTime,
        valueCodeableConcept: { coding: [{ system: PROJECT, code: edemaCode }] },
      });
    }
  });
  // The newest bilirubin arrives last, as the new result that starts the sequence models.
  const triggerIndex = observations.findLastIndex((o) => o.resource?.code.coding?.[0]?.code === '1975-2');
  const trigger = triggerIndex >= 0 ? observations.splice(triggerIndex, 1) : [];
  return { key, patient, observations, trigger };
}

/** A deterministic UUID-shaped id for a demo entry's fullUrl. */
function uuidFrom(text: string): string {
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193;
  for (let i = 0; i < text.length; i++) {
    h1 = Math.imul(h1 ^ text.charCodeAt(i), 16777619) >>> 0;
    h2 = Math.imul(h2 ^ text.charCodeAt(i), 2246822519) >>> 0;
  }
  const hex = (h1.toString(16).padStart(8, '0') + h2.toString(16).padStart(8, '0')).repeat(2);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}
