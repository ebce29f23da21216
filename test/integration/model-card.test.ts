/**
 * The model card on the local FHIR server: one DocumentReference per model version, however many
 * reports, containers and redeliveries; labelled; named by the Device and by every Provenance.
 * Through the event pipeline (the functions' ports, two of them as two Lambda containers) and
 * through the sweep's batched writer.
 */
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import type { Device, DocumentReference, Provenance } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDemoCohort, loadHeldOutRows } from '../../local/demo/cohort.js';
import { loadDemoPatient } from '../../local/demo/load.js';
import { ROOT, startStack, type RunningStack } from '../../local/stack.js';
import { loadConfig } from '../../shared/config.js';
import type { ResourceEventMessage } from '../../shared/events/resource-event.js';
import { createFhirGateway, type FhirGateway } from '../../shared/fhir/gateway.js';
import { silentLogger } from '../../shared/log.js';
import { processResourceEvent, type PipelinePorts } from '../../shared/pipeline.js';
import { createPipelinePorts } from '../../shared/ports.js';
import {
  AI_ASSERTED_SECURITY_LABEL,
  buildReportTransaction,
  loadModelCards,
  MODEL_CARD_EXTENSION,
  MODEL_CARD_SYSTEM,
  MODEL_DEVICE_SYSTEM,
  WRITTEN_BY_TAG,
} from '../../shared/reports/index.js';
import { loadRegistry } from '../../shared/inference/registry.js';
import { createReportWriter } from '../../shared/sweep/write-back.js';

let stack: RunningStack;
let fhir: FhirGateway;

beforeAll(async () => {
  stack = await startStack({ anyPorts: true });
  fhir = createFhirGateway({ baseUrl: stack.fhir.baseUrl });
});

afterAll(async () => {
  await stack.close();
});

const all = async <T extends DocumentReference | Device | Provenance>(
  type: T['resourceType'],
  params: Record<string, string> = {},
): Promise<T[]> => fhir.searchAll<T>(type, { _count: '500', ...params });

/** Every model card, Device and Provenance on the server, checked against each other. */
async function checkCards(): Promise<{ cards: DocumentReference[]; devices: Device[] }> {
  const cards = await all<DocumentReference>('DocumentReference', { identifier: `${MODEL_CARD_SYSTEM}|` });
  const devices = await all<Device>('Device', { identifier: `${MODEL_DEVICE_SYSTEM}|` });
  const cardValues = cards.map((c) => c.identifier?.[0]?.value);
  // One card per model version, and a card for every Device's version.
  expect(new Set(cardValues).size).toBe(cards.length);
  expect(cardValues.sort()).toEqual(devices.map((d) => d.identifier?.[0]?.value).sort());
  for (const card of cards) {
    expect(card.meta?.security).toContainEqual(
      expect.objectContaining({ code: AI_ASSERTED_SECURITY_LABEL.code }),
    );
    expect(card.meta?.tag).toContainEqual(expect.objectContaining({ code: WRITTEN_BY_TAG.code }));
    const modelId = card.identifier?.[0]?.value?.split('@')[0] ?? '';
    const markdown = Buffer.from(card.content[0]?.attachment.data ?? '', 'base64').toString('utf8');
    expect(markdown).toBe(await readFile(path.join(stack.modelsDir, modelId, 'card.md'), 'utf8'));
  }
  const cardOf = new Map(cards.map((c) => [c.identifier?.[0]?.value, `DocumentReference/${c.id ?? ''}`]));
  for (const device of devices) {
    const link = device.extension?.find((e) => e.url === MODEL_CARD_EXTENSION)?.valueReference?.reference;
    expect(link).toBe(cardOf.get(device.identifier?.[0]?.value));
  }
  const deviceCard = new Map(
    devices.map((d) => [`Device/${d.id ?? ''}`, cardOf.get(d.identifier?.[0]?.value)]),
  );
  const provenances = await all<Provenance>('Provenance');
  expect(provenances.length).toBeGreaterThan(0);
  for (const p of provenances) {
    const card = deviceCard.get(p.agent[0]?.who.reference ?? '');
    expect(card).toBeDefined();
    expect(p.entity?.filter((e) => e.role === 'derivation').map((e) => e.what.reference)).toEqual([card]);
  }
  return { cards, devices };
}

describe('model card written once per model version', () => {
  const events: ResourceEventMessage[] = [];

  it('through the event pipeline: many reports, two containers, redeliveries', async () => {
    const rows = loadHeldOutRows(path.join(ROOT, 'local/demo/data/diabetes-heldout.json')).slice(0, 16);
    for (const p of buildDemoCohort(rows, new Date())) {
      const e = await loadDemoPatient(fhir, p);
      if (e) events.push(e);
    }
    const config = loadConfig({
      FHIR_BASE_URL: stack.fhir.baseUrl,
      SAGEMAKER_ENDPOINT_URL: stack.sagemaker.url,
      MODELS_DIR: stack.modelsDir,
    });
    const containers: PipelinePorts[] = [
      await createPipelinePorts(config, silentLogger),
      await createPipelinePorts(config, silentLogger),
    ];
    // Both containers take events at once from the start (neither knows the model's resources).
    const deliveries = [...events, ...events.slice().reverse(), ...events];
    const results = await Promise.all(
      deliveries.map((e, i) => processResourceEvent(containers[i % 2] as PipelinePorts, e)),
    );
    const written = results.flatMap((r) => r.outcomes).filter((o) => o.outcome === 'written');
    expect(written.length).toBeGreaterThan(5);

    const { cards, devices } = await checkCards();
    const models = new Set(written.map((o) => o.model));
    expect(cards).toHaveLength(models.size);
    expect(devices).toHaveLength(models.size);
    for (const card of cards) expect(card.meta?.versionId).toBe('1');
  });

  it('through the sweep’s batched writer, in two processes, next to the pipeline’s', async () => {
    const registry = await loadRegistry(stack.modelsDir);
    const cards = await loadModelCards(stack.modelsDir, registry.all());
    const manifest = registry.get('diabetes-onset-rf');
    if (!manifest) throw new Error('no diabetes-onset-rf');
    const reports = (from: number) =>
      Array.from({ length: 6 }, (_, k) => ({
        bundle: buildReportTransaction({
          manifest,
          patient: events[(from + k) % events.length]?.patient ?? 'Patient/none',
          row: {
            values: new Float32Array(1),
            shape: [1],
            inputs: [`Observation/sweep-${String(from + k)}/_history/1`],
            effective: undefined,
            provenance: [],
          },
          prediction: { score: 0.5, probabilities: [0.5, 0.5] },
          issued: new Date(),
          modelCard: cards.get(manifest.id),
        }).bundle,
      }));
    const before = (
      await all<DocumentReference>('DocumentReference', { identifier: `${MODEL_CARD_SYSTEM}|` })
    ).length;
    const results = [
      ...(await createReportWriter(fhir).write(reports(0))),
      ...(await createReportWriter(fhir).write(reports(3))),
    ];
    expect(results.every((r) => r.ok)).toBe(true);
    expect(results.filter((r) => r.ok && r.created)).toHaveLength(9);
    const { cards: after } = await checkCards();
    const rfCards = after.filter((c) => c.identifier?.[0]?.value === `${manifest.id}@${manifest.version}`);
    expect(rfCards).toHaveLength(1);
    expect(after.length).toBeLessThanOrEqual(before + 1);
  });
});
