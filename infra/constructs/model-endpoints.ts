/**
 * SageMaker real-time endpoints running Triton: one endpoint per model (uncompressed `S3Prefix`
 * model data, `SAGEMAKER_TRITON_DEFAULT_MODEL_NAME`), or one multi-model endpoint
 * (`Mode: MultiModel`, `SAGEMAKER_MULTI_MODEL=true`, `<model>.tar.gz` archives chosen by
 * `TargetModel`). Each variant scales on `SageMakerVariantInvocationsPerInstance`. The execution
 * role reads only the artifact prefix and writes only the data-capture prefix.
 */
import { ArnFormat, Stack, Validations } from 'aws-cdk-lib';
import { PredefinedMetric, ScalableTarget, ServiceNamespace } from 'aws-cdk-lib/aws-applicationautoscaling';
import type { ISecurityGroup, IVpc } from 'aws-cdk-lib/aws-ec2';
import { SubnetType } from 'aws-cdk-lib/aws-ec2';
import { PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import { CfnEndpoint, CfnEndpointConfig, CfnModel } from 'aws-cdk-lib/aws-sagemaker';
import { Construct } from 'constructs';
import type { IEndpointCatalog } from './function.js';
import { hasLocalInstanceStorage, type ServedModel } from '../models.js';
import { tritonImageUri } from '../triton-image.js';

export const VARIANT_NAME = 'primary';
export const MULTI_MODEL_ENDPOINT_ID = 'multi-model';

export interface ModelEndpointsProps {
  readonly models: readonly ServedModel[];
  readonly mode: 'per-model' | 'multi-model';
  /** Endpoint names are `<prefix><model id>`, or `<prefix>multi-model`. */
  readonly endpointPrefix: string;
  readonly artifactBucket: IBucket;
  /** Prefix of the per-model Triton repositories: `<prefix><id>/<version>/<tritonModelName>/...`. */
  readonly artifactPrefix: string;
  /** Prefix of the multi-model archives: `<prefix><tritonModelName>.tar.gz`. */
  readonly multiModelPrefix: string;
  /** Key of the artifact and capture buckets; also encrypts EBS-backed ML storage volumes. */
  readonly key: IKey;
  /** Data capture (per-model mode only); omit to turn it off. */
  readonly dataCapture?: { readonly bucket: IBucket; readonly prefix: string; readonly percent: number };
  readonly tritonVersion: string;
  /** Instance type of the multi-model endpoint. Default ml.g5.xlarge if any model is on a GPU, else ml.c6i.xlarge. */
  readonly multiModelInstanceType?: string;
  readonly minInstances: number;
  readonly maxInstances: number;
  readonly invocationsPerInstance: number;
  /** Private subnets for the model containers. Default: none. */
  readonly vpc?: IVpc;
  readonly securityGroups?: ISecurityGroup[];
}

/** One endpoint as monitoring sees it. */
export interface DeployedEndpoint {
  readonly endpointName: string;
  readonly variantName: string;
  readonly instanceType: string;
  readonly modelIds: readonly string[];
}

export class ModelEndpoints extends Construct implements IEndpointCatalog {
  readonly mode: 'per-model' | 'multi-model';
  readonly endpointPrefix: string;
  readonly endpoints: DeployedEndpoint[] = [];
  readonly role: Role;

  get endpointNames(): string[] {
    return this.endpoints.map((e) => e.endpointName);
  }

  constructor(
    scope: Construct,
    id: string,
    private readonly props: ModelEndpointsProps,
  ) {
    super(scope, id);
    this.mode = props.mode;
    this.endpointPrefix = props.endpointPrefix;
    const stack = Stack.of(this);
    const image = tritonImageUri(this, props.tritonVersion);

    this.role = new Role(this, 'ExecutionRole', {
      assumedBy: new ServicePrincipal('sagemaker.amazonaws.com'),
      description: 'fhir-analytics Triton endpoints: read model artifacts, write data capture, logs, metrics',
    });
    const repoPrefix = props.mode === 'per-model' ? props.artifactPrefix : props.multiModelPrefix;
    props.artifactBucket.grantRead(this.role, `${repoPrefix}*`);
    if (props.dataCapture && props.mode === 'per-model') {
      props.dataCapture.bucket.grantPut(this.role, `${props.dataCapture.prefix}*`);
    }
    this.role.addToPolicy(
      new PolicyStatement({
        actions: ['ecr:BatchGetImage', 'ecr:GetDownloadUrlForLayer', 'ecr:BatchCheckLayerAvailability'],
        resources: [
          stack.formatArn({
            service: 'ecr',
            account: image.account,
            resource: 'repository',
            resourceName: 'sagemaker-tritonserver',
          }),
        ],
      }),
    );
    // AWS requires "*" for these two: ecr:GetAuthorizationToken has no resource type, and
    // cloudwatch:PutMetricData has none either (narrowed by namespace instead).
    this.role.addToPolicy(new PolicyStatement({ actions: ['ecr:GetAuthorizationToken'], resources: ['*'] }));
    this.role.addToPolicy(
      new PolicyStatement({
        actions: ['cloudwatch:PutMetricData'],
        resources: ['*'],
        conditions: { StringLike: { 'cloudwatch:namespace': ['/aws/sagemaker/*', 'AWS/SageMaker'] } },
      }),
    );
    this.role.addToPolicy(
      new PolicyStatement({
        actions: [
          'logs:CreateLogGroup',
          'logs:CreateLogStream',
          'logs:PutLogEvents',
          'logs:DescribeLogStreams',
        ],
        resources: [
          stack.formatArn({
            service: 'logs',
            resource: 'log-group',
            resourceName: '/aws/sagemaker/Endpoints/*',
            arnFormat: ArnFormat.COLON_RESOURCE_NAME,
          }),
        ],
      }),
    );
    if (props.vpc) {
      // SageMaker attaches ENIs in the VPC; these EC2 actions do not support resource-level scoping.
      this.role.addToPolicy(
        new PolicyStatement({
          actions: [
            'ec2:CreateNetworkInterface',
            'ec2:CreateNetworkInterfacePermission',
            'ec2:DeleteNetworkInterface',
            'ec2:DeleteNetworkInterfacePermission',
            'ec2:DescribeNetworkInterfaces',
            'ec2:DescribeVpcs',
            'ec2:DescribeDhcpOptions',
            'ec2:DescribeSubnets',
            'ec2:DescribeSecurityGroups',
          ],
          resources: ['*'],
        }),
      );
    }
    Validations.of(this.role).acknowledge({
      id: 'HIPAA.Security-IAMNoInlinePolicy',
      reason:
        'The execution role of these endpoints only: one CDK-generated policy scoped to the artifact prefix, the capture prefix, the Triton repository and the endpoint log groups.',
    });

    if (props.mode === 'per-model') {
      for (const model of props.models) this.perModelEndpoint(model, image.uri);
    } else {
      this.multiModelEndpoint(image.uri);
    }
  }

  private vpcConfig(): CfnModel.VpcConfigProperty | undefined {
    const { vpc, securityGroups } = this.props;
    if (!vpc) return undefined;
    return {
      subnets: vpc.selectSubnets({ subnetType: SubnetType.PRIVATE_WITH_EGRESS }).subnetIds,
      securityGroupIds: (securityGroups ?? []).map((g) => g.securityGroupId),
    };
  }

  private perModelEndpoint(model: ServedModel, imageUri: string): void {
    const { artifactBucket, artifactPrefix, dataCapture } = this.props;
    const scope = new Construct(this, model.id);
    const cfnModel = new CfnModel(scope, 'Model', {
      executionRoleArn: this.role.roleArn,
      enableNetworkIsolation: true,
      primaryContainer: {
        image: imageUri,
        modelDataSource: {
          s3DataSource: {
            s3DataType: 'S3Prefix',
            compressionType: 'None',
            s3Uri: artifactBucket.s3UrlForObject(`${artifactPrefix}${model.id}/${model.version}/`),
          },
        },
        environment: { SAGEMAKER_TRITON_DEFAULT_MODEL_NAME: model.tritonModelName },
      },
      vpcConfig: this.vpcConfig(),
      tags: [
        { key: 'fhir-analytics:model', value: model.id },
        { key: 'fhir-analytics:model-version', value: model.version },
      ],
    });
    cfnModel.node.addDependency(this.role);
    const capture =
      dataCapture && dataCapture.percent > 0
        ? {
            enableCapture: true,
            initialSamplingPercentage: dataCapture.percent,
            destinationS3Uri: dataCapture.bucket.s3UrlForObject(dataCapture.prefix.replace(/\/$/, '')),
            kmsKeyId: this.props.key.keyArn,
            captureOptions: [{ captureMode: 'Input' }, { captureMode: 'Output' }],
            captureContentTypeHeader: { jsonContentTypes: ['application/json'] },
          }
        : undefined;
    this.addEndpoint(
      scope,
      `${this.endpointPrefix}${model.id}`,
      model.instanceType,
      cfnModel,
      [model.id],
      capture,
    );
  }

  private multiModelEndpoint(imageUri: string): void {
    const { artifactBucket, multiModelPrefix, models } = this.props;
    const instanceType =
      this.props.multiModelInstanceType ?? (models.some((m) => m.gpu) ? 'ml.g5.xlarge' : 'ml.c6i.xlarge');
    const scope = new Construct(this, MULTI_MODEL_ENDPOINT_ID);
    const cfnModel = new CfnModel(scope, 'Model', {
      executionRoleArn: this.role.roleArn,
      enableNetworkIsolation: true,
      primaryContainer: {
        image: imageUri,
        mode: 'MultiModel',
        modelDataUrl: artifactBucket.s3UrlForObject(multiModelPrefix),
        environment: { SAGEMAKER_MULTI_MODEL: 'true' },
      },
      vpcConfig: this.vpcConfig(),
    });
    cfnModel.node.addDependency(this.role);
    this.addEndpoint(
      scope,
      `${this.endpointPrefix}${MULTI_MODEL_ENDPOINT_ID}`,
      instanceType,
      cfnModel,
      models.map((m) => m.id),
      undefined,
    );
  }

  private addEndpoint(
    scope: Construct,
    endpointName: string,
    instanceType: string,
    model: CfnModel,
    modelIds: string[],
    dataCaptureConfig: CfnEndpointConfig.DataCaptureConfigProperty | undefined,
  ): void {
    const localStorage = hasLocalInstanceStorage(instanceType);
    const config = new CfnEndpointConfig(scope, 'Config', {
      productionVariants: [
        {
          variantName: VARIANT_NAME,
          modelName: model.attrModelName,
          instanceType,
          initialInstanceCount: this.props.minInstances,
          initialVariantWeight: 1,
        },
      ],
      // SageMaker rejects KmsKeyId for instance types with local NVMe storage (g5, g6, p4d…).
      ...(localStorage ? {} : { kmsKeyId: this.props.key.keyArn }),
      ...(dataCaptureConfig ? { dataCaptureConfig } : {}),
    });
    if (localStorage) {
      Validations.of(config).acknowledge({
        id: 'HIPAA.Security-SageMakerEndpointConfigurationKMSKeyConfigured',
        reason: `${instanceType} has local NVMe instance storage, encrypted by the Nitro hardware module; SageMaker rejects a KmsKeyId for such instance types. Data capture is KMS-encrypted with the data key.`,
      });
    }
    const endpoint = new CfnEndpoint(scope, 'Endpoint', {
      endpointName,
      endpointConfigName: config.attrEndpointConfigName,
    });

    const target = new ScalableTarget(scope, 'Scaling', {
      serviceNamespace: ServiceNamespace.SAGEMAKER,
      resourceId: `endpoint/${endpointName}/variant/${VARIANT_NAME}`,
      scalableDimension: 'sagemaker:variant:DesiredInstanceCount',
      minCapacity: this.props.minInstances,
      maxCapacity: this.props.maxInstances,
    });
    target.node.addDependency(endpoint);
    target.scaleToTrackMetric('Invocations', {
      predefinedMetric: PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
      targetValue: this.props.invocationsPerInstance,
    });
    this.endpoints.push({ endpointName, variantName: VARIANT_NAME, instanceType, modelIds });
  }
}
