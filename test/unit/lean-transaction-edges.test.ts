/**
 * Edge cases of the lean transaction path (local/fhir/transaction.ts) against Medplum's router:
 * answers, stored resources and the history of every id must match (found in a cold review).
 */
import { normalizeOperationOutcome } from '@medplum/core';
import type { Bundle, BundleEntry, Observation, Resource } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import type { IndexedRepository } from '../../local/fhir/indexed-repository.js';
import { leanSteps } from '../../local/fhir/transaction.js';
import { CountingRepository, viaLean, viaRouter } from './lean-transaction-helpers.js';

const comparable = (v: unknown): unknown =>
  JSON.parse(JSON.stringify(v ?? null).replace(/"(lastUpdated)":"[^"]*"/g, '"$1":"T"'));
async function state(repo: IndexedRepository): Promise<unknown> {
  const out: unknown[] = [];
  for (const t of ['Patient', 'Observation']) {
    const all = await repo.searchResources({ resourceType: t as Resource['resourceType'] });
    out.push(all);
    for (let i = 1; i < 600; i++) {
      for (const id of [`id-${i}`, `p${i}`]) {
        try {
          out.push(await repo.readHistory(t, id));
        } catch (e) {
          out.push(normalizeOperationOutcome(e).issue[0]?.code);
        }
      }
    }
  }
  return comparable(out);
}
async function same(bundles: Bundle[]): Promise<unknown[]> {
  const a = new CountingRepository();
  const b = new CountingRepository();
  const answers: unknown[] = [];
  for (const bundle of bundles) {
    const [ro, rr] = await viaRouter(a, structuredClone(bundle));
    const [lo, lr] = await viaLean(b, structuredClone(bundle));
    expect(comparable(lr ?? lo)).toEqual(comparable(rr ?? ro));
    answers.push(rr ?? ro);
  }
  expect(await state(b)).toEqual(await state(a));
  return answers;
}
const U = (n: number): string => `urn:uuid:${String(n).padStart(8, '0')}-3f40-4152-8364-758697a8b9ca`;
const tx = (entry: BundleEntry[]): Bundle => ({ resourceType: 'Bundle', type: 'transaction', entry });
const obs = (subject: string, extra: Partial<BundleEntry> = {}, code = 'x'): BundleEntry => {
  const resource: Observation = {
    resourceType: 'Observation',
    status: 'final',
    code: { text: code },
    subject: { reference: subject },
  };
  return { resource, request: { method: 'POST', url: 'Observation' }, ...extra };
};
const pat = (fullUrl?: string, extra: Record<string, unknown> = {}): BundleEntry => ({
  ...(fullUrl ? { fullUrl } : {}),
  resource: { resourceType: 'Patient', ...extra },
  request: { method: 'POST', url: 'Patient' },
});

describe('lean transaction path, edge cases against the router (stored state and every history)', () => {
  it('missing fullUrl, duplicate fullUrls', async () => {
    await same([tx([pat(), pat(U(1)), pat(U(1)), obs(U(1), { fullUrl: U(2) })])]);
  });
  it('ifNoneExist matching a resource created earlier in the same bundle', async () => {
    await same([
      tx([
        {
          ...pat(U(1)),
          request: { method: 'POST', url: 'Patient' },
          resource: { resourceType: 'Patient', identifier: [{ system: 's', value: 'v' }] },
        },
        {
          fullUrl: U(2),
          resource: { resourceType: 'Patient', identifier: [{ system: 's', value: 'v' }] },
          request: { method: 'POST', url: 'Patient', ifNoneExist: 'identifier=s|v' },
        },
        obs(U(2), { fullUrl: U(3) }),
      ]),
    ]);
  });
  it('urn:uuid in ifNoneExist, %3A-encoded', async () => {
    await same([
      tx([
        pat(U(1)),
        obs(U(1), {
          fullUrl: U(2),
          request: { method: 'POST', url: 'Observation', ifNoneExist: `subject=${U(1)}` },
        }),
        obs(U(1).replaceAll(':', '%3A'), { fullUrl: U(3) }),
      ]),
    ]);
    await same([tx([pat(U(1)), pat(U(5)), obs(`${U(1)} and ${U(5)}`, { fullUrl: U(2) })])]);
  });
  it('PUT create, PUT on deleted, over 50 updates, large bundle', async () => {
    const puts = (n: number): BundleEntry[] =>
      Array.from({ length: n }, (_, i) => ({
        resource: { resourceType: 'Patient', id: `p${i + 1}` },
        request: { method: 'PUT', url: `Patient/p${i + 1}` },
      }));
    await same([
      tx(puts(3)),
      tx(puts(3)),
      tx(puts(51)),
      tx(puts(50)),
      tx(Array.from({ length: 400 }, (_, i) => pat(U(i + 10)))),
    ]);
  });
  it('error mid-bundle after create+update of the same written-once resource; history after rollback', async () => {
    await same([
      tx([
        {
          resource: { resourceType: 'Patient', id: 'p1' },
          request: { method: 'PUT', url: 'Patient/p1' },
        },
      ]),
      tx([
        pat(U(1)),
        {
          resource: { resourceType: 'Patient', id: 'p1', gender: 'male' },
          request: { method: 'PUT', url: 'Patient/p1' },
        },
        {
          resource: { resourceType: 'Nope', id: 'p2' } as unknown as Resource,
          request: { method: 'PUT', url: 'Nope/p2' },
        },
      ]),
      tx([
        {
          resource: { resourceType: 'Patient', id: 'p1', gender: 'female' },
          request: { method: 'PUT', url: 'Patient/p1' },
        },
      ]),
    ]).then((answers) => {
      expect((answers[1] as Resource).resourceType).toBe('OperationOutcome');
      expect(((answers[2] as Bundle).entry ?? [])[0]?.resource?.meta?.versionId).toBe('2');
    });
  });
  it('bad ifNoneExist search param', async () => {
    await same([
      tx([{ ...pat(U(1)), request: { method: 'POST', url: 'Patient', ifNoneExist: 'bogus-param=1' } }]),
    ]);
  });
  it('POST with client id', async () => {
    await same([tx([pat(U(1), { id: 'client' })])]);
  });
  it('a fullUrl that is not a string goes to the router', () => {
    const b = tx([{ ...pat(), fullUrl: null as unknown as string }]);
    expect(leanSteps(b)).toBeUndefined();
    expect(leanSteps(tx([{ ...pat(), fullUrl: 5 as unknown as string }]))).toBeUndefined();
  });
});
