/**
 * The model card in the write-back: its DocumentReference, the links from the Device and the
 * Provenance, and the per-container cache that leaves the model's entries out once stored.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type {
  Bundle,
  BundleEntry,
  Device,
  DocumentReference,
  Provenance,
  Resource,
} from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { loadRegistry } from '../../shared/inference/registry.js';
import { parseManifest, type ModelManifest } from '../../shared/inference/manifest.js';
import {
  AI_ASSERTED_SECURITY_LABEL,
  AI_MODEL_CARD_CS,
  buildReportTransaction,
  createModelResourceCache,
  isModelEntry,
  loadModelCards,
  MODEL_CARD_EXTENSION,
  pointAtStored,
  storedReference,
  WRITTEN_BY_TAG,
  type ReportTransactionArgs,
} from '../../shared/reports/index.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

/** The diabetes GBM's manifest under another id and version. */
const manifest: ModelManifest = {
  ...parseManifest(
    JSON.parse(readFileSync(path.join(ROOT, 'models/diabetes-gbm/manifest.json'), 'utf8')) as unknown,
    'diabetes-gbm',
  ),
  id: 'toy-gbm',
  version: '2.1.0',
  title: 'Toy progression model',
};

const CARD = '# Toy progression model\n\nNot for clinical use. Ünïcode survives.\n';

const args = (patient: string, extra: Partial<ReportTransactionArgs> = {}): ReportTransactionArgs => ({
  manifest,
  patient,
  row: {
    values: Float32Array.from([101]),
    shape: [1],
    inputs: [`Observation/${patient.slice(8)}-g/_history/1`],
    effective: '2024-05-01T00:00:00Z',
    provenance: [],
  },
  prediction: { score: 123.4 },
  issued: new Date('2024-06-01T00:00:00Z'),
  modelCard: { markdown: CARD },
  ...extra,
});

function of<T extends Resource>(
  entries: readonly BundleEntry[],
  type: T['resourceType'],
): { entry: BundleEntry; resource: T } {
  const entry = entries.find((e) => e.resource?.resourceType === type);
  if (!entry) throw new Error(`no ${type}`);
  return { entry, resource: entry.resource as T };
}

describe('buildReportTransaction with a model card', () => {
  const entries = buildReportTransaction(args('Patient/p1')).bundle.entry ?? [];
  const card = of<DocumentReference>(entries, 'DocumentReference');
  const device = of<Device>(entries, 'Device');
  const provenance = of<Provenance>(entries, 'Provenance');

  it('puts the card first, then Device, result, report and Provenance; the card by conditional create', () => {
    expect(entries.map((e) => e.resource?.resourceType)).toEqual([
      'DocumentReference',
      'Device',
      'Observation',
      'DiagnosticReport',
      'Provenance',
    ]);
    expect(card.entry.request).toEqual({
      method: 'POST',
      url: 'DocumentReference',
      ifNoneExist: 'identifier=urn:fhir-analytics:model-card|toy-gbm@2.1.0',
    });
  });

  it('is a current, final AI model card in markdown, labelled like every resource written', () => {
    const doc = card.resource;
    expect(doc).toMatchObject({
      status: 'current',
      docStatus: 'final',
      identifier: [{ system: 'urn:fhir-analytics:model-card', value: 'toy-gbm@2.1.0' }],
      type: { coding: [{ system: AI_MODEL_CARD_CS, code: 'AIModelCard' }] },
      category: [{ coding: [{ system: AI_MODEL_CARD_CS, code: 'AImodelCardMarkdownFormat' }] }],
    });
    expect(doc.meta?.security).toEqual([AI_ASSERTED_SECURITY_LABEL]);
    expect(doc.meta?.tag).toEqual([WRITTEN_BY_TAG]);
    const attachment = doc.content[0]?.attachment;
    expect(attachment?.contentType).toBe('text/markdown');
    expect(Buffer.from(attachment?.data ?? '', 'base64').toString('utf8')).toBe(CARD);
    expect(attachment?.size).toBe(Buffer.byteLength(CARD));
    expect(attachment?.hash).toMatch(/^[A-Za-z0-9+/]{27}=$/);
  });

  it('is named by the Device (IG extension) and by the Provenance (entity, derivation)', () => {
    expect(device.resource.extension).toEqual([
      { url: MODEL_CARD_EXTENSION, valueReference: { reference: card.entry.fullUrl } },
    ]);
    expect(provenance.resource.entity?.at(-1)).toEqual({
      role: 'derivation',
      what: { reference: card.entry.fullUrl },
    });
    expect(provenance.resource.entity?.[0]).toEqual({
      role: 'source',
      what: { reference: 'Observation/p1-g/_history/1' },
    });
  });

  it('has the same card entry (fullUrl and bytes) in every report of the model version', () => {
    const other = buildReportTransaction(args('Patient/p2')).bundle.entry ?? [];
    expect(other[0]).toEqual(entries[0]);
    expect(other[1]).toEqual(entries[1]);
  });

  it('leaves the card out (and the links) when none is given', () => {
    const without =
      buildReportTransaction({ ...args('Patient/p1'), modelCard: undefined }).bundle.entry ?? [];
    expect(without.map((e) => e.resource?.resourceType)).toEqual([
      'Device',
      'Observation',
      'DiagnosticReport',
      'Provenance',
    ]);
    expect(of<Device>(without, 'Device').resource.extension).toBeUndefined();
  });
});

describe('model entries and the per-container cache', () => {
  /** A fake server answer: 201 with a location per entry, ids numbered. */
  const answer = (bundle: Bundle, status = '201 Created'): Bundle => ({
    resourceType: 'Bundle',
    type: 'transaction-response',
    entry: (bundle.entry ?? []).map((e, i) => ({
      response: { status, location: `${e.resource?.resourceType ?? ''}/${String(i + 1)}/_history/1` },
    })),
  });

  it('recognises the Device and the card, not the report’s own entries', () => {
    const entries = buildReportTransaction(args('Patient/p1')).bundle.entry ?? [];
    expect(entries.map((e) => isModelEntry(e))).toEqual([true, true, false, false, false]);
  });

  it('reads the stored reference from location or the returned resource', () => {
    const entry: BundleEntry = { resource: { resourceType: 'Device' } };
    expect(storedReference(entry, { response: { status: '200', location: 'Device/7/_history/2' } })).toBe(
      'Device/7',
    );
    expect(storedReference(entry, { resource: { resourceType: 'Device', id: 'x9' } })).toBe('Device/x9');
    expect(storedReference(entry, { response: { status: '200' } })).toBeUndefined();
  });

  it('sends the first report whole, then leaves the model entries out and points at the stored ones', async () => {
    const cache = createModelResourceCache();
    const sent: Bundle[] = [];
    const send = (b: Bundle): Promise<Bundle> => {
      sent.push(b);
      return Promise.resolve(answer(b));
    };
    const first = buildReportTransaction(args('Patient/p1')).bundle;
    await cache.write(first, send);
    const second = buildReportTransaction(args('Patient/p2')).bundle;
    const { request } = await cache.write(second, send);

    expect(sent[0]).toBe(first);
    expect(request.entry?.map((e) => e.resource?.resourceType)).toEqual([
      'Observation',
      'DiagnosticReport',
      'Provenance',
    ]);
    const json = JSON.stringify(request);
    for (const e of (second.entry ?? []).slice(0, 2)) expect(json).not.toContain(e.fullUrl ?? '-');
    const provenance = of<Provenance>(request.entry ?? [], 'Provenance').resource;
    expect(provenance.agent[0]?.who.reference).toBe('Device/2');
    expect(provenance.entity?.at(-1)?.what.reference).toBe('DocumentReference/1');
    expect(cache.known.size).toBe(2);
  });

  it('keeps sending whole bundles while the answer does not name both model resources', async () => {
    const cache = createModelResourceCache();
    const partial = (): Promise<Bundle> =>
      Promise.resolve({
        resourceType: 'Bundle',
        type: 'transaction-response',
        entry: [{ response: { status: '201' } }],
      });
    await cache.write(buildReportTransaction(args('Patient/p1')).bundle, partial);
    const { request } = await cache.write(buildReportTransaction(args('Patient/p2')).bundle, partial);
    expect(request.entry).toHaveLength(5);
    expect(cache.known.size).toBe(0);
  });

  it('does not learn from a failed transaction', async () => {
    const cache = createModelResourceCache();
    const failing = (): Promise<Bundle> => Promise.reject(new Error('503'));
    await expect(cache.write(buildReportTransaction(args('Patient/p1')).bundle, failing)).rejects.toThrow(
      '503',
    );
    expect(cache.known.size).toBe(0);
  });

  it('replaces only whole references', () => {
    const entries: BundleEntry[] = [
      {
        resource: {
          resourceType: 'Provenance',
          target: [],
          recorded: '2024-01-01T00:00:00Z',
          agent: [{ who: { reference: 'urn:uuid:a' } }],
        },
      },
    ];
    const out = pointAtStored(entries, new Map([['urn:uuid:a', 'Device/1']]));
    expect(JSON.stringify(out)).toContain('"reference":"Device/1"');
    expect(pointAtStored(entries, new Map([['urn:uuid:', 'Device/1']]))).toEqual(entries);
  });
});

describe('loadModelCards', () => {
  it('reads the card of every model in models/', async () => {
    const registry = await loadRegistry(path.join(ROOT, 'models'));
    const cards = await loadModelCards(path.join(ROOT, 'models'), registry.all());
    expect([...cards.keys()]).toEqual(registry.all().map((m) => m.id));
    for (const m of registry.all()) {
      expect(cards.get(m.id)?.markdown).toBe(
        await readFile(path.join(ROOT, 'models', m.id, 'card.md'), 'utf8'),
      );
    }
  });

  it('refuses a model without a card, or with an empty one, naming the model', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'cards-'));
    await expect(loadModelCards(dir, [manifest])).rejects.toThrow(/toy-gbm has no model card/);
    await mkdir(path.join(dir, 'toy-gbm'));
    await writeFile(path.join(dir, 'toy-gbm', 'card.md'), '  \n');
    await expect(loadModelCards(dir, [manifest])).rejects.toThrow(/toy-gbm has an empty model card/);
  });
});
