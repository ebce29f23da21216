/**
 * REST `$predict`: a FHIR Bundle with one Patient and its Observations (or, for image models,
 * an ImagingStudy, with its Endpoint when the server does not hold it) in, a DiagnosticReport
 * out, with the score Observation `contained` (`result` → `#score`), so one resource answers
 * and nothing dangles. Nothing is written unless `persist=true` and the caller holds
 * `report.write`: then the usual write-back transaction (Device, score Observation,
 * DiagnosticReport, Provenance; conditional, idempotent) goes to the configured FHIR server,
 * the answer is 201 with `Location`, and the report carries its server id.
 */
import type {
  Bundle,
  DiagnosticReport,
  Endpoint,
  ImagingStudy,
  Observation,
  Patient,
} from '@medplum/fhirtypes';
import * as z from 'zod';
import { FHIR_ID, firstIssue } from '../events/cds-hooks.js';
import type { ModelManifest } from '../inference/manifest.js';
import type { PipelinePorts } from '../pipeline.js';
import type { ExtractResult } from '../types.js';
import { badRequest, HttpError } from '../http.js';
import { writtenReport } from '../reports/response.js';
import { toHttpError } from './errors.js';

/** Resource types a `$predict` bundle may hold. */
const ACCEPTED_TYPES: ReadonlySet<string> = new Set(['Patient', 'Observation', 'ImagingStudy', 'Endpoint']);
export const MAX_BUNDLE_ENTRIES = 5000;

export const PredictBundleSchema = z.object({
  resourceType: z.literal('Bundle'),
  type: z.enum(['collection', 'batch', 'transaction', 'searchset', 'document', 'message']).optional(),
  entry: z
    .array(
      z.object({
        fullUrl: z.string().optional(),
        resource: z.looseObject({ resourceType: z.string().min(1), id: z.string().optional() }),
      }),
    )
    .min(1)
    .max(MAX_BUNDLE_ENTRIES),
});

/** A FHIR OperationOutcome, as every error of this API is answered (OpenAPI only). */
export const OperationOutcomeSchema = z.looseObject({
  resourceType: z.literal('OperationOutcome'),
  issue: z.array(
    z.looseObject({
      severity: z.enum(['fatal', 'error', 'warning', 'information']),
      code: z.string(),
      diagnostics: z.string().optional(),
      expression: z.array(z.string()).optional(),
    }),
  ),
});

/** The answer of `$predict` (OpenAPI; the full shape is FHIR R4 DiagnosticReport). */
export const PredictResponseSchema = z.looseObject({
  resourceType: z.literal('DiagnosticReport'),
  id: z.string().optional(),
  status: z.literal('preliminary'),
  contained: z.array(z.looseObject({ resourceType: z.literal('Observation'), id: z.literal('score') })),
  result: z.array(z.object({ reference: z.literal('#score') })),
  conclusion: z.string(),
});

export interface PredictInput {
  readonly patient: Patient;
  readonly observations: Observation[];
  readonly imagingStudies: ImagingStudy[];
  readonly endpoints: Endpoint[];
}

/** Validates the bundle; errors name the entry and field. */
export function parsePredictBundle(body: unknown, opts: { requireIds: boolean }): PredictInput {
  if (typeof body === 'object' && body !== null && 'resourceType' in body && body.resourceType !== 'Bundle') {
    throw badRequest('expected a FHIR Bundle', 'Bundle.resourceType');
  }
  const parsed = PredictBundleSchema.safeParse(body);
  if (!parsed.success) {
    const { path, message } = firstIssue(parsed.error);
    throw badRequest(`invalid Bundle at ${path}: ${message}`, `Bundle.${path}`);
  }
  let patient: Patient | undefined;
  const observations: Observation[] = [];
  const imagingStudies: ImagingStudy[] = [];
  const endpoints: Endpoint[] = [];
  const subjects: { ref: string | undefined; where: string }[] = [];
  parsed.data.entry.forEach((entry, i) => {
    const r = entry.resource;
    const where = `Bundle.entry[${i}].resource`;
    if (!ACCEPTED_TYPES.has(r.resourceType)) {
      throw badRequest(
        `resource type ${r.resourceType.slice(0, 64)} is not accepted (Patient, Observation, ImagingStudy, Endpoint)`,
        `${where}.resourceType`,
      );
    }
    if (r.id !== undefined && !FHIR_ID.test(r.id)) throw badRequest('not a valid FHIR id', `${where}.id`);
    if (r.resourceType === 'Patient') {
      if (patient) throw badRequest('the Bundle holds more than one Patient', where);
      if (r.id === undefined) throw badRequest('the Patient needs an id (the report subject)', `${where}.id`);
      patient = r as unknown as Patient;
      return;
    }
    if (r.resourceType === 'Endpoint') {
      endpoints.push(r as unknown as Endpoint);
      return;
    }
    const subject = (r as { subject?: { reference?: unknown } }).subject?.reference;
    subjects.push({
      ref: typeof subject === 'string' ? subject : undefined,
      where: `${where}.subject.reference`,
    });
    if (r.id === undefined && opts.requireIds) {
      throw badRequest(
        `persisted predictions need ${r.resourceType} ids (the report provenance)`,
        `${where}.id`,
      );
    }
    if (r.resourceType === 'ImagingStudy') {
      imagingStudies.push(
        (r.id === undefined ? { ...r, id: `request-entry-${i}` } : r) as unknown as ImagingStudy,
      );
      return;
    }
    // Observations without an id are named by their place in the request (not persisted).
    observations.push(
      (r.id === undefined ? { ...r, id: `request-entry-${i}` } : r) as unknown as Observation,
    );
  });
  if (!patient) throw badRequest('the Bundle holds no Patient', 'Bundle.entry');
  // Every input must be about the Bundle's Patient: another patient's results never feed a report.
  const own = new Set([`Patient/${patient.id ?? ''}`, ...(entryUrlOf(parsed.data.entry, patient) ?? [])]);
  for (const s of subjects) {
    // A subject is required and must reference the Bundle's Patient (a version suffix is fine):
    // an input without one could be anyone's.
    if (s.ref === undefined) throw badRequest("subject must reference the Bundle's Patient", s.where);
    if (!own.has(s.ref.split('/_history/')[0] ?? '')) {
      throw badRequest("subject is not the Bundle's Patient", s.where);
    }
  }
  return { patient, observations, imagingStudies, endpoints };
}

/** The Patient entry's fullUrl, which inputs may reference instead of `Patient/<id>`. */
function entryUrlOf(
  entries: readonly { fullUrl?: string | undefined; resource: unknown }[],
  patient: Patient,
): string[] | undefined {
  const url = entries.find((e) => e.resource === patient)?.fullUrl;
  return url ? [url] : undefined;
}

function containedReport(bundle: Bundle): DiagnosticReport {
  const report = bundle.entry?.find((e) => e.resource?.resourceType === 'DiagnosticReport')?.resource as
    DiagnosticReport | undefined;
  const score = bundle.entry?.find((e) => e.resource?.resourceType === 'Observation')?.resource as
    Observation | undefined;
  if (!report || !score) throw new HttpError(500, 'exception', 'internal error');
  // The Device reference is a urn:uuid of the transaction: keep its display only.
  const contained: Observation = {
    ...score,
    id: 'score',
    ...(score.device ? { device: { display: score.device.display ?? 'model' } } : {}),
  };
  return { ...report, contained: [contained], result: [{ reference: '#score' }] };
}

export interface PredictResult {
  readonly status: 200 | 201;
  readonly body: DiagnosticReport;
  readonly location?: string;
}

/** The model's row: Observations for tabular and sequence models, the ImagingStudy for image models. */
async function extract(
  ports: PipelinePorts,
  manifest: ModelManifest,
  input: PredictInput,
  now: Date,
): Promise<ExtractResult> {
  if (manifest.input.kind !== 'image')
    return ports.extractor(manifest).extract(input.patient, input.observations, now);
  const [study] = input.imagingStudies;
  if (!study) throw badRequest(`model ${manifest.id} needs an ImagingStudy in the Bundle`, 'Bundle.entry');
  if (!ports.imageExtractor) {
    throw new HttpError(
      501,
      'not-supported',
      'image models are not configured on this deployment (no DICOMweb allow-list)',
    );
  }
  const result = await ports.imageExtractor(manifest).extract(study, now, { endpoints: input.endpoints });
  if (result.status !== 'failed') return result;
  if (result.retryable) {
    throw new HttpError(502, 'transient', `the DICOMweb server could not be read (${result.reason})`);
  }
  throw badRequest(`the ImagingStudy cannot be used (${result.reason})`, 'Bundle.entry');
}

export async function predict(
  ports: PipelinePorts,
  manifest: ModelManifest,
  input: PredictInput,
  opts: { persist: boolean; now: Date },
): Promise<PredictResult> {
  const patientRef = `Patient/${input.patient.id ?? ''}`;
  const extracted = await extract(ports, manifest, input, opts.now);
  if (extracted.status === 'insufficient-data') {
    throw new HttpError(
      422,
      'processing',
      `insufficient data: no usable value for ${extracted.missing.join(', ')}`,
    );
  }
  let prediction;
  try {
    [prediction] = await ports.inference.predict(manifest, [extracted.row]);
  } catch (err) {
    throw toHttpError(err);
  }
  if (!prediction) throw new HttpError(502, 'exception', 'the model returned no prediction');
  let built;
  try {
    built = ports.buildReport({
      manifest,
      patient: patientRef,
      row: extracted.row,
      prediction,
      issued: opts.now,
    });
  } catch (err) {
    throw toHttpError(err);
  }
  const report = containedReport(built.bundle);
  if (!opts.persist) return { status: 200, body: report };
  let response: Bundle;
  try {
    response = await ports.fhir.transaction(built.bundle);
  } catch (err) {
    throw toHttpError(err);
  }
  const { id } = writtenReport(built.bundle, response);
  return {
    status: 201,
    body: id ? { ...report, id } : report,
    ...(id ? { location: `DiagnosticReport/${id}` } : {}),
  };
}
