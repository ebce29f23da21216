/**
 * The notify endpoint FHIR servers post Subscription notifications to: a regional REST API
 * (WAF can protect REST stages, not HTTP APIs), `POST /notify` → the notify function, X-Ray,
 * execution logging at ERROR without data traces, PHI-free access logs (KMS), throttling.
 * The FHIR Subscription authenticates with `Authorization: Bearer <token>` (Subscription.header);
 * the notify function checks it against the NotificationToken secret.
 */
import { RemovalPolicy, Validations } from 'aws-cdk-lib';
import {
  EndpointType,
  LambdaIntegration,
  LogGroupLogDestination,
  MethodLoggingLevel,
  RestApi,
} from 'aws-cdk-lib/aws-apigateway';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { restAccessLogFormat } from './access-log.js';
import { RegionalWaf } from './waf.js';

export interface NotifyApiProps {
  readonly handler: IFunction;
  readonly logKey: IKey;
  readonly logRetention: RetentionDays;
  readonly throttle: { readonly rateLimit: number; readonly burstLimit: number };
}

export class NotifyApi extends Construct {
  readonly api: RestApi;
  readonly accessLogs: LogGroup;
  readonly waf: RegionalWaf;

  constructor(scope: Construct, id: string, props: NotifyApiProps) {
    super(scope, id);
    this.accessLogs = new LogGroup(this, 'AccessLogs', {
      encryptionKey: props.logKey,
      retention: props.logRetention,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.api = new RestApi(this, 'Api', {
      description: 'fhir-analytics: FHIR Subscription notifications',
      endpointTypes: [EndpointType.REGIONAL],
      cloudWatchRole: true,
      cloudWatchRoleRemovalPolicy: RemovalPolicy.RETAIN,
      deployOptions: {
        stageName: 'v1',
        tracingEnabled: true,
        loggingLevel: MethodLoggingLevel.ERROR,
        dataTraceEnabled: false,
        metricsEnabled: true,
        throttlingRateLimit: props.throttle.rateLimit,
        throttlingBurstLimit: props.throttle.burstLimit,
        accessLogDestination: new LogGroupLogDestination(this.accessLogs),
        accessLogFormat: restAccessLogFormat(),
      },
    });
    this.api.root
      .addResource('notify')
      .addMethod('POST', new LambdaIntegration(props.handler, { proxy: true, allowTestInvoke: false }));

    const stage = this.api.deploymentStage;
    Validations.of(stage).acknowledge({
      id: 'HIPAA.Security-APIGWCacheEnabledAndEncrypted',
      reason:
        'POST notifications are not cacheable, and a stage cache would only add another store of request data; caching stays off.',
    });
    Validations.of(stage).acknowledge({
      id: 'HIPAA.Security-APIGWSSLEnabled',
      reason:
        'Client certificates authenticate API Gateway to HTTP backends; this stage only has a Lambda proxy integration (invoked through IAM).',
    });

    this.waf = new RegionalWaf(this, 'Waf', {
      logKey: props.logKey,
      logRetention: props.logRetention,
      associate: [stage.stageArn],
    });
  }

  /** The URL FHIR Subscriptions post to (`Subscription.channel.endpoint`). */
  get notifyUrl(): string {
    return this.api.urlForPath('/notify');
  }
}
