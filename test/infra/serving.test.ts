/* eslint-disable @typescript-eslint/no-unsafe-assignment -- vitest's asymmetric matchers (expect.anything(), …) are typed any */
/**
 * The Triton endpoints, per model and multi-model, over a fixed set of test models (two CPU,
 * two GPU): model data, image by region, instance types, KMS, data capture, autoscaling; and
 * the HIPAA checks on the other configurations (VPC, multi-model, SigV4).
 */
import { Match } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { DLC_ACCOUNT_OVERRIDES, dlcAccount } from '../../infra/triton-image.js';
import { hasLocalInstanceStorage, isGpuInstance } from '../../infra/models.js';
import { nagFindings } from '../../infra/nag.js';
import { build, config, NO_BUNDLING, resourcesOf, TEST_MODELS } from './helpers.js';

describe('per-model endpoints', () => {
  const app = build(config(), { models: TEST_MODELS, appProps: NO_BUNDLING });
  const t = app.templates.serving;

  it('creates a model, an endpoint config, an endpoint and a scaling policy per model', () => {
    for (const type of [
      'AWS::SageMaker::Model',
      'AWS::SageMaker::EndpointConfig',
      'AWS::SageMaker::Endpoint',
    ]) {
      t.resourceCountIs(type, TEST_MODELS.length);
    }
    t.resourceCountIs('AWS::ApplicationAutoScaling::ScalableTarget', TEST_MODELS.length);
    t.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', {
      ServiceNamespace: 'sagemaker',
      ScalableDimension: 'sagemaker:variant:DesiredInstanceCount',
      ResourceId: 'endpoint/fhir-analytics-pbc-gru/variant/primary',
      MinCapacity: 1,
      MaxCapacity: 2,
    });
    t.hasResourceProperties('AWS::ApplicationAutoScaling::ScalingPolicy', {
      TargetTrackingScalingPolicyConfiguration: {
        PredefinedMetricSpecification: { PredefinedMetricType: 'SageMakerVariantInvocationsPerInstance' },
        TargetValue: 200,
      },
    });
  });

  it('serves uncompressed S3Prefix model data with the Triton default model name, network-isolated', () => {
    t.hasResourceProperties('AWS::SageMaker::Model', {
      EnableNetworkIsolation: true,
      PrimaryContainer: {
        Environment: { SAGEMAKER_TRITON_DEFAULT_MODEL_NAME: 'lung_nodule_cnn' },
        ModelDataSource: {
          S3DataSource: {
            S3DataType: 'S3Prefix',
            CompressionType: 'None',
            S3Uri: { 'Fn::Join': ['', ['s3://', Match.anyValue(), '/triton/lung-nodule-cnn/2.1.0/']] },
          },
        },
      },
    });
  });

  it('picks the Triton image account by region through a mapping when the stack is environment-agnostic', () => {
    const mapping = t.findMappings('TritonImageAccounts');
    const accounts = Object.values(mapping)[0] as Record<string, { account: string }>;
    expect(accounts['us-east-1']?.account).toBe('763104351884');
    expect(accounts['af-south-1']?.account).toBe('626614931356');
    expect(accounts['cn-north-1']?.account).toBe('727897471807');
    const model = resourcesOf([t], 'AWS::SageMaker::Model')[0]?.[1];
    const image = JSON.stringify((model?.PrimaryContainer as { Image: unknown }).Image);
    expect(image).toContain('Fn::FindInMap');
    expect(image).toContain('/sagemaker-tritonserver:24.09-py3');
  });

  it('runs neural models on GPU instances without KmsKeyId (local NVMe), CPU models with the data key', () => {
    const configs = resourcesOf([t], 'AWS::SageMaker::EndpointConfig');
    const byType = (type: string) =>
      configs.filter(
        ([, c]) => (c.ProductionVariants as { InstanceType: string }[])[0]?.InstanceType === type,
      );
    expect(byType('ml.g5.xlarge')).toHaveLength(2);
    expect(byType('ml.c6i.xlarge')).toHaveLength(2);
    for (const [, c] of byType('ml.g5.xlarge')) expect(c.KmsKeyId).toBeUndefined();
    for (const [, c] of byType('ml.c6i.xlarge')) expect(c.KmsKeyId).toBeDefined();
    for (const [, c] of configs) {
      expect(c.DataCaptureConfig).toMatchObject({
        InitialSamplingPercentage: 20,
        CaptureOptions: [{ CaptureMode: 'Input' }, { CaptureMode: 'Output' }],
      });
    }
  });

  it('uses the concrete account of the configured region', () => {
    const regional = build(config({ env: { account: '123456789012', region: 'ap-east-1' } }), {
      models: TEST_MODELS.slice(0, 1),
      appProps: NO_BUNDLING,
    });
    regional.templates.serving.hasResourceProperties('AWS::SageMaker::Model', {
      PrimaryContainer: {
        Image: '871362719292.dkr.ecr.ap-east-1.amazonaws.com/sagemaker-tritonserver:24.09-py3',
      },
    });
  });
});

describe('one multi-model endpoint', () => {
  const app = build(config({ models: { endpointMode: 'multi-model' } }), {
    models: TEST_MODELS,
    appProps: NO_BUNDLING,
  });
  const t = app.templates.serving;

  it('hosts every model behind one MultiModel container on a GPU instance', () => {
    t.resourceCountIs('AWS::SageMaker::Model', 1);
    t.resourceCountIs('AWS::SageMaker::Endpoint', 1);
    t.hasResourceProperties('AWS::SageMaker::Model', {
      PrimaryContainer: {
        Mode: 'MultiModel',
        Environment: { SAGEMAKER_MULTI_MODEL: 'true' },
        ModelDataUrl: { 'Fn::Join': ['', ['s3://', Match.anyValue(), '/triton-mme/']] },
      },
    });
    t.hasResourceProperties('AWS::SageMaker::EndpointConfig', {
      ProductionVariants: [Match.objectLike({ InstanceType: 'ml.g5.xlarge' })],
    });
    t.hasResourceProperties('AWS::SageMaker::Endpoint', { EndpointName: 'fhir-analytics-multi-model' });
  });

  it('tells the functions the endpoint name and mode, and scopes invocation to it', () => {
    const fn = resourcesOf([app.templates.pipeline], 'AWS::Lambda::Function')[0]?.[1];
    expect((fn?.Environment as { Variables: Record<string, string> }).Variables).toMatchObject({
      SAGEMAKER_ENDPOINT_MODE: 'multi-model',
      SAGEMAKER_ENDPOINT_NAME: 'fhir-analytics-multi-model',
    });
    const policies = JSON.stringify(app.templates.pipeline.findResources('AWS::IAM::Policy'));
    expect(policies).toContain(':endpoint/fhir-analytics-multi-model');
    expect(policies).not.toContain(':endpoint/fhir-analytics-pbc-gru');
  });
});

describe('HIPAA checks on the other configurations', () => {
  it.each([
    [
      'a new VPC, multi-model, SigV4 (HealthLake)',
      {
        vpc: { mode: 'create' },
        models: { endpointMode: 'multi-model' },
        fhir: {
          auth: {
            mode: 'sigv4',
            datastoreArn: 'arn:aws:healthlake:us-east-1:123456789012:datastore/fhir/abc123',
          },
        },
      },
    ],
    [
      'an imported VPC, per model',
      {
        vpc: {
          mode: 'import',
          vpcId: 'vpc-0a1b2c3d4e5f60718',
          availabilityZones: ['us-east-1a', 'us-east-1b'],
          privateSubnetIds: ['subnet-0a1b2c3d4e5f60718', 'subnet-0f1e2d3c4b5a69788'],
        },
      },
    ],
    [
      'the minimal app (event path only)',
      { notify: { enabled: false }, partnerApi: { enabled: false }, sweeps: { enabled: false } },
    ],
  ])('%s: no unacknowledged findings', (_name, overrides) => {
    const app = build(config(overrides), { models: TEST_MODELS, appProps: NO_BUNDLING });
    expect(nagFindings(app.app)).toEqual([]);
  });

  it('puts functions and endpoints in the private subnets of a new VPC with flow logs', () => {
    const app = build(config({ vpc: { mode: 'create' } }), {
      models: TEST_MODELS.slice(0, 1),
      appProps: NO_BUNDLING,
    });
    app.templates.data.resourceCountIs('AWS::EC2::FlowLog', 1);
    app.templates.data.hasResourceProperties('AWS::EC2::VPCEndpoint', { VpcEndpointType: 'Gateway' });
    for (const [, fn] of resourcesOf([app.templates.pipeline], 'AWS::Lambda::Function')) {
      expect(fn.VpcConfig).toMatchObject({
        SubnetIds: expect.any(Array),
        SecurityGroupIds: expect.any(Array),
      });
    }
    app.templates.serving.hasResourceProperties('AWS::SageMaker::Model', {
      VpcConfig: { Subnets: Match.anyValue(), SecurityGroupIds: Match.anyValue() },
    });
  });

  it('grants HealthLake access on the configured data store only, with no secret in SigV4 mode', () => {
    const app = build(
      config({
        fhir: {
          auth: {
            mode: 'sigv4',
            datastoreArn: 'arn:aws:healthlake:us-east-1:123456789012:datastore/fhir/abc123',
          },
        },
      }),
      { models: TEST_MODELS.slice(0, 1), appProps: NO_BUNDLING },
    );
    app.templates.data.resourceCountIs('AWS::SecretsManager::Secret', 1); // the notification token only
    const policies = JSON.stringify(app.templates.pipeline.findResources('AWS::IAM::Policy'));
    expect(policies).toContain('healthlake:ReadResource');
    expect(policies).toContain('arn:aws:healthlake:us-east-1:123456789012:datastore/fhir/abc123');
    // Writes only where reports are written: the notify function reads and searches.
    const byId = app.templates.pipeline.findResources('AWS::IAM::Policy');
    const actionsOf = (prefix: string) =>
      JSON.stringify(Object.entries(byId).filter(([id]) => id.startsWith(prefix)));
    expect(actionsOf('NotifyFunction')).toContain('healthlake:SearchWithGet');
    expect(actionsOf('NotifyFunction')).not.toContain('healthlake:CreateResource');
    expect(actionsOf('ResourceEventFunction')).toContain('healthlake:CreateResource');
    // The export: Begin starts it (and a retried Begin describes the job it started), Poll
    // describes, Plan cancels; no other step touches it.
    expect(actionsOf('PopulationSweepStartFunction')).toContain('healthlake:StartFHIRExportJobWithGet');
    expect(actionsOf('PopulationSweepStartFunction')).toContain('healthlake:DescribeFHIRExportJobWithGet');
    expect(actionsOf('PopulationSweepPollFunction')).toContain('healthlake:DescribeFHIRExportJobWithGet');
    expect(actionsOf('PopulationSweepPollFunction')).not.toContain('healthlake:StartFHIRExportJobWithGet');
    expect(actionsOf('PopulationSweepPlanFunction')).toContain('healthlake:CancelFHIRExportJobWithDelete');
    expect(actionsOf('PopulationSweepSearchFunction')).not.toContain('FHIRExportJob');
  });
});

describe('instance-type facts', () => {
  it('knows GPU and local-storage instance families', () => {
    expect(isGpuInstance('ml.g5.xlarge')).toBe(true);
    expect(isGpuInstance('ml.g6e.2xlarge')).toBe(true);
    expect(isGpuInstance('ml.c6i.xlarge')).toBe(false);
    expect(hasLocalInstanceStorage('ml.g5.xlarge')).toBe(true);
    expect(hasLocalInstanceStorage('ml.c6i.xlarge')).toBe(false);
    expect(hasLocalInstanceStorage('ml.m5d.large')).toBe(true);
    expect(dlcAccount('eu-west-1')).toBe('763104351884');
    expect(Object.keys(DLC_ACCOUNT_OVERRIDES)).toContain('me-south-1');
  });
});
