/**
 * The population sweep addresses SageMaker as configured: the handler's context (built from the
 * configuration infra sets) calls one multi-model endpoint with a TargetModel per model in
 * `multi-model` mode, and `${prefix}${model id}` in `per-model` mode. Embedded stack: the FHIR
 * server with `$export`, the local endpoint server (serving both ways), dynalite and fauxqs S3.
 */
import { tmpdir } from 'node:os';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import type { DiagnosticReport } from '@medplum/fhirtypes';
import { startFauxqs, type FauxqsServer } from 'fauxqs';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { contextFromConfig } from '../../functions/population-sweep/handler.js';
import { createTables, startLocalDynamo, type LocalDynamo } from '../../local/dynamo.js';
import { installBulkExport, type BulkExport } from '../../local/fhir/export.js';
import { loadSyntheticCohort } from '../../local/fhir/export-cohort.js';
import { startFhirServer, type RunningFhirServer } from '../../local/fhir/server.js';
import { startEndpointServer, type EndpointServer } from '../../local/sagemaker/server.js';
import { MODELS_DIR } from '../../local/stack.js';
import { loadConfig } from '../../shared/config.js';
import { silentLogger } from '../../shared/log.js';
import { sweepTableDefinition } from '../../shared/sweep/checkpoint.js';
import { parseSweepConfig } from '../../shared/sweep/config.js';
import { runSweep } from '../../shared/sweep/sweep.js';

const PATIENTS = 40;
/** Every 20th synthetic patient has no glucose: insufficient data. */
const ELIGIBLE = PATIENTS - PATIENTS / 20;
const BUCKET = 'sweep-endpoint-mode';
const MME = 'fhir-analytics-mme';
const PREFIX = 'fa-';
const MODEL = 'diabetes-gbm';

let fhir: RunningFhirServer;
let bulk: BulkExport;
let sagemaker: EndpointServer;
let dynamo: LocalDynamo;
let fauxqs: FauxqsServer;

beforeAll(async () => {
  // The handler's clients take credentials from the default chain; the local servers accept any.
  vi.stubEnv('AWS_ACCESS_KEY_ID', 'x');
  vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'x');
  fhir = await startFhirServer({ port: 0 });
  bulk = installBulkExport(fhir, { retryAfterSeconds: 0, chunkSize: 200 });
  sagemaker = await startEndpointServer({
    modelsDir: MODELS_DIR,
    port: 0,
    multiModelEndpointName: MME,
    endpointPrefix: PREFIX,
  });
  dynamo = await startLocalDynamo({ port: 0, createTables: false });
  await createTables(dynamo.client, [sweepTableDefinition()]);
  fauxqs = await startFauxqs({ port: 0, logger: false, host: '127.0.0.1' });
  const s3 = new S3Client({
    endpoint: fauxqs.address,
    forcePathStyle: true,
    region: 'us-east-1',
    credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
  });
  await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
  await loadSyntheticCohort(fhir.repo, { patients: PATIENTS, seed: 11 });
});

afterEach(async () => {
  // Each mode writes its own reports.
  const reports = await fhir.repo.searchResources<DiagnosticReport>({ resourceType: 'DiagnosticReport' });
  for (const r of reports) if (r.id) await fhir.repo.deleteResource('DiagnosticReport', r.id);
  sagemaker.resetStats();
});

afterAll(async () => {
  vi.unstubAllEnvs();
  await bulk.close();
  await fhir.close();
  await sagemaker.close();
  await dynamo.close();
  await fauxqs.stop();
});

/** The sweep context as the Lambda handler builds it, from configuration. */
function context(endpointEnv: Readonly<Record<string, string | undefined>>) {
  const env = {
    AWS_REGION: 'us-east-1',
    FHIR_BASE_URL: fhir.baseUrl,
    SAGEMAKER_ENDPOINT_URL: sagemaker.url,
    SAGEMAKER_ENDPOINT_PREFIX: PREFIX,
    DYNAMODB_ENDPOINT_URL: dynamo.endpoint,
    MODELS_DIR,
    SWEEP_BUCKET: BUCKET,
    S3_ENDPOINT_URL: fauxqs.address,
    SWEEP_TMP_DIR: tmpdir(),
    ...endpointEnv,
  };
  return contextFromConfig(loadConfig(env), parseSweepConfig(env), silentLogger);
}

describe.each([
  {
    mode: 'multi-model',
    env: { SAGEMAKER_ENDPOINT_MODE: 'multi-model', SAGEMAKER_ENDPOINT_NAME: MME },
    called: MME,
    notCalled: `${PREFIX}${MODEL}`,
  },
  {
    mode: 'per-model',
    env: { SAGEMAKER_ENDPOINT_MODE: 'per-model' },
    called: `${PREFIX}${MODEL}`,
    notCalled: MME,
  },
])('population sweep, $mode endpoints', ({ mode, env, called, notCalled }) => {
  it(`scores every eligible patient through ${called}`, async () => {
    // Act
    const ctx = await context(env);
    const summary = await runSweep(ctx, {
      name: `endpoint-${mode}`,
      models: [MODEL],
      since: 'full',
      batchSize: 16,
    });
    ctx.close?.();

    // Assess
    expect(summary.patients).toMatchObject({
      processed: PATIENTS,
      written: ELIGIBLE,
      insufficientData: PATIENTS - ELIGIBLE,
      failed: 0,
    });
    expect(sagemaker.stats(called).requests).toBeGreaterThan(0);
    expect(sagemaker.stats(notCalled).requests).toBe(0);
  });
});
