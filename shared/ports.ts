/**
 * Builds the pipeline's ports from configuration, once per cold start: the FHIR gateway, the
 * SageMaker invoker, the model registry and the compiled feature extractors.
 */
import type { DiagnosticReport, Endpoint } from '@medplum/fhirtypes';
import type { Config } from './config.js';
import type { FhirAuthProvider } from './fhir/auth.js';
import { createFhirAuth } from './fhir/auth-config.js';
import { createFhirGateway } from './fhir/gateway.js';
import {
  compileExtractor as compileObservationExtractor,
  compileImageExtractor,
  UnitConverterCache,
} from './features/index.js';
import { endpointAddressing } from './inference/addressing.js';
import { createSageMakerClient } from './inference/client.js';
import { createInvoker } from './inference/invoker.js';
import type { ModelManifest } from './inference/manifest.js';
import { createRegistry, loadRegistry } from './inference/registry.js';
import type { Logger } from './log.js';
import type { ExtractorLike, ImageExtractorLike, PipelinePorts } from './pipeline.js';
import {
  buildReportTransaction,
  createModelResourceCache,
  findStoredModelEntry,
  IDEMPOTENCY_KEY_SYSTEM,
  idempotencyKey,
  isWrittenByFhirAnalytics,
  loadModelCards,
} from './reports/index.js';

/** Compiles a tabular or sequence model's extractor (image models use compileImageExtractor). */
export { compileObservationExtractor as compileExtractor };

export interface PipelinePortsOverrides {
  /** Replaces the auth provider built from configuration (`createFhirAuth`). */
  readonly fhirAuth?: FhirAuthProvider;
}

export async function createPipelinePorts(
  config: Config,
  logger: Logger,
  overrides: PipelinePortsOverrides = {},
): Promise<PipelinePorts> {
  const fhir = createFhirGateway({
    baseUrl: config.FHIR_BASE_URL,
    timeoutMs: config.CALL_TIMEOUT_MS,
    auth: overrides.fhirAuth ?? createFhirAuth(config),
    onRetry: (operation, status, attempt) => {
      logger.warn('fhir retry', { operation, status: status ?? null, attempt });
    },
  });
  const loaded = await loadRegistry(config.MODELS_DIR);
  const imaging = config.DICOMWEB_ALLOWED_BASE_URLS.length > 0;
  const usable = loaded.all().filter((m) => m.input.kind !== 'image' || imaging);
  for (const m of loaded.all().filter((x) => !usable.includes(x))) {
    logger.warn('image model off: no DICOMweb allow-list configured', { model: m.id });
  }
  const registry = createRegistry(usable);
  // Every report names its model card: read them now, so a missing card fails the cold start.
  const cards = await loadModelCards(config.MODELS_DIR, usable);
  // Compile every extractor now, once per cold start, so a bad manifest fails at start.
  const units = new UnitConverterCache();
  const extractors = new Map<string, ExtractorLike>();
  const imageExtractors = new Map<string, ImageExtractorLike>();
  for (const m of usable) {
    if (m.input.kind === 'image') {
      imageExtractors.set(
        m.id,
        compileImageExtractor(m.input, {
          fetch: globalThis.fetch,
          allowList: config.DICOMWEB_ALLOWED_BASE_URLS,
          timeoutMs: config.CALL_TIMEOUT_MS,
          // ImagingStudy.endpoint names an Endpoint on the same FHIR server.
          resolveEndpoint: async (reference) => {
            const match = /^Endpoint\/([A-Za-z0-9\-.]{1,64})$/.exec(reference);
            return match?.[1] ? fhir.read<Endpoint>('Endpoint', match[1]) : undefined;
          },
        }),
      );
    } else {
      extractors.set(m.id, compileObservationExtractor(m, { units }));
    }
  }
  const lookup = <T>(map: Map<string, T>, m: ModelManifest): T => {
    const found = map.get(m.id);
    if (!found) throw new Error(`model ${m.id} has no compiled extractor of this kind`);
    return found;
  };
  // Keep-alive agents; placeholder credentials only for the local endpoint server.
  const client = createSageMakerClient({
    region: config.AWS_REGION,
    ...(config.SAGEMAKER_ENDPOINT_URL ? { endpoint: config.SAGEMAKER_ENDPOINT_URL } : {}),
  });
  return {
    fhir,
    inference: createInvoker({
      client,
      ...endpointAddressing(config),
      timeoutMs: config.CALL_TIMEOUT_MS,
      logger,
    }),
    models: registry,
    extractor: (manifest) => lookup(extractors, manifest),
    imageExtractor: (manifest) => lookup(imageExtractors, manifest),
    buildReport: (args) => buildReportTransaction({ ...args, modelCard: cards.get(args.manifest.id) }),
    modelResources: createModelResourceCache({ findStored: findStoredModelEntry(fhir) }),
    findReport: async (manifest, patient, row) => {
      const key = idempotencyKey(manifest.id, manifest.version, patient, row.inputs);
      const [found] = await fhir.searchAll<DiagnosticReport>(
        'DiagnosticReport',
        { identifier: `${IDEMPOTENCY_KEY_SYSTEM}|${key}`, _count: '1' },
        { maxResources: 1 },
      );
      return found?.id ? `DiagnosticReport/${found.id}` : undefined;
    },
    isOwnWrite: isWrittenByFhirAnalytics,
    logger,
  };
}
