/**
 * What the embedded FHIR server's tests (fhir-server*.test.ts) share: the server and a
 * fhir-kit-client on it, started by each test file (`beforeAll(startServer)`,
 * `afterAll(stopServer)`), and readers of statuses and headers and raw requests.
 */
import type { Bundle, OperationOutcome, Resource } from '@medplum/fhirtypes';
import { Client, RESPONSE_KEY } from 'fhir-kit-client';
import type { FhirResource } from 'fhir-kit-client';
import type { RunningFhirServer } from '../../local/fhir/server.js';
import { startFhirServer } from '../../local/fhir/server.js';

export const CORPUS = '/work/shared/corpus';

export let server: RunningFhirServer;
export let client: Client;

export async function startServer(): Promise<void> {
  server = await startFhirServer({ port: 0 });
  client = new Client({ baseUrl: server.baseUrl });
}
export async function stopServer(): Promise<void> {
  await server.close();
}

export const responseOf = (r: FhirResource): Response =>
  (r as unknown as { [RESPONSE_KEY]: Response })[RESPONSE_KEY];
export const headersOf = (r: FhirResource): Headers => responseOf(r).headers;
export const statusOf = (r: FhirResource): number => responseOf(r).status;
export const asFhir = (r: Resource): FhirResource => r as unknown as FhirResource;
export const asBundle = <T extends Resource = Resource>(r: FhirResource | undefined): Bundle<T> =>
  r as unknown as Bundle<T>;

/** The HTTP status and body of a request that fhir-kit-client rejects. */
export async function failure(p: Promise<unknown>): Promise<{ status: number; data: OperationOutcome }> {
  try {
    await p;
  } catch (err) {
    const { response } = err as { response?: { status: number; data: OperationOutcome } };
    if (response) return response;
    throw err;
  }
  throw new Error('expected the request to fail');
}

export async function raw(
  path: string,
  init: RequestInit = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(server.baseUrl + path, init);
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

export const post = (
  path: string,
  body: string,
  headers: Record<string, string> = {},
): ReturnType<typeof raw> =>
  raw(path, { method: 'POST', body, headers: { 'Content-Type': 'application/fhir+json', ...headers } });
