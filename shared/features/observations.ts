/**
 * What the tabular and sequence extractors share: the reading of one Observation into usable
 * candidates per feature, or skip reasons. The compiled feature list it reads with is in
 * feature-compile.ts, and what becomes of a feature's candidates (aggregate, transform, patient
 * features) in feature-results.ts; both are re-exported here.
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
import type { Observation, ObservationComponent } from '@medplum/fhirtypes';
import type { SkippedInput } from '../types.js';
import type { Candidate } from './aggregate.js';
import type { CodeIndex, CompiledObservationFeature } from './feature-compile.js';
import { parseFhirDateTime, type FhirTime } from './fhir-time.js';
import { readValue, type ValueCarrier } from './values.js';

export {
  codeKey,
  compileFeatures,
  type CodeEntry,
  type CodeIndex,
  type CompiledFeature,
  type CompiledFeatures,
  type CompiledObservationFeature,
  type CompiledPatientFeature,
} from './feature-compile.js';
export { dedupe, observationResult, patientResult, type FeatureResult } from './feature-results.js';

/** Statuses whose values count. */
const USABLE_STATUSES: ReadonlySet<string> = new Set(['final', 'amended', 'corrected']);
const STATUS_PRELIMINARY = 'preliminary';

/** The window of effective times a feature accepts, epoch ms, both ends included. */
export interface Window {
  readonly from: number;
  readonly to: number;
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

function parseOrInvalid(s: unknown): FhirTime | 'invalid' {
  return parseFhirDateTime(s) ?? 'invalid';
}

/** The features one coding feeds, by `(system, code)` as strings (`String()` of anything else). */
function lookup(
  index: CodeIndex,
  system: unknown,
  code: unknown,
): readonly CompiledObservationFeature[] | undefined {
  const entries = index.get(typeof code === 'string' ? code : String(code));
  if (entries === undefined) return undefined;
  const s = typeof system === 'string' ? system : String(system);
  for (const e of entries) if (e.system === s) return e.features;
  return undefined;
}

/*
 * The matches of the Observation being collected, in scratch arrays reused across calls (the
 * extractors are synchronous, so one set suffices): no per-Observation allocation for the
 * Observations that feed nothing, which are most of a patient's record.
 */
const matchFeatures: CompiledObservationFeature[] = [];
const matchCarriers: ValueCarrier[] = [];
const matchInComponent: boolean[] = [];
let matchCount = 0;

/** Adds the features `concept`'s codings feed (each feature once per Observation) to the matches. */
function addMatches(concept: unknown, carrier: ValueCarrier, inComponent: boolean, index: CodeIndex): void {
  if (concept === null || typeof concept !== 'object') return;
  const coding: unknown = (concept as { coding?: unknown }).coding;
  if (!Array.isArray(coding)) return;
  for (let i = 0; i < coding.length; i++) {
    const c: unknown = coding[i];
    if (c === null || typeof c !== 'object') continue;
    const features = lookup(index, (c as { system?: unknown }).system, (c as { code?: unknown }).code);
    if (features === undefined) continue;
    for (const feature of features) {
      let seen = false;
      for (let k = 0; k < matchCount; k++) if (matchFeatures[k] === feature) seen = true;
      if (seen) continue;
      matchFeatures[matchCount] = feature;
      matchCarriers[matchCount] = carrier;
      matchInComponent[matchCount] = inComponent;
      matchCount++;
    }
  }
}

/** Finds the features an Observation feeds (top-level code first, then its components); returns how many. */
function findMatches(obs: Observation, index: CodeIndex): number {
  matchCount = 0;
  addMatches(obs.code, obs, false, index);
  const components: unknown = obs.component;
  if (Array.isArray(components)) {
    for (let i = 0; i < components.length; i++) {
      const comp: unknown = components[i];
      if (comp !== null && typeof comp === 'object') {
        addMatches((comp as ObservationComponent).code, comp, true, index);
      }
    }
  }
  return matchCount;
}

const EMPTY_CARRIER: ValueCarrier = {};

/** Clears the scratch slots so they hold no resource after a call. */
function releaseMatches(count: number): void {
  for (let k = 0; k < count; k++) matchCarriers[k] = EMPTY_CARRIER;
  matchCount = 0;
}

/**
 * Adds the Observation's usable values to `candidates` (indexed by feature index), and its
 * rejections to `skipped`. `windows` is indexed by feature index too. (No closures: this runs
 * once per Observation.)
 */
export function collect(
  obs: Observation,
  index: CodeIndex,
  windows: readonly Window[],
  candidates: Candidate[][],
  skipped: SkippedInput[],
): void {
  const resource: unknown = obs;
  if (resource === null || typeof resource !== 'object') {
    skipped.push({ feature: '*', reference: 'Observation', reason: 'resource:malformed' });
    return;
  }
  const count = findMatches(obs, index);
  if (count === 0) {
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
  try {
    for (let k = 0; k < count; k++) {
      collectMatch(obs, k, reference, status, time, windows, candidates, skipped);
    }
  } finally {
    releaseMatches(count);
  }
}

/** The `k`-th match of `obs`: a candidate, or a skip with its reason. */
function collectMatch(
  obs: Observation,
  k: number,
  reference: string | undefined,
  status: unknown,
  time: FhirTime | 'invalid' | 'missing',
  windows: readonly Window[],
  candidates: Candidate[][],
  skipped: SkippedInput[],
): void {
  const feature = matchFeatures[k] as CompiledObservationFeature;
  const carrier = matchCarriers[k] as ValueCarrier;
  const inComponent = matchInComponent[k] === true;
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
        return;
      }
      // A panel-level dataAbsentReason covers a component that carries no value of its own.
      const absentAbove = inComponent && obs.dataAbsentReason !== undefined;
      reason = absentAbove && outcome.reason === 'value:missing' ? 'value:absent' : outcome.reason;
    }
  }
  skipped.push({ feature: name, reference: reference ?? 'Observation', reason });
}

/** Collects every Observation of a list; a malformed one is skipped, never thrown. */
export function collectAll(
  observations: readonly Observation[],
  index: CodeIndex,
  windows: readonly Window[],
  candidates: Candidate[][],
  skipped: SkippedInput[],
): void {
  const list: readonly Observation[] = Array.isArray(observations) ? observations : [];
  for (let i = 0; i < list.length; i++) {
    try {
      collect(list[i] as Observation, index, windows, candidates, skipped);
    } catch {
      skipped.push({ feature: '*', reference: 'Observation', reason: 'resource:malformed' });
    }
  }
}
