/**
 * The real pipeline against the embedded FHIR server requiring SMART Backend Services tokens:
 * configuration as infra sets it (FHIR_AUTH_MODE, FHIR_CLIENT_ID, FHIR_SCOPES, the token URL
 * discovered from `.well-known/smart-configuration`), the client key held in memory in place
 * of the Secrets Manager read, the local SMART token server verifying each client assertion.
 * Tokens expire on a shared clock (the client refreshes before the server would refuse) and
 * are revoked (the client refreshes once after the 401); every report is written either way.
 * The sweep's Bulk `$export` and notify's catch-up of a dropped notification go through the
 * same guard.
 */
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { DeleteMessageCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import type { DiagnosticReport, Observation } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDemoCohort, loadHeldOutRows } from '../../local/demo/cohort.js';
import { loadDemoPatient } from '../../local/demo/load.js';
import { registerSubscriptions } from '../../local/live.js';
import { localSmartAuth } from '../../local/smart-token.js';
import { ROOT, startStack, type RunningStack } from '../../local/stack.js';
import { loadConfig } from '../../shared/config.js';
import type { ResourceEventMessage } from '../../shared/events/resource-event.js';
import { createFhirAuth } from '../../shared/fhir/auth-config.js';
import { createFhirGateway, type FhirGateway } from '../../shared/fhir/gateway.js';
import { createLogger } from '../../shared/log.js';
import { processResourceEvent, type PipelinePorts } from '../../shared/pipeline.js';
import { createPipelinePorts } from '../../shared/ports.js';
import { createSweepContext } from '../../shared/sweep/context.js';
import { createTransactionClient } from '../../shared/sweep/transaction-client.js';

const LIFETIME_SECONDS = 60;
let clock = Date.now();
const now = () => clock;
let stack: RunningStack;
let loader: FhirGateway;
let events: ResourceEventMessage[];
let ports: PipelinePorts;
let fhirAuth: ReturnType<typeof createFhirAuth>;
const logLines: string[] = [];

beforeAll(async () => {
  stack = await startStack({ anyPorts: true, smartAuth: { tokenLifetimeSeconds: LIFETIME_SECONDS, now } });
  const smart = stack.smart;
  if (!smart) throw new Error('the stack started without SMART auth');
  // The loader is another client of the same registration (as an EHR integration would be).
  loader = createFhirGateway({
    baseUrl: stack.fhir.baseUrl,
    auth: localSmartAuth(stack.fhir.baseUrl, smart.client, { now }),
  });
  const rows = loadHeldOutRows(path.join(ROOT, 'local/demo/data/diabetes-heldout.json')).slice(0, 3);
  events = [];
  for (const p of buildDemoCohort(rows, new Date())) {
    const e = await loadDemoPatient(loader, p);
    if (e) events.push(e);
  }
  const config = loadConfig({
    FHIR_BASE_URL: stack.fhir.baseUrl,
    FHIR_AUTH_MODE: 'smart-backend-services',
    FHIR_CLIENT_ID: smart.client.registration.clientId,
    FHIR_SCOPES: smart.client.registration.scopes.join(' '),
    // Validated as infra sets it; the read itself is replaced by the in-memory key below.
    FHIR_CREDENTIALS_SECRET_ARN:
      'arn:aws:secretsmanager:us-east-1:123456789012:secret:local-fhir-client-AbCdEf',
    SAGEMAKER_ENDPOINT_URL: stack.sagemaker.url,
    MODELS_DIR: stack.modelsDir,
  });
  const logger = createLogger({ level: 'debug', sink: (line) => logLines.push(line) });
  fhirAuth = createFhirAuth(config, {
    smartCredentials: () => Promise.resolve(smart.client.credentials),
    now,
  });
  ports = await createPipelinePorts(config, logger, { fhirAuth });
}, 60_000);

afterAll(async () => {
  await stack.close();
});

describe('pipeline with SMART Backend Services', () => {
  it('refuses requests without a token', async () => {
    const res = await fetch(`${stack.fhir.baseUrl}/Patient?_count=1`);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toContain('Bearer');
    expect(await res.json()).toMatchObject({ resourceType: 'OperationOutcome' });
  });

  it('writes every report through token expiry and revocation', async () => {
    // Prepare
    const stats = stack.smart?.server.stats;
    if (!stats) throw new Error('no token server');
    expect(events).toHaveLength(3);
    const before = { ...stats };
    const [first, second, third] = events as [
      ResourceEventMessage,
      ResourceEventMessage,
      ResourceEventMessage,
    ];

    // Act: one event per token state
    const r1 = await processResourceEvent(ports, first);
    const afterFirst = { ...stats };
    clock += (LIFETIME_SECONDS - 5) * 1000; // inside the refresh margin: a new token before the old one fails
    const r2 = await processResourceEvent(ports, second);
    const afterSecond = { ...stats };
    stack.smart?.server.revokeAll(); // the server forgets every token: the next request gets a 401
    const r3 = await processResourceEvent(ports, third);

    // Assess
    for (const r of [r1, r2, r3]) expect(r.outcomes.map((o) => o.outcome)).toContain('written');
    expect(afterFirst.issued - before.issued).toBe(1);
    expect(afterSecond.issued - afterFirst.issued).toBe(1);
    expect(afterSecond.unauthorized - afterFirst.unauthorized).toBe(0);
    expect(stats.issued - afterSecond.issued).toBe(1);
    expect(stats.unauthorized - afterSecond.unauthorized).toBe(1);
    expect(stats.refused).toBe(0);
    const reports = await loader.searchAll<DiagnosticReport>('DiagnosticReport', { _count: '100' });
    expect(reports.length).toBeGreaterThanOrEqual(3);
    expect(logLines.join('\n')).not.toMatch(/Bearer |eyJ/);
  });
});

describe('sweep Bulk $export with SMART Backend Services', () => {
  it('kicks off, polls and downloads with the token, refreshing once after a revocation', async () => {
    // Prepare: the sweep context as the population-sweep handler builds it with FHIR_AUTH_MODE set
    const local = { accessKeyId: 'local', secretAccessKey: 'local' };
    const ctx = await createSweepContext({
      fhirBaseUrl: stack.fhir.baseUrl,
      fhirAuth,
      sagemaker: new SageMakerRuntimeClient({
        endpoint: stack.sagemaker.url,
        region: 'us-east-1',
        credentials: local,
      }),
      s3: new S3Client({ region: 'us-east-1', credentials: local }),
      bucket: 'unused',
      dynamo: stack.dynamo.client,
      modelsDir: stack.modelsDir,
      tmpDir: tmpdir(),
      logger: createLogger({ level: 'error', sink: (line) => logLines.push(line) }),
    });
    const stats = stack.smart?.server.stats;
    if (!stats) throw new Error('no token server');
    const before = { ...stats };

    // Act
    const statusUrl = await ctx.bulk.kickOff({ level: 'patient', types: ['Patient'] });
    const manifest = await ctx.bulk.waitForManifest(statusUrl);
    stack.smart?.server.revokeAll();
    const file = manifest.output.find((o) => o.type === 'Patient');
    if (!file) throw new Error('no Patient file in the manifest');
    let text = '';
    for await (const chunk of await ctx.bulk.download(file.url, manifest.requiresAccessToken)) {
      text += (chunk as Buffer).toString('utf8');
    }

    // Assess
    const patients = text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { resourceType: string });
    expect(patients.length).toBeGreaterThanOrEqual(3);
    expect(new Set(patients.map((p) => p.resourceType))).toEqual(new Set(['Patient']));
    expect(stats.unauthorized - before.unauthorized).toBe(1);
    expect(stats.issued - before.issued).toBe(1);
  });
});

describe("sweep write-back's transaction client with SMART Backend Services", () => {
  it('posts with the token and refreshes once after a revocation', async () => {
    // Prepare: the lean client the sweep's report writer uses, with the same provider
    const client = createTransactionClient({ baseUrl: stack.fhir.baseUrl, auth: fhirAuth, backoffMs: 1 });
    const stats = stack.smart?.server.stats;
    if (!stats) throw new Error('no token server');
    const tx = (value: string) => ({
      resourceType: 'Bundle' as const,
      type: 'transaction' as const,
      entry: [
        {
          fullUrl: 'urn:uuid:5b0c7c1e-0d6c-4d8e-9a51-3f1f2d0a7e11',
          resource: {
            resourceType: 'Device' as const,
            identifier: [{ system: 'urn:fhir-analytics:test-device', value }],
          },
          request: {
            method: 'POST' as const,
            url: 'Device',
            ifNoneExist: `identifier=urn:fhir-analytics:test-device|${value}`,
          },
        },
      ],
    });

    try {
      // Act
      const first = await client.transaction(tx('before-revocation'));
      const afterFirst = { ...stats };
      stack.smart?.server.revokeAll();
      const second = await client.transaction(tx('after-revocation'));

      // Assess
      expect(first.entry?.[0]?.response?.status).toMatch(/^201/);
      expect(second.entry?.[0]?.response?.status).toMatch(/^201/);
      expect(stats.unauthorized - afterFirst.unauthorized).toBe(1);
      expect(stats.issued - afterFirst.issued).toBe(1);
    } finally {
      client.close();
    }
  });
});

describe('notify catch-up with SMART Backend Services', () => {
  it('replays a dropped notification from the guarded FHIR server with its own token', async () => {
    // Prepare: the stack's Subscriptions, registered through the guarded server
    const statuses = await registerSubscriptions(stack, loader, ports.models.all());
    expect(statuses.every((s) => s.endsWith(':active'))).toBe(true);
    const trigger = ports.models
      .all()
      .flatMap((m) => m.triggers)
      .find((t) => t.resourceType === 'Observation');
    if (trigger?.resourceType !== 'Observation') throw new Error('no Observation trigger');
    const code = trigger.codes[0];
    if (!code) throw new Error('no trigger code');
    const patient = events[0]?.patient ?? '';
    const observation = (value: number): Observation => ({
      resourceType: 'Observation',
      status: 'final',
      subject: { reference: patient },
      code: { coding: [{ system: code.system, code: code.code }] },
      effectiveDateTime: new Date().toISOString(),
      valueQuantity: { value, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' },
    });
    const write = async (value: number): Promise<string> => {
      const bundle = await loader.transaction({
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [{ resource: observation(value), request: { method: 'POST', url: 'Observation' } }],
      });
      return (bundle.entry?.[0]?.response?.location ?? '').replace(/\/_history\/.*$/, '');
    };
    const stats = stack.smart?.server.stats;
    if (!stats) throw new Error('no token server');
    const before = { ...stats };

    // Act: the first notification is lost on the way, the second reveals the gap
    stack.subscriptions?.setDeliveryFault({ dropRate: 1 });
    const dropped = await write(101);
    await stack.subscriptions?.flush();
    stack.subscriptions?.setDeliveryFault(undefined);
    const delivered = await write(102);
    await stack.subscriptions?.flush();

    // Assess: both events queued, the missed one replayed by notify through the guard
    const foci = new Set<string>();
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && !(foci.has(dropped) && foci.has(delivered))) {
      const out = await stack.queues.client.send(
        new ReceiveMessageCommand({
          QueueUrl: stack.queues.queueUrl,
          MaxNumberOfMessages: 10,
          WaitTimeSeconds: 1,
        }),
      );
      for (const m of out.Messages ?? []) {
        foci.add(
          ((JSON.parse(m.Body ?? '{}') as { focus?: string }).focus ?? '').replace(/\/_history\/.*$/, ''),
        );
        await stack.queues.client.send(
          new DeleteMessageCommand({ QueueUrl: stack.queues.queueUrl, ReceiptHandle: m.ReceiptHandle }),
        );
      }
    }
    expect([...foci]).toEqual(expect.arrayContaining([dropped, delivered]));
    expect(stats.issued - before.issued).toBe(1); // notify's own token, for its catch-up request
    expect(stats.unauthorized - before.unauthorized).toBe(0);
    expect(stats.refused).toBe(0);
  });
});
