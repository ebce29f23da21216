import type { Bundle, DiagnosticReport, Observation, Patient, Resource } from '@medplum/fhirtypes';
import { describe, expect, it, vi } from 'vitest';
import type { FhirGateway } from '../../shared/fhir/gateway.js';
import { parseManifest, type ModelManifest } from '../../shared/inference/manifest.js';
import { silentLogger } from '../../shared/log.js';
import { patientOf, processResourceEvent, type PipelinePorts } from '../../shared/pipeline.js';
import type { ExtractResult } from '../../shared/types.js';
import type { ResourceEventMessage } from '../../shared/events/resource-event.js';

const manifest: ModelManifest = parseManifest(
  {
    id: 'test-model',
    version: '1.0.0',
    family: 'gbm',
    task: 'regression',
    title: 'Test model',
    intendedUse: 'tests',
    notForClinicalUse: true,
    triggers: [{ resourceType: 'Observation', codes: [{ system: 'http://loinc.org', code: '2345-7' }] }],
    input: {
      kind: 'tabular',
      tensor: 'x',
      features: [
        {
          name: 'glucose',
          source: 'observation',
          codes: [{ system: 'http://loinc.org', code: '2345-7' }],
          unit: 'mg/dL',
          lookback: 'P1Y',
          required: true,
        },
      ],
    },
    output: {
      kind: 'regression',
      tensor: 'y',
      thresholds: [{ atOrAbove: 0, indicator: 'info', conclusion: { system: 'urn:t', code: 'low' } }],
      code: { system: 'urn:t', code: 'score' },
    },
    report: { code: { system: 'urn:t', code: 'r' }, category: [{ system: 'urn:t', code: 'LAB' }] },
    serving: {
      tritonModelName: 'test-model',
      instanceType: 'ml.c6i.xlarge',
      maxBatchSize: 8,
      inputs: [{ name: 'x', datatype: 'FP32', dims: [1] }],
      outputs: [{ name: 'y', datatype: 'FP32', dims: [1] }],
    },
  },
  'test',
);

const glucose: Observation = {
  resourceType: 'Observation',
  id: 'g1',
  meta: { versionId: '2' },
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code: '2345-7' }] },
  subject: { reference: 'Patient/p1' },
};
const report: DiagnosticReport = {
  resourceType: 'DiagnosticReport',
  status: 'preliminary',
  code: { text: 'r' },
};
const patient: Patient = { resourceType: 'Patient', id: 'p1', gender: 'female', birthDate: '1970-01-01' };

const okExtract: ExtractResult = {
  status: 'ok',
  row: {
    values: new Float32Array([100]),
    shape: [1],
    inputs: ['Observation/g1/_history/2'],
    effective: '2026-11-01T00:00:00Z',
    provenance: [{ feature: 'glucose', imputed: false, inputs: ['Observation/g1/_history/2'] }],
  },
  skipped: [],
};

/** A resource as a queue message carries it. */
const carry = (r: Observation): ResourceEventMessage['resource'] =>
  r as unknown as ResourceEventMessage['resource'];

function event(overrides: Partial<ResourceEventMessage> = {}): ResourceEventMessage {
  return { v: 1, focus: 'Observation/g1', action: 'create', timestamp: '2026-11-29T00:00:00Z', ...overrides };
}

function makePorts(opts: {
  store?: Record<string, Resource>;
  extract?: ExtractResult;
  transactionStatus?: string;
  /** What the Observation search returns, when not the store's Observations (a lagging index). */
  search?: Observation[];
}): {
  ports: PipelinePorts;
  transaction: ReturnType<typeof vi.fn>;
  predict: ReturnType<typeof vi.fn>;
  reads: string[];
} {
  const store = opts.store ?? { 'Observation/g1': glucose, 'Patient/p1': patient };
  const transaction = vi.fn((bundle: Bundle): Promise<Bundle> =>
    Promise.resolve({
      resourceType: 'Bundle',
      type: 'transaction-response',
      entry: (bundle.entry ?? []).map(() => ({
        response: {
          status: opts.transactionStatus ?? '201 Created',
          location: 'DiagnosticReport/r1/_history/1',
        },
      })),
    }),
  );
  const predict = vi.fn(() => Promise.resolve([{ score: 123 }]));
  const reads: string[] = [];
  const fhir: FhirGateway = {
    read: <T extends Resource>(type: string, id: string) => {
      reads.push(`${type}/${id}`);
      return Promise.resolve(store[`${type}/${id}`] as T | undefined);
    },
    searchAll: <T extends Resource>() =>
      Promise.resolve(
        (opts.search ?? Object.values(store).filter((r) => r.resourceType === 'Observation')) as T[],
      ),
    transaction,
  };
  const ports: PipelinePorts = {
    fhir,
    inference: { predict },
    models: {
      all: () => [manifest],
      matching: (r) => (r.resourceType === 'Observation' ? [manifest] : []),
    },
    extractor: () => ({ extract: () => opts.extract ?? okExtract }),
    buildReport: () => ({
      bundle: {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [{ resource: report }],
      },
      idempotencyKey: 'a'.repeat(64),
    }),
    isOwnWrite: (r) => (r.meta?.tag ?? []).some((t) => t.code === 'own'),
    logger: silentLogger,
    clock: () => new Date('2026-11-29T00:00:00Z'),
  };
  return { ports, transaction, predict, reads };
}

describe('processResourceEvent', () => {
  it('writes one report for a matching Observation', async () => {
    const { ports, transaction, predict } = makePorts({});
    const result = await processResourceEvent(ports, event());
    expect(result.outcomes).toEqual([
      { model: 'test-model', outcome: 'written', report: 'DiagnosticReport/r1' },
    ]);
    expect(predict).toHaveBeenCalledTimes(1);
    expect(transaction).toHaveBeenCalledTimes(1);
  });

  it('reports unchanged when the server matched the existing report (200)', async () => {
    const { ports } = makePorts({ transactionStatus: '200 OK' });
    const result = await processResourceEvent(ports, event());
    expect(result.outcomes[0]?.outcome).toBe('unchanged');
  });

  it('writes nothing when the report for this input state exists: the concurrent prediction is discarded', async () => {
    const { ports, transaction, predict } = makePorts({});
    const withExisting = { ...ports, findReport: () => Promise.resolve('DiagnosticReport/r0') };
    const result = await processResourceEvent(withExisting, event());
    expect(result.outcomes).toEqual([
      { model: 'test-model', outcome: 'unchanged', report: 'DiagnosticReport/r0' },
    ]);
    // The lookup and the inference run at once: a redelivery costs one discarded inference.
    expect(predict).toHaveBeenCalledTimes(1);
    expect(transaction).not.toHaveBeenCalled();
  });

  it('starts the inference before the idempotency lookup has answered', async () => {
    const { ports, predict } = makePorts({});
    let answer: (found: string | undefined) => void = () => undefined;
    const lookup = new Promise<string | undefined>((resolve) => {
      answer = resolve;
    });
    const pending = processResourceEvent({ ...ports, findReport: () => lookup }, event());
    await vi.waitFor(() => {
      expect(predict).toHaveBeenCalledTimes(1);
    });
    answer(undefined);
    expect((await pending).outcomes[0]?.outcome).toBe('written');
  });

  it('answers unchanged when the report exists even though the discarded inference failed', async () => {
    const { ports, predict, transaction } = makePorts({});
    predict.mockRejectedValueOnce(new Error('ThrottlingException'));
    const withExisting = { ...ports, findReport: () => Promise.resolve('DiagnosticReport/r0') };
    const result = await processResourceEvent(withExisting, event());
    expect(result.outcomes[0]?.outcome).toBe('unchanged');
    expect(transaction).not.toHaveBeenCalled();
  });

  it('fails the record (redelivery) when the lookup fails, writing nothing from the prediction', async () => {
    const { ports, transaction } = makePorts({});
    const failing = { ...ports, findReport: () => Promise.reject(new Error('FHIR 503')) };
    await expect(processResourceEvent(failing, event())).rejects.toThrow('FHIR 503');
    expect(transaction).not.toHaveBeenCalled();
  });

  it('fails the record when there is no report and the inference failed', async () => {
    const { ports, predict, transaction } = makePorts({});
    predict.mockRejectedValueOnce(new Error('ThrottlingException'));
    const none = { ...ports, findReport: () => Promise.resolve(undefined) };
    await expect(processResourceEvent(none, event())).rejects.toThrow('ThrottlingException');
    expect(transaction).not.toHaveBeenCalled();
  });

  it('writes nothing and calls no model when required features are missing', async () => {
    const { ports, transaction, predict } = makePorts({
      extract: { status: 'insufficient-data', missing: ['glucose'], skipped: [] },
    });
    const result = await processResourceEvent(ports, event());
    expect(result.outcomes).toEqual([
      { model: 'test-model', outcome: 'insufficient-data', missing: ['glucose'] },
    ]);
    expect(predict).not.toHaveBeenCalled();
    expect(transaction).not.toHaveBeenCalled();
  });

  it.each([
    ['deleted', event({ action: 'delete' }), {}],
    ['focus-gone', event({ focus: 'Observation/missing' }), {}],
    ['own-write', event(), { 'Observation/g1': { ...glucose, meta: { tag: [{ code: 'own' }] } } }],
    ['entered-in-error', event(), { 'Observation/g1': { ...glucose, status: 'entered-in-error' } }],
    ['no-matching-model', event({ focus: 'Patient/p1' }), { 'Patient/p1': patient }],
    ['no-patient', event(), { 'Observation/g1': { ...glucose, subject: { reference: 'Group/x' } } }],
  ] as const)('ignores the event when %s', async (reason, ev, store) => {
    const { ports, transaction } = makePorts({ store: store as Record<string, Resource> });
    const result = await processResourceEvent(ports, ev);
    expect(result.ignored).toBe(reason);
    expect(result.outcomes).toEqual([]);
    expect(transaction).not.toHaveBeenCalled();
  });

  it('starts from a carried focus without reading it; the patient search confirms it', async () => {
    const { ports, transaction, reads } = makePorts({});
    const result = await processResourceEvent(ports, event({ versionId: '2', resource: carry(glucose) }));
    expect(result.outcomes[0]?.outcome).toBe('written');
    expect(reads).toEqual(['Patient/p1']);
    expect(transaction).toHaveBeenCalledTimes(1);
  });

  it.each([
    ['focus-gone', { 'Patient/p1': patient }],
    [
      'entered-in-error',
      { 'Patient/p1': patient, 'Observation/g1': { ...glucose, status: 'entered-in-error' } },
    ],
    [
      'own-write',
      { 'Patient/p1': patient, 'Observation/g1': { ...glucose, meta: { tag: [{ code: 'own' }] } } },
    ],
  ] as const)(
    'ignores a carried focus that is %s by now (the search says so), writing nothing',
    async (reason, store) => {
      const { ports, transaction, predict } = makePorts({ store: store as Record<string, Resource> });
      const result = await processResourceEvent(ports, event({ versionId: '2', resource: carry(glucose) }));
      expect(result.ignored).toBe(reason);
      expect(predict).not.toHaveBeenCalled();
      expect(transaction).not.toHaveBeenCalled();
    },
  );

  it('ignores a carried focus that says entered-in-error or carries the own tag, reading nothing', async () => {
    const cases: [string, Observation][] = [
      ['entered-in-error', { ...glucose, status: 'entered-in-error' }],
      ['own-write', { ...glucose, meta: { versionId: '2', tag: [{ code: 'own' }] } }],
    ];
    for (const [reason, resource] of cases) {
      const { ports, transaction, reads } = makePorts({});
      const result = await processResourceEvent(ports, event({ versionId: '2', resource: carry(resource) }));
      expect(result.ignored).toBe(reason);
      expect(reads).toEqual([]);
      expect(transaction).not.toHaveBeenCalled();
    }
  });

  it('reads the focus when the carried copy is not the event version, or not the focus', async () => {
    for (const ev of [
      event({ versionId: '3', resource: carry(glucose) }),
      event({ focus: 'Observation/g2', versionId: '2', resource: carry(glucose) }),
    ]) {
      const { ports, reads } = makePorts({});
      await processResourceEvent(ports, ev);
      expect(reads[0]).toBe(ev.focus);
    }
  });

  it('reads a carried focus beside the search when the search does not cover its code', async () => {
    const other = { ...glucose, code: { coding: [{ system: 'urn:x', code: 'trigger-only' }] } };
    const { ports, reads } = makePorts({ store: { 'Patient/p1': patient, 'Observation/g1': other } });
    const result = await processResourceEvent(ports, event({ versionId: '2', resource: carry(other) }));
    expect(result.outcomes[0]?.outcome).toBe('written');
    expect(reads.sort()).toEqual(['Observation/g1', 'Patient/p1']);
    const gone = makePorts({ store: { 'Patient/p1': patient } });
    const ignored = await processResourceEvent(gone.ports, event({ versionId: '2', resource: carry(other) }));
    expect(ignored.ignored).toBe('focus-gone');
    expect(gone.transaction).not.toHaveBeenCalled();
  });

  it.each([
    ['read', event()],
    ['carried', event({ versionId: '2', resource: carry(glucose) })],
  ] as const)(
    'fails the record for redelivery when the search has not caught up with a %s focus, scoring nothing',
    async (_mode, ev) => {
      const { ports, transaction, predict } = makePorts({ search: [] });
      await expect(processResourceEvent(ports, ev)).rejects.toMatchObject({
        name: 'InputUnavailableError',
        reason: 'search-behind-focus',
        retryable: true,
      });
      expect(predict).not.toHaveBeenCalled();
      expect(transaction).not.toHaveBeenCalled();
    },
  );

  it('fails the record when the search returns an older version of the focus; scores when it is current', async () => {
    const now = { ...glucose, meta: { versionId: '2', lastUpdated: '2026-11-02T00:00:00Z' } };
    const before = { ...glucose, meta: { versionId: '1', lastUpdated: '2026-11-01T00:00:00Z' } };
    const behind = makePorts({ store: { 'Patient/p1': patient, 'Observation/g1': now }, search: [before] });
    await expect(processResourceEvent(behind.ports, event())).rejects.toMatchObject({
      reason: 'search-behind-focus',
    });
    expect(behind.transaction).not.toHaveBeenCalled();
    const current = makePorts({ store: { 'Patient/p1': patient, 'Observation/g1': now }, search: [now] });
    expect((await processResourceEvent(current.ports, event())).outcomes[0]?.outcome).toBe('written');
  });

  it('ignores a carried focus that the read shows under another patient now', async () => {
    const other = { ...glucose, code: { coding: [{ system: 'urn:x', code: 'trigger-only' }] } };
    const moved = { ...other, subject: { reference: 'Patient/p2' } };
    const { ports, transaction } = makePorts({ store: { 'Patient/p1': patient, 'Observation/g1': moved } });
    const result = await processResourceEvent(ports, event({ versionId: '2', resource: carry(other) }));
    expect(result.ignored).toBe('focus-moved');
    expect(transaction).not.toHaveBeenCalled();
  });

  it('propagates a failed transaction so the record is redelivered', async () => {
    const { ports, transaction } = makePorts({});
    transaction.mockRejectedValueOnce(new Error('503'));
    await expect(processResourceEvent(ports, event())).rejects.toThrow('503');
  });
});

describe('patientOf', () => {
  it('reads subject or patient references and drops versions', () => {
    expect(patientOf(glucose)).toBe('Patient/p1');
    expect(patientOf({ ...glucose, subject: { reference: 'Patient/p1/_history/3' } })).toBe('Patient/p1');
    expect(patientOf(patient)).toBe('Patient/p1');
    expect(patientOf({ ...glucose, subject: { reference: 'Group/g' } })).toBeUndefined();
  });
});
