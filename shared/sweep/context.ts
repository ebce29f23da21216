/**
 * Builds a sweep's context from clients and settings, once per cold start (or per CLI run):
 * the FHIR gateway and bulk client with the sweep's credentials, the SageMaker invoker, the
 * model registry with its compiled extractors, the S3 staging store and the DynamoDB
 * checkpoint store. Every client is passed in.
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { S3Client } from '@aws-sdk/client-s3';
import type { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { compileExtractor } from '../features/index.js';
import { authorizedFetch, type FhirAuthProvider } from '../fhir/auth.js';
import { createFhirGateway } from '../fhir/gateway.js';
import { createInvoker, type EndpointMode } from '../inference/invoker.js';
import type { ModelManifest } from '../inference/manifest.js';
import { loadRegistry } from '../inference/registry.js';
import type { Logger } from '../log.js';
import type { ExtractorLike } from '../pipeline.js';
import { buildReportTransaction, isWrittenByFhirAnalytics, loadModelCards } from '../reports/index.js';
import { TAG_WRITTEN_BY } from '../reports/labels.js';
import { createTokenProvider, type FhirAuth, type TokenProvider } from './auth.js';
import { createBulkClient } from './bulk-client.js';
import { createCheckpointStore, DEFAULT_SWEEP_TABLE } from './checkpoint.js';
import type { SweepContext } from './sweep.js';
import { createTransactionClient } from './transaction-client.js';
import { createReportWriter } from './write-back.js';

export interface SweepContextOptions {
  readonly fhirBaseUrl: string;
  readonly auth?: FhirAuth;
  /** The FHIR auth provider (shared/fhir/auth.ts: SMART, SigV4, ...); takes precedence over `auth`. */
  readonly fhirAuth?: FhirAuthProvider;
  readonly sagemaker: SageMakerRuntimeClient;
  /** Per-model endpoints (default): endpoint name = prefix + model id. Default ''. */
  readonly endpointPrefix?: string;
  /** `per-model` (default) or one `multi-model` endpoint, `multiModelEndpointName`, TargetModel per call. */
  readonly endpointMode?: EndpointMode;
  /** The multi-model endpoint's name (required in multi-model mode). */
  readonly multiModelEndpointName?: string;
  readonly s3: S3Client;
  readonly bucket: string;
  readonly prefix?: string;
  readonly dynamo: DynamoDBClient;
  readonly table?: string;
  readonly modelsDir: string;
  readonly tmpDir: string;
  readonly logger: Logger;
  readonly callTimeoutMs?: number;
  readonly exportMaxWaitMs?: number;
  readonly writeConcurrency?: number;
  /** The rest of the context (progress, checkpoint hooks, staging knobs). */
  readonly extra?: Partial<
    Pick<SweepContext, 'onProgress' | 'onCheckpoint' | 'stage' | 'runBytes' | 'fetchConcurrency'>
  >;
}

/** The sweep's own `FhirAuth` kinds as a provider of the one FHIR auth interface. */
function tokenAuth(tokens: TokenProvider): FhirAuthProvider {
  return { mode: 'token', getAuthHeaders: () => tokens.headers(), invalidate: () => false };
}

export async function createSweepContext(opts: SweepContextOptions): Promise<SweepContext> {
  const registry = await loadRegistry(opts.modelsDir);
  const cards = await loadModelCards(opts.modelsDir, registry.all());
  const extractors = new Map<string, ExtractorLike>();
  const extractorOf = (m: ModelManifest): ExtractorLike => {
    let e = extractors.get(m.id);
    if (!e) extractors.set(m.id, (e = compileExtractor(m)));
    return e;
  };
  const auth = opts.fhirAuth ?? tokenAuth(createTokenProvider(opts.auth ?? { kind: 'none' }));
  const timeoutMs = opts.callTimeoutMs ?? 30_000;
  const fhir = createFhirGateway({
    baseUrl: opts.fhirBaseUrl,
    timeoutMs,
    auth,
    onRetry: (operation, status, attempt) => {
      opts.logger.warn('fhir retry', { operation, status: status ?? null, attempt });
    },
  });
  const authFetch = authorizedFetch(auth, { baseUrl: opts.fhirBaseUrl });
  // The write-back's transactions go through a lean keep-alive client (see transaction-client.ts),
  // authenticated by the same provider as every other FHIR request.
  const transactions = createTransactionClient({
    baseUrl: opts.fhirBaseUrl,
    auth,
    timeoutMs,
    onRetry: (status, attempt) => {
      opts.logger.warn('fhir retry', { operation: 'transaction', status: status ?? null, attempt });
    },
  });
  return {
    close: () => {
      transactions.close();
    },
    ports: {
      fhir,
      writer: createReportWriter(transactions, { concurrency: opts.writeConcurrency ?? 8 }),
      inference: createInvoker({
        client: opts.sagemaker,
        endpointMode: opts.endpointMode ?? 'per-model',
        endpointPrefix: opts.endpointPrefix ?? '',
        ...(opts.multiModelEndpointName ? { multiModelEndpointName: opts.multiModelEndpointName } : {}),
        timeoutMs: Math.max(timeoutMs, 70_000),
        logger: opts.logger,
      }),
      extractor: extractorOf,
      buildReport: (args) => buildReportTransaction({ ...args, modelCard: cards.get(args.manifest.id) }),
      isOwnWrite: isWrittenByFhirAnalytics,
      logger: opts.logger,
      ...(opts.writeConcurrency ? { writeConcurrency: opts.writeConcurrency } : {}),
    },
    models: registry,
    bulk: createBulkClient({
      baseUrl: opts.fhirBaseUrl,
      // Auth headers go to the FHIR server only (never to a storage host serving the files).
      fetch: (input, init) =>
        authFetch(
          typeof input === 'string' ? input : input instanceof URL ? input.href : input.url,
          init ?? {},
        ),
      ...(opts.exportMaxWaitMs ? { maxWaitMs: opts.exportMaxWaitMs } : {}),
      onTypeFilterRefused: (status) => {
        opts.logger.warn('export _typeFilter refused; kicking off without it', { status });
      },
    }),
    ...(opts.exportMaxWaitMs ? { exportMaxWaitMs: opts.exportMaxWaitMs } : {}),
    store: { s3: opts.s3, bucket: opts.bucket },
    checkpoints: createCheckpointStore(opts.dynamo, opts.table ?? DEFAULT_SWEEP_TABLE),
    tmpDir: opts.tmpDir,
    // The tag code every own write carries (`isWrittenByFhirAnalytics`), as JSON text.
    ownWriteMarker: JSON.stringify(TAG_WRITTEN_BY),
    ...(opts.prefix ? { prefix: opts.prefix } : {}),
    ...opts.extra,
  };
}
