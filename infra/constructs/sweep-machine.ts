/**
 * The population sweep's state machine definition (the states, their retries and catches);
 * infra/constructs/sweep.ts wraps it in the StateMachine, its role, logs and schedules.
 *
 *   Prepare  { definition, sweepId: <execution name>, attempt: 1, minPollSeconds, maxPolls,
 *              maxSearchCalls } → $.begin
 *   Begin    startHandler → $.sweep (the sweep's state: `SweepState`)
 *   Phase    Choice on $.sweep.phase:
 *              exporting → WaitForExport (SecondsPath $.sweep.waitSeconds: whole seconds, at
 *                          least `minPollInterval`) → Poll (pollHandler) → Phase; past `maxPolls`
 *                          polls Poll fails (ExportTimeoutError)
 *              searching → Search (searchHandler: pages of the paged-search fallback until its
 *                          time budget, the cursor in S3) → Phase; 'staged' at the end; past
 *                          `maxSearchCalls` calls Search fails (SearchLimitError)
 *              exported  → Stage: Distributed Map over s3://{bucket}/{filesKey} (files.json:
 *                          { sweepId, attempt, index }, no download URL), one stageFileHandler
 *                          call per export file, `stageConcurrency` at once (protects the FHIR
 *                          server), each child's output `{}` → Plan (planHandler) → Items
 *              otherwise (staged: resumed, or the search done) → Items
 *   Items    Distributed Map over s3://{bucket}/{itemsKey} (items.json: small items that name
 *            their key lists), each item → itemHandler, `maxConcurrency` at once, output `{}`
 *   Finish   finishHandler { sweepId } → the summary (also in S3, so discarded here)
 *
 * History: a poll adds about 9 events, a Search call 7 (Task entered, scheduled, started,
 * succeeded, exited; Choice entered, exited), so the bounds (1,500 polls: 13,500; 1,000 Search
 * calls: 7,000; 20,500 together) keep an execution under the 25,000 events it may have.
 */
import { Duration } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import {
  Choice,
  Condition,
  DistributedMap,
  Fail,
  JsonPath,
  Pass,
  S3JsonItemReader,
  TaskInput,
  Wait,
  WaitTime,
  type IChainable,
  type TaskStateBase,
} from 'aws-cdk-lib/aws-stepfunctions';
import { DynamoAttributeValue, DynamoPutItem, LambdaInvoke } from 'aws-cdk-lib/aws-stepfunctions-tasks';
import type { Construct } from 'constructs';
import { FhirUnavailableError } from '../../shared/fhir/errors.js';
import {
  CircuitOpenError,
  InferenceInternalDependencyError,
  InferenceInternalFailureError,
  InferenceModelNotReadyError,
  InferenceNetworkError,
  InferenceServiceUnavailableError,
  InferenceThrottlingError,
  InferenceTimeoutError,
} from '../../shared/inference/errors.js';
import { ExportExpiredError } from '../../shared/sweep/errors.js';
import { DEFAULT_MAX_SEARCH_CALLS } from '../../shared/sweep/search-steps.js';
import { DEFAULT_MAX_POLLS, DEFAULT_MIN_POLL_SECONDS } from '../../shared/sweep/steps.js';

/** Lambda's own transient errors (the service, the SDK Step Functions calls it with, throttling). */
export const LAMBDA_SERVICE_ERRORS = [
  'Lambda.ServiceException',
  'Lambda.AWSLambdaException',
  'Lambda.SdkClientException',
  'Lambda.ClientExecutionTimeoutException',
  'Lambda.TooManyRequestsException',
] as const;

/**
 * The handler's errors worth another attempt (their `name` is the Lambda error type Step
 * Functions matches): the FHIR server or an endpoint unavailable for now, and the AWS SDK's
 * throttling and 5xx answers from S3 and DynamoDB. Everything else (a bad definition or event,
 * a failed export, items not done) would fail again. Not `ExportExpiredError`: the same files
 * stay expired; the state machine kicks the export off again instead.
 */
export const RETRYABLE_ERRORS: readonly string[] = [
  ...[
    FhirUnavailableError,
    InferenceThrottlingError,
    InferenceServiceUnavailableError,
    InferenceInternalFailureError,
    InferenceInternalDependencyError,
    InferenceModelNotReadyError,
    InferenceTimeoutError,
    InferenceNetworkError,
    CircuitOpenError,
  ].map((e) => e.name),
  'ThrottlingException',
  'ProvisionedThroughputExceededException',
  'RequestLimitExceeded',
  'InternalServerError',
  'SlowDown',
  'InternalError',
  'ServiceUnavailable',
  'TimeoutError',
];

/** Export files staged at once by default: each one streams a file from the FHIR server. */
export const SWEEP_STAGE_CONCURRENCY = 10;

export interface SweepFunctions {
  /** `startHandler`: kick the export off (or stage by search, or find the sweep staged). */
  readonly start: IFunction;
  /** `pollHandler`: one export status request. */
  readonly poll: IFunction;
  /** `searchHandler`: pages of the paged-search fallback, one time budget's worth. */
  readonly search: IFunction;
  /** `stageFileHandler`: one export file into the staged partitions. */
  readonly stageFile: IFunction;
  /** `planHandler`: the staged files merged into the items. */
  readonly plan: IFunction;
  /** `itemHandler`: one Distributed Map item. */
  readonly item: IFunction;
  /** `finishHandler`: the summary; advances the next incremental `_since`. */
  readonly finish: IFunction;
}

export interface SweepMachineProps {
  readonly functions: SweepFunctions;
  /** The checkpoint table; failures are recorded in it. */
  readonly table: ITable;
  /** Concurrent item workers (the Items Distributed Map's children). */
  readonly maxConcurrency: number;
  /** Concurrent export files staged (the Stage Distributed Map's children). Default `SWEEP_STAGE_CONCURRENCY`. */
  readonly stageConcurrency?: number;
  /** Kick-offs of the export while its files keep expiring. Default 2. */
  readonly maxExportAttempts?: number;
  /**
   * The export poll loop's shortest Wait, whatever Retry-After asks (whole seconds). Default
   * `DEFAULT_MIN_POLL_SECONDS` (30 s).
   */
  readonly minPollInterval?: Duration;
  /** Polls of the export before the sweep fails (across kick-offs). Default `DEFAULT_MAX_POLLS`. */
  readonly maxPolls?: number;
  /** Search calls (paged-search fallback) before the sweep fails. Default `DEFAULT_MAX_SEARCH_CALLS`. */
  readonly maxSearchCalls?: number;
  /** Share of items that may fail before the map fails. Default 0: a sweep is all or nothing. */
  readonly toleratedFailurePercentage?: number;
}

/** The states, from Prepare on, created in `scope`. */
export function sweepMachine(scope: Construct, props: SweepMachineProps): IChainable {
  const { functions: fns } = props;
  const retries = (task: TaskStateBase, extra: readonly string[] = []): void => {
    // About 8 minutes in all: long enough for a sweep whose schedules overlap to wait out the
    // item worker's reserved concurrency (Lambda.TooManyRequestsException).
    task.addRetry({
      errors: [...LAMBDA_SERVICE_ERRORS],
      interval: Duration.seconds(2),
      maxAttempts: 8,
      backoffRate: 2,
      maxDelay: Duration.minutes(5),
    });
    task.addRetry({
      errors: [...RETRYABLE_ERRORS, ...extra],
      interval: Duration.seconds(30),
      maxAttempts: 3,
      backoffRate: 2,
    });
  };
  const invoke = (
    name: string,
    fn: IFunction,
    payload: TaskInput,
    resultPath: string,
    noOutput = false,
  ): LambdaInvoke =>
    new LambdaInvoke(scope, name, {
      lambdaFunction: fn,
      payload,
      resultSelector: { 'Payload.$': '$.Payload' },
      resultPath,
      ...(noOutput ? { outputPath: JsonPath.DISCARD } : {}),
      retryOnServiceExceptions: false,
    });

  const state = (field: string): string => `$.sweep.Payload.${field}`;
  // The poll loop's floor and bound travel in the sweep's state from Begin on.
  const loop = {
    minPollSeconds: Math.max(1, props.minPollInterval?.toSeconds() ?? DEFAULT_MIN_POLL_SECONDS),
    maxPolls: props.maxPolls ?? DEFAULT_MAX_POLLS,
    maxSearchCalls: props.maxSearchCalls ?? DEFAULT_MAX_SEARCH_CALLS,
  };
  const prepare = new Pass(scope, 'Prepare', {
    parameters: {
      definition: JsonPath.objectAt('$.definition'),
      sweepId: JsonPath.executionName,
      attempt: 1,
      ...loop,
    },
    resultPath: '$.begin',
  });
  const begin = invoke('Begin', fns.start, TaskInput.fromJsonPathAt('$.begin'), '$.sweep');
  retries(begin);
  const poll = invoke('Poll', fns.poll, TaskInput.fromJsonPathAt('$.sweep.Payload'), '$.sweep');
  retries(poll);
  // A Search call that timed out goes on from the cursor its last successful call wrote.
  const search = invoke('Search', fns.search, TaskInput.fromJsonPathAt('$.sweep.Payload'), '$.sweep');
  retries(search, ['Sandbox.Timedout']);
  const waitForExport = new Wait(scope, 'WaitForExport', {
    time: WaitTime.secondsPath(state('waitSeconds')),
  });

  // A map child's output is `{}`: a Distributed Map without a ResultWriter gathers its
  // children's outputs, and 10^4 files' worth would pass the 256 KiB state limit.
  const stageFile = invoke('StageFile', fns.stageFile, TaskInput.fromJsonPathAt('$'), JsonPath.DISCARD, true);
  // A timed-out file is staged again from the start: it rewrites the same parts.
  retries(stageFile, ['Sandbox.Timedout']);
  // An expired file leaves a marker for Plan, which decides on a new kick-off for the whole export.
  stageFile.addCatch(new Pass(scope, 'FileExpired', { outputPath: JsonPath.DISCARD }), {
    errors: [ExportExpiredError.name],
    resultPath: JsonPath.DISCARD,
  });
  const stage = new DistributedMap(scope, 'Stage', {
    itemReader: new S3JsonItemReader({
      bucketNamePath: JsonPath.stringAt(state('bucket')),
      key: JsonPath.stringAt(state('filesKey')),
    }),
    maxConcurrency: props.stageConcurrency ?? SWEEP_STAGE_CONCURRENCY,
    toleratedFailurePercentage: 0,
    resultPath: JsonPath.DISCARD,
  });
  stage.itemProcessor(stageFile);
  const plan = invoke('Plan', fns.plan, TaskInput.fromJsonPathAt('$.sweep.Payload'), '$.sweep');
  retries(plan);

  const item = invoke('Item', fns.item, TaskInput.fromJsonPathAt('$'), JsonPath.DISCARD, true);
  // A timed-out item resumes after its last checkpoint.
  retries(item, ['Sandbox.Timedout']);
  const items = new DistributedMap(scope, 'Items', {
    itemReader: new S3JsonItemReader({
      bucketNamePath: JsonPath.stringAt(state('bucket')),
      key: JsonPath.stringAt(state('itemsKey')),
    }),
    maxConcurrency: props.maxConcurrency,
    toleratedFailurePercentage: props.toleratedFailurePercentage ?? 0,
    // Children report their counts in their checkpoints, logs and metrics; results stay out of
    // the execution history (256 KB state limit).
    resultPath: JsonPath.DISCARD,
  });
  items.itemProcessor(item);
  const finish = invoke(
    'Finish',
    fns.finish,
    TaskInput.fromObject({ sweepId: JsonPath.stringAt(state('sweepId')) }),
    JsonPath.DISCARD,
  );
  retries(finish);

  const recordFailure = new DynamoPutItem(scope, 'RecordFailure', {
    table: props.table,
    item: {
      sweepId: DynamoAttributeValue.fromString(JsonPath.executionName),
      item: DynamoAttributeValue.fromString('#failure'),
      body: DynamoAttributeValue.fromString(JsonPath.jsonToString(JsonPath.objectAt('$.failure'))),
    },
    resultPath: JsonPath.DISCARD,
  });
  recordFailure.addRetry({ errors: ['States.ALL'], interval: Duration.seconds(2), maxAttempts: 3 });
  const failed = new Fail(scope, 'SweepFailed', {
    errorPath: '$.failure.Error',
    causePath: '$.failure.Cause',
  });
  recordFailure.next(failed);
  // Expired files: kick the export off again (the polls so far count towards the bound on
  // total wait), or, after `maxExportAttempts` kick-offs, record the failure.
  const rekick = new Pass(scope, 'Rekick', {
    parameters: {
      definition: JsonPath.objectAt('$.definition'),
      sweepId: JsonPath.executionName,
      attempt: JsonPath.mathAdd(JsonPath.numberAt(state('attempt')), 1),
      poll: JsonPath.objectAt(state('poll')),
      ...loop,
    },
    resultPath: '$.begin',
  });
  rekick.next(begin);
  const expired = new Choice(scope, 'ExportExpired')
    .when(Condition.numberLessThan(state('attempt'), props.maxExportAttempts ?? 2), rekick)
    .otherwise(recordFailure);
  plan.addCatch(expired, { errors: [ExportExpiredError.name], resultPath: '$.failure' });
  for (const s of [begin, poll, search, stage, plan, items, finish])
    s.addCatch(recordFailure, { resultPath: '$.failure' });

  const phase = new Choice(scope, 'Phase')
    .when(Condition.stringEquals(state('phase'), 'exporting'), waitForExport)
    .when(Condition.stringEquals(state('phase'), 'searching'), search)
    .when(Condition.stringEquals(state('phase'), 'exported'), stage)
    .otherwise(items);
  waitForExport.next(poll).next(phase);
  search.next(phase);
  stage.next(plan).next(items);
  items.next(finish);

  return prepare.next(begin).next(phase);
}
