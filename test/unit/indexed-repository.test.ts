import type { SearchRequest } from '@medplum/core';
import { parseSearchRequest } from '@medplum/core';
import { MemoryRepository } from '@medplum/fhir-router';
import type { DiagnosticReport, Observation, Resource } from '@medplum/fhirtypes';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../local/fhir/indexed-repository.js';
import { IndexedRepository } from '../../local/fhir/indexed-repository.js';

/** A small deterministic generator, so that a failure reproduces. */
function prng(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648;
  };
}

function pick<T>(rand: () => number, list: readonly T[]): T {
  return list[Math.floor(rand() * list.length)] as T;
}

const SUBJECTS = ['Patient/p1', 'Patient/p2', 'Patient/p3', 'Group/g1', 'Patient/p4'];
const CODES = [
  { system: 'http://loinc.org', code: '2345-7', display: 'Glucose' },
  { system: 'http://loinc.org', code: '4548-4', display: 'Hemoglobin A1c' },
  { system: 'http://LOINC.org', code: '8480-6' },
  { code: 'local-1' },
  { system: 'http://snomed.info/sct', code: '2345-7' },
];

function observation(rand: () => number, i: number): Observation {
  const day = 1 + Math.floor(rand() * 60);
  const when = new Date(Date.UTC(2024, 0, day, Math.floor(rand() * 24))).toISOString();
  const effective = pick(rand, ['dateTime', 'date', 'period', 'none'] as const);
  const obs: Observation = {
    resourceType: 'Observation',
    status: pick(rand, ['final', 'preliminary', 'amended'] as const),
    code: { coding: [pick(rand, CODES)], ...(rand() < 0.2 ? { text: 'glucose' } : {}) },
  };
  if (rand() < 0.3) obs.code.coding?.push(pick(rand, CODES));
  if (rand() < 0.9) obs.subject = { reference: pick(rand, SUBJECTS) };
  const idForm = rand();
  if (idForm < 0.6) obs.identifier = [{ system: 'urn:sys:a', value: `id-${i % 150}` }];
  else if (idForm < 0.8) obs.identifier = [{ value: `ID-${i % 150}` }];
  else if (idForm < 0.9) obs.identifier = [{ system: 'urn:sys:b' }];
  if (effective === 'dateTime') obs.effectiveDateTime = when;
  if (effective === 'date') obs.effectiveDateTime = when.slice(0, 10);
  if (effective === 'period')
    obs.effectivePeriod = { start: when, ...(rand() < 0.5 ? { end: '2024-03-15' } : {}) };
  obs.valueQuantity = { value: Math.round(rand() * 100) };
  return obs;
}

function report(rand: () => number, i: number): DiagnosticReport {
  return {
    resourceType: 'DiagnosticReport',
    status: 'preliminary',
    identifier: [{ system: 'urn:ietf:rfc:3986', value: `urn:key:${i}` }],
    subject: { reference: pick(rand, SUBJECTS) },
    code: { coding: [pick(rand, CODES)] },
    effectiveDateTime: new Date(Date.UTC(2024, 0, 1 + (i % 40))).toISOString(),
  };
}

const QUERIES = [
  'identifier=urn:sys:a|id-3',
  'identifier=id-3',
  'identifier=URN:SYS:A|ID-3',
  'identifier=|id-7',
  'identifier=urn:sys:b|',
  'identifier=id-1,id-2,urn:sys:a|id-4',
  'identifier=|',
  'identifier=urn:sys:a|id-20,URN:SYS:A|ID-21,urn:sys:a|id-22,urn:sys:a|id-23',
  'identifier=|ID-20,|id-21,|id-22,|id-23,|id-24',
  'identifier=urn:ietf:rfc:3986|urn:key:5',
  'identifier:not=urn:sys:a|id-3',
  'identifier:missing=true',
  'identifier:missing=false&subject=Patient/p1',
  'subject=Patient/p1',
  'subject=Patient/p1,Group/g1',
  'subject=p1',
  'subject=',
  'subject:missing=true',
  'subject:not=Patient/p2',
  'patient=Patient/p3',
  'patient=Group/g1',
  'code=http://loinc.org|2345-7',
  'code=2345-7',
  'code=glucose',
  'code=http://loinc.org|',
  'code=|local-1',
  'code:text=glucose',
  'code:not=2345-7&subject=Patient/p2',
  'date=2024-01-05',
  'date=ge2024-01-10',
  'date=lt2024-01-03',
  'date=gt2024-02',
  'date=le2024-01-15T12:00:00Z',
  'date=sa2024-01-10',
  'date=eb2024-01-10',
  'date=ne2024-01-05',
  'date=ap2024-01-05',
  'date=ge2024-01-10&date=lt2024-01-20',
  'date:missing=true',
  '_lastUpdated=gt2000-01-01',
  '_lastUpdated=lt2000-01-01',
  '_id=does-not-exist',
  'status=final',
  'status=final&subject=Patient/p1',
  'subject=Patient/p1&code=2345-7&date=ge2024-01-10',
  // Unions of codes (resources with two codings are in two postings), alone and intersected.
  'code=2345-7,4548-4,8480-6',
  'code=http://loinc.org|2345-7,http://loinc.org|4548-4,|local-1,nothing-here',
  'subject=Patient/p1&code=http://loinc.org|2345-7,http://loinc.org|4548-4,http://loinc.org|8480-6',
  'subject=Patient/p1,Patient/p2&code=2345-7,glucose&_sort=-date',
  'code=2345-7,4548-4&identifier=id-3,id-4,urn:sys:a|id-5',
  'subject=Patient/p1&_sort=-date',
  'subject=Patient/p2&_sort=date&_count=5&_offset=3',
  'patient=Patient/p3&_sort=status,-date&_count=7',
  'code=2345-7&_sort=-_lastUpdated',
  '_sort=-date&_count=10',
  'subject=Patient/p4&_sort=identifier',
  '_count=0&code=4548-4',
  'subject:Patient=Patient/p1',
  'subject.name=foo',
];

describe('IndexedRepository against MemoryRepository', () => {
  const indexed = new IndexedRepository();
  const stock = new MemoryRepository();

  beforeAll(async () => {
    const rand = prng(42);
    const ids: string[] = [];
    for (let i = 0; i < 300; i++) ids.push((await indexed.createResource(observation(rand, i))).id);
    for (let i = 0; i < 80; i++) await indexed.createResource(report(rand, i));
    // Change indexed values of some and delete others: the indexes must forget the old values.
    for (let i = 0; i < 60; i++) {
      const id = ids[i * 3] as string;
      await indexed.updateResource({ ...observation(rand, 1000 + i), id });
    }
    for (let i = 0; i < 30; i++) await indexed.deleteResource('Observation', ids[i * 7 + 1] as string);
    // The stock repository gets the same final resources, in the same insertion order.
    for (const type of ['Observation', 'DiagnosticReport'] as const) {
      for (const r of await indexed.searchResources({ resourceType: type })) await stock.createResource(r);
    }
  });

  const ids = (b: { entry?: { resource?: Resource }[] }): (string | undefined)[] =>
    (b.entry ?? []).map((e) => e.resource?.id);

  for (const type of ['Observation', 'DiagnosticReport']) {
    it.each(QUERIES)(`${type}?%s returns what the scan returns`, async (query) => {
      const request = (): SearchRequest => parseSearchRequest(`${type}?${query}`);
      const [mine, theirs] = [await indexed.search(request()), await stock.search(request())];
      expect(mine.total).toBe(theirs.total);
      expect(ids(mine)).toEqual(ids(theirs));
      expect(mine.entry?.map((e) => e.resource)).toEqual(theirs.entry?.map((e) => e.resource));
    });
  }

  it('answers the system’s searches from the indexes, and has results for most of them', async () => {
    const before = { ...indexed.stats };
    let nonEmpty = 0;
    for (const q of QUERIES.filter((x) => /^(identifier|subject|patient|code|date|_lastUpdated)=/.test(x))) {
      if (((await indexed.search(parseSearchRequest(`Observation?${q}`))).total ?? 0) > 0) nonEmpty++;
    }
    expect(indexed.stats.indexed - before.indexed).toBeGreaterThan(25);
    expect(indexed.stats.scanned).toBe(before.scanned);
    expect(nonEmpty).toBeGreaterThan(20);
  });
});

describe('IndexedRepository writes', () => {
  it('keeps indexes right across update and delete', async () => {
    const repo = new IndexedRepository();
    const find = async (q: string): Promise<number | undefined> =>
      (await repo.search(parseSearchRequest(`Observation?${q}`))).total;
    const created = await repo.createResource<Observation>({
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
      identifier: [{ system: 'urn:s', value: 'old' }],
      subject: { reference: 'Patient/a' },
    });
    expect(await find('identifier=urn:s|old')).toBe(1);
    await repo.updateResource<Observation>({
      ...created,
      identifier: [{ system: 'urn:s', value: 'new' }],
      subject: { reference: 'Patient/b' },
    });
    expect(await find('identifier=urn:s|old')).toBe(0);
    expect(await find('subject=Patient/a')).toBe(0);
    expect(await find('identifier=new&subject=Patient/b')).toBe(1);
    await repo.deleteResource('Observation', created.id);
    expect(await find('identifier=new')).toBe(0);
    expect(repo.count('Observation')).toBe(0);
  });

  it('rolls a transaction back and fires its events only on commit', async () => {
    const repo = new IndexedRepository();
    const events: ChangeEvent[] = [];
    repo.onChange((e) => events.push(e));
    const kept = await repo.createResource<Observation>({
      resourceType: 'Observation',
      status: 'final',
      code: {},
    });
    events.length = 0;
    await expect(
      repo.withTransaction(async () => {
        await repo.createResource({ resourceType: 'Patient', id: 'tx' });
        await repo.updateResource({ ...kept, status: 'amended' });
        await repo.deleteResource('Observation', kept.id);
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(events).toEqual([]);
    await expect(repo.readResource('Patient', 'tx')).rejects.toThrow();
    const after = await repo.readResource<Observation>('Observation', kept.id);
    expect(after.status).toBe('final');
    expect(after.meta?.versionId).toBe('1');
    expect((await repo.search(parseSearchRequest('Observation?_id=' + kept.id))).total).toBe(1);

    await repo.withTransaction(async () => {
      await repo.createResource({ resourceType: 'Patient', id: 'tx' });
      expect(events).toEqual([]);
    });
    expect(events.map((e) => e.type)).toEqual(['create']);
  });

  it('serialises concurrent conditional creates', async () => {
    const repo = new IndexedRepository();
    const make = (): ReturnType<typeof repo.conditionalCreate> =>
      repo.conditionalCreate(
        { resourceType: 'Device', identifier: [{ system: 'urn:d', value: '1' }] },
        parseSearchRequest('Device?identifier=urn:d|1'),
      );
    const results = await Promise.all([make(), make(), make()]);
    expect(new Set(results.map((r) => r.resource.id)).size).toBe(1);
    expect(repo.count('Device')).toBe(1);
  });

  it('validates fully when asked to', async () => {
    const strict = new IndexedRepository({ validation: 'full' });
    await expect(strict.createResource({ resourceType: 'Observation' } as Observation)).rejects.toThrow();
    const basic = new IndexedRepository();
    await expect(basic.createResource({ resourceType: 'Nope' } as unknown as Observation)).rejects.toThrow(
      /Unknown resourceType/,
    );
  });
});
