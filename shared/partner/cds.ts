/**
 * A `patient-view` call: the Patient and Observations from prefetch when the client sent
 * them, else from the client's FHIR server with its `fhirAuthorization` (only servers on the
 * allow-list: the service never fetches from an address a caller chose), else 412.
 */
import type { Bundle, Observation, Patient } from '@medplum/fhirtypes';
import {
  CdsHookRequestSchema,
  firstIssue,
  PatientViewContextSchema,
  type CdsHookRequest,
  type CdsResponse,
} from '../events/cds-hooks.js';
import { FhirRequestError } from '../fhir/errors.js';
import { observationSearchCodes } from '../features/search-codes.js';
import type { FhirGateway } from '../fhir/gateway.js';
import type { ModelManifest } from '../inference/manifest.js';
import type { PipelinePorts } from '../pipeline.js';
import { badRequest, HttpError } from '../http.js';
import {
  insufficientDataCard,
  PATIENT_VIEW,
  PREFETCH_OBSERVATIONS,
  PREFETCH_PATIENT,
  scoreCard,
} from './cards.js';
import { toHttpError } from './errors.js';
import { perturbedRows, rankSensitivities } from './sensitivity.js';

export interface HookDeps {
  readonly ports: PipelinePorts;
  /** A FHIR gateway for a client's server and bearer token. */
  readonly fhirFor: (baseUrl: string, accessToken: string) => FhirGateway;
  /** FHIR base URLs the service may fetch from (exact, or a parent path). */
  readonly fhirServerAllowList: readonly string[];
  readonly clock: () => Date;
}

export const preconditionFailed = (message: string): HttpError => new HttpError(412, 'required', message);

/** `https://host/fhir/` → `https://host/fhir`; undefined for anything that is not a plain http(s) URL. */
export function normaliseBaseUrl(raw: string): string | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return undefined;
  if (url.username || url.password || url.search || url.hash) return undefined;
  return `${url.protocol}//${url.host.toLowerCase()}${url.pathname.replace(/\/+$/, '')}`;
}

export function isAllowedFhirServer(allowList: readonly string[], fhirServer: string): boolean {
  const candidate = normaliseBaseUrl(fhirServer);
  if (candidate === undefined) return false;
  return allowList.some((entry) => {
    const allowed = normaliseBaseUrl(entry);
    return allowed !== undefined && (candidate === allowed || candidate.startsWith(`${allowed}/`));
  });
}

export function parseHookRequest(body: unknown): CdsHookRequest {
  const parsed = CdsHookRequestSchema.safeParse(body);
  if (!parsed.success) {
    const { path, message } = firstIssue(parsed.error);
    throw badRequest(`invalid CDS Hooks request at ${path}: ${message}`, path);
  }
  return parsed.data;
}

interface Inputs {
  readonly patient: Patient | undefined;
  readonly observations: readonly Observation[];
  readonly source: 'prefetch' | 'fhir' | 'mixed';
}

function prefetchedPatient(value: unknown, patientId: string): Patient | undefined {
  if (value === null) return undefined;
  if (typeof value !== 'object') {
    throw badRequest('prefetch.patient must be a Patient resource or null', `prefetch.${PREFETCH_PATIENT}`);
  }
  const p: { resourceType?: unknown; id?: unknown } = value;
  if (p.resourceType !== 'Patient') {
    throw badRequest('prefetch.patient must be a Patient resource or null', `prefetch.${PREFETCH_PATIENT}`);
  }
  if (p.id !== patientId) {
    throw badRequest(
      'prefetch.patient is not the patient in context.patientId',
      `prefetch.${PREFETCH_PATIENT}`,
    );
  }
  return value as Patient;
}

function prefetchedObservations(value: unknown, patientId: string): Observation[] {
  if (value === null) return [];
  const b: { resourceType?: unknown; entry?: unknown } = typeof value === 'object' ? value : {};
  if (b.resourceType !== 'Bundle' || (b.entry !== undefined && !Array.isArray(b.entry))) {
    throw badRequest(
      'prefetch.observations must be a searchset Bundle or null',
      `prefetch.${PREFETCH_OBSERVATIONS}`,
    );
  }
  const subject = `Patient/${patientId}`;
  const out: Observation[] = [];
  for (const entry of (b as Bundle).entry ?? []) {
    const raw: unknown = (entry as { resource?: unknown } | null)?.resource;
    // Search bundles may carry OperationOutcomes (mode `outcome`) and included resources, and a
    // client may send `null`: skip them.
    if (raw === null || typeof raw !== 'object') continue;
    const r = raw as Observation;
    if ((r as { resourceType?: unknown }).resourceType !== 'Observation') continue;
    const ref = (r.subject as { reference?: unknown } | undefined)?.reference;
    if (typeof ref === 'string' && ref.split('/_history/')[0]?.endsWith(subject)) out.push(r);
  }
  return out;
}

async function resolveInputs(
  deps: HookDeps,
  manifest: ModelManifest,
  request: CdsHookRequest,
  patientId: string,
): Promise<Inputs> {
  const prefetch = request.prefetch ?? {};
  const codes = observationSearchCodes([manifest]);
  const hasPatient = PREFETCH_PATIENT in prefetch;
  const hasObservations = codes.length === 0 || PREFETCH_OBSERVATIONS in prefetch;
  const patient = hasPatient ? prefetchedPatient(prefetch[PREFETCH_PATIENT], patientId) : undefined;
  const observations =
    hasObservations && codes.length ? prefetchedObservations(prefetch[PREFETCH_OBSERVATIONS], patientId) : [];
  if (hasPatient && hasObservations) return { patient, observations, source: 'prefetch' };

  if (!request.fhirServer || !request.fhirAuthorization) {
    throw preconditionFailed('prefetch is incomplete and no fhirServer with fhirAuthorization was given');
  }
  if (!isAllowedFhirServer(deps.fhirServerAllowList, request.fhirServer)) {
    deps.ports.logger.warn('fhirServer refused', { reason: 'not-on-allow-list' });
    throw preconditionFailed("prefetch is incomplete and fhirServer is not on this service's allow-list");
  }
  const fhir = deps.fhirFor(request.fhirServer, request.fhirAuthorization.access_token);
  try {
    const [fetchedPatient, fetchedObservations] = await Promise.all([
      hasPatient ? Promise.resolve(patient) : fhir.read<Patient>('Patient', patientId),
      hasObservations
        ? Promise.resolve(observations)
        : fhir.searchAll<Observation>(
            'Observation',
            { subject: `Patient/${patientId}`, code: codes.join(',') },
            { maxResources: 2000 },
          ),
    ]);
    return {
      patient: fetchedPatient,
      observations: fetchedObservations,
      source: hasPatient || (hasObservations && codes.length > 0) ? 'mixed' : 'fhir',
    };
  } catch (err) {
    if (err instanceof FhirRequestError && (err.status === 401 || err.status === 403)) {
      throw preconditionFailed('the FHIR server refused the access token');
    }
    throw toHttpError(err);
  }
}

/** Runs one `patient-view` call for one model. */
export async function callService(
  deps: HookDeps,
  manifest: ModelManifest,
  body: unknown,
  cardUrl: string,
): Promise<CdsResponse> {
  const request = parseHookRequest(body);
  if (request.hook !== PATIENT_VIEW)
    throw badRequest(`this service answers the ${PATIENT_VIEW} hook`, 'hook');
  const context = PatientViewContextSchema.safeParse(request.context);
  if (!context.success) {
    const { path, message } = firstIssue(context.error);
    throw badRequest(`invalid patient-view context at ${path}: ${message}`, `context.${path}`);
  }
  const started = Date.now();
  const { patientId } = context.data;
  const inputs = await resolveInputs(deps, manifest, request, patientId);
  const own = inputs.observations.filter((o) => !deps.ports.isOwnWrite(o));
  const extracted = deps.ports.extractor(manifest).extract(inputs.patient, own, deps.clock());
  const ctx = { manifest, cardUrl };
  if (extracted.status === 'insufficient-data') {
    deps.ports.logger.info('cds insufficient data', {
      model: manifest.id,
      source: inputs.source,
      missing: extracted.missing,
      ms: Date.now() - started,
    });
    return { cards: [insufficientDataCard(ctx, extracted.missing)] };
  }
  // The patient's row and one row per perturbed input go to the model in one call.
  const perturbed = perturbedRows(manifest, extracted.row);
  let predictions;
  try {
    predictions = await deps.ports.inference.predict(manifest, [extracted.row, ...perturbed.rows]);
  } catch (err) {
    throw toHttpError(err);
  }
  const [prediction, ...others] = predictions;
  if (!prediction) throw new HttpError(502, 'exception', 'the model returned no prediction');
  const sensitivities = rankSensitivities(
    perturbed.features,
    prediction.score,
    others.map((p) => p.score),
  );
  const card = scoreCard(ctx, extracted.row, prediction, sensitivities);
  deps.ports.logger.info('cds card', {
    model: manifest.id,
    source: inputs.source,
    indicator: card.indicator,
    inputs: extracted.row.inputs.length,
    ms: Date.now() - started,
  });
  return { cards: [card] };
}
