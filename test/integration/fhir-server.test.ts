/**
 * The embedded FHIR server over real HTTP with fhir-kit-client: instance interactions, search
 * and paging, errors, metadata and change hooks. Batches, transactions and the corpus:
 * fhir-server-bundles.test.ts.
 */
import type { Bundle, Observation, OperationOutcome } from '@medplum/fhirtypes';
import type { Client } from 'fhir-kit-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../local/fhir/server.js';
import { startFhirServer } from '../../local/fhir/server.js';
import {
  asBundle,
  asFhir,
  client,
  failure,
  headersOf,
  post,
  raw,
  server,
  startServer,
  statusOf,
  stopServer,
} from './fhir-server-harness.js';

beforeAll(startServer);
afterAll(stopServer);

describe('instance interactions', () => {
  it('creates, reads, updates, vreads, lists history and deletes with real headers', async () => {
    const created = await client.create({
      resourceType: 'Patient',
      body: { resourceType: 'Patient', id: 'ignored', name: [{ family: 'Alpha' }] },
    });
    expect(statusOf(created)).toBe(201);
    const id = created.id as string;
    expect(id).not.toBe('ignored');
    expect(headersOf(created).get('location')).toBe(`${server.baseUrl}/Patient/${id}/_history/1`);
    expect(headersOf(created).get('etag')).toBe('W/"1"');
    expect(headersOf(created).get('content-type')).toMatch(/^application\/fhir\+json/);
    expect(new Date(headersOf(created).get('last-modified') ?? '').getTime()).not.toBeNaN();

    const read = await client.read({ resourceType: 'Patient', id });
    expect(read.name).toEqual([{ family: 'Alpha' }]);
    expect(headersOf(read).get('etag')).toBe('W/"1"');

    const updated = await client.update({
      resourceType: 'Patient',
      id,
      body: { resourceType: 'Patient', id, name: [{ family: 'Beta' }] },
    });
    expect((updated.meta as { versionId: string }).versionId).toBe('2');
    expect(headersOf(updated).get('location')).toBe(`${server.baseUrl}/Patient/${id}/_history/2`);

    const v1 = await client.vread({ resourceType: 'Patient', id, version: '1' });
    expect(v1.name).toEqual([{ family: 'Alpha' }]);
    const history = asBundle(await client.history({ resourceType: 'Patient', id }));
    expect(history.type).toBe('history');
    expect(history.entry?.map((e) => e.resource?.meta?.versionId)).toEqual(['2', '1']);

    const stale = await failure(
      client.update({
        resourceType: 'Patient',
        id,
        body: { resourceType: 'Patient', id },
        options: { headers: { 'If-Match': 'W/"1"' } },
      }),
    );
    expect(stale.status).toBe(412);

    await client.delete({ resourceType: 'Patient', id });
    const gone = await failure(client.read({ resourceType: 'Patient', id }));
    expect(gone.status).toBe(410);
    expect(gone.data.resourceType).toBe('OperationOutcome');
    const missing = await failure(client.read({ resourceType: 'Patient', id: 'no-such-id' }));
    expect(missing.status).toBe(404);
    expect(missing.data.resourceType).toBe('OperationOutcome');
  });

  it('answers a conditional create with the existing resource (200), and 412 when several match', async () => {
    const body = { resourceType: 'Device', identifier: [{ system: 'urn:test:model', value: 'svm-1' }] };
    const headers = { 'If-None-Exist': 'identifier=urn:test:model|svm-1' };
    const first = await client.create({ resourceType: 'Device', body, options: { headers } });
    const second = await client.create({ resourceType: 'Device', body, options: { headers } });
    expect(statusOf(first)).toBe(201);
    expect(statusOf(second)).toBe(200);
    expect(second.id).toBe(first.id);

    await client.create({ resourceType: 'Device', body: { ...body, identifier: [{ value: 'dup' }] } });
    await client.create({ resourceType: 'Device', body: { ...body, identifier: [{ value: 'dup' }] } });
    const multiple = await failure(
      client.create({
        resourceType: 'Device',
        body,
        options: { headers: { 'If-None-Exist': 'identifier=dup' } },
      }),
    );
    expect(multiple.status).toBe(412);
  });
});

describe('search', () => {
  const obs = (i: number, patient: string): Observation => ({
    resourceType: 'Observation',
    status: 'final',
    identifier: [{ system: 'urn:test:obs', value: `obs-${i}` }],
    subject: { reference: `Patient/${patient}` },
    code: { coding: [{ system: 'http://loinc.org', code: i % 2 ? '2345-7' : '4548-4' }] },
    effectiveDateTime: new Date(Date.UTC(2024, 0, 1 + i)).toISOString(),
    valueQuantity: { value: i },
  });

  beforeAll(async () => {
    await client.update({ resourceType: 'Patient', id: 'sa', body: { resourceType: 'Patient', id: 'sa' } });
    for (let i = 0; i < 45; i++) {
      await client.create({ resourceType: 'Observation', body: asFhir(obs(i, i < 30 ? 'sa' : 'sb')) });
    }
  });

  async function all(first: Bundle): Promise<Bundle['entry'] & object> {
    const entries = [...(first.entry ?? [])];
    let page: Bundle | undefined = first;
    while (page) {
      const url = page.link?.find((l) => l.relation === 'next')?.url;
      if (url) expect(url.startsWith(server.baseUrl + '/')).toBe(true);
      const next = client.nextPage({
        bundle: page as unknown as Parameters<Client['nextPage']>[0]['bundle'],
      });
      page = next ? asBundle(await next) : undefined;
      entries.push(...(page?.entry ?? []));
    }
    return entries;
  }

  it('pages through subject and patient searches with next links', async () => {
    const first = asBundle(
      await client.search({
        resourceType: 'Observation',
        searchParams: { subject: 'Patient/sa', _count: 7 },
      }),
    );
    expect(first.total).toBe(30);
    expect(first.entry).toHaveLength(7);
    expect(first.entry?.[0]?.fullUrl).toMatch(new RegExp(`^${server.baseUrl}/Observation/`));
    const entries = await all(first);
    expect(new Set(entries.map((e) => e.resource?.id)).size).toBe(30);

    const byPatient = asBundle(
      await client.search({
        resourceType: 'Observation',
        searchParams: { patient: 'Patient/sb' },
      }),
    );
    expect(byPatient.total).toBe(15);
    expect(await all(byPatient)).toHaveLength(15);
  });

  it('applies the default page size when _count is absent', async () => {
    const page = asBundle(
      await client.search({
        resourceType: 'Observation',
        searchParams: { subject: 'Patient/sa' },
      }),
    );
    expect(page.entry).toHaveLength(20);
    expect(page.link?.some((l) => l.relation === 'next')).toBe(true);
  });

  it('searches code, identifier, date and _lastUpdated and sorts by -date', async () => {
    const count = async (searchParams: Record<string, string | number>): Promise<number | undefined> =>
      asBundle(await client.search({ resourceType: 'Observation', searchParams })).total;
    expect(await count({ code: 'http://loinc.org|2345-7', subject: 'Patient/sa' })).toBe(15);
    expect(await count({ code: '4548-4', subject: 'Patient/sa' })).toBe(15);
    expect(await count({ identifier: 'urn:test:obs|obs-3' })).toBe(1);
    expect(await count({ identifier: 'obs-44' })).toBe(1);
    expect(await count({ identifier: 'urn:other|obs-3' })).toBe(0);
    expect(await count({ subject: 'Patient/sa', date: 'ge2024-01-21' })).toBe(10);
    expect(await count({ subject: 'Patient/sa', _lastUpdated: 'gt2000-01-01' })).toBe(30);

    const sorted = asBundle<Observation>(
      await client.search({
        resourceType: 'Observation',
        searchParams: { subject: 'Patient/sa', _sort: '-date', _count: 5 },
      }),
    );
    expect(sorted.entry?.map((e) => e.resource?.valueQuantity?.value)).toEqual([29, 28, 27, 26, 25]);
    const second = asBundle<Observation>(
      await client.nextPage({ bundle: sorted as unknown as Parameters<Client['nextPage']>[0]['bundle'] }),
    );
    expect(second.entry?.map((e) => e.resource?.valueQuantity?.value)).toEqual([24, 23, 22, 21, 20]);
  });

  it('rejects malformed paging and date values with 400', async () => {
    expect((await raw('/Observation?_count=abc')).status).toBe(400);
    expect((await raw('/Observation?date=notadate')).status).toBe(400);
  });
});

describe('errors, metadata, hooks', () => {
  it('serves a CapabilityStatement', async () => {
    const cs = await client.capabilityStatement();
    expect(cs.resourceType).toBe('CapabilityStatement');
    expect(cs.fhirVersion).toBe('4.0.1');
    const rest = (cs.rest as { resource: { type: string; interaction: { code: string }[] }[] }[])[0];
    const obs = rest?.resource.find((r) => r.type === 'Observation');
    expect(obs?.interaction.map((i) => i.code)).toContain('search-type');
  });

  it('answers bad input with OperationOutcomes and 4xx statuses', async () => {
    const badJson = await post('/Patient', '{"resourceType": "Patient",');
    expect(badJson.status).toBe(400);
    expect(badJson.body.resourceType).toBe('OperationOutcome');
    expect((await post('/Patient', '[1,2]')).status).toBe(400);
    expect((await post('/Patient', '{"resourceType":"Observation"}')).status).toBe(400);
    expect((await post('/Patient', '{"resourceType":"Patient","id":"bad id!"}')).status).toBe(400);
    expect((await post('', '{"resourceType":"Bundle","type":"transaction","entry":[null]}')).status).toBe(
      400,
    );
    expect((await post('', '{"resourceType":"Bundle","type":"collection"}')).status).toBe(400);
    const unknownType = await raw('/Foo/1');
    expect(unknownType.status).toBe(404);
    expect(unknownType.body.resourceType).toBe('OperationOutcome');
    expect((await post('/Foo', '{"resourceType":"Foo"}')).status).toBe(404);
    expect((await raw('/Patient/1/_history/1/extra/path')).status).toBe(404);
    const json = { 'Content-Type': 'application/fhir+json' };
    expect((await raw('/Patient', { method: 'PUT', body: '{}', headers: json })).status).toBe(400);
    expect((await raw('/Patient', { method: 'POST', body: '{"resourceType":"Patient"}' })).status).toBe(415);
    expect((await raw('/metadata', { method: 'POST', body: '{}' })).status).toBe(405);
    expect((await raw('/Patient', { method: 'OPTIONS' })).status).toBe(405);
    expect((await fetch(server.baseUrl.replace('/fhir', '/other'))).status).toBe(404);
  });

  it('rejects bodies over the limit with 413', async () => {
    const small = await startFhirServer({ port: 0, maxBodyBytes: 1024 });
    try {
      const body = JSON.stringify({
        resourceType: 'Patient',
        text: { status: 'generated', div: 'x'.repeat(4096) },
      });
      const res = await fetch(`${small.baseUrl}/Patient`, { method: 'POST', body });
      expect(res.status).toBe(413);
      expect(((await res.json()) as OperationOutcome).resourceType).toBe('OperationOutcome');
    } finally {
      await small.close();
    }
    const huge = JSON.stringify({
      resourceType: 'Binary',
      contentType: 'text/plain',
      data: 'A'.repeat(17 << 20),
    });
    expect((await post('/Binary', huge)).status).toBe(413);
  });

  it('injects write faults on demand', async () => {
    server.setFault({ failNextWrites: 1 });
    const failed = await post('/Patient', '{"resourceType":"Patient"}');
    expect(failed.status).toBe(503);
    expect(failed.body.resourceType).toBe('OperationOutcome');
    expect((await post('/Patient', '{"resourceType":"Patient"}')).status).toBe(201);
    server.setFault({ writeFailureRate: 1 });
    expect((await post('/Patient', '{"resourceType":"Patient"}')).status).toBe(503);
    expect((await raw('/Patient?_count=1')).status).toBe(200);
    server.setFault(undefined);
  });

  it('fires onChange after update and delete (PUT as create is 201)', async () => {
    const events: ChangeEvent[] = [];
    const off = server.onChange((e) => events.push(e));
    const made = await client.update({
      resourceType: 'Patient',
      id: 'ev',
      body: { resourceType: 'Patient', id: 'ev' },
    });
    expect(statusOf(made)).toBe(201);
    const changed = await client.update({
      resourceType: 'Patient',
      id: 'ev',
      body: { resourceType: 'Patient', id: 'ev', active: true },
    });
    expect(statusOf(changed)).toBe(200);
    await client.delete({ resourceType: 'Patient', id: 'ev' });
    off();
    expect(events.map((e) => `${e.type}:${e.resource.meta?.versionId ?? ''}`)).toEqual([
      'create:1',
      'update:2',
      'delete:2',
    ]);
    expect(events[1]?.previous?.meta?.versionId).toBe('1');
  });
});
