/**
 * Alarms to an SNS topic (KMS) with the operator's email, and one dashboard: dead-letter queue
 * depth, each function's error rate, each endpoint's ModelLatency and Invocation5XXErrors, and
 * each state machine's failed, timed-out or aborted executions (a sweep that did not finish).
 */
import { Duration } from 'aws-cdk-lib';
import {
  Alarm,
  ComparisonOperator,
  Dashboard,
  GraphWidget,
  MathExpression,
  Metric,
  TextWidget,
  TreatMissingData,
  type IAlarmAction,
} from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { Topic } from 'aws-cdk-lib/aws-sns';
import { EmailSubscription } from 'aws-cdk-lib/aws-sns-subscriptions';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import type { IStateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import type { DeployedEndpoint } from './model-endpoints.js';

export interface MonitoringProps {
  readonly alarmEmail: string;
  /** Encrypts the alarm topic; its policy must let CloudWatch use it (`allowAlarmsToUseKey`). */
  readonly key: IKey;
  readonly deadLetterQueues: readonly { readonly name: string; readonly queue: IQueue }[];
  readonly functions: readonly { readonly name: string; readonly fn: IFunction }[];
  readonly endpoints: readonly DeployedEndpoint[];
  /** State machines whose unfinished executions page the operator (the population sweep's). */
  readonly stateMachines?: readonly { readonly name: string; readonly machine: IStateMachine }[];
  /** Error rate in percent. */
  readonly errorRatePercent: number;
  /** Average ModelLatency in milliseconds. */
  readonly modelLatencyMs: number;
}

export class Monitoring extends Construct {
  readonly topic: Topic;
  readonly alarms: Alarm[] = [];
  readonly dashboard: Dashboard;

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    this.topic = new Topic(this, 'Alarms', { masterKey: props.key, enforceSSL: true });
    this.topic.addSubscription(new EmailSubscription(props.alarmEmail));
    const action: IAlarmAction = new SnsAction(this.topic);
    const alarm = (aid: string, a: ConstructorParameters<typeof Alarm>[2]) => {
      const created = new Alarm(this, aid, a);
      created.addAlarmAction(action);
      created.addOkAction(action);
      this.alarms.push(created);
      return created;
    };
    const dashboard = new Dashboard(this, 'Dashboard', { defaultInterval: Duration.hours(6) });
    this.dashboard = dashboard;
    dashboard.addWidgets(new TextWidget({ markdown: '# fhir-analytics', width: 24, height: 1 }));

    for (const { name, queue } of props.deadLetterQueues) {
      const depth = queue.metricApproximateNumberOfMessagesVisible({
        period: Duration.minutes(5),
        statistic: 'Maximum',
      });
      alarm(`${name}Depth`, {
        alarmDescription: `${name}: messages in the dead-letter queue (events that failed every retry)`,
        metric: depth,
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: TreatMissingData.NOT_BREACHING,
      });
      dashboard.addWidgets(new GraphWidget({ title: `${name} depth`, left: [depth], width: 8 }));
    }

    const fnWidgets: GraphWidget[] = [];
    for (const { name, fn } of props.functions) {
      const rate = new MathExpression({
        expression: 'IF(invocations > 0, 100 * errors / invocations, 0)',
        usingMetrics: {
          errors: fn.metricErrors({ period: Duration.minutes(5), statistic: 'Sum' }),
          invocations: fn.metricInvocations({ period: Duration.minutes(5), statistic: 'Sum' }),
        },
        label: `${name} error %`,
        period: Duration.minutes(5),
      });
      alarm(`${name}ErrorRate`, {
        alarmDescription: `${name}: error rate above ${props.errorRatePercent}% of invocations`,
        metric: rate,
        threshold: props.errorRatePercent,
        evaluationPeriods: 3,
        datapointsToAlarm: 2,
        comparisonOperator: ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: TreatMissingData.NOT_BREACHING,
      });
      fnWidgets.push(
        new GraphWidget({
          title: name,
          left: [fn.metricInvocations(), fn.metricErrors(), fn.metricThrottles()],
          right: [fn.metricDuration({ statistic: 'p90' })],
          width: 8,
        }),
      );
    }
    if (fnWidgets.length > 0) dashboard.addWidgets(...fnWidgets);

    const epWidgets: GraphWidget[] = [];
    for (const ep of props.endpoints) {
      const dims = { EndpointName: ep.endpointName, VariantName: ep.variantName };
      const metric = (metricName: string, statistic: string) =>
        new Metric({
          namespace: 'AWS/SageMaker',
          metricName,
          dimensionsMap: dims,
          statistic,
          period: Duration.minutes(5),
        });
      const latency = metric('ModelLatency', 'Average');
      const errors5xx = metric('Invocation5XXErrors', 'Sum');
      alarm(`${ep.endpointName}Latency`, {
        alarmDescription: `${ep.endpointName}: average ModelLatency above ${props.modelLatencyMs} ms`,
        // ModelLatency is reported in microseconds.
        metric: latency,
        threshold: props.modelLatencyMs * 1000,
        evaluationPeriods: 3,
        datapointsToAlarm: 2,
        comparisonOperator: ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: TreatMissingData.NOT_BREACHING,
      });
      alarm(`${ep.endpointName}5xx`, {
        alarmDescription: `${ep.endpointName}: Invocation5XXErrors (the model container failed)`,
        metric: errors5xx,
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: TreatMissingData.NOT_BREACHING,
      });
      epWidgets.push(
        new GraphWidget({
          title: `${ep.endpointName} (${ep.instanceType})`,
          left: [metric('Invocations', 'Sum'), errors5xx, metric('Invocation4XXErrors', 'Sum')],
          right: [latency],
          width: 8,
        }),
      );
    }
    if (epWidgets.length > 0) dashboard.addWidgets(...epWidgets);

    for (const { name, machine } of props.stateMachines ?? []) {
      const period = Duration.minutes(5);
      const unfinished = new MathExpression({
        label: `${name} executions failed, timed out or aborted`,
        expression: 'failed + timedOut + aborted',
        usingMetrics: {
          failed: machine.metricFailed({ period, statistic: 'Sum' }),
          timedOut: machine.metricTimedOut({ period, statistic: 'Sum' }),
          aborted: machine.metricAborted({ period, statistic: 'Sum' }),
        },
        period,
      });
      alarm(`${name}Unfinished`, {
        alarmDescription: `${name}: an execution failed, timed out or was aborted (its failure record is in the checkpoint table)`,
        metric: unfinished,
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: TreatMissingData.NOT_BREACHING,
      });
      dashboard.addWidgets(
        new GraphWidget({
          title: `${name} executions`,
          left: [machine.metricSucceeded({ period, statistic: 'Sum' }), unfinished],
          width: 12,
        }),
      );
    }
  }
}
