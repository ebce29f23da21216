/**
 * From one feature's candidates to its value: one candidate per Observation, the manifest's
 * aggregate and transform, a finite result or every used candidate rejected with the reason;
 * and a patient feature's value (age, sex) or its skip.
 */
import type { Patient } from '@medplum/fhirtypes';
import type { SkippedInput, VersionedReference } from '../types.js';
import { aggregate, applyTransform, type Candidate } from './aggregate.js';
import type { CompiledObservationFeature, CompiledPatientFeature } from './feature-compile.js';
import { patientReference, type PatientOutcome } from './patient.js';

/** The value a feature ended with, before imputation. */
export interface FeatureResult {
  readonly value: number | undefined;
  readonly used: readonly Candidate[];
  readonly inputs: readonly VersionedReference[];
}

/**
 * One candidate per Observation (the first seen), whatever the order the caller sent them in.
 * Returns `candidates` itself when there is no duplicate (the usual case).
 */
export function dedupe(candidates: Candidate[]): Candidate[] {
  if (candidates.length < 2) return candidates;
  const seen = new Set<string>();
  let out: Candidate[] | undefined;
  for (let i = 0; i < candidates.length; i++) {
    const c = candidates[i] as Candidate;
    if (seen.has(c.reference)) {
      out ??= candidates.slice(0, i);
      continue;
    }
    seen.add(c.reference);
    out?.push(c);
  }
  return out ?? candidates;
}

function references(used: readonly Candidate[]): string[] {
  const out = new Array<string>(used.length);
  for (let i = 0; i < used.length; i++) out[i] = (used[i] as Candidate).reference;
  return out;
}

const NO_RESULT: FeatureResult = Object.freeze({
  value: undefined,
  used: Object.freeze([]),
  inputs: Object.freeze([]),
});

function rejectAll(
  name: string,
  reason: string,
  used: readonly Candidate[],
  skipped: SkippedInput[],
): FeatureResult {
  for (const c of used) skipped.push({ feature: name, reference: c.reference, reason });
  return { value: undefined, used: [], inputs: [] };
}

/** Aggregates, transforms and checks one feature's candidates; rejections go to `skipped`. */
export function observationResult(
  feature: CompiledObservationFeature,
  candidates: Candidate[],
  skipped: SkippedInput[],
): FeatureResult {
  const name = feature.spec.name;
  const agg = aggregate(feature.spec.aggregate, dedupe(candidates));
  if (!agg.ok) return agg.used.length > 0 ? rejectAll(name, agg.reason, agg.used, skipped) : NO_RESULT;
  const transformed = applyTransform(feature.spec.transform, agg.value);
  if (!transformed.ok) return rejectAll(name, transformed.reason, agg.used, skipped);
  if (!Number.isFinite(transformed.value)) return rejectAll(name, 'value:not-finite', agg.used, skipped);
  return { value: transformed.value, used: agg.used, inputs: references(agg.used) };
}

/** A patient feature's value through `read`; a failure is a skip with its reason. */
export function patientResult(
  feature: CompiledPatientFeature,
  patient: Patient | undefined,
  read: () => PatientOutcome,
  skipped: SkippedInput[],
): FeatureResult {
  let outcome: PatientOutcome;
  try {
    outcome = read();
  } catch {
    outcome = { ok: false, reason: 'resource:malformed' };
  }
  let reference: string;
  try {
    reference = patientReference(patient);
  } catch {
    reference = 'Patient';
  }
  if (!outcome.ok) {
    skipped.push({ feature: feature.spec.name, reference, reason: outcome.reason });
    return { value: undefined, used: [], inputs: [] };
  }
  return { value: outcome.value, used: [], inputs: reference === 'Patient' ? [] : [reference] };
}
