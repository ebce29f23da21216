/**
 * Builds a sweep's context from clients and settings, once per cold start (or per CLI run):
 * the FHIR gateway and bulk client with the sweep's credentials, the SageMaker invoker, the
 * model registry with its compiled extractors, the S3 staging store and the DynamoDB
 * checkpoint store. Every client is passed in.
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { S3Client } from '@aws-sdk/client-s3';
import type { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { compileExtractor } from '../features/index.js';
import { createFhirGateway, type FhirGateway } from '../fhir/gateway.js';
import { createInvoker } from '../inference/invoker.js';
import type { ModelManifest } from '../inference/manifest.js';
import { loadRegistry } from '../inference/registry.js';
import type { Logger } from '../log.js';
import type { ExtractorLike } from '../pipeline.js';
import { buildReportTransaction, isWrittenByFhirAnalytics } from '../reports/index.js';
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
  readonly sagemaker: SageMakerRuntimeClient;
  /** Endpoint name = prefix + model id. Default ''. */
  readonly endpointPrefix?: string;
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

/** A gateway that picks up refreshed tokens (fhir-kit-client takes its token at construction). */
function gatewayWithTokens(
  baseUrl: string,
  tokens: TokenProvider,
  timeoutMs: number,
  logger: Logger,
): FhirGateway {
  let current: { token: string | undefined; gateway: FhirGateway } | undefined;
  const gateway = async (): Promise<FhirGateway> => {
    const token = await tokens.token();
    if (current?.token !== token || !current) {
      current = {
        token,
        gateway: createFhirGateway({
          baseUrl,
          timeoutMs,
          ...(token ? { bearerToken: token } : {}),
          onRetry: (operation, status, attempt) => {
            logger.warn('fhir retry', { operation, status: status ?? null, attempt });
          },
        }),
      };
    }
    return current.gateway;
  };
  return {
    read: async <T extends Resource>(type: T['resourceType'], id: string) =>
      (await gateway()).read<T>(type, id),
    searchAll: async <T extends Resource>(
      type: T['resourceType'],
      params: Readonly<Record<string, string>>,
      o?: { maxResources?: number },
    ) => (await gateway()).searchAll<T>(type, params, o),
    transaction: async (bundle: Bundle) => (await gateway()).transaction(bundle),
  };
}

export async function createSweepContext(opts: SweepContextOptions): Promise<SweepContext> {
  const registry = await loadRegistry(opts.modelsDir);
  const extractors = new Map<string, ExtractorLike>();
  const extractorOf = (m: ModelManifest): ExtractorLike => {
    let e = extractors.get(m.id);
    if (!e) extractors.set(m.id, (e = compileExtractor(m)));
    return e;
  };
  const tokens = createTokenProvider(opts.auth ?? { kind: 'none' });
  const timeoutMs = opts.callTimeoutMs ?? 30_000;
  const prefix = opts.endpointPrefix ?? '';
  const fhir = gatewayWithTokens(opts.fhirBaseUrl, tokens, timeoutMs, opts.logger);
  // The write-back's transactions go through a lean keep-alive client (see transaction-client.ts).
  const transactions = createTransactionClient({
    baseUrl: opts.fhirBaseUrl,
    headers: () => tokens.headers(),
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
        endpointName: (m) => `${prefix}${m.id}`,
        timeoutMs: Math.max(timeoutMs, 70_000),
        logger: opts.logger,
      }),
      extractor: extractorOf,
      buildReport: buildReportTransaction,
      isOwnWrite: isWrittenByFhirAnalytics,
      logger: opts.logger,
      ...(opts.writeConcurrency ? { writeConcurrency: opts.writeConcurrency } : {}),
    },
    models: registry,
    bulk: createBulkClient({
      baseUrl: opts.fhirBaseUrl,
      headers: () => tokens.headers(),
      ...(opts.exportMaxWaitMs ? { maxWaitMs: opts.exportMaxWaitMs } : {}),
    }),
    store: { s3: opts.s3, bucket: opts.bucket },
    checkpoints: createCheckpointStore(opts.dynamo, opts.table ?? DEFAULT_SWEEP_TABLE),
    tmpDir: opts.tmpDir,
    // The tag code every own write carries (`isWrittenByFhirAnalytics`), as JSON text.
    ownWriteMarker: JSON.stringify(TAG_WRITTEN_BY),
    ...(opts.prefix ? { prefix: opts.prefix } : {}),
    ...opts.extra,
  };
}
