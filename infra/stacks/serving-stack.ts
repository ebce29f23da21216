/**
 * Model serving: the Triton endpoints for the configured models (see `ModelEndpoints`).
 */
import { Stack, type StackProps } from 'aws-cdk-lib';
import { SecurityGroup, type IVpc } from 'aws-cdk-lib/aws-ec2';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import type { Construct } from 'constructs';
import type { AppConfig } from '../config.js';
import { ModelEndpoints } from '../constructs/model-endpoints.js';
import type { ServedModel } from '../models.js';
import { PREFIX } from './data-stack.js';

export interface ServingStackProps extends StackProps {
  readonly config: AppConfig;
  readonly models: readonly ServedModel[];
  readonly key: IKey;
  readonly artifactBucket: IBucket;
  /** Bucket that receives data capture (PHI), under `data-capture/`. */
  readonly captureBucket: IBucket;
  readonly vpc?: IVpc;
}

export class ServingStack extends Stack {
  readonly endpoints: ModelEndpoints;

  constructor(scope: Construct, id: string, props: ServingStackProps) {
    super(scope, id, props);
    const m = props.config.models;
    const securityGroups = props.vpc
      ? [
          new SecurityGroup(this, 'EndpointSecurityGroup', {
            vpc: props.vpc,
            description: 'fhir-analytics Triton endpoints: no inbound, outbound to AWS APIs',
            allowAllOutbound: true,
          }),
        ]
      : undefined;
    this.endpoints = new ModelEndpoints(this, 'Endpoints', {
      models: props.models,
      mode: m.endpointMode,
      endpointPrefix: m.endpointPrefix,
      artifactBucket: props.artifactBucket,
      artifactPrefix: PREFIX.triton,
      multiModelPrefix: PREFIX.tritonMme,
      key: props.key,
      dataCapture:
        m.dataCapturePercent > 0
          ? { bucket: props.captureBucket, prefix: PREFIX.dataCapture, percent: m.dataCapturePercent }
          : undefined,
      tritonVersion: m.tritonVersion,
      multiModelInstanceType: m.multiModelInstanceType,
      minInstances: m.minInstances,
      maxInstances: m.maxInstances,
      invocationsPerInstance: m.invocationsPerInstance,
      vpc: props.vpc,
      securityGroups,
    });
  }
}
