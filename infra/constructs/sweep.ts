/**
 * Population sweeps: EventBridge Scheduler → a Step Functions state machine → the three entry
 * points of `functions/population-sweep/handler.ts` (one Lambda function each):
 *
 *   Start   startHandler  { definition, sweepId: <execution name> }
 *             → $.start = { sweepId, bucket, itemsKey, items, mode, resumed }
 *   Items   Distributed Map, ItemReader = the JSON array s3://{$.start.bucket}/{$.start.itemsKey};
 *             each item (a `SweepItem`, passed as is) → itemHandler, `maxConcurrency` at once
 *   Finish  finishHandler { sweepId: $.start.sweepId } → the summary (also in S3, so discarded here)
 *
 * The sweep id is the execution name, so a retried Start, and a redriven execution, resume the
 * sweep already staged instead of exporting again; a retried item continues after its last
 * checkpoint. Retries back off on Lambda service errors and on the handler's retryable errors
 * (`RETRYABLE_ERRORS`); any other error is caught, recorded in the checkpoint table as
 * `(sweepId, "#failure")` and fails the execution. Execution data stays out of the logs; the state
 * machine is encrypted with the customer-managed key.
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
  CustomerManagedEncryptionConfiguration,
  DefinitionBody,
  DistributedMap,
  Fail,
  JsonPath,
  LogLevel,
  S3JsonItemReader,
  StateMachine,
  TaskInput,
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
 * Functions matches): the FHIR server or an endpoint unavailable for now, export files that
 * expired (Start kicks the export off again), and the AWS SDK's throttling and 5xx answers from
 * S3 and DynamoDB. Everything else (a bad definition or event, a failed export, items not done)
 * would fail again.
 */
export const RETRYABLE_ERRORS: readonly string[] = [
  ...[
    FhirUnavailableError,
    ExportExpiredError,
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

export interface SweepFunctions {
  /** `startHandler`: export and stage the cohort, answer where the items lie. */
  readonly start: IFunction;
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
  /** Concurrent Distributed Map children. */
  readonly maxConcurrency: number;
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
    const invoke = (name: string, fn: IFunction, payload: TaskInput, resultPath: string): LambdaInvoke =>
      new LambdaInvoke(this, name, {
        lambdaFunction: fn,
        payload,
        resultSelector: { 'Payload.$': '$.Payload' },
        resultPath,
        retryOnServiceExceptions: false,
      });

    const start = invoke(
      'Start',
      fns.start,
      TaskInput.fromObject({
        definition: JsonPath.objectAt('$.definition'),
        sweepId: JsonPath.executionName,
      }),
      '$.start',
    );
    retries(start);
    const item = invoke('Item', fns.item, TaskInput.fromJsonPathAt('$'), JsonPath.DISCARD);
    // A timed-out item resumes after its last checkpoint.
    retries(item, ['Sandbox.Timedout']);
    const items = new DistributedMap(this, 'Items', {
      itemReader: new S3JsonItemReader({
        bucketNamePath: JsonPath.stringAt('$.start.Payload.bucket'),
        key: JsonPath.stringAt('$.start.Payload.itemsKey'),
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
      TaskInput.fromObject({ sweepId: JsonPath.stringAt('$.start.Payload.sweepId') }),
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
    for (const state of [start, items, finish]) state.addCatch(recordFailure, { resultPath: '$.failure' });

    const logs = new LogGroup(this, 'Logs', {
      encryptionKey: props.key,
      retention: props.logRetention,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.stateMachine = new StateMachine(this, 'StateMachine', {
      definitionBody: DefinitionBody.fromChainable(start.next(items).next(finish)),
      timeout: Duration.hours(24),
      tracingEnabled: true,
      logs: { destination: logs, level: LogLevel.ERROR, includeExecutionData: false },
      encryptionConfiguration: new CustomerManagedEncryptionConfiguration(props.key),
    });
    // The ItemReader reads items.json under the sweep prefix only (and decrypts it); the failure
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
        "The state machine's own role: CDK-generated policies to invoke the sweep functions, read the items under the sweep prefix, record failures in the checkpoint table, run its Distributed Map children (states:StartExecution on itself) and deliver its logs.",
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
