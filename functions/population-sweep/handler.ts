/**
 * population-sweep: the Lambda entry points of the Step Functions state machine (infra wires
 * them, one function each; docs/sweeps.md draws it):
 *
 *   EventBridge Scheduler ─▶ state machine
 *     1. startHandler   { definition, sweepId, attempt?, poll?, minPollSeconds?, maxPolls? } → the
 *                       sweep's state (`SweepState`): phase "exporting" (statusUrl, waitSeconds),
 *                       or "staged" (resumed, search); the poll loop's floor defaults to 30 s
 *     1b. searchHandler (no `$export`: phase "searching") the state → pages of the search until
 *                       its time budget → "searching" again (the cursor in S3), or "staged" —
 *                       a Task/Choice loop; past maxSearchCalls, SearchLimitError
 *     2. pollHandler    the state → one status request → "exporting" again (waitSeconds from
 *                       Retry-After, whole seconds, ≥ the floor), or "exported" (files.json in
 *                       S3) — a Wait/Choice loop; past maxPolls, ExportTimeoutError
 *     3. Distributed Map, ItemReader = s3://<bucket>/<filesKey>, one stageFileHandler call per
 *        export file: { sweepId, attempt, index } (the file's URL is read from S3)
 *        → { sweepId, index, lines } (idempotent: a retry rewrites the same parts)
 *     4. planHandler    the state → merges the files' partitions → "staged" (a key list per
 *                       partition, items.json)
 *     5. Distributed Map, ItemReader = s3://<bucket>/<itemsKey>, one itemHandler call per item:
 *          { sweepId, partition, keysKey: "sweeps/<id>/attempt-1/items/p0003.json",
 *            mode: "full" | "incremental", lines }
 *        → { sweepId, partition, patients, written, unchanged, insufficientData, failed }
 *        (idempotent and resumable: a retried item continues after its last checkpoint)
 *     6. finishHandler  { sweepId } → the summary (counts, histograms; failed patients by reference)
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
import {
  FinishSweepEventSchema,
  PlanSweepEventSchema,
  PollSweepEventSchema,
  SearchSweepEventSchema,
  StageFileItemSchema,
  StartSweepEventSchema,
  SweepItemSchema,
} from '../../shared/sweep/events.js';
import { DEFAULT_MAX_SEARCH_CALLS, searchStep } from '../../shared/sweep/search-steps.js';
import { planItems, stageFile } from '../../shared/sweep/stage-files.js';
import {
  beginSweep,
  DEFAULT_MAX_POLLS,
  DEFAULT_MIN_POLL_SECONDS,
  pollExport,
  type SweepState,
} from '../../shared/sweep/steps.js';
import type { SweepSummary } from '../../shared/sweep/summary.js';
import { finishSweep, processItem, type SweepContext } from '../../shared/sweep/sweep.js';

/** Begin, poll and plan answer the sweep's state; the state machine's Choice reads its phase. */
export type StartResponse = SweepState;

export interface StageFileResponse {
  sweepId: string;
  index: number;
  lines: number;
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
    extra: { stage: { searchBudgetMs: sweep.SWEEP_SEARCH_BUDGET_MS } },
  });
}

/** Builds the handlers around a context factory, called once per cold start. */
export function createPopulationSweepHandlers(logger: Logger, getContext: () => Promise<SweepContext>) {
  let ctx: Promise<SweepContext> | undefined;
  const context = (): Promise<SweepContext> => (ctx ??= getContext());

  const start = async (
    event: z.infer<typeof StartSweepEventSchema>,
    _context: Context,
  ): Promise<SweepState> =>
    beginSweep(await context(), event.definition, {
      ...(event.sweepId ? { sweepId: event.sweepId } : {}),
      ...(event.attempt ? { attempt: event.attempt } : {}),
      ...(event.poll ? { poll: event.poll } : {}),
      // This entry point begins the Wait/Choice loop: its floor and bound, whoever starts it.
      minPollSeconds: event.minPollSeconds ?? DEFAULT_MIN_POLL_SECONDS,
      maxPolls: event.maxPolls ?? DEFAULT_MAX_POLLS,
      maxSearchCalls: event.maxSearchCalls ?? DEFAULT_MAX_SEARCH_CALLS,
    });
  const search = async (
    event: z.infer<typeof SearchSweepEventSchema>,
    context_: Context,
  ): Promise<SweepState> => {
    const ctx = await context();
    // The configured budget, or less: a margin of 2 minutes before this call's own timeout.
    const left =
      typeof context_.getRemainingTimeInMillis === 'function'
        ? context_.getRemainingTimeInMillis()
        : undefined;
    const budget = ctx.stage?.searchBudgetMs;
    const budgetMs = left === undefined ? budget : Math.max(1_000, Math.min(budget ?? left, left - 120_000));
    return (await searchStep(ctx, event, budgetMs === undefined ? {} : { budgetMs })).state;
  };
  const poll = async (event: z.infer<typeof PollSweepEventSchema>, _context: Context): Promise<SweepState> =>
    pollExport(await context(), event);
  const stage = async (
    event: z.infer<typeof StageFileItemSchema>,
    _context: Context,
  ): Promise<StageFileResponse> => {
    const staged = await stageFile(await context(), event);
    return { sweepId: event.sweepId, index: event.index, lines: staged.lines };
  };
  const plan = async (event: z.infer<typeof PlanSweepEventSchema>, _context: Context): Promise<SweepState> =>
    (await planItems(await context(), event)).state;
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
    pollHandler: middy(poll).use(parseEvent(PollSweepEventSchema)).use(logInvocation(logger)),
    searchHandler: middy(search).use(parseEvent(SearchSweepEventSchema)).use(logInvocation(logger)),
    stageFileHandler: middy(stage).use(parseEvent(StageFileItemSchema)).use(logInvocation(logger)),
    planHandler: middy(plan).use(parseEvent(PlanSweepEventSchema)).use(logInvocation(logger)),
    itemHandler: middy(item).use(parseEvent(SweepItemSchema)).use(logInvocation(logger)),
    finishHandler: middy(finish).use(parseEvent(FinishSweepEventSchema)).use(logInvocation(logger)),
  };
}

const logger = createLogger({ base: { fn: 'population-sweep' } });
const handlers = createPopulationSweepHandlers(logger, () =>
  contextFromConfig(loadConfig(), parseSweepConfig(process.env), logger),
);
export const startHandler = handlers.startHandler;
export const pollHandler = handlers.pollHandler;
export const searchHandler = handlers.searchHandler;
export const stageFileHandler = handlers.stageFileHandler;
export const planHandler = handlers.planHandler;
export const itemHandler = handlers.itemHandler;
export const finishHandler = handlers.finishHandler;
