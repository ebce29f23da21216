/**
 * What the partner API tests (partner-api*.test.ts) share: the embedded stack, the local
 * functions gateway with the real partner handler (one generous, one rate-limited), a trusted
 * and a rogue ES384 issuer, one demo patient loaded with its Observations, started by each test
 * file (`beforeAll(startPartnerApi)`, `afterAll(stopPartnerApi)`), and request helpers.
 */
import * as path from 'node:path';
import type { Bundle, DiagnosticReport, Observation, Patient } from '@medplum/fhirtypes';
import { buildDemoCohort, loadHeldOutRows } from '../../local/demo/cohort.js';
import { loadDemoPatient } from '../../local/demo/load.js';
import { startFunctionsGateway, type RunningGateway } from '../../local/gateway.js';
import { startJwksIssuer, type RunningJwksIssuer } from '../../local/jwks-issuer.js';
import { createLocalPartnerHandler, partnerApiRoutes } from '../../local/partner.js';
import { ROOT, startStack, type RunningStack } from '../../local/stack.js';
import { createFhirGateway, type FhirGateway } from '../../shared/fhir/gateway.js';
import { createLogger } from '../../shared/log.js';

export let stack: RunningStack;
export let issuer: RunningJwksIssuer;
export let rogue: RunningJwksIssuer;
export let gateway: RunningGateway;
export let limited: RunningGateway;
let fhir: FhirGateway;
export let patient: Patient;
export let observations: Observation[];
export const logLines: Record<string, unknown>[] = [];
export const MODEL = 'diabetes-gbm';

export async function startPartnerApi(): Promise<void> {
  stack = await startStack({ anyPorts: true });
  issuer = await startJwksIssuer({ port: 0 });
  rogue = await startJwksIssuer({ port: 0 });
  const logger = createLogger({
    level: 'debug',
    sink: (line) => logLines.push(JSON.parse(line) as Record<string, unknown>),
  });
  const common = {
    fhirBaseUrl: stack.fhir.baseUrl,
    sagemakerUrl: stack.sagemaker.url,
    modelsDir: stack.modelsDir,
    issuer,
    logger,
  };
  let gatewayUrl = '';
  gateway = await startFunctionsGateway({
    port: 0,
    routes: partnerApiRoutes(
      createLocalPartnerHandler({
        ...common,
        dicomWebUrl: stack.dicomweb.url,
        publicBaseUrl: () => gatewayUrl,
        rate: { burst: 1000, perSecond: 1000 },
      }),
    ),
  });
  gatewayUrl = gateway.url;
  let limitedUrl = '';
  limited = await startFunctionsGateway({
    port: 0,
    routes: partnerApiRoutes(
      createLocalPartnerHandler({
        ...common,
        publicBaseUrl: () => limitedUrl,
        rate: { burst: 2, perSecond: 0.01 },
      }),
    ),
  });
  limitedUrl = limited.url;

  fhir = createFhirGateway({ baseUrl: stack.fhir.baseUrl });
  const rows = loadHeldOutRows(path.join(ROOT, 'local/demo/data/diabetes-heldout.json')).slice(0, 1);
  const [demo] = buildDemoCohort(rows, new Date());
  if (!demo) throw new Error('no demo patient');
  const event = await loadDemoPatient(fhir, demo);
  const id = event?.patient?.split('/')[1] ?? '';
  const p = await fhir.read<Patient>('Patient', id);
  if (!p) throw new Error('demo patient not loaded');
  patient = p;
  observations = await fhir.searchAll<Observation>('Observation', { subject: `Patient/${id}` });
}

export async function stopPartnerApi(): Promise<void> {
  await gateway.close();
  await limited.close();
  await issuer.close();
  await rogue.close();
  await stack.close();
}

export const serviceUrl = (base = gateway.url, id = MODEL): string => `${base}/cds-services/${id}`;

export function searchset(resources: readonly Observation[]): Bundle {
  return { resourceType: 'Bundle', type: 'searchset', entry: resources.map((resource) => ({ resource })) };
}

export function hookBody(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    hook: 'patient-view',
    hookInstance: crypto.randomUUID(),
    context: { userId: 'Practitioner/example', patientId: patient.id },
    prefetch: { patient, observations: searchset(observations) },
    ...extra,
  };
}

export async function post(
  url: string,
  token: string | undefined,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...headers,
    },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

export async function callHook(body: unknown, token?: string): Promise<Response> {
  return post(serviceUrl(), token ?? (await issuer.mintCds(serviceUrl())), body);
}

export async function reportCount(): Promise<number> {
  return (
    await fhir.searchAll<DiagnosticReport>('DiagnosticReport', { subject: `Patient/${patient.id ?? ''}` })
  ).length;
}

export function predictBundle(): Bundle {
  return {
    resourceType: 'Bundle',
    type: 'collection',
    entry: [{ resource: patient }, ...observations.map((resource) => ({ resource }))],
  };
}

export const predictUrl = (id = MODEL, query = ''): string =>
  `${gateway.url}/v1/models/${id}/$predict${query}`;
