/**
 * One batch of patients through features → inference → write-back: each patient's feature rows
 * are extracted as its lines are grouped (`preparePatient`), the rows of the batch are sent per
 * model in one `predict` call (the invoker splits them under the endpoint's max batch size),
 * then the reports are built and written by the write-back's workers, a few transactions in
 * flight at once (`write-back.ts`).
 *
 * Why not one big Bundle: a report's transaction has conditional creates and `urn:uuid:`
 * references between its entries, so it cannot be an entry of a `batch` (entries of a batch
 * are independent: no reference resolution across them), and servers such as Medplum refuse
 * transactions of more than 8 entries with conditional creates. Concurrent transactions keep
 * each report atomic and idempotent (a re-run finds each report: 200, not 201).
 */
import type { Observation, Patient, Resource } from '@medplum/fhirtypes';
import type { FhirGateway, FhirPager } from '../fhir/gateway.js';
import type { ModelManifest } from '../inference/manifest.js';
import type { Logger } from '../log.js';
import type { PipelinePorts } from '../pipeline.js';
import type { FeatureRow, Prediction } from '../types.js';
import { createReportWriter, type ReportWriter } from './write-back.js';
import {
  addFailed,
  addScore,
  countOutcome,
  emptyCounts,
  histogramFor,
  patientOutcome,
  type PatientOutcome,
  type Tally,
} from './tally.js';

/** What a sweep needs of the pipeline's ports (the same builders, clients injected). */
export interface SweepPorts {
  readonly fhir: FhirGateway & FhirPager;
  readonly inference: PipelinePorts['inference'];
  readonly extractor: PipelinePorts['extractor'];
  readonly buildReport: PipelinePorts['buildReport'];
  readonly isOwnWrite: PipelinePorts['isOwnWrite'];
  readonly logger: Logger;
  readonly clock?: () => Date;
  /** Report transactions in flight at once. Default 8. */
  readonly writeConcurrency?: number;
  /** The write-back (one per process: it remembers the model Devices). Default: a new one per batch. */
  readonly writer?: ReportWriter;
}

export interface PatientInputs {
  /** The patient id (no `Patient/`). */
  readonly id: string;
  readonly patient: Patient | undefined;
  readonly observations: readonly Observation[];
}

/** Parses one patient's staged resources into its inputs; own writes and other types are left out. */
export function toInputs(
  id: string,
  resources: readonly Resource[],
  isOwnWrite: (r: Resource) => boolean,
): PatientInputs {
  let patient: Patient | undefined;
  const observations: Observation[] = [];
  for (const r of resources) {
    if (r.resourceType === 'Patient') patient = r;
    else if (r.resourceType === 'Observation' && !isOwnWrite(r)) observations.push(r);
  }
  return { id, patient, observations };
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

/** One patient ready for inference: per model (in the models' order), its feature row or none. */
export interface PreparedPatient {
  /** The patient id (no `Patient/`). */
  readonly id: string;
  /** `undefined`: insufficient data for that model. */
  readonly rows: readonly (FeatureRow | undefined)[];
}

/**
 * Features of one patient for every model, as of `asOf`. Called as each patient's lines are
 * grouped, so a batch holds feature rows, never its patients' parsed resources.
 */
export function preparePatient(
  ports: Pick<SweepPorts, 'extractor'>,
  models: readonly ModelManifest[],
  inputs: PatientInputs,
  asOf: Date,
): PreparedPatient {
  const rows = models.map((manifest) => {
    if (!inputs.patient) return undefined;
    const extracted = ports.extractor(manifest).extract(inputs.patient, inputs.observations, asOf);
    return extracted.status === 'ok' ? extracted.row : undefined;
  });
  return { id: inputs.id, rows };
}

/** Processes one batch; adds every patient's outcome to `tally`. Never throws for one patient's failure. */
export async function processBatch(
  ports: SweepPorts,
  models: readonly ModelManifest[],
  batch: readonly PatientInputs[],
  tally: Tally,
): Promise<void> {
  const asOf = (ports.clock ?? (() => new Date()))();
  await scoreBatch(
    ports,
    models,
    batch.map((p) => preparePatient(ports, models, p, asOf)),
    tally,
    asOf,
  );
}

/**
 * Scores prepared patients: one `predict` per model for the whole batch, then the reports,
 * each built only when a write-back worker takes it (memory holds the rows and scores, not a
 * batch of bundles).
 */
export async function scoreBatch(
  ports: SweepPorts,
  models: readonly ModelManifest[],
  batch: readonly PreparedPatient[],
  tally: Tally,
  asOf: Date,
): Promise<void> {
  const t0 = Date.now();
  let predictMs = 0;
  const outcomes = batch.map(() => [] as PatientOutcome[]);
  const writes: { patient: number; model: ModelManifest; row: FeatureRow; prediction: Prediction }[] = [];

  models.forEach((manifest, m) => {
    tally.perModel[manifest.id] ??= emptyCounts();
    batch.forEach((p, i) => {
      if (p.rows[m] !== undefined) return;
      outcomes[i]?.push('insufficient-data');
      countOutcome(tally.perModel[manifest.id] ?? emptyCounts(), 'insufficient-data');
    });
  });
  for (const [m, manifest] of models.entries()) {
    const counts = (tally.perModel[manifest.id] ??= emptyCounts());
    const rows: { patient: number; row: FeatureRow }[] = [];
    batch.forEach((p, i) => {
      const row = p.rows[m];
      if (row !== undefined) rows.push({ patient: i, row });
    });
    if (rows.length === 0) continue;
    let predictions: Prediction[];
    const tp = Date.now();
    try {
      predictions = await ports.inference.predict(
        manifest,
        rows.map((r) => r.row),
      );
    } catch (err) {
      ports.logger.error('sweep inference failed', {
        model: manifest.id,
        rows: rows.length,
        error: (err as Error).name,
      });
      for (const r of rows) {
        outcomes[r.patient]?.push('failed');
        countOutcome(counts, 'failed');
      }
      continue;
    }
    predictMs += Date.now() - tp;
    rows.forEach((r, k) => {
      const prediction = predictions[k];
      if (prediction) writes.push({ patient: r.patient, model: manifest, row: r.row, prediction });
      else {
        outcomes[r.patient]?.push('failed');
        countOutcome(counts, 'failed');
      }
    });
  }

  const tw = Date.now();
  const writer = ports.writer ?? createReportWriter(ports.fhir, { concurrency: ports.writeConcurrency ?? 8 });
  const results = await writer.write(
    writes.map((w) => ({
      build: () =>
        ports.buildReport({
          manifest: w.model,
          patient: `Patient/${batch[w.patient]?.id ?? ''}`,
          row: w.row,
          prediction: w.prediction,
          issued: asOf,
        }).bundle,
    })),
  );
  writes.forEach((w, k) => {
    const counts = (tally.perModel[w.model.id] ??= emptyCounts());
    const result = results[k];
    if (result?.ok) {
      const outcome: PatientOutcome = result.created ? 'written' : 'unchanged';
      outcomes[w.patient]?.push(outcome);
      countOutcome(counts, outcome);
      addScore((tally.histograms[w.model.id] ??= histogramFor(w.model)), w.prediction.score);
      return;
    }
    ports.logger.warn('sweep write-back failed', {
      model: w.model.id,
      patient: `Patient/${batch[w.patient]?.id ?? ''}`,
      error: result?.error.name ?? 'Error',
    });
    outcomes[w.patient]?.push('failed');
    countOutcome(counts, 'failed');
  });

  ports.logger.debug('sweep batch', {
    patients: batch.length,
    reports: writes.length,
    predictMs,
    writeMs: Date.now() - tw,
    ms: Date.now() - t0,
  });
  batch.forEach((p, i) => {
    const outcome = patientOutcome(outcomes[i] ?? []);
    tally.patients++;
    countOutcome(tally.outcomes, outcome);
    if (outcome === 'failed') addFailed(tally, `Patient/${p.id}`);
  });
}

/** A patient's full inputs from the server (incremental runs: the export held only what changed). */
export async function fetchInputs(
  fhir: FhirGateway,
  id: string,
  codes: readonly string[],
  isOwnWrite: (r: Resource) => boolean,
): Promise<PatientInputs> {
  const [patient, observations] = await Promise.all([
    fhir.read<Patient>('Patient', id),
    codes.length === 0
      ? Promise.resolve([] as Observation[])
      : fhir.searchAll<Observation>('Observation', {
          subject: `Patient/${id}`,
          code: codes.join(','),
          _count: '1000',
        }),
  ]);
  return { id, patient, observations: observations.filter((o) => !isOwnWrite(o)) };
}
