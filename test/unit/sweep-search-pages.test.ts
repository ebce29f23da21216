/**
 * The FHIR gateway's page API and the sweep's page reader on a tiny HTTP server: one request
 * per page, next links resolved against the base, a stored next URL outside the base refused
 * without a request, retries as for every gateway call, one page held at a time.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Patient } from '@medplum/fhirtypes';
import { afterEach, describe, expect, it } from 'vitest';
import { FhirRequestError } from '../../shared/fhir/errors.js';
import { createFhirGateway } from '../../shared/fhir/gateway.js';
import { PageReader } from '../../shared/sweep/search-pages.js';

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
});

/** 10 patients in pages of `_count` (offset in `_offset`); the first `fail` requests answer 503. */
async function patientServer(fail = 0): Promise<{ baseUrl: string; urls: string[]; auth: string[] }> {
  const urls: string[] = [];
  const auth: string[] = [];
  const s = createServer((req, res) => {
    urls.push(req.url ?? '');
    auth.push(req.headers.authorization ?? '');
    if (urls.length <= fail) {
      res.writeHead(503).end();
      return;
    }
    const q = new URL(req.url ?? '', 'http://x').searchParams;
    const count = Number(q.get('_count') ?? 4);
    const offset = Number(q.get('_offset') ?? 0);
    const ids = Array.from({ length: 10 }, (_, i) => `p${i}`).slice(offset, offset + count);
    const next = offset + count < 10 ? `Patient?_count=${count}&_offset=${offset + count}` : undefined;
    res.writeHead(200, { 'content-type': 'application/fhir+json' });
    res.end(
      JSON.stringify({
        resourceType: 'Bundle',
        type: 'searchset',
        entry: ids.map((id) => ({ resource: { resourceType: 'Patient', id }, search: { mode: 'match' } })),
        ...(next ? { link: [{ relation: 'next', url: next }] } : {}),
      }),
    );
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return { baseUrl: `http://127.0.0.1:${(s.address() as AddressInfo).port}/fhir`, urls, auth };
}

const noSleep = (): Promise<void> => Promise.resolve();

describe('FHIR gateway page API and the sweep page reader', () => {
  it('reads one page a request, holding one page, with next links made absolute under the base', async () => {
    const { baseUrl, urls } = await patientServer();
    const fhir = createFhirGateway({ baseUrl, sleep: noSleep });
    const reader = new PageReader<Patient>(fhir, {
      kind: 'query',
      resourceType: 'Patient',
      params: { _count: '4' },
    });
    const ids: string[] = [];
    const held: number[] = [];
    for (let page = await reader.read(); page; page = await reader.read()) {
      ids.push(...page.map((p) => p.id ?? ''));
      held.push(reader.held);
      if (!reader.done)
        expect(reader.position).toMatchObject({
          kind: 'next',
          url: expect.stringMatching(`^${baseUrl}/`) as unknown,
        });
    }
    expect(ids).toEqual(Array.from({ length: 10 }, (_, i) => `p${i}`));
    expect(held).toEqual([4, 4, 2]);
    expect(reader.maxHeld).toBe(4);
    expect(urls).toHaveLength(3);
    expect(await reader.read()).toBeUndefined();
    expect(urls).toHaveLength(3);
  });

  it('retries a 503 on a stored next page, with credentials to the base', async () => {
    const { baseUrl, urls, auth } = await patientServer(1);
    const fhir = createFhirGateway({ baseUrl, bearerToken: 't-1', sleep: noSleep });
    const page = await fhir.nextPage<Patient>(`${baseUrl}/Patient?_count=4&_offset=8`);
    expect(page.resources.map((p) => p.id)).toEqual(['p8', 'p9']);
    expect(page.next).toBeUndefined();
    expect(urls).toHaveLength(2);
    expect(auth).toEqual(['Bearer t-1', 'Bearer t-1']);
  });

  it('refuses a stored next URL outside the base without sending it anything', async () => {
    const { baseUrl } = await patientServer();
    const elsewhere = await patientServer();
    const fhir = createFhirGateway({ baseUrl, bearerToken: 't-1', sleep: noSleep });
    const err = await fhir.nextPage(`${elsewhere.baseUrl}/Patient`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FhirRequestError);
    expect((err as Error).message).toMatch(/outside the FHIR base/);
    expect(elsewhere.urls).toEqual([]);
  });
});
