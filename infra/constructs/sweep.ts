/**
 * Population sweeps: EventBridge Scheduler → a Step Functions state machine → the entry points
 * of `functions/population-sweep/handler.ts` (one Lambda function each). No call waits for a
 * whole export or reads a whole export: the export is polled in a Wait/Choice loop and staged
 * file by file in a Distributed Map (Lambda stops at 15 minutes; a 10^7-patient export takes
 * hours and tens of GB).
 *
 *   Prepare  { definition, sweepId: <execution name>, attempt: 1, minPollSeconds, maxPolls } → $.begin
 *   Begin    startHandler → $.sweep (the sweep's state: `SweepState`)
 *   Phase    Choice on $.sweep.phase:
 *              exporting → WaitForExport (SecondsPath $.sweep.waitSeconds: whole seconds, at
 *                          least `minPollInterval`) → Poll (pollHandler) → Phase; past `maxPolls`
 *                          polls Poll fails (ExportTimeoutError), so the loop's history stays
 *                          far under the 25,000 events of an execution
 *              exported  → Stage: Distributed Map over s3://{bucket}/{filesKey} (files.json:
 *                          { sweepId, attempt, index }, no download URL), one stageFileHandler
 *                          call per export file, `stageConcurrency` at once (protects the FHIR
 *                          server), each child's output `{}` → Plan (planHandler) → Items
 *              otherwise (staged: resumed, or paged search) → Items
 *   Items    Distributed Map over s3://{bucket}/{itemsKey} (items.json: small items that name
 *            their key lists), each item → itemHandler, `maxConcurrency` at once, output `{}`
 *   Finish   finishHandler { sweepId } → the summary (also in S3, so discarded here)
 *
 * Export files that expired (404/410) before they were staged: StageFile catches
 * `ExportExpiredError` (leaving a marker), Plan finds it and throws it, and ExportExpired
 * kicks the export off again (Rekick → Begin with attempt + 1) up to `maxExportAttempts`
 * kick-offs; after that the failure is recorded like any other.
 *
 * The sweep id is the execution name, so a retried Begin, and a redriven execution, resume the
 * sweep already staged instead of exporting again; a retried file rewrites the same parts; a
 * retried item continues after its last checkpoint. Retries back off on Lambda service errors
 * and on the handler's retryable errors (`RETRYABLE_ERRORS`); any other error is caught,
 * recorded in the checkpoint table as `(sweepId, "#failure")` and fails the execution.
 * Execution data stays out of the logs; the state machine is encrypted with the customer-managed
 * key.
 */
import { Duration, RemovalPolicy, Stack, TimeZone, Validations } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import { PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import { Schedule, ScheduleExpression, ScheduleTargetInput } from 'aws-cdk-lib/aws-scheduler';
import { StepFunctionsStartExecution } from 'aws-cdk-lib/aws-scheduler-targets';
import {
  Choice,
  Condition,
  CustomerManagedEncryptionConfiguration,
  DefinitionBody,
  DistributedMap,
  Fail,
  JsonPath,
  LogLevel,
  Pass,
  S3JsonItemReader,
  StateMachine,
  TaskInput,
  Wait,
  WaitTime,
  type TaskStateBase,
} from 'aws-cdk-lib/aws-stepfunctions';
import { DynamoAttributeValue, DynamoPutItem, LambdaInvoke } from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import type { SweepDefinitionInput } from '../../shared/sweep/definition.js';
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

export interface SweepSchedule {
  readonly name: string;
  /** `cron(...)` or `rate(...)`. */
  readonly expression: string;
  readonly timeZone: string;
  /** A Group's members (`Group/[id]/$export`); default every patient. */
  readonly groupId?: string;
}

/** Export files staged at once by default: each one streams a file from the FHIR server. */
export const SWEEP_STAGE_CONCURRENCY = 10;

export interface SweepFunctions {
  /** `startHandler`: kick the export off (or stage by search, or find the sweep staged). */
  readonly start: IFunction;
  /** `pollHandler`: one export status request. */
  readonly poll: IFunction;
  /** `stageFileHandler`: one export file into the staged partitions. */
  readonly stageFile: IFunction;
  /** `planHandler`: the staged files merged into the items. */
  readonly plan: IFunction;
  /** `itemHandler`: one Distributed Map item. */
  readonly item: IFunction;
  /** `finishHandler`: the summary; advances the next incremental `_since`. */
  readonly finish: IFunction;
}

export interface SweepProps {
  readonly functions: SweepFunctions;
  /** The staging bucket (the handler names it in its answer) and the prefix the sweep writes under. */
  readonly bucket: IBucket;
  readonly prefix: string;
  /** The checkpoint table; failures are recorded in it. */
  readonly table: ITable;
  readonly schedules: readonly SweepSchedule[];
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
  /** Encrypts the state machine, its logs and the schedules. */
  readonly key: IKey;
  readonly logRetention: RetentionDays;
  /** Share of items that may fail before the map fails. Default 0: a sweep is all or nothing. */
  readonly toleratedFailurePercentage?: number;
}

/** What EventBridge Scheduler sends the state machine for a schedule. */
export function scheduleInput(s: SweepSchedule): { definition: SweepDefinitionInput } {
  return {
    definition: {
      name: s.name,
      cohort: s.groupId ? { kind: 'group', group: s.groupId } : { kind: 'all' },
      since: 'incremental',
    },
  };
}

export class Sweep extends Construct {
  readonly stateMachine: StateMachine;
  readonly schedules: Schedule[] = [];

  constructor(scope: Construct, id: string, props: SweepProps) {
    super(scope, id);
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
      new LambdaInvoke(this, name, {
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
    };
    const prepare = new Pass(this, 'Prepare', {
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
    const waitForExport = new Wait(this, 'WaitForExport', {
      time: WaitTime.secondsPath(state('waitSeconds')),
    });

    // A map child's output is `{}`: a Distributed Map without a ResultWriter gathers its
    // children's outputs, and 10^4 files' worth would pass the 256 KiB state limit.
    const stageFile = invoke(
      'StageFile',
      fns.stageFile,
      TaskInput.fromJsonPathAt('$'),
      JsonPath.DISCARD,
      true,
    );
    // A timed-out file is staged again from the start: it rewrites the same parts.
    retries(stageFile, ['Sandbox.Timedout']);
    // An expired file leaves a marker for Plan, which decides on a new kick-off for the whole export.
    stageFile.addCatch(new Pass(this, 'FileExpired', { outputPath: JsonPath.DISCARD }), {
      errors: [ExportExpiredError.name],
      resultPath: JsonPath.DISCARD,
    });
    const stage = new DistributedMap(this, 'Stage', {
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
    const items = new DistributedMap(this, 'Items', {
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

    const recordFailure = new DynamoPutItem(this, 'RecordFailure', {
      table: props.table,
      item: {
        sweepId: DynamoAttributeValue.fromString(JsonPath.executionName),
        item: DynamoAttributeValue.fromString('#failure'),
        body: DynamoAttributeValue.fromString(JsonPath.jsonToString(JsonPath.objectAt('$.failure'))),
      },
      resultPath: JsonPath.DISCARD,
    });
    recordFailure.addRetry({ errors: ['States.ALL'], interval: Duration.seconds(2), maxAttempts: 3 });
    const failed = new Fail(this, 'SweepFailed', {
      errorPath: '$.failure.Error',
      causePath: '$.failure.Cause',
    });
    recordFailure.next(failed);
    // Expired files: kick the export off again (the polls so far count towards the bound on
    // total wait), or, after `maxExportAttempts` kick-offs, record the failure.
    const rekick = new Pass(this, 'Rekick', {
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
    const expired = new Choice(this, 'ExportExpired')
      .when(Condition.numberLessThan(state('attempt'), props.maxExportAttempts ?? 2), rekick)
      .otherwise(recordFailure);
    plan.addCatch(expired, { errors: [ExportExpiredError.name], resultPath: '$.failure' });
    for (const s of [begin, poll, stage, plan, items, finish])
      s.addCatch(recordFailure, { resultPath: '$.failure' });

    const phase = new Choice(this, 'Phase')
      .when(Condition.stringEquals(state('phase'), 'exporting'), waitForExport)
      .when(Condition.stringEquals(state('phase'), 'exported'), stage)
      .otherwise(items);
    waitForExport.next(poll).next(phase);
    stage.next(plan).next(items);
    items.next(finish);

    const logs = new LogGroup(this, 'Logs', {
      encryptionKey: props.key,
      retention: props.logRetention,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.stateMachine = new StateMachine(this, 'StateMachine', {
      definitionBody: DefinitionBody.fromChainable(prepare.next(begin).next(phase)),
      timeout: Duration.hours(24),
      tracingEnabled: true,
      logs: { destination: logs, level: LogLevel.ERROR, includeExecutionData: false },
      encryptionConfiguration: new CustomerManagedEncryptionConfiguration(props.key),
    });
    // The ItemReaders read files.json and items.json under the sweep prefix only (and decrypts it); the failure
    // record needs the table's key.
    this.stateMachine.addToRolePolicy(
      new PolicyStatement({
        actions: ['s3:GetObject'],
        resources: [props.bucket.arnForObjects(`${props.prefix}*`)],
      }),
    );
    props.bucket.encryptionKey?.grantDecrypt(this.stateMachine);
    props.table.encryptionKey?.grantEncryptDecrypt(this.stateMachine);
    // Covers the role's default policy and the DistributedMapPolicy CDK adds beside it.
    Validations.of(this.stateMachine).acknowledge({
      id: 'HIPAA.Security-IAMNoInlinePolicy',
      reason:
        "The state machine's own role: CDK-generated policies to invoke the sweep functions, read the export files' and the items' lists under the sweep prefix, record failures in the checkpoint table, run its Distributed Map children (states:StartExecution on itself) and deliver its logs.",
    });
    const schedulerRole = new Role(this, 'SchedulerRole', {
      assumedBy: new ServicePrincipal('scheduler.amazonaws.com', {
        conditions: { StringEquals: { 'aws:SourceAccount': Stack.of(this).account } },
      }),
      description: 'EventBridge Scheduler: start the population sweep state machine',
    });
    Validations.of(schedulerRole).acknowledge({
      id: 'HIPAA.Security-IAMNoInlinePolicy',
      reason:
        "The schedules' own role: one CDK-generated policy allowing states:StartExecution on this state machine and use of the schedule key.",
    });

    for (const s of props.schedules) {
      const target = new StepFunctionsStartExecution(this.stateMachine, {
        input: ScheduleTargetInput.fromObject(scheduleInput(s)),
        role: schedulerRole,
        retryAttempts: 3,
        maxEventAge: Duration.hours(1),
      });
      this.schedules.push(
        new Schedule(this, `Schedule-${s.name}`, {
          schedule: ScheduleExpression.expression(s.expression, TimeZone.of(s.timeZone)),
          target,
          key: props.key,
          description: `fhir-analytics population sweep ${s.name}`,
        }),
      );
    }
  }
}
