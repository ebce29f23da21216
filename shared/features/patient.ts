/**
 * Features read from the Patient resource: `patient.age` and `patient.sex`.
 *
 * Age is in WHOLE years at `asOf` (the age a clinician would state, and what the training
 * sets record). A partial birthDate counts from the start of its period (`1970` → 1970-01-01,
 * `1970-06` → 1970-06-01), so the age may be one year too high for a year-only birthDate,
 * never made more precise than the record.
 */
import type { Patient } from '@medplum/fhirtypes';
import { parseFhirDateTime, wholeYearsBetween } from './fhir-time.js';

export type PatientOutcome =
  { readonly ok: true; readonly value: number } | { readonly ok: false; readonly reason: string };

const BIRTH_DATE = /^\d{4}(?:-\d{2}(?:-\d{2})?)?$/;

/** `Patient/<id>/_history/<versionId>`, or `Patient/<id>` without a version, or `Patient` without an id. */
export function patientReference(patient: Patient | undefined): string {
  const id = typeof patient?.id === 'string' && patient.id !== '' ? patient.id : undefined;
  if (id === undefined) return 'Patient';
  const version = patient?.meta?.versionId;
  return typeof version === 'string' && version !== ''
    ? `Patient/${id}/_history/${version}`
    : `Patient/${id}`;
}

export function readAge(patient: Patient | undefined, asOf: Date): PatientOutcome {
  if (patient === undefined || typeof patient !== 'object') return { ok: false, reason: 'patient:missing' };
  const birthDate: unknown = patient.birthDate;
  if (birthDate === undefined) return { ok: false, reason: 'birthDate:missing' };
  const birth =
    typeof birthDate === 'string' && BIRTH_DATE.test(birthDate) ? parseFhirDateTime(birthDate) : undefined;
  if (birth === undefined) return { ok: false, reason: 'birthDate:invalid' };
  if (birth.ms > asOf.getTime()) return { ok: false, reason: 'birthDate:future' };
  return { ok: true, value: wholeYearsBetween(birth, asOf) };
}

export function readSex(patient: Patient | undefined, valueMap: ReadonlyMap<string, number>): PatientOutcome {
  if (patient === undefined || typeof patient !== 'object') return { ok: false, reason: 'patient:missing' };
  const gender: unknown = patient.gender;
  if (gender === undefined) return { ok: false, reason: 'gender:missing' };
  const mapped = typeof gender === 'string' ? valueMap.get(gender) : undefined;
  return mapped === undefined ? { ok: false, reason: 'gender:unmapped' } : { ok: true, value: mapped };
}
