/**
 * Version history of the embedded server's repository: a resource written once keeps no version
 * list of its own (its history is its current entry); these check that history, vread, `gone` and
 * rollback read the same either way.
 */
import { parseSearchRequest } from '@medplum/core';
import type { Observation } from '@medplum/fhirtypes';
import { type FhirRepository, MemoryRepository } from '@medplum/fhir-router';
import { describe, expect, it } from 'vitest';
import { IndexedRepository } from '../../local/fhir/indexed-repository.js';

const observation = (status: Observation['status']): Observation => ({
  resourceType: 'Observation',
  status,
  code: { coding: [{ system: 'http://loinc.org', code: '4548-4' }] },
  subject: { reference: 'Patient/h1' },
  effectiveDateTime: '2024-03-01T10:00:00Z',
});

async function historyOf(repo: IndexedRepository, id: string): Promise<{ vid?: string; method?: string }[]> {
  const bundle = await repo.readHistory<Observation>('Observation', id);
  expect(bundle.total).toBe(bundle.entry?.length);
  return (bundle.entry ?? []).map((e) => ({
    vid: e.response?.etag,
    method: e.request?.method,
  }));
}

const obs = (v: string): Observation => ({
  resourceType: 'Observation',
  status: 'final',
  code: {},
  identifier: [{ system: 's', value: v }],
  subject: { reference: 'Patient/a' },
});

describe('IndexedRepository history', () => {
  it('lists, reads and forgets versions as a version list would', async () => {
    const repo = new IndexedRepository();
    const created = await repo.createResource(observation('preliminary'));
    expect(await historyOf(repo, created.id)).toEqual([{ vid: 'W/"1"', method: 'POST' }]);
    expect((await repo.readVersion<Observation>('Observation', created.id, '1')).status).toBe('preliminary');
    await expect(repo.readVersion('Observation', created.id, '2')).rejects.toThrow();

    const updated = await repo.updateResource({ ...created, status: 'final' });
    expect(updated.meta?.versionId).toBe('2');
    expect(await historyOf(repo, created.id)).toEqual([
      { vid: 'W/"2"', method: 'PUT' },
      { vid: 'W/"1"', method: 'POST' },
    ]);
    expect((await repo.readVersion<Observation>('Observation', created.id, '1')).status).toBe('preliminary');
    expect((await repo.readVersion<Observation>('Observation', created.id, '2')).status).toBe('final');

    await repo.deleteResource('Observation', created.id);
    await expect(repo.readResource('Observation', created.id)).rejects.toMatchObject({
      outcome: { issue: [{ code: 'deleted' }] },
    });
    expect(await historyOf(repo, created.id)).toEqual([
      { vid: 'W/"3"', method: 'DELETE' },
      { vid: 'W/"2"', method: 'PUT' },
      { vid: 'W/"1"', method: 'POST' },
    ]);
    await expect(repo.readVersion('Observation', created.id, '3')).rejects.toMatchObject({
      outcome: { issue: [{ code: 'deleted' }] },
    });

    // Written again under the same id: version 4, the history goes on.
    const again = await repo.createResource({ ...observation('amended'), id: created.id });
    expect(again.meta?.versionId).toBe('4');
    expect((await historyOf(repo, created.id)).map((v) => v.vid)).toEqual([
      'W/"4"',
      'W/"3"',
      'W/"2"',
      'W/"1"',
    ]);

    await expect(repo.readHistory('Observation', 'never-written')).rejects.toMatchObject({
      outcome: { issue: [{ code: 'not-found' }] },
    });
  });

  it('rolls history back with the writes: a rolled-back create leaves nothing, an update its first version', async () => {
    const repo = new IndexedRepository();
    const kept = await repo.createResource(observation('final'));
    await expect(
      repo.withTransaction(async () => {
        await repo.createResource({ ...observation('final'), id: 'tx-new' });
        await repo.updateResource({ ...kept, status: 'amended' });
        await repo.updateResource({ ...kept, status: 'corrected' });
        await repo.deleteResource('Observation', kept.id);
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    // Never committed: not found (404), not deleted (410).
    await expect(repo.readResource('Observation', 'tx-new')).rejects.toMatchObject({
      outcome: { issue: [{ code: 'not-found' }] },
    });
    await expect(repo.readHistory('Observation', 'tx-new')).rejects.toThrow();
    expect(await historyOf(repo, kept.id)).toEqual([{ vid: 'W/"1"', method: 'POST' }]);
    const next = await repo.updateResource({ ...kept, status: 'amended' });
    expect(next.meta?.versionId).toBe('2');
  });

  it('rolls the posting lists back too; a rolled-back create and update of a new id is not found (404)', async () => {
    const repo = new IndexedRepository();
    const kept = await repo.createResource(obs('k'));
    await expect(
      repo.withTransaction(async () => {
        await repo.updateResource({ ...kept, identifier: [{ system: 's', value: 'k2' }] });
        await repo.deleteResource('Observation', kept.id);
        await repo.createResource({ ...obs('n'), id: 'tx' });
        await repo.updateResource({ ...obs('n2'), id: 'tx' });
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect((await repo.search(parseSearchRequest('Observation?identifier=s|k'))).total).toBe(1);
    expect((await repo.search(parseSearchRequest('Observation?identifier=s|k2'))).total).toBe(0);
    expect((await repo.search(parseSearchRequest('Observation?subject=Patient/a'))).total).toBe(1);
    await expect(repo.readResource('Observation', 'tx')).rejects.toMatchObject({
      outcome: { issue: [{ code: 'not-found' }] },
    });
  });

  it('finds resources by date and lastUpdated from the stored periods as Medplum does', async () => {
    const repos: FhirRepository[] = [new IndexedRepository(), new MemoryRepository()];
    const resources: Observation[] = [
      observation('final'),
      { ...observation('final'), effectiveDateTime: undefined },
      { ...observation('final'), effectiveDateTime: undefined, effectivePeriod: { start: '2024-02-01' } },
      {
        ...observation('final'),
        effectiveDateTime: undefined,
        effectivePeriod: { end: '2024-01-15T08:00:00Z' },
      },
      { ...observation('final'), effectiveDateTime: '2024-02' },
      { ...observation('final'), effectiveDateTime: undefined, effectiveInstant: '2024-02-20T01:02:03.456Z' },
    ];
    for (const repo of repos) for (const r of resources) await repo.createResource(r);
    const queries = [
      'date=2024-03-01',
      'date=2024-02',
      'date=ge2024-02-15',
      'date=lt2024-02-15',
      'date=gt2024-02-20T01:02:03Z',
      'date=le2024-01-15',
      'date=sa2024-02-10',
      'date=eb2024-02-10',
      'date=ne2024-03-01',
      'date:missing=true',
      'date:missing=false',
      '_lastUpdated=ge2000-01-01',
      '_lastUpdated=lt2000-01-01',
    ];
    const sizes = new Set<number>();
    for (const q of queries) {
      const [ours, theirs] = await Promise.all(
        repos.map(async (repo): Promise<string[]> => {
          const found = await repo.search<Observation>(parseSearchRequest<Observation>(`Observation?${q}`));
          return (found.entry ?? [])
            .map((e) => e.resource?.effectiveDateTime ?? JSON.stringify(e.resource?.effectivePeriod ?? null))
            .sort();
        }),
      );
      expect(ours, q).toEqual(theirs);
      sizes.add(ours?.length ?? 0);
    }
    // The queries tell the resources apart (not all empty, not all everything).
    expect(sizes.size).toBeGreaterThanOrEqual(4);
  });
});
