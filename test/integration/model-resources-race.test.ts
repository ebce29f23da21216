/**
 * Two containers that meet a new model version at the same moment can both create its Device
 * and model card on a server whose conditional create is not atomic across requests. From then
 * on the conditional create matches two and the server answers 412. A fresh container must
 * still write its reports: it settles on one Device and one card (the smallest id, the same in
 * every container), sends the report without the model's entries, and creates no third copy.
 */
import * as path from 'node:path';
import type { Bundle, BundleEntry, Device, DocumentReference, Provenance } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDemoCohort, loadHeldOutRows } from '../../local/demo/cohort.js';
import { loadDemoPatient } from '../../local/demo/load.js';
import { ROOT, startStack, type RunningStack } from '../../local/stack.js';
import { loadConfig, type Config } from '../../shared/config.js';
import type { ResourceEventMessage } from '../../shared/events/resource-event.js';
import { statusOf } from '../../shared/fhir/errors.js';
import { createFhirGateway, type FhirGateway } from '../../shared/fhir/gateway.js';
import { silentLogger } from '../../shared/log.js';
import { processResourceEvent } from '../../shared/pipeline.js';
import { createPipelinePorts } from '../../shared/ports.js';
import { MODEL_CARD_SYSTEM, MODEL_DEVICE_SYSTEM } from '../../shared/reports/index.js';

let stack: RunningStack;
let fhir: FhirGateway;
let config: Config;
const events: ResourceEventMessage[] = [];

beforeAll(async () => {
  stack = await startStack({ anyPorts: true });
  fhir = createFhirGateway({ baseUrl: stack.fhir.baseUrl, attempts: 1 });
  const rows = loadHeldOutRows(path.join(ROOT, 'local/demo/data/diabetes-heldout.json')).slice(0, 4);
  for (const p of buildDemoCohort(rows, new Date())) {
    const e = await loadDemoPatient(fhir, p);
    if (e) events.push(e);
  }
  config = loadConfig({
    FHIR_BASE_URL: stack.fhir.baseUrl,
    SAGEMAKER_ENDPOINT_URL: stack.sagemaker.url,
    MODELS_DIR: stack.modelsDir,
  });
}, 60_000);

afterAll(async () => {
  await stack.close();
});

/** A plain create of a copy of `resource` (what the losing side of the race stored). */
const duplicate = (resource: Device | DocumentReference): BundleEntry => {
  const { id: _id, meta: _meta, ...body } = resource;
  return {
    resource: body,
    request: { method: 'POST', url: resource.resourceType },
  };
};

describe('model Device and card created twice by a race', () => {
  it('a fresh container settles on one of each and writes its reports', async () => {
    // Prepare: one container writes the first report (creating the Device and the card), then
    // a copy of each is stored as a racing container would have stored it.
    expect(events.length).toBeGreaterThanOrEqual(2);
    const [first, ...rest] = events as [ResourceEventMessage, ...ResourceEventMessage[]];
    const before = await processResourceEvent(await createPipelinePorts(config, silentLogger), first);
    expect(before.outcomes.map((o) => o.outcome)).toContain('written');
    const devices = await fhir.searchAll<Device>('Device', { identifier: `${MODEL_DEVICE_SYSTEM}|` });
    const cards = await fhir.searchAll<DocumentReference>('DocumentReference', {
      identifier: `${MODEL_CARD_SYSTEM}|`,
    });
    expect(devices.length).toBeGreaterThan(0);
    expect(cards).toHaveLength(devices.length);
    const copies: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [...devices, ...cards].map(duplicate),
    };
    await fhir.transaction(copies);
    const device = devices[0] as Device;
    const identifier = device.identifier?.[0];
    // The server now refuses the conditional create the report transaction carries.
    const conditional: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          resource: duplicate(device).resource,
          request: {
            method: 'POST',
            url: 'Device',
            ifNoneExist: `identifier=${identifier?.system ?? ''}|${identifier?.value ?? ''}`,
          },
        },
      ],
    };
    const refused = await fhir.transaction(conditional).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(statusOf(refused) ?? (refused as { status?: number } | undefined)?.status).toBe(412);

    const provenanceIdsBefore = new Set(
      (await fhir.searchAll<Provenance>('Provenance', { _count: '200' })).map((p) => p.id ?? ''),
    );

    // Act: a fresh container (knows nothing of the model's resources) takes the other events
    const fresh = await createPipelinePorts(config, silentLogger);
    const results = [];
    for (const e of rest) results.push(await processResourceEvent(fresh, e));

    // Assess
    const outcomes = results.flatMap((r) => r.outcomes);
    expect(outcomes.filter((o) => o.outcome === 'written').length).toBeGreaterThan(0);
    expect(outcomes.filter((o) => o.outcome === 'failed')).toEqual([]);
    const devicesAfter = await fhir.searchAll<Device>('Device', { identifier: `${MODEL_DEVICE_SYSTEM}|` });
    expect(devicesAfter).toHaveLength(2 * devices.length); // no third copy
    // Reports written after the race name, per model, the Device with the smallest id.
    const smallest = new Map<string, string>();
    for (const d of [...devicesAfter].sort((a, b) => (a.id ?? '').localeCompare(b.id ?? ''))) {
      const value = d.identifier?.[0]?.value ?? '';
      if (!smallest.has(value)) smallest.set(value, `Device/${d.id ?? ''}`);
    }
    const provenances = await fhir.searchAll<Provenance>('Provenance', { _count: '200' });
    const added = provenances.filter((p) => !provenanceIdsBefore.has(p.id ?? ''));
    expect(added.length).toBe(outcomes.filter((o) => o.outcome === 'written').length);
    for (const p of added) {
      expect([...smallest.values()]).toContain(p.agent[0]?.who.reference);
    }
    const cardsAfter = await fhir.searchAll<DocumentReference>('DocumentReference', {
      identifier: `${MODEL_CARD_SYSTEM}|`,
    });
    expect(cardsAfter).toHaveLength(2 * cards.length);
  });
});
