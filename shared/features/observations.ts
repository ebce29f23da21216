/**
 * What the tabular and sequence extractors share: a manifest's feature list compiled once
 * (code lookup by `system|code`, value specs with their UCUM converters, lookbacks parsed), and
 * the reading of one Observation into usable candidates per feature, or skip reasons.
 *
 * Rules (the tabular tests pin each):
 * - an Observation matches a feature by any coding of `code`, else of a `component.code`
 *   (a BP panel's systolic/diastolic components); one value per Observation per feature;
 * - status `final`, `amended`, `corrected` count; `preliminary` only with `acceptPreliminary`;
 * - the time is `effectiveDateTime`, `effectivePeriod` (end, else start) or `effectiveInstant`,
 *   else `issued`; impossible dates are skipped; times after the window's end or before its
 *   start (the lookback) are not used;
 * - values are converted to the feature's UCUM unit.
 */
import type { Observation, ObservationComponent, Patient } from '@medplum/fhirtypes';
import type { ObservationFeature, TabularFeature } from '../inference/manifest.js';
import type { SkippedInput, VersionedReference } from '../types.js';
import { aggregate, applyTransform, type Candidate } from './aggregate.js';
import { parseIsoDuration, type IsoDuration } from './duration.js';
import { FeatureSpecError } from './errors.js';
import { parseFhirDateTime, type FhirTime } from './fhir-time.js';
import { patientReference, type PatientOutcome } from './patient.js';
import type { UnitConverterCache } from './units.js';
import { isDimensionlessUnit, readValue, type ValueCarrier, type ValueSpec } from './values.js';

/** Statuses whose values count. */
const USABLE_STATUSES: ReadonlySet<string> = new Set(['final', 'amended', 'corrected']);
const STATUS_PRELIMINARY = 'preliminary';

export interface CompiledObservationFeature {
  readonly kind: 'observation';
  readonly index: number;
  readonly spec: ObservationFeature;
  readonly lookback: IsoDuration;
  readonly value: ValueSpec;
}

export interface CompiledPatientFeature {
  readonly kind: 'patient.age' | 'patient.sex';
  readonly index: number;
  readonly spec: TabularFeature;
  readonly valueMap: ReadonlyMap<string, number>;
}

export type CompiledFeature = CompiledObservationFeature | CompiledPatientFeature;

export interface CompiledFeatures {
  readonly features: readonly CompiledFeature[];
  /** `system|code` → the observation features it feeds. */
  readonly byCode: ReadonlyMap<string, CompiledObservationFeature[]>;
}

/** The value a feature ended with, before imputation. */
export interface FeatureResult {
  readonly value: number | undefined;
  readonly used: readonly Candidate[];
  readonly inputs: readonly VersionedReference[];
}

interface Match {
  readonly feature: CompiledObservationFeature;
  readonly carrier: ValueCarrier;
  readonly inComponent: boolean;
}

/** The window of effective times a feature accepts, epoch ms, both ends included. */
export interface Window {
  readonly from: number;
  readonly to: number;
}

export const codeKey = (system: unknown, code: unknown): string => `${String(system)}|${String(code)}`;

function compileObservationFeature(
  spec: ObservationFeature,
  index: number,
  units: UnitConverterCache,
): CompiledObservationFeature {
  if (spec.unit !== undefined && !units.isValid(spec.unit)) {
    throw new FeatureSpecError(`feature "${spec.name}": unit "${spec.unit}" is not a valid UCUM unit`);
  }
  return {
    kind: 'observation',
    index,
    spec,
    lookback: parseIsoDuration(spec.lookback),
    value: {
      unit: spec.unit,
      acceptsBareNumber: spec.unit === undefined || isDimensionlessUnit(spec.unit),
      molecularWeight: spec.molecularWeight,
      valueMap: spec.valueMap ? new Map(Object.entries(spec.valueMap)) : undefined,
      units,
    },
  };
}

/** Compiles a feature list (tabular or sequence). Throws `FeatureSpecError` for a spec it cannot honour. */
export function compileFeatures(
  specs: readonly TabularFeature[],
  units: UnitConverterCache,
): CompiledFeatures {
  const names = new Set<string>();
  const features: CompiledFeature[] = specs.map((spec, index) => {
    if (names.has(spec.name)) throw new FeatureSpecError(`feature "${spec.name}" is listed twice`);
    names.add(spec.name);
    if (spec.source === 'observation') return compileObservationFeature(spec, index, units);
    if (spec.source === 'patient.sex' && !spec.valueMap) {
      throw new FeatureSpecError(`feature "${spec.name}": patient.sex needs a valueMap`);
    }
    return { kind: spec.source, index, spec, valueMap: new Map(Object.entries(spec.valueMap ?? {})) };
  });
  const byCode = new Map<string, CompiledObservationFeature[]>();
  for (const f of features) {
    if (f.kind !== 'observation') continue;
    for (const c of f.spec.codes) {
      const key = codeKey(c.system, c.code);
      const list = byCode.get(key) ?? [];
      if (!list.includes(f)) list.push(f);
      byCode.set(key, list);
    }
  }
  return { features, byCode };
}

export function versionedReference(obs: Observation): string | undefined {
  const id: unknown = obs.id;
  if (typeof id !== 'string' || id === '') return undefined;
  const version: unknown = obs.meta?.versionId;
  return typeof version === 'string' && version !== ''
    ? `Observation/${id}/_history/${version}`
    : `Observation/${id}`;
}

/** The Observation's clinically relevant time, `'invalid'` when one is given but unreadable. */
export function effectiveTime(obs: Observation): FhirTime | 'invalid' | 'missing' {
  const parseOrInvalid = (s: unknown): FhirTime | 'invalid' => parseFhirDateTime(s) ?? 'invalid';
  if (obs.effectiveDateTime !== undefined) return parseOrInvalid(obs.effectiveDateTime);
  if (obs.effectivePeriod !== undefined) {
    const p = obs.effectivePeriod as { end?: unknown; start?: unknown } | null;
    const edge = p?.end ?? p?.start;
    return edge === undefined ? 'invalid' : parseOrInvalid(edge);
  }
  if (obs.effectiveInstant !== undefined) return parseOrInvalid(obs.effectiveInstant);
  if (obs.issued !== undefined) return parseOrInvalid(obs.issued);
  return 'missing';
}

function codings(concept: unknown): readonly { system?: unknown; code?: unknown }[] {
  const coding = (concept as { coding?: unknown } | null | undefined)?.coding;
  return Array.isArray(coding) ? (coding as { system?: unknown; code?: unknown }[]) : [];
}

/** Adds the features `concept`'s codings feed (each feature once per Observation) to `matches`. */
function addMatches(
  concept: unknown,
  carrier: ValueCarrier,
  inComponent: boolean,
  byCode: ReadonlyMap<string, CompiledObservationFeature[]>,
  matches: Match[],
): void {
  const coding = (concept as { coding?: unknown } | null | undefined)?.coding;
  if (!Array.isArray(coding)) return;
  for (const c of coding as unknown[]) {
    if (c === null || typeof c !== 'object') continue;
    const { system, code } = c as { system?: unknown; code?: unknown };
    const features = byCode.get(codeKey(system, code));
    if (features === undefined) continue;
    for (const feature of features) {
      let seen = false;
      for (const m of matches) if (m.feature === feature) seen = true;
      if (!seen) matches.push({ feature, carrier, inComponent });
    }
  }
}

/** The features an Observation feeds: top-level code first, then its components. */
function findMatches(obs: Observation, byCode: ReadonlyMap<string, CompiledObservationFeature[]>): Match[] {
  const matches: Match[] = [];
  addMatches(obs.code, obs, false, byCode, matches);
  const components: unknown = obs.component;
  if (Array.isArray(components)) {
    for (const comp of components as unknown[]) {
      if (comp !== null && typeof comp === 'object') {
        addMatches((comp as ObservationComponent).code, comp, true, byCode, matches);
      }
    }
  }
  return matches;
}

/**
 * Adds the Observation's usable values to `candidates` (indexed by feature index), and its
 * rejections to `skipped`. `windows` is indexed by feature index too. (No closures: this runs
 * once per Observation.)
 */
export function collect(
  obs: Observation,
  byCode: ReadonlyMap<string, CompiledObservationFeature[]>,
  windows: readonly Window[],
  candidates: Candidate[][],
  skipped: SkippedInput[],
): void {
  const resource: unknown = obs;
  if (resource === null || typeof resource !== 'object') {
    skipped.push({ feature: '*', reference: 'Observation', reason: 'resource:malformed' });
    return;
  }
  const matches = findMatches(obs, byCode);
  if (matches.length === 0) {
    if (codings(obs.code).length === 0) {
      skipped.push({
        feature: '*',
        reference: versionedReference(obs) ?? 'Observation',
        reason: 'code:missing',
      });
    }
    return;
  }
  const reference = versionedReference(obs);
  const status: unknown = obs.status;
  const time = effectiveTime(obs);
  for (const { feature, carrier, inComponent } of matches) {
    const name = feature.spec.name;
    let reason: string | undefined;
    if (reference === undefined) reason = 'id:missing';
    else if (!(
      typeof status === 'string' &&
      (USABLE_STATUSES.has(status) || (status === STATUS_PRELIMINARY && feature.spec.acceptPreliminary))
    )) {
      reason = `status:${typeof status === 'string' ? status : 'missing'}`;
    } else if (time === 'invalid' || time === 'missing') reason = `effective:${time}`;
    else {
      const window = windows[feature.index] as Window;
      if (time.ms > window.to) reason = 'effective:future';
      else if (time.ms < window.from) reason = 'effective:before-lookback';
      else {
        const outcome = readValue(carrier, feature.value);
        if (outcome.ok) {
          (candidates[feature.index] as Candidate[]).push({
            value: outcome.value,
            ms: time.ms,
            text: time.text,
            reference,
          });
          continue;
        }
        // A panel-level dataAbsentReason covers a component that carries no value of its own.
        const absentAbove = inComponent && obs.dataAbsentReason !== undefined;
        reason = absentAbove && outcome.reason === 'value:missing' ? 'value:absent' : outcome.reason;
      }
    }
    skipped.push({ feature: name, reference: reference ?? 'Observation', reason });
  }
}

/** Collects every Observation of a list; a malformed one is skipped, never thrown. */
export function collectAll(
  observations: readonly Observation[],
  byCode: ReadonlyMap<string, CompiledObservationFeature[]>,
  windows: readonly Window[],
  candidates: Candidate[][],
  skipped: SkippedInput[],
): void {
  const list: readonly Observation[] = Array.isArray(observations) ? observations : [];
  for (const obs of list) {
    try {
      collect(obs, byCode, windows, candidates, skipped);
    } catch {
      skipped.push({ feature: '*', reference: 'Observation', reason: 'resource:malformed' });
    }
  }
}

/** One candidate per Observation (the first seen), whatever the order the caller sent them in. */
export function dedupe(candidates: readonly Candidate[]): Candidate[] {
  const byRef = new Map<string, Candidate>();
  for (const c of candidates) if (!byRef.has(c.reference)) byRef.set(c.reference, c);
  return [...byRef.values()];
}

/** Aggregates, transforms and checks one feature's candidates; rejections go to `skipped`. */
export function observationResult(
  feature: CompiledObservationFeature,
  candidates: readonly Candidate[],
  skipped: SkippedInput[],
): FeatureResult {
  const name = feature.spec.name;
  const agg = aggregate(feature.spec.aggregate, dedupe(candidates));
  const refs = (used: readonly Candidate[]): string[] => used.map((c) => c.reference);
  const reject = (reason: string, used: readonly Candidate[]): FeatureResult => {
    for (const c of used) skipped.push({ feature: name, reference: c.reference, reason });
    return { value: undefined, used: [], inputs: [] };
  };
  if (!agg.ok)
    return agg.used.length > 0 ? reject(agg.reason, agg.used) : { value: undefined, used: [], inputs: [] };
  const transformed = applyTransform(feature.spec.transform, agg.value);
  if (!transformed.ok) return reject(transformed.reason, agg.used);
  if (!Number.isFinite(transformed.value)) return reject('value:not-finite', agg.used);
  return { value: transformed.value, used: agg.used, inputs: refs(agg.used) };
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
