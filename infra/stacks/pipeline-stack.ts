/**
 * The event path: a FIFO queue (KMS, dead-letter queue) feeding the resource-event function.
 */
import { Duration, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import { Key } from 'aws-cdk-lib/aws-kms';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { HouseFunction } from '../constructs/function.js';

export interface PipelineStackProps extends StackProps {
  /** Base URL of the FHIR server the functions read from and write to. */
  readonly fhirBaseUrl: string;
  /** Prefix of the SageMaker endpoint names (`<prefix><model id>`). */
  readonly endpointPrefix: string;
}

export class PipelineStack extends Stack {
  readonly queue: Queue;
  readonly deadLetterQueue: Queue;
  readonly resourceEventFunction: HouseFunction;

  constructor(scope: Construct, id: string, props: PipelineStackProps) {
    super(scope, id, props);
    const key = new Key(this, 'DataKey', {
      enableKeyRotation: true,
      description: 'fhir-analytics: queues and logs',
      removalPolicy: RemovalPolicy.RETAIN,
    });

    this.deadLetterQueue = new Queue(this, 'ResourceEventsDlq', {
      fifo: true,
      encryption: QueueEncryption.KMS,
      encryptionMasterKey: key,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    // Visibility timeout is six times the function timeout, as Lambda's SQS guidance advises.
    this.queue = new Queue(this, 'ResourceEvents', {
      fifo: true,
      contentBasedDeduplication: false,
      encryption: QueueEncryption.KMS,
      encryptionMasterKey: key,
      enforceSSL: true,
      visibilityTimeout: Duration.seconds(360),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: 5 },
    });

    this.resourceEventFunction = new HouseFunction(this, 'ResourceEventFunction', {
      functionName: 'resource-event',
      withManifests: true,
      reservedConcurrentExecutions: 20,
      environment: {
        FHIR_BASE_URL: props.fhirBaseUrl,
        SAGEMAKER_ENDPOINT_PREFIX: props.endpointPrefix,
      },
    }).bindQueueConsumer(this.queue);
    this.resourceEventFunction.addEventSource(
      new SqsEventSource(this.queue, { batchSize: 10, reportBatchItemFailures: true }),
    );
  }
}
