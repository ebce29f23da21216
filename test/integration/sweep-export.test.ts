/**
 * The embedded server's `$export` pages through a cursor over the cohort's patients: each
 * resource of the snapshot once, as it was at the kick-off, while writes go on during the job.
 */
import { Operator } from '@medplum/core';
import type { Observation, Patient, Resource } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { installBulkExport, type BulkExport } from '../../local/fhir/export.js';
import { loadSyntheticCohort, syntheticPatientId } from '../../local/fhir/export-cohort.js';
import { startFhirServer, type RunningFhirServer } from '../../local/fhir/server.js';
import { createBulkClient } from '../../shared/sweep/bulk-client.js';
import { lines } from '../../shared/sweep/staging.js';

const PATIENTS = 150;

let fhir: RunningFhirServer;
let bulk: BulkExport;

beforeAll(async () => {
  fhir = await startFhirServer({ port: 0 });
  // 7 patients per cursor step and 100 resources per file: many pages, many files.
  bulk = installBulkExport(fhir, { retryAfterSeconds: 0, chunkSize: 100, patientsPerPage: 7 });
  await loadSyntheticCohort(fhir.repo, { patients: PATIENTS, seed: 11 });
});

afterAll(async () => {
  await bulk.close();
  await fhir.close();
});

const key = (r: Resource): string => `${r.resourceType}/${r.id ?? ''}`;

async function everything(): Promise<Map<string, Resource>> {
  const all = new Map<string, Resource>();
  for (const type of ['Patient', 'Observation'] as const) {
    for (const r of await fhir.repo.searchResources<Resource>({ resourceType: type })) all.set(key(r), r);
  }
  return all;
}

describe('$export paging', () => {
  it('returns each resource of the kick-off snapshot exactly once, as it was then, while writes happen', async () => {
    // Arrange
    const before = await everything();
    const client = createBulkClient({ baseUrl: fhir.baseUrl, minPollMs: 0 });
    const statusUrl = await client.kickOff({ level: 'patient', types: ['Patient', 'Observation'] });
    await new Promise((r) => setTimeout(r, 5)); // later writes are after the transactionTime
    const observations = [...before.values()].filter(
      (r): r is Observation => r.resourceType === 'Observation',
    );

    // Act: write (new patients, new Observations, updates) until the job is done, checking
    // after each write that the job was still running.
    let writesDuringJob = 0;
    for (let i = 0; ; i++) {
      const target = observations[(i * 37) % observations.length] as Observation;
      if (i % 3 === 0) {
        await fhir.repo.updateResource<Observation>({
          ...target,
          valueQuantity: { ...target.valueQuantity, value: 1000 + i },
        });
      } else if (i % 3 === 1) {
        await fhir.repo.createResource<Observation>(
          {
            ...target,
            id: `late-${i}`,
            valueQuantity: { value: 2000 + i, unit: 'mg/dL' },
          },
          { assignedId: true },
        );
      } else {
        await fhir.repo.createResource<Patient>(
          { resourceType: 'Patient', id: syntheticPatientId(PATIENTS + i), gender: 'female' },
          { assignedId: true },
        );
      }
      const status = await fetch(statusUrl, { headers: { Accept: 'application/json' } });
      await status.body?.cancel();
      if (status.status !== 202) break;
      writesDuringJob++;
    }
    const manifest = await client.waitForManifest(statusUrl);
    const exported = new Map<string, number>();
    const versions = new Map<string, Resource>();
    for (const output of manifest.output) {
      for await (const line of lines(await client.download(output.url, false))) {
        const r = JSON.parse(line) as Resource;
        exported.set(key(r), (exported.get(key(r)) ?? 0) + 1);
        versions.set(key(r), r);
      }
    }
    await client.cancel(statusUrl);

    // Assess
    expect(writesDuringJob).toBeGreaterThan(0);
    expect(manifest.output.length).toBeGreaterThan(2);
    expect([...exported.values()].every((n) => n === 1)).toBe(true);
    expect([...exported.keys()].sort()).toEqual([...before.keys()].sort());
    for (const [k, r] of before) {
      expect(versions.get(k)?.meta?.versionId).toBe(r.meta?.versionId);
    }
  });

  it('a group export and an incremental one read through the same cursor', async () => {
    // Arrange: a Group of 20 patients; then one patient's Observation changes.
    const members = Array.from({ length: 20 }, (_, i) => syntheticPatientId(i * 3));
    const group = await fhir.repo.createResource({
      resourceType: 'Group',
      type: 'person',
      actual: true,
      member: members.map((id) => ({ entity: { reference: `Patient/${id}` } })),
    });
    const client = createBulkClient({ baseUrl: fhir.baseUrl, minPollMs: 0 });
    const read = async (request: Parameters<typeof client.kickOff>[0]): Promise<Resource[]> => {
      const status = await client.kickOff(request);
      const manifest = await client.waitForManifest(status);
      const out: Resource[] = [];
      for (const o of manifest.output)
        for await (const line of lines(await client.download(o.url, false)))
          out.push(JSON.parse(line) as Resource);
      await client.cancel(status);
      return out;
    };

    // Act
    const groupExport = await read({ level: 'group', group: group.id, types: ['Patient', 'Observation'] });
    const since = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 5));
    const [changed] = await fhir.repo.searchResources<Observation>({
      resourceType: 'Observation',
      filters: [{ code: 'subject', operator: Operator.EQUALS, value: `Patient/${members[4] ?? ''}` }],
    });
    await fhir.repo.updateResource<Observation>({ ...(changed as Observation), status: 'amended' });
    const incremental = await read({ level: 'patient', types: ['Patient', 'Observation'], since });

    // Assess
    const patientsOf = (rs: Resource[]): Set<string> =>
      new Set(
        rs.map((r) =>
          r.resourceType === 'Patient'
            ? (r.id ?? '')
            : ((r as Observation).subject?.reference ?? '').slice(8),
        ),
      );
    expect(patientsOf(groupExport)).toEqual(new Set(members));
    expect(new Set(groupExport.map(key)).size).toBe(groupExport.length);
    expect(incremental.map(key)).toEqual([key(changed as Observation)]);
  });

  it('an incremental export with many changes walks the cursor and finds the same changes', async () => {
    // Arrange: a server that treats any change count as many (cursor walk even for one change).
    const server = await startFhirServer({ port: 0 });
    const cursorOnly = installBulkExport(server, {
      retryAfterSeconds: 0,
      patientsPerPage: 4,
      changesAtOnce: 0,
    });
    await loadSyntheticCohort(server.repo, { patients: 30, seed: 3 });
    const since = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 5));
    const [obs] = await server.repo.searchResources<Observation>({
      resourceType: 'Observation',
      filters: [{ code: 'subject', operator: Operator.EQUALS, value: `Patient/${syntheticPatientId(17)}` }],
    });
    await server.repo.updateResource<Observation>({ ...(obs as Observation), status: 'amended' });
    const patient = await server.repo.readResource<Patient>('Patient', syntheticPatientId(2));
    await server.repo.updateResource<Patient>({ ...patient, gender: 'other' });
    const client = createBulkClient({ baseUrl: server.baseUrl, minPollMs: 0 });

    // Act
    const status = await client.kickOff({ level: 'patient', types: ['Patient', 'Observation'], since });
    const manifest = await client.waitForManifest(status);
    const found: Resource[] = [];
    for (const o of manifest.output)
      for await (const line of lines(await client.download(o.url, false)))
        found.push(JSON.parse(line) as Resource);
    await cursorOnly.close();
    await server.close();

    // Assess
    expect(found.map(key).sort()).toEqual(
      [key(obs as Observation), `Patient/${syntheticPatientId(2)}`].sort(),
    );
  });
});
