/**
 * Population sweeps: EventBridge Scheduler → a Step Functions state machine → the entry points
 * of `functions/population-sweep/handler.ts` (one Lambda function each). No call waits for a
 * whole export or reads a whole export, nor searches a whole population: the export is polled
 * in a Wait/Choice loop and staged file by file in a Distributed Map, and the paged-search
 * fallback (no `$export`) runs as a Task/Choice loop of time-budgeted Search calls (Lambda stops
 * at 15 minutes; a 10^7-patient export takes hours and tens of GB). The states are drawn and
 * built in sweep-machine.ts; this construct adds the StateMachine, its role, logs and schedules.
 *
 * Export files that expired (404/410) before they were staged: StageFile catches
 * `ExportExpiredError` (leaving a marker), Plan finds it and throws it, and ExportExpired
 * kicks the export off again (Rekick → Begin with attempt + 1) up to `maxExportAttempts`
 * kick-offs; after that the failure is recorded like any other.
 *
 * The sweep id is the execution name, so a retried Begin, and a redriven execution, resume the
 * sweep already staged (or searching) instead of starting again; a retried file rewrites the
 * same parts; a retried Search call goes on from its cursor; a retried item continues after its
 * last checkpoint. Retries back off on Lambda service errors and on the handler's retryable
 * errors (`RETRYABLE_ERRORS`); any other error is caught, recorded in the checkpoint table as
 * `(sweepId, "#failure")` and fails the execution. Execution data stays out of the logs; the
 * state machine is encrypted with the customer-managed key.
 */
import { Duration, RemovalPolicy, Stack, TimeZone, Validations } from 'aws-cdk-lib';
import { PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import { Schedule, ScheduleExpression, ScheduleTargetInput } from 'aws-cdk-lib/aws-scheduler';
import { StepFunctionsStartExecution } from 'aws-cdk-lib/aws-scheduler-targets';
import {
  CustomerManagedEncryptionConfiguration,
  DefinitionBody,
  LogLevel,
  StateMachine,
} from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import type { SweepDefinitionInput } from '../../shared/sweep/definition.js';
import { sweepMachine, type SweepMachineProps } from './sweep-machine.js';

export {
  LAMBDA_SERVICE_ERRORS,
  RETRYABLE_ERRORS,
  SWEEP_STAGE_CONCURRENCY,
  type SweepFunctions,
} from './sweep-machine.js';

export interface SweepSchedule {
  readonly name: string;
  /** `cron(...)` or `rate(...)`. */
  readonly expression: string;
  readonly timeZone: string;
  /** A Group's members (`Group/[id]/$export`); default every patient. */
  readonly groupId?: string;
}

export interface SweepProps extends SweepMachineProps {
  /** The staging bucket (the handler names it in its answer) and the prefix the sweep writes under. */
  readonly bucket: IBucket;
  readonly prefix: string;
  readonly schedules: readonly SweepSchedule[];
  /** Encrypts the state machine, its logs and the schedules. */
  readonly key: IKey;
  readonly logRetention: RetentionDays;
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
    const definition = sweepMachine(this, props);
    const logs = new LogGroup(this, 'Logs', {
      encryptionKey: props.key,
      retention: props.logRetention,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.stateMachine = new StateMachine(this, 'StateMachine', {
      definitionBody: DefinitionBody.fromChainable(definition),
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
