/**
 * The embedded FHIR server's bundles over real HTTP with fhir-kit-client: transactions (urn:uuid
 * references, ifNoneExist, rollback) and batches, and the US Core and Synthea corpus.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type {
  Bundle,
  BundleEntry,
  DiagnosticReport,
  Observation,
  Provenance,
  Resource,
} from '@medplum/fhirtypes';
import type { Client, FhirResource } from 'fhir-kit-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../local/fhir/server.js';
import {
  asBundle,
  asFhir,
  client,
  CORPUS,
  failure,
  server,
  startServer,
  stopServer,
} from './fhir-server-harness.js';

beforeAll(startServer);
afterAll(stopServer);

describe('batch and transaction', () => {
  const writeBack = (key: string): Bundle => {
    const report: DiagnosticReport = {
      resourceType: 'DiagnosticReport',
      status: 'preliminary',
      code: { text: 'risk' },
      identifier: [{ system: 'urn:test:key', value: key }],
      subject: { reference: 'Patient/sa' },
      result: [{ reference: 'urn:uuid:00000000-0000-4000-8000-000000000002' }],
    };
    const score: Observation = {
      resourceType: 'Observation',
      status: 'preliminary',
      code: { text: 'score' },
    };
    const provenance: Provenance = {
      resourceType: 'Provenance',
      recorded: '2024-01-01T00:00:00Z',
      agent: [{ who: { display: 'model' } }],
      target: [{ reference: 'urn:uuid:00000000-0000-4000-8000-000000000001' }],
    };
    return {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          fullUrl: 'urn:uuid:00000000-0000-4000-8000-000000000001',
          resource: report,
          request: { method: 'POST', url: 'DiagnosticReport', ifNoneExist: `identifier=urn:test:key|${key}` },
        },
        {
          fullUrl: 'urn:uuid:00000000-0000-4000-8000-000000000002',
          resource: score,
          request: { method: 'POST', url: 'Observation' },
        },
        { resource: provenance, request: { method: 'POST', url: 'Provenance' } },
      ],
    };
  };

  it('resolves urn:uuid references and honours ifNoneExist on a second post', async () => {
    const events: ChangeEvent[] = [];
    const off = server.onChange((e) => events.push(e));
    const first = asBundle(
      await client.transaction({
        body: writeBack('k1') as unknown as Parameters<Client['nextPage']>[0]['bundle'],
      }),
    );
    expect(first.type).toBe('transaction-response');
    expect(first.entry?.map((e) => e.response?.status)).toEqual(['201', '201', '201']);
    const [dr, ob, prov] = (first.entry ?? []).map((e) => e.resource) as [Resource, Resource, Resource];
    expect((dr as { result: { reference: string }[] }).result[0]?.reference).toBe(
      `Observation/${ob.id ?? ''}`,
    );
    expect((prov as { target: { reference: string }[] }).target[0]?.reference).toBe(
      `DiagnosticReport/${dr.id ?? ''}`,
    );
    expect(first.entry?.[0]?.response?.location).toBe(`DiagnosticReport/${dr.id ?? ''}/_history/1`);
    expect(first.entry?.[0]?.response?.etag).toBe('W/"1"');
    expect(events.map((e) => `${e.type}:${e.resource.resourceType}`)).toEqual([
      'create:DiagnosticReport',
      'create:Observation',
      'create:Provenance',
    ]);

    const again = asBundle(
      await client.transaction({
        body: writeBack('k1') as unknown as Parameters<Client['nextPage']>[0]['bundle'],
      }),
    );
    expect(again.entry?.[0]?.response?.status).toBe('200');
    expect(again.entry?.[0]?.resource?.id).toBe(dr.id);
    const target = (again.entry?.[2]?.resource as { target: { reference: string }[] }).target[0];
    expect(target?.reference).toBe(`DiagnosticReport/${dr.id ?? ''}`);
    off();
  });

  it('rolls a failing transaction back entirely and fires no events', async () => {
    const events: ChangeEvent[] = [];
    const off = server.onChange((e) => events.push(e));
    const bundle = writeBack('k-rollback');
    bundle.entry?.push({
      resource: { resourceType: 'Patient' },
      request: { method: 'PUT', url: 'Patient/nope' },
    });
    const result = await failure(
      client.transaction({ body: bundle as unknown as Parameters<Client['nextPage']>[0]['bundle'] }),
    );
    expect(result.status).toBe(400);
    const left = asBundle(
      await client.search({
        resourceType: 'DiagnosticReport',
        searchParams: { identifier: 'urn:test:key|k-rollback' },
      }),
    );
    expect(left.total).toBe(0);
    expect(events).toEqual([]);
    off();
  });

  it('processes a batch entry by entry', async () => {
    const batch = asBundle(
      await client.batch({
        body: {
          resourceType: 'Bundle',
          type: 'batch',
          entry: [
            {
              resource: { resourceType: 'Patient', id: 'bp' },
              request: { method: 'PUT', url: 'Patient/bp' },
            },
            { request: { method: 'GET', url: 'Patient/bp' } },
            { request: { method: 'GET', url: 'Patient/does-not-exist' } },
          ],
        },
      }),
    );
    expect(batch.type).toBe('batch-response');
    expect(batch.entry?.map((e: BundleEntry) => e.response?.status)).toEqual(['201', '200', '404']);
  });
});

describe('corpus', () => {
  it('loads the US Core examples and finds them by patient, code and date', async () => {
    const dir = join(CORPUS, 'us-core');
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
      const resource = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Resource & { id: string };
      const stored = await client.update({
        resourceType: resource.resourceType,
        id: resource.id,
        body: asFhir(resource),
      });
      expect(stored.id).toBe(resource.id);
    }
    const glucose = asBundle(
      await client.search({
        resourceType: 'Observation',
        searchParams: { patient: 'Patient/example', code: 'http://loinc.org|2345-7' },
      }),
    );
    expect(glucose.entry?.map((e) => e.resource?.id)).toEqual(['serum-glucose']);
    const bp = asBundle(
      await client.search({
        resourceType: 'Observation',
        searchParams: { subject: 'Patient/example', code: '85354-9', _sort: 'date' },
      }),
    );
    expect(bp.entry?.map((e) => e.resource?.id).sort()).toEqual(['blood-pressure', 'bp-data-absent']);
    const reports = asBundle(
      await client.search({
        resourceType: 'DiagnosticReport',
        searchParams: { patient: 'Patient/example', date: 'lt2010-01-01' },
      }),
    );
    expect(reports.entry?.map((e) => e.resource?.id).sort()).toEqual(['cbc', 'metabolic-panel']);
  });

  it('rejects the Synthea transaction while its conditional references resolve to nothing, then accepts it', async () => {
    const text = readFileSync(join(CORPUS, 'synthea/sample_complete_patient.json'), 'utf8');
    const failed = await failure(
      client.transaction({
        body: JSON.parse(text) as FhirResource,
      }),
    );
    expect(failed.status).toBe(400);
    expect(failed.data.resourceType).toBe('OperationOutcome');
    expect(failed.data.issue[0]?.details?.text).toMatch(
      /Conditional reference '(Practitioner|Location|Organization)\?/,
    );
    const none = asBundle(await client.search({ resourceType: 'Encounter', searchParams: { _count: 1 } }));
    expect(none.total).toBe(0);

    // Create what the references point at, as Synthea's hospital and practitioner bundles would.
    const conditional = new Set(text.match(/"(Practitioner|Location|Organization)\?identifier=[^"]+"/g));
    for (const quoted of conditional) {
      const [type = '', query = ''] = quoted.slice(1, -1).split('?identifier=');
      const [system, value] = query.split('|');
      await client.create({
        resourceType: type,
        body: { resourceType: type, identifier: [{ system, value }] },
      });
    }
    const result = asBundle(
      await client.transaction({
        body: JSON.parse(text) as FhirResource,
      }),
    );
    expect(result.entry).toHaveLength(314);
    expect(result.entry?.every((e) => e.response?.status === '201')).toBe(true);
    const patient = result.entry?.find((e) => e.resource?.resourceType === 'Patient')?.resource;
    const encounters = asBundle<Resource & { participant?: { individual?: { reference?: string } }[] }>(
      await client.search({
        resourceType: 'Encounter',
        searchParams: { patient: `Patient/${patient?.id ?? ''}`, _count: 1 },
      }),
    );
    expect(encounters.total).toBe(37);
    expect(encounters.entry?.[0]?.resource?.participant?.[0]?.individual?.reference).toMatch(
      /^Practitioner\/[\w-]+$/,
    );
    const observations = asBundle(
      await client.search({
        resourceType: 'Observation',
        searchParams: { patient: `Patient/${patient?.id ?? ''}`, _count: 0 },
      }),
    );
    expect(observations.total).toBe(58);
  });
});
