import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { FhirRequestError, FhirUnavailableError } from '../../shared/fhir/errors.js';
import { createFhirGateway } from '../../shared/fhir/gateway.js';

let server: Server | undefined;

/** A tiny HTTP server that answers with the given statuses in turn, counting requests. */
async function serve(statuses: number[], body: unknown = { resourceType: 'Patient', id: 'p1' }) {
  const seen = { count: 0 };
  server = createServer((_req, res) => {
    const status = statuses[Math.min(seen.count, statuses.length - 1)] ?? 200;
    seen.count++;
    res.writeHead(status, { 'content-type': 'application/fhir+json' });
    res.end(JSON.stringify(status < 300 ? body : { resourceType: 'OperationOutcome', issue: [] }));
  });
  await new Promise<void>((r) => server?.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { seen, baseUrl: `http://127.0.0.1:${port}/fhir` };
}

afterEach(async () => {
  await new Promise((r) => server?.close(r));
  server = undefined;
});

const noSleep = () => Promise.resolve();

describe('FHIR gateway', () => {
  it('retries 503 and 429 with backoff, then succeeds', async () => {
    const { seen, baseUrl } = await serve([503, 429, 200]);
    const fhir = createFhirGateway({ baseUrl, sleep: noSleep });
    await expect(fhir.read('Patient', 'p1')).resolves.toMatchObject({ id: 'p1' });
    expect(seen.count).toBe(3);
  });

  it('gives up after the attempts with a retryable error', async () => {
    const { seen, baseUrl } = await serve([500]);
    const fhir = createFhirGateway({ baseUrl, sleep: noSleep, attempts: 3 });
    const err = await fhir.read('Patient', 'p1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FhirUnavailableError);
    expect((err as FhirUnavailableError).retryable).toBe(true);
    expect(seen.count).toBe(3);
  });

  it('times out a server that never answers, retries, then fails as retryable', async () => {
    let count = 0;
    server = createServer(() => {
      count++; // never answers
    });
    await new Promise<void>((r) => server?.listen(0, '127.0.0.1', r));
    const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
    const fhir = createFhirGateway({ baseUrl, sleep: noSleep, attempts: 2, timeoutMs: 200 });
    const err = await fhir.read('Patient', 'p1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FhirUnavailableError);
    expect((err as FhirUnavailableError).retryable).toBe(true);
    expect(count).toBe(2);
    server.closeAllConnections();
  });

  it('treats 404 and 410 as gone, without retrying', async () => {
    for (const status of [404, 410]) {
      const { seen, baseUrl } = await serve([status]);
      const fhir = createFhirGateway({ baseUrl, sleep: noSleep });
      await expect(fhir.read('Patient', 'p1')).resolves.toBeUndefined();
      expect(seen.count).toBe(1);
      await new Promise((r) => server?.close(r));
    }
  });

  it('does not retry a 400, and says it is not retryable', async () => {
    const { seen, baseUrl } = await serve([400]);
    const fhir = createFhirGateway({ baseUrl, sleep: noSleep });
    const err = await fhir
      .transaction({ resourceType: 'Bundle', type: 'transaction' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FhirRequestError);
    expect((err as FhirRequestError).retryable).toBe(false);
    expect(seen.count).toBe(1);
  });

  it('follows next links up to the bound', async () => {
    let base = '';
    const pages = (n: number) => ({
      resourceType: 'Bundle',
      type: 'searchset',
      entry: [{ resource: { resourceType: 'Observation', id: `o${n}` }, search: { mode: 'match' } }],
      link: n < 3 ? [{ relation: 'next', url: `${base}/Observation?page=${n + 1}` }] : [],
    });
    let count = 0;
    server = createServer((req, res) => {
      count++;
      const page = Number(new URL(req.url ?? '', 'http://x').searchParams.get('page') ?? '1');
      res.writeHead(200, { 'content-type': 'application/fhir+json' });
      res.end(JSON.stringify(pages(page)));
    });
    await new Promise<void>((r) => server?.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
    const fhir = createFhirGateway({ baseUrl: base, sleep: noSleep });
    const all = await fhir.searchAll('Observation', { subject: 'Patient/p1' });
    expect(all.map((o) => o.id)).toEqual(['o1', 'o2', 'o3']);
    expect(count).toBe(3);
    const bounded = await fhir.searchAll('Observation', { subject: 'Patient/p1' }, { maxResources: 2 });
    expect(bounded).toHaveLength(2);
  });
});
