/**
 * The one pipeline behind every caller: resources in → features → inference → report.
 * Every client is a port passed in, so the same code runs against the embedded stack, against
 * AWS, and in unit tests with fakes.
 */
import type { Bundle, Endpoint, ImagingStudy, Observation, Patient, Resource } from '@medplum/fhirtypes';
import type { FhirGateway } from './fhir/gateway.js';
import type { ModelManifest } from './inference/manifest.js';
import type { Logger } from './log.js';
import type { ExtractResult, FeatureRow, Outcome, Prediction } from './types.js';
import type { ResourceEventMessage } from './events/resource-event.js';
import type { ModelResourceCache } from './reports/model-resources.js';
import { writtenReport } from './reports/response.js';
import { observationSearchCodes } from './features/search-codes.js';

/** What the pipeline needs from the outside world. */
export interface PipelinePorts {
  readonly fhir: FhirGateway;
  readonly inference: {
    predict(manifest: ModelManifest, rows: readonly FeatureRow[]): Promise<Prediction[]>;
  };
  readonly models: { all(): readonly ModelManifest[]; matching(resource: Resource): ModelManifest[] };
  /** The compiled extractor of a tabular or sequence model (compiled once per cold start by the caller). */
  readonly extractor: (manifest: ModelManifest) => ExtractorLike;
  /** The compiled extractor of an image model; absent when imaging is not configured. */
  readonly imageExtractor?: (manifest: ModelManifest) => ImageExtractorLike;
  readonly buildReport: (args: {
    manifest: ModelManifest;
    patient: string;
    row: FeatureRow;
    prediction: Prediction;
    issued: Date;
  }) => { bundle: Bundle; idempotencyKey: string };
  /**
   * The report already written for this model, patient and input state (found by its
   * idempotency key), if any: then nothing is inferred or written again, and the report's
   * Provenance is not rewritten.
   */
  readonly findReport?: (
    manifest: ModelManifest,
    patient: string,
    row: FeatureRow,
  ) => Promise<string | undefined>;
  /**
   * Sends report transactions without the model's Device and card once they are known to be
   * stored (a per-container cache); absent: every transaction is sent whole.
   */
  readonly modelResources?: ModelResourceCache;
  /** Marks resources this system wrote: events about them are ignored. */
  readonly isOwnWrite: (resource: Resource) => boolean;
  readonly logger: Logger;
  readonly clock?: () => Date;
}

export interface ExtractorLike {
  extract(patient: Patient | undefined, observations: readonly Observation[], asOf: Date): ExtractResult;
}

export interface ImageExtractorLike {
  extract(
    study: ImagingStudy,
    asOf: Date,
    /** Endpoints the caller already holds (e.g. sent with the study in a `$predict` Bundle). */
    context?: { readonly endpoints?: readonly Endpoint[] },
  ): Promise<
    | ExtractResult
    | {
        readonly status: 'failed';
        readonly reason: string;
        readonly retryable: boolean;
        readonly skipped: readonly unknown[];
      }
  >;
}

/** An input that could not be read for a reason other than missing data (bad DICOM, network). */
export class InputUnavailableError extends Error {
  override name = 'InputUnavailableError';
  readonly reason: string;
  readonly retryable: boolean;
  constructor(reason: string, retryable: boolean) {
    super(`input unavailable: ${reason}`);
    this.reason = reason;
    this.retryable = retryable;
  }
}

export interface ModelOutcome {
  readonly model: string;
  readonly outcome: Outcome;
  /** A machine reason for skipped / insufficient-data outcomes. */
  readonly reason?: string;
  /** The DiagnosticReport written (or found, when unchanged). */
  readonly report?: string;
  readonly missing?: readonly string[];
}

export interface EventResult {
  readonly focus: string;
  /** Why the event produced no model run at all, when it did not. */
  readonly ignored?: string;
  /** Where the focus came from: the queue message (carried copy) or a read. */
  readonly focusFrom?: 'message' | 'read';
  readonly outcomes: readonly ModelOutcome[];
}

const ENTERED_IN_ERROR = 'entered-in-error';

/** The patient a focus resource belongs to (`Patient/123`), if it names one. */
export function patientOf(resource: Resource): string | undefined {
  if (resource.resourceType === 'Patient') return resource.id ? `Patient/${resource.id}` : undefined;
  const holder = resource as { subject?: { reference?: string }; patient?: { reference?: string } };
  const ref = holder.subject?.reference ?? holder.patient?.reference;
  return ref?.startsWith('Patient/') ? ref.split('/_history/')[0] : undefined;
}

/**
 * The focus the queue message carried (a `full-resource` notification's copy), when the pipeline
 * may start from it instead of reading it: an Observation whose type, id and version agree with
 * the message. Its current state is confirmed by the patient search that follows (which returns
 * it if it still exists), so a copy that went stale never decides anything on its own.
 */
function carriedObservation(event: ResourceEventMessage): Observation | undefined {
  const r = event.resource;
  if (r?.resourceType !== 'Observation' || `Observation/${r.id}` !== event.focus) return undefined;
  if (event.versionId !== undefined && r.meta?.versionId !== event.versionId) return undefined;
  return r as unknown as Observation;
}

const ignored = (focus: string, why: string, focusFrom?: EventResult['focusFrom']): EventResult => ({
  focus,
  ignored: why,
  ...(focusFrom ? { focusFrom } : {}),
  outcomes: [],
});

/** Why a focus resource produces no model run, if it does not. */
function unusableFocus(ports: PipelinePorts, focus: Resource): string | undefined {
  if (ports.isOwnWrite(focus)) return 'own-write';
  if ((focus as { status?: string }).status === ENTERED_IN_ERROR) return 'entered-in-error';
  return undefined;
}

/**
 * Runs every model whose triggers match the event's focus resource, for its patient.
 *
 * The focus is read first (id-only events), or taken from the message when it carried an
 * Observation; either way the patient search confirms its current state (see patientInputs).
 */
export async function processResourceEvent(
  ports: PipelinePorts,
  event: ResourceEventMessage,
): Promise<EventResult> {
  const [type, id] = event.focus.split('/') as [string, string];
  if (event.action === 'delete') return ignored(event.focus, 'deleted');
  const carried = carriedObservation(event);
  const from = carried ? 'message' : 'read';
  const focus: Resource | undefined =
    carried ?? (await ports.fhir.read(type as Resource['resourceType'], id));
  if (!focus) return ignored(event.focus, 'focus-gone', from);
  const unusable = unusableFocus(ports, focus);
  if (unusable) return ignored(event.focus, unusable, from);
  const models = ports.models.matching(focus);
  if (models.length === 0) return ignored(event.focus, 'no-matching-model', from);
  const patientRef = patientOf(focus);
  if (!patientRef) return ignored(event.focus, 'no-patient', from);
  const imageModels = models.filter((m) => m.input.kind === 'image');
  const otherModels = models.filter((m) => m.input.kind !== 'image');
  const outcomes: ModelOutcome[] = [];
  if (otherModels.length) {
    const observed = focus.resourceType === 'Observation' ? focus : undefined;
    const inputs = await patientInputs(
      ports,
      patientRef,
      otherModels,
      observed && { resource: observed, carried: carried !== undefined },
    );
    if (inputs.focusNow === null) return ignored(event.focus, 'focus-gone', from);
    const now = inputs.focusNow && unusableFocus(ports, inputs.focusNow);
    if (now) return ignored(event.focus, now, from);
    // A carried copy whose resource now names another patient: that change is an event of its own.
    if (inputs.focusNow && patientOf(inputs.focusNow) !== patientRef) {
      return ignored(event.focus, 'focus-moved', from);
    }
    outcomes.push(...(await scoreInputs(ports, patientRef, otherModels, inputs)));
  }
  if (imageModels.length && focus.resourceType === 'ImagingStudy') {
    outcomes.push(...(await runImageModels(ports, patientRef, focus, imageModels)));
  }
  return { focus: event.focus, focusFrom: from, outcomes };
}

/** Runs image models on one ImagingStudy (the DICOM instances are fetched over DICOMweb). */
export async function runImageModels(
  ports: PipelinePorts,
  patientRef: string,
  study: ImagingStudy,
  models: readonly ModelManifest[],
): Promise<ModelOutcome[]> {
  const asOf = (ports.clock ?? (() => new Date()))();
  const outcomes: ModelOutcome[] = [];
  for (const manifest of models) {
    if (!ports.imageExtractor) {
      outcomes.push({ model: manifest.id, outcome: 'skipped', reason: 'imaging-not-configured' });
      continue;
    }
    const started = Date.now();
    const extracted = await ports.imageExtractor(manifest).extract(study, asOf);
    if (extracted.status === 'failed') throw new InputUnavailableError(extracted.reason, extracted.retryable);
    if (extracted.status === 'insufficient-data') {
      outcomes.push({ model: manifest.id, outcome: 'insufficient-data', missing: extracted.missing });
      ports.logger.info('insufficient data', {
        model: manifest.id,
        patient: patientRef,
        missing: extracted.missing,
      });
      continue;
    }
    outcomes.push(await predictAndWrite(ports, manifest, patientRef, extracted.row, asOf, started));
  }
  return outcomes;
}

interface PatientInputs {
  readonly asOf: Date;
  readonly patient: Patient | undefined;
  /** The patient's Observations with the models' codes, this system's own writes left out. */
  readonly inputs: readonly Observation[];
  /**
   * The focus's current state, when one was given: the resource, or null when it is gone;
   * undefined when nothing was to be confirmed.
   */
  readonly focusNow?: Resource | null;
}

/** The focus Observation of an event: read, or carried by the message (then still to confirm). */
interface FocusToConfirm {
  readonly resource: Observation;
  readonly carried: boolean;
}

/** Whether `found` (from a search) is older than `focus`, judged by `meta.lastUpdated` when both have it. */
function olderThan(found: Observation, focus: Observation): boolean {
  const a = found.meta?.lastUpdated;
  const b = focus.meta?.lastUpdated;
  return a !== undefined && b !== undefined && Date.parse(a) < Date.parse(b);
}

/**
 * The patient and their Observations with the models' codes, in one round trip (read ∥ search).
 *
 * With a focus, also its current state, and a guard that the inputs include it: when the
 * focus's code is searched, the search must return the focus at least as new as the event's.
 * A search index that has not caught up yet (eventually consistent servers, e.g. HealthLake's
 * default search consistency) or a result cut short would otherwise score the patient on inputs
 * without the very value that triggered the event, silently. Then the focus is read: gone →
 * `focusNow` null (ignored as gone); still there → a retryable error, so the queue delivers the
 * event again later (and dead-letters it, with its reason, if the search never catches up). A
 * carried focus whose code is not searched is read beside the search.
 */
async function patientInputs(
  ports: PipelinePorts,
  patientRef: string,
  models: readonly ModelManifest[],
  focus?: FocusToConfirm,
): Promise<PatientInputs> {
  const asOf = (ports.clock ?? (() => new Date()))();
  const codes = observationSearchCodes(models);
  const searched = new Set(codes);
  const focusId = focus?.resource.id ?? '';
  const covered =
    focus?.resource.code.coding?.some((c) => searched.has(`${c.system ?? ''}|${c.code ?? ''}`)) ?? false;
  const readFocus = () => ports.fhir.read<Observation>('Observation', focusId);
  const [patient, observations, read] = await Promise.all([
    ports.fhir.read<Patient>('Patient', patientRef.slice('Patient/'.length)),
    codes.length === 0
      ? Promise.resolve([])
      : ports.fhir.searchAll<Observation>('Observation', {
          subject: patientRef,
          code: codes.join(','),
          _count: '1000',
        }),
    focus?.carried && !covered ? readFocus() : undefined,
  ]);
  const inputs = observations.filter((o) => !ports.isOwnWrite(o));
  if (!focus) return { asOf, patient, inputs };
  if (!covered) return { asOf, patient, inputs, focusNow: focus.carried ? (read ?? null) : focus.resource };
  const found = observations.find((o) => o.id === focusId);
  if (found && !olderThan(found, focus.resource)) return { asOf, patient, inputs, focusNow: found };
  const now = focus.carried ? await readFocus() : focus.resource;
  if (!now) return { asOf, patient, inputs, focusNow: null };
  throw new InputUnavailableError('search-behind-focus', true);
}

/** Fetches a patient's inputs once, then runs each model on them. */
export async function runModelsForPatient(
  ports: PipelinePorts,
  patientRef: string,
  models: readonly ModelManifest[],
): Promise<ModelOutcome[]> {
  return scoreInputs(ports, patientRef, models, await patientInputs(ports, patientRef, models));
}

async function scoreInputs(
  ports: PipelinePorts,
  patientRef: string,
  models: readonly ModelManifest[],
  { asOf, patient, inputs }: PatientInputs,
): Promise<ModelOutcome[]> {
  if (!patient) return models.map((m) => ({ model: m.id, outcome: 'skipped', reason: 'patient-gone' }));
  const outcomes: ModelOutcome[] = [];
  for (const manifest of models) {
    const started = Date.now();
    const extracted = ports.extractor(manifest).extract(patient, inputs, asOf);
    if (extracted.status === 'insufficient-data') {
      outcomes.push({ model: manifest.id, outcome: 'insufficient-data', missing: extracted.missing });
      ports.logger.info('insufficient data', {
        model: manifest.id,
        patient: patientRef,
        missing: extracted.missing,
        skipped: extracted.skipped.length,
      });
      continue;
    }
    outcomes.push(await predictAndWrite(ports, manifest, patientRef, extracted.row, asOf, started));
  }
  return outcomes;
}

/** One inference call and one transaction for one model and patient. */
async function predictAndWrite(
  ports: PipelinePorts,
  manifest: ModelManifest,
  patientRef: string,
  row: FeatureRow,
  asOf: Date,
  started: number,
): Promise<ModelOutcome> {
  // The idempotency lookup and the inference run at once. Trade-off: a first delivery (the
  // common case) no longer waits a lookup round trip before inferring; a redelivery whose report
  // exists costs one inference whose prediction is discarded (and whose failure is ignored).
  // Nothing is written before the lookup has answered, so exactly-once is unchanged.
  const [lookup, inferred] = await Promise.allSettled([
    ports.findReport?.(manifest, patientRef, row),
    ports.inference.predict(manifest, [row]),
  ]);
  if (lookup.status === 'rejected') throw lookup.reason;
  const existing = lookup.value;
  if (existing) {
    ports.logger.info('report unchanged', {
      model: manifest.id,
      patient: patientRef,
      report: existing,
      inputs: row.inputs.length,
      ms: Date.now() - started,
    });
    return { model: manifest.id, outcome: 'unchanged', report: existing };
  }
  if (inferred.status === 'rejected') throw inferred.reason;
  const [prediction] = inferred.value;
  if (!prediction) throw new Error(`inference returned no prediction for ${manifest.id}`);
  const { bundle, idempotencyKey } = ports.buildReport({
    manifest,
    patient: patientRef,
    row,
    prediction,
    issued: asOf,
  });
  const { request, response } = ports.modelResources
    ? await ports.modelResources.write(bundle, (b) => ports.fhir.transaction(b))
    : { request: bundle, response: await ports.fhir.transaction(bundle) };
  const written = writtenReport(request, response);
  const reference = written.id ? `DiagnosticReport/${written.id}` : undefined;
  ports.logger.info(written.created ? 'report written' : 'report unchanged', {
    model: manifest.id,
    patient: patientRef,
    report: reference,
    key: idempotencyKey.slice(0, 16),
    inputs: row.inputs.length,
    ms: Date.now() - started,
  });
  return {
    model: manifest.id,
    outcome: written.created ? 'written' : 'unchanged',
    ...(reference ? { report: reference } : {}),
  };
}
