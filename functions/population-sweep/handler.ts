/**
 * population-sweep: three Lambda entry points for the Step Functions state machine (infra
 * wires them; docs/sweeps.md draws it):
 *
 *   EventBridge Scheduler ─▶ state machine
 *     1. startHandler   { definition, sweepId? } → { sweepId, bucket, itemsKey, items, mode, resumed }
 *     2. Distributed Map, ItemReader = s3://<bucket>/<itemsKey> (a JSON array), one
 *        itemHandler call per item:
 *          { sweepId, partition, keys: ["sweeps/<id>/attempt-1/p0003/000001.kndjson", …],
 *            mode: "full" | "incremental", lines }
 *        → { sweepId, partition, patients, written, unchanged, insufficientData, failed }
 *        (idempotent and resumable: a retried item continues after its last checkpoint)
 *     3. finishHandler  { sweepId } → the summary (counts, histograms; failed patients by reference)
 *
 * The logic is in shared/sweep; this file only builds the context once per cold start.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import type { z } from 'zod';
import { loadConfig, type Config } from '../../shared/config.js';
import { createFhirAuth } from '../../shared/fhir/auth-config.js';
import { endpointAddressing } from '../../shared/inference/addressing.js';
import { createSageMakerClient } from '../../shared/inference/client.js';
import { createLogger, type Logger } from '../../shared/log.js';
import { logInvocation, parseEvent } from '../../shared/middleware.js';
import { parseSweepConfig, type SweepConfig } from '../../shared/sweep/config.js';
import { createSweepContext } from '../../shared/sweep/context.js';
import { FinishSweepEventSchema, StartSweepEventSchema, SweepItemSchema } from '../../shared/sweep/events.js';
import type { SweepSummary } from '../../shared/sweep/summary.js';
import { finishSweep, processItem, startSweep, type SweepContext } from '../../shared/sweep/sweep.js';

export interface StartResponse {
  sweepId: string;
  bucket: string;
  itemsKey: string;
  items: number;
  mode: 'full' | 'incremental';
  resumed: boolean;
}

export interface ItemResponse {
  sweepId: string;
  partition: number;
  patients: number;
  written: number;
  unchanged: number;
  insufficientData: number;
  failed: number;
}

/** The sweep context from configuration (AWS clients from the default chain, endpoints overridable). */
export function contextFromConfig(config: Config, sweep: SweepConfig, logger: Logger): Promise<SweepContext> {
  const region = config.AWS_REGION;
  return createSweepContext({
    fhirBaseUrl: config.FHIR_BASE_URL,
    // FHIR_AUTH_MODE (set by infra) selects the shared FHIR auth; else the sweep's own settings.
    ...(config.FHIR_AUTH_MODE ? { fhirAuth: createFhirAuth(config) } : {}),
    auth:
      sweep.FHIR_TOKEN_URL && sweep.FHIR_CLIENT_ID && sweep.FHIR_CLIENT_SECRET
        ? {
            kind: 'client-credentials',
            tokenUrl: sweep.FHIR_TOKEN_URL,
            clientId: sweep.FHIR_CLIENT_ID,
            clientSecret: sweep.FHIR_CLIENT_SECRET,
            ...(sweep.FHIR_SCOPE ? { scope: sweep.FHIR_SCOPE } : {}),
          }
        : config.FHIR_BEARER_TOKEN
          ? { kind: 'bearer', token: config.FHIR_BEARER_TOKEN }
          : { kind: 'none' },
    sagemaker: createSageMakerClient({
      region,
      ...(config.SAGEMAKER_ENDPOINT_URL ? { endpoint: config.SAGEMAKER_ENDPOINT_URL } : {}),
    }),
    ...endpointAddressing(config),
    s3: new S3Client({
      region,
      ...(sweep.S3_ENDPOINT_URL ? { endpoint: sweep.S3_ENDPOINT_URL, forcePathStyle: true } : {}),
    }),
    bucket: sweep.SWEEP_BUCKET,
    prefix: sweep.SWEEP_PREFIX,
    dynamo: new DynamoDBClient({
      region,
      ...(config.DYNAMODB_ENDPOINT_URL ? { endpoint: config.DYNAMODB_ENDPOINT_URL } : {}),
    }),
    table: sweep.SWEEP_TABLE,
    modelsDir: config.MODELS_DIR,
    tmpDir: sweep.SWEEP_TMP_DIR,
    logger,
    callTimeoutMs: config.CALL_TIMEOUT_MS,
    exportMaxWaitMs: sweep.SWEEP_EXPORT_MAX_WAIT_MS,
    writeConcurrency: sweep.SWEEP_WRITE_CONCURRENCY,
  });
}

/** Builds the three handlers around a context factory, called once per cold start. */
export function createPopulationSweepHandlers(logger: Logger, getContext: () => Promise<SweepContext>) {
  let ctx: Promise<SweepContext> | undefined;
  const context = (): Promise<SweepContext> => (ctx ??= getContext());

  const start = async (
    event: z.infer<typeof StartSweepEventSchema>,
    _context: Context,
  ): Promise<StartResponse> => {
    const c = await context();
    const result = await startSweep(c, event.definition, event.sweepId ? { sweepId: event.sweepId } : {});
    return {
      sweepId: result.sweepId,
      bucket: c.store.bucket,
      itemsKey: result.itemsKey,
      items: result.items.length,
      mode: result.mode,
      resumed: result.resumed,
    };
  };
  const item = async (event: z.infer<typeof SweepItemSchema>, _context: Context): Promise<ItemResponse> => {
    const checkpoint = await processItem(await context(), event);
    const t = checkpoint.tally;
    return { sweepId: event.sweepId, partition: event.partition, patients: t.patients, ...t.outcomes };
  };
  const finish = async (
    event: z.infer<typeof FinishSweepEventSchema>,
    _context: Context,
  ): Promise<SweepSummary> => finishSweep(await context(), event.sweepId);

  return {
    startHandler: middy(start).use(parseEvent(StartSweepEventSchema)).use(logInvocation(logger)),
    itemHandler: middy(item).use(parseEvent(SweepItemSchema)).use(logInvocation(logger)),
    finishHandler: middy(finish).use(parseEvent(FinishSweepEventSchema)).use(logInvocation(logger)),
  };
}

const logger = createLogger({ base: { fn: 'population-sweep' } });
const handlers = createPopulationSweepHandlers(logger, () =>
  contextFromConfig(loadConfig(), parseSweepConfig(process.env), logger),
);
export const startHandler = handlers.startHandler;
export const itemHandler = handlers.itemHandler;
export const finishHandler = handlers.finishHandler;
