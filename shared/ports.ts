/**
 * Builds the pipeline's ports from configuration, once per cold start: the FHIR gateway, the
 * SageMaker invoker, the model registry and the compiled feature extractors.
 */
import { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import type { Config } from './config.js';
import { createFhirGateway } from './fhir/gateway.js';
import { compileTabular } from './features/index.js';
import { createInvoker } from './inference/invoker.js';
import type { ModelManifest } from './inference/manifest.js';
import { createRegistry, loadRegistry } from './inference/registry.js';
import type { Logger } from './log.js';
import type { ExtractorLike, PipelinePorts } from './pipeline.js';
import { buildReportTransaction, isWrittenByFhirAnalytics } from './reports/index.js';

/** Input kinds the event pipeline can extract today; models of other kinds are left out, with a log line. */
const SUPPORTED_INPUTS: ReadonlySet<ModelManifest['input']['kind']> = new Set(['tabular']);

/** Compiles a model's feature spec once. */
export function compileExtractor(manifest: ModelManifest): ExtractorLike {
  if (manifest.input.kind !== 'tabular') {
    throw new Error(
      `model ${manifest.id}: ${manifest.input.kind} inputs are not supported by this pipeline yet`,
    );
  }
  return compileTabular(manifest.input);
}

export async function createPipelinePorts(config: Config, logger: Logger): Promise<PipelinePorts> {
  const loaded = await loadRegistry(config.MODELS_DIR);
  const usable = loaded.all().filter((m) => SUPPORTED_INPUTS.has(m.input.kind));
  for (const m of loaded.all().filter((x) => !SUPPORTED_INPUTS.has(x.input.kind))) {
    logger.warn('model not served by the event pipeline', { model: m.id, input: m.input.kind });
  }
  const registry = createRegistry(usable);
  // Compile every extractor now, once per cold start, so a bad manifest fails at start.
  const extractors = new Map<string, ExtractorLike>(usable.map((m) => [m.id, compileExtractor(m)]));
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
    extractor: (manifest) => extractors.get(manifest.id) ?? compileExtractor(manifest),
    buildReport: buildReportTransaction,
    isOwnWrite: isWrittenByFhirAnalytics,
    logger,
  };
}
