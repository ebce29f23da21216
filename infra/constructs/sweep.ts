/**
 * Population sweeps: EventBridge Scheduler → a Step Functions state machine → the sweep worker.
 *
 * The worker is one function with three phases (its payload's `phase`):
 * - `export`: read the checkpoint, kick off Bulk `$export` (`_since` = last transactionTime),
 *   answer `{ status: 'in-progress', pollUrl, retryAfterSeconds }` or
 *   `{ status: 'complete', transactionTime, files: [{ type, url, count }] }`;
 * - `poll`: the same answer for `pollUrl`;
 * - `process`: one NDJSON file (`file`): group by patient, batched inference, batched write-back;
 * - `commit`: write `transactionTime` to the checkpoint table.
 * The files fan out through a Distributed Map (each child one file, `maxConcurrency` at once).
 * Execution data stays out of the logs (it holds references); the state machine is
 * encrypted with the customer-managed key.
 */
import { Duration, RemovalPolicy, Stack, TimeZone, Validations } from 'aws-cdk-lib';
import { Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Schedule, ScheduleExpression, ScheduleTargetInput } from 'aws-cdk-lib/aws-scheduler';
import { StepFunctionsStartExecution } from 'aws-cdk-lib/aws-scheduler-targets';
import {
  Choice,
  Condition,
  CustomerManagedEncryptionConfiguration,
  DefinitionBody,
  DistributedMap,
  JsonPath,
  LogLevel,
  StateMachine,
  TaskInput,
  Wait,
  WaitTime,
} from 'aws-cdk-lib/aws-stepfunctions';
import { LambdaInvoke } from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';

export interface SweepSchedule {
  readonly name: string;
  /** `cron(...)` or `rate(...)`. */
  readonly expression: string;
  readonly timeZone: string;
  readonly groupId?: string;
}

export interface SweepProps {
  /** The sweep worker (`functions/population-sweep` once it exists). */
  readonly worker: IFunction;
  readonly schedules: readonly SweepSchedule[];
  /** Concurrent Distributed Map children. */
  readonly maxConcurrency: number;
  /** Encrypts the state machine, its logs and the schedules. */
  readonly key: IKey;
  readonly logRetention: RetentionDays;
  /** Share of files that may fail before the sweep fails. Default 5. */
  readonly toleratedFailurePercentage?: number;
}

export class Sweep extends Construct {
  readonly stateMachine: StateMachine;
  readonly schedules: Schedule[] = [];

  constructor(scope: Construct, id: string, props: SweepProps) {
    super(scope, id);
    const invoke = (name: string, payload: Record<string, unknown>, resultPath: string) =>
      new LambdaInvoke(this, name, {
        lambdaFunction: props.worker,
        payload: TaskInput.fromObject(payload),
        payloadResponseOnly: true,
        resultPath,
        retryOnServiceExceptions: true,
      });

    const startExport = invoke(
      'StartExport',
      { phase: 'export', sweep: JsonPath.stringAt('$.sweep'), groupId: JsonPath.stringAt('$.groupId') },
      '$.export',
    );
    const pollExport = invoke(
      'PollExport',
      { phase: 'poll', sweep: JsonPath.stringAt('$.sweep'), pollUrl: JsonPath.stringAt('$.export.pollUrl') },
      '$.export',
    );
    const wait = new Wait(this, 'WaitForExport', {
      time: WaitTime.secondsPath('$.export.retryAfterSeconds'),
    });
    const processFile = invoke(
      'ProcessFile',
      { phase: 'process', sweep: JsonPath.stringAt('$.sweep'), file: JsonPath.objectAt('$.file') },
      '$.result',
    );
    const fanOut = new DistributedMap(this, 'ProcessFiles', {
      itemsPath: '$.export.files',
      itemSelector: { 'sweep.$': '$.sweep', 'file.$': '$$.Map.Item.Value' },
      maxConcurrency: props.maxConcurrency,
      toleratedFailurePercentage: props.toleratedFailurePercentage ?? 5,
      // Children report their counts in their own logs and metrics; results stay out of the
      // execution history (256 KB state limit, and they would hold references).
      resultPath: JsonPath.DISCARD,
    });
    fanOut.itemProcessor(processFile);
    const commit = invoke(
      'Commit',
      {
        phase: 'commit',
        sweep: JsonPath.stringAt('$.sweep'),
        transactionTime: JsonPath.stringAt('$.export.transactionTime'),
      },
      JsonPath.DISCARD,
    );
    const ready = new Choice(this, 'ExportReady')
      .when(Condition.stringEquals('$.export.status', 'complete'), fanOut.next(commit))
      .otherwise(wait.next(pollExport));
    pollExport.next(ready);

    const logs = new LogGroup(this, 'Logs', {
      encryptionKey: props.key,
      retention: props.logRetention,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.stateMachine = new StateMachine(this, 'StateMachine', {
      definitionBody: DefinitionBody.fromChainable(startExport.next(ready)),
      timeout: Duration.hours(24),
      tracingEnabled: true,
      logs: { destination: logs, level: LogLevel.ERROR, includeExecutionData: false },
      encryptionConfiguration: new CustomerManagedEncryptionConfiguration(props.key),
    });
    // Covers the role's default policy and the DistributedMapPolicy CDK adds beside it.
    Validations.of(this.stateMachine).acknowledge({
      id: 'HIPAA.Security-IAMNoInlinePolicy',
      reason:
        "The state machine's own role: CDK-generated policies to invoke the worker, run its Distributed Map children (states:StartExecution on itself) and deliver its logs.",
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
        input: ScheduleTargetInput.fromObject({ sweep: s.name, groupId: s.groupId ?? null }),
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
