/**
 * Builds the pipeline's ports from configuration, once per cold start: the FHIR gateway, the
 * SageMaker invoker, the model registry and the compiled feature extractors.
 */
import { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import type { Resource } from '@medplum/fhirtypes';
import type { Config } from './config.js';
import { createFhirGateway } from './fhir/gateway.js';
import { compileExtractor } from './features/index.js';
import { createInvoker } from './inference/invoker.js';
import type { ModelManifest } from './inference/manifest.js';
import { loadRegistry } from './inference/registry.js';
import type { Logger } from './log.js';
import type { ExtractorLike, PipelinePorts } from './pipeline.js';
import { buildReportTransaction, SYSTEM_TAG } from './reports/index.js';

/** True for resources this system wrote (its `meta.tag`): events about them are ignored. */
export function isOwnWrite(resource: Resource): boolean {
  return (resource.meta?.tag ?? []).some((t) => t.system === SYSTEM_TAG.system && t.code === SYSTEM_TAG.code);
}

export async function createPipelinePorts(config: Config, logger: Logger): Promise<PipelinePorts> {
  const registry = await loadRegistry(config.MODELS_DIR);
  const client = new SageMakerRuntimeClient({
    region: config.AWS_REGION,
    ...(config.SAGEMAKER_ENDPOINT_URL
      ? {
          endpoint: config.SAGEMAKER_ENDPOINT_URL,
          // The local endpoint server does not check signatures; real credentials are used in AWS.
          credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
        }
      : {}),
  });
  const extractors = new Map<string, ExtractorLike>();
  return {
    fhir: createFhirGateway({
      baseUrl: config.FHIR_BASE_URL,
      timeoutMs: config.CALL_TIMEOUT_MS,
      ...(config.FHIR_BEARER_TOKEN ? { bearerToken: config.FHIR_BEARER_TOKEN } : {}),
      onRetry: (operation, status, attempt) => {
        logger.warn('fhir retry', { operation, status: status ?? null, attempt });
      },
    }),
    inference: createInvoker({
      client,
      endpointName: (m: ModelManifest) => `${config.SAGEMAKER_ENDPOINT_PREFIX}${m.id}`,
      timeoutMs: config.CALL_TIMEOUT_MS,
      logger,
    }),
    models: registry,
    extractor: (manifest) => {
      let e = extractors.get(manifest.id);
      if (!e) {
        e = compileExtractor(manifest);
        extractors.set(manifest.id, e);
      }
      return e;
    },
    buildReport: buildReportTransaction,
    isOwnWrite,
    logger,
  };
}
