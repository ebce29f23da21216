/**
 * The sweep tests' embedded stack: the FHIR server with `$export` and a synthetic cohort, the
 * SageMaker-runtime endpoint server, dynalite (checkpoints) and fauxqs S3 (staging), and the
 * sweep context on it. Each test file starts its own (`startSweepStack` in beforeAll).
 */
import { tmpdir } from 'node:os';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { startFauxqs } from 'fauxqs';
import { createTables, startLocalDynamo } from '../../local/dynamo.js';
import { installBulkExport, type BulkExport } from '../../local/fhir/export.js';
import { loadSyntheticCohort } from '../../local/fhir/export-cohort.js';
import { startFhirServer, type RunningFhirServer } from '../../local/fhir/server.js';
import { startEndpointServer, type EndpointServer } from '../../local/sagemaker/server.js';
import { MODELS_DIR } from '../../local/stack.js';
import { silentLogger } from '../../shared/log.js';
import { sweepTableDefinition } from '../../shared/sweep/checkpoint.js';
import { createSweepContext, type SweepContextOptions } from '../../shared/sweep/context.js';
import type { SweepContext } from '../../shared/sweep/sweep.js';

export const CREDENTIALS = { accessKeyId: 'x', secretAccessKey: 'x' };

export interface SweepStack {
  readonly fhir: RunningFhirServer;
  readonly bulk: BulkExport;
  readonly s3: S3Client;
  readonly bucket: string;
  /** The synthetic patients' ids. */
  readonly ids: string[];
  readonly sagemaker: EndpointServer;
  readonly dynamoEndpoint: string;
  readonly s3Endpoint: string;
  /** A sweep context on the stack (another FHIR base, a wait bound, the `extra` knobs). */
  context(
    opts?: Partial<Pick<SweepContextOptions, 'fhirBaseUrl' | 'exportMaxWaitMs' | 'extra'>>,
  ): Promise<SweepContext>;
  stop(): Promise<void>;
}

export async function startSweepStack(opts: {
  bucket: string;
  patients: number;
  seed: number;
  /** Resources per export file. */
  chunkSize: number;
}): Promise<SweepStack> {
  const fhir = await startFhirServer({ port: 0 });
  const bulk = installBulkExport(fhir, { retryAfterSeconds: 0, chunkSize: opts.chunkSize });
  const sagemaker = await startEndpointServer({ modelsDir: MODELS_DIR, port: 0 });
  const dynamo = await startLocalDynamo({ port: 0, createTables: false });
  await createTables(dynamo.client, [sweepTableDefinition()]);
  const fauxqs = await startFauxqs({ port: 0, logger: false, host: '127.0.0.1' });
  const s3 = new S3Client({
    endpoint: fauxqs.address,
    forcePathStyle: true,
    region: 'us-east-1',
    credentials: CREDENTIALS,
  });
  await s3.send(new CreateBucketCommand({ Bucket: opts.bucket }));
  const ids = await loadSyntheticCohort(fhir.repo, { patients: opts.patients, seed: opts.seed });
  return {
    fhir,
    bulk,
    s3,
    bucket: opts.bucket,
    ids,
    sagemaker,
    dynamoEndpoint: dynamo.endpoint,
    s3Endpoint: fauxqs.address,
    context: (c = {}) =>
      createSweepContext({
        fhirBaseUrl: c.fhirBaseUrl ?? fhir.baseUrl,
        sagemaker: new SageMakerRuntimeClient({
          endpoint: sagemaker.url,
          region: 'us-east-1',
          credentials: CREDENTIALS,
        }),
        s3,
        bucket: opts.bucket,
        dynamo: dynamo.client,
        modelsDir: MODELS_DIR,
        tmpDir: tmpdir(),
        logger: silentLogger,
        ...(c.exportMaxWaitMs ? { exportMaxWaitMs: c.exportMaxWaitMs } : {}),
        ...(c.extra ? { extra: c.extra } : {}),
      }),
    stop: async () => {
      await bulk.close();
      await fhir.close();
      await sagemaker.close();
      await dynamo.close();
      await fauxqs.stop();
    },
  };
}
