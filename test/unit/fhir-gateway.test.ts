import { createHash, createHmac } from 'node:crypto';
import {
  createServer,
  type IncomingHttpHeaders,
  type RequestListener,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from 'fhir-kit-client';
import { afterEach, describe, expect, it } from 'vitest';
import type { FhirAuthProvider } from '../../shared/fhir/auth.js';
import { FhirRequestError, FhirUnavailableError } from '../../shared/fhir/errors.js';
import { createFhirGateway } from '../../shared/fhir/gateway.js';
import { createSigV4Auth } from '../../shared/fhir/sigv4.js';

let server: Server | undefined;
/** Servers of the tests that need more than one (a redirect target, a host outside the base). */
const others: Server[] = [];

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

/** A server on a free port that records every request (with its body) before `handler` answers. */
async function listen(handler: RequestListener): Promise<{ baseUrl: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const s = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      handler(req, res);
    });
  });
  others.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return { baseUrl: `http://127.0.0.1:${(s.address() as AddressInfo).port}/fhir`, seen };
}

function answer(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/fhir+json' });
  res.end(JSON.stringify(body));
}

const json =
  (status: number, body: unknown): RequestListener =>
  (_req, res) => {
    answer(res, status, body);
  };

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
  const s = server;
  if (s) await new Promise((r) => s.close(r));
  server = undefined;
  for (const s of others.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
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

const EXAMPLE = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
const DATE = new Date('2015-08-30T12:36:00Z');
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const hmac = (key: Buffer | string, s: string) => createHmac('sha256', key).update(s).digest();

/** The SigV4 signature of what a server received, built by hand from the specification. */
function signatureOf(req: Seen, signedHeaders: string): string {
  const url = new URL(req.url, 'http://x');
  const rfc3986 = (s: string) =>
    encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const query = [...url.searchParams]
    .map(([k, v]) => `${rfc3986(k)}=${rfc3986(v)}`)
    .sort()
    .join('&');
  const headerLines = signedHeaders.split(';').map((h) => `${h}:${String(req.headers[h]).trim()}`);
  const canonical = [req.method, url.pathname, query, ...headerLines, '', signedHeaders, sha256(req.body)];
  const scope = '20150830/us-east-1/healthlake/aws4_request';
  const toSign = ['AWS4-HMAC-SHA256', '20150830T123600Z', scope, sha256(canonical.join('\n'))].join('\n');
  let key = hmac(`AWS4${EXAMPLE.secretAccessKey}`, '20150830');
  for (const part of ['us-east-1', 'healthlake', 'aws4_request']) key = hmac(key, part);
  return createHmac('sha256', key).update(toSign).digest('hex');
}

/** A provider whose token changes each time it is invalidated; `refreshable` is what invalidate says. */
function rotatingAuth(refreshable: boolean): FhirAuthProvider & { invalidations: number } {
  const state = {
    mode: 'rotating',
    invalidations: 0,
    getAuthHeaders: () => Promise.resolve({ authorization: `Bearer token-${state.invalidations + 1}` }),
    invalidate: () => {
      state.invalidations++;
      return refreshable;
    },
  };
  return state;
}

const searchset = (ids: string[], next?: string) => ({
  resourceType: 'Bundle',
  type: 'searchset',
  entry: ids.map((id) => ({ resource: { resourceType: 'Observation', id }, search: { mode: 'match' } })),
  link: next ? [{ relation: 'next', url: next }] : [],
});

describe('FHIR gateway over fhir-kit-client', () => {
  it('sends requests through fhir-kit-client, keeping its response but not its request', async () => {
    const { baseUrl, seen } = await listen(json(200, { resourceType: 'Patient', id: 'p1' }));
    const fhir = createFhirGateway({ baseUrl, bearerToken: 'token-1', sleep: noSleep });
    const patient = await fhir.read('Patient', 'p1');
    const http = Client.httpFor(patient as unknown as Parameters<typeof Client.httpFor>[0]);
    expect(http.response?.status).toBe(200);
    // The Request holds the Authorization header: it does not travel with the resource.
    expect(http.request).toBeUndefined();
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({
      method: 'GET',
      url: '/fhir/Patient/p1',
      headers: { accept: 'application/fhir+json', authorization: 'Bearer token-1' },
    });
  });

  it('signs with SigV4 exactly what is sent: method, path, query, headers and body', async () => {
    const { baseUrl, seen } = await listen((req, res) => {
      const post = req.method === 'POST';
      answer(res, 200, post ? { resourceType: 'Bundle', type: 'transaction-response' } : searchset([]));
    });
    const auth = createSigV4Auth({ baseUrl, region: 'us-east-1', credentials: EXAMPLE, now: () => DATE });
    const fhir = createFhirGateway({ baseUrl, auth, sleep: noSleep });
    await fhir.searchAll('Observation', { subject: 'Patient/p1', code: 'http://loinc.org|2345-7' });
    await fhir.transaction({ resourceType: 'Bundle', type: 'transaction', entry: [] });
    expect(seen.map((r) => `${r.method} ${r.url.split('?')[0] ?? ''}`)).toEqual([
      'GET /fhir/Observation',
      'POST /fhir/',
    ]);
    const expectedSigned = ['accept;host;x-amz-date', 'accept;content-type;host;x-amz-date'];
    seen.forEach((req, i) => {
      const authorization = String(req.headers.authorization);
      const signedHeaders = /SignedHeaders=([^,]+),/.exec(authorization)?.[1] ?? '';
      expect(signedHeaders).toBe(expectedSigned[i]);
      expect(authorization).toBe(
        'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/healthlake/aws4_request, ' +
          `SignedHeaders=${signedHeaders}, Signature=${signatureOf(req, signedHeaders)}`,
      );
    });
    expect(seen[1]?.headers['content-type']).toBe('application/fhir+json');
    expect(JSON.parse(seen[1]?.body ?? '')).toEqual({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [],
    });
  });

  it('refreshes the credentials once after a 401 when the provider says it may help', async () => {
    const { baseUrl, seen } = await listen((req, res) => {
      if (req.headers.authorization === 'Bearer token-2')
        answer(res, 200, { resourceType: 'Patient', id: 'p1' });
      else answer(res, 401, { resourceType: 'OperationOutcome', issue: [] });
    });
    const auth = rotatingAuth(true);
    const fhir = createFhirGateway({ baseUrl, auth, sleep: noSleep });
    await expect(fhir.read('Patient', 'p1')).resolves.toMatchObject({ id: 'p1' });
    expect(seen.map((r) => r.headers.authorization)).toEqual(['Bearer token-1', 'Bearer token-2']);
    expect(auth.invalidations).toBe(1);
  });

  it('returns a second 401, or one the provider cannot refresh, as a refusal without looping', async () => {
    for (const refreshable of [true, false]) {
      const { baseUrl, seen } = await listen(json(401, { resourceType: 'OperationOutcome', issue: [] }));
      const fhir = createFhirGateway({ baseUrl, auth: rotatingAuth(refreshable), sleep: noSleep });
      const err = await fhir.read('Patient', 'p1').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FhirRequestError);
      expect(err).toMatchObject({ status: 401, retryable: false });
      expect(seen).toHaveLength(refreshable ? 2 : 1);
    }
  });

  it('resolves next links against the base and refuses one outside it, sending it nothing', async () => {
    const elsewhere = await listen(json(200, searchset(['stolen'])));
    const { baseUrl, seen } = await listen((req, res) => {
      const second = req.url?.includes('page=2') === true;
      const next = second ? `${elsewhere.baseUrl}/Observation?page=3` : '/fhir/Observation?page=2';
      answer(res, 200, searchset([second ? 'o2' : 'o1'], next));
    });
    const fhir = createFhirGateway({ baseUrl, bearerToken: 'token-1', sleep: noSleep });
    const err = await fhir.searchAll('Observation', { subject: 'Patient/p1' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FhirRequestError);
    expect((err as Error).message).toMatch(/outside the FHIR base/);
    expect(seen.map((r) => r.url)).toEqual([
      '/fhir/Observation?subject=Patient%2Fp1',
      '/fhir/Observation?page=2',
    ]);
    expect(seen[1]?.headers.authorization).toBe('Bearer token-1');
    expect(elsewhere.seen).toHaveLength(0);
  });

  it('does not follow a redirect, so credentials never leave the base', async () => {
    const elsewhere = await listen(json(200, { resourceType: 'Patient', id: 'p1' }));
    const { baseUrl, seen } = await listen((_req, res) => {
      res.writeHead(302, { location: `${elsewhere.baseUrl}/Patient/p1` }).end();
    });
    const fhir = createFhirGateway({ baseUrl, bearerToken: 'token-1', sleep: noSleep, attempts: 1 });
    await expect(fhir.read('Patient', 'p1')).rejects.toBeInstanceOf(FhirUnavailableError);
    expect(seen).toHaveLength(1);
    expect(elsewhere.seen).toHaveLength(0);
  });

  it('keeps the URL and the OperationOutcome out of its errors', async () => {
    const outcome = { resourceType: 'OperationOutcome', issue: [{ diagnostics: 'Jane Example, born 1970' }] };
    const { baseUrl } = await listen(json(400, outcome));
    const fhir = createFhirGateway({ baseUrl, sleep: noSleep });
    const err = await fhir.read('Patient', 'patient-secret-id').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FhirRequestError);
    const chain: unknown[] = [];
    for (let e: unknown = err; e instanceof Error; e = e.cause) chain.push(e.message, JSON.stringify(e));
    expect(chain.length).toBeGreaterThan(2);
    expect(JSON.stringify(chain)).not.toMatch(/patient-secret-id|Jane Example/);
  });

  it('retries a 2xx answer that is empty or not JSON, then fails as retryable', async () => {
    for (const body of ['', '<html>maintenance</html>']) {
      const { baseUrl, seen } = await listen((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/html' }).end(body);
      });
      const fhir = createFhirGateway({ baseUrl, sleep: noSleep, attempts: 2 });
      const err = await fhir.read('Patient', 'p1').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FhirUnavailableError);
      expect(seen).toHaveLength(2);
    }
  });
});
