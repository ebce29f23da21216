/* eslint-disable @typescript-eslint/no-unsafe-assignment -- vitest's asymmetric matchers (expect.anything(), …) are typed any */
/**
 * The full app (every feature on, resource-event standing in for the functions not written
 * yet), synthesized once: encryption of every store, Lambda defaults, the sweep pipeline,
 * alarms, and the HIPAA checks (least-privilege IAM and the two APIs: stacks-access.test.ts).
 */
import { Match, type Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { acknowledgements, nagFindings } from '../../infra/nag.js';
import { build, config, resourcesOf, type Built } from './helpers.js';

let app: Built;
let all: Template[];

beforeAll(() => {
  app = build(config());
  all = [app.templates.data, app.templates.serving, app.templates.pipeline];
});

describe('encryption at rest', () => {
  it('encrypts both FIFO queues with the pipeline key and enforces TLS', () => {
    const queues = resourcesOf(all, 'AWS::SQS::Queue');
    expect(queues).toHaveLength(2);
    for (const [, q] of queues) {
      expect(q.FifoQueue).toBe(true);
      expect(q.KmsMasterKeyId).toEqual({ 'Fn::GetAtt': [expect.stringMatching(/^PipelineKey/), 'Arn'] });
    }
    app.templates.pipeline.hasResourceProperties('AWS::SQS::Queue', {
      RedrivePolicy: { maxReceiveCount: 5, deadLetterTargetArn: Match.anyValue() },
    });
    app.templates.pipeline.resourceCountIs('AWS::SQS::QueuePolicy', 2);
  });

  it('gives the three tables a customer-managed key, PITR, deletion protection and a backup selection', () => {
    const tables = resourcesOf(all, 'AWS::DynamoDB::Table');
    expect(tables).toHaveLength(3);
    for (const [, t] of tables) {
      expect(t.SSESpecification).toMatchObject({
        SSEEnabled: true,
        SSEType: 'KMS',
        KMSMasterKeyId: expect.anything(),
      });
      expect(t.PointInTimeRecoverySpecification).toEqual({ PointInTimeRecoveryEnabled: true });
      expect(t.DeletionProtectionEnabled).toBe(true);
      expect(t.BillingMode).toBe('PAY_PER_REQUEST');
    }
    app.templates.data.hasResourceProperties('AWS::Backup::BackupVault', {
      EncryptionKeyArn: Match.anyValue(),
    });
    app.templates.data.resourceCountIs('AWS::Backup::BackupSelection', 1);
  });

  it('blocks public access, versions and encrypts every bucket; KMS except the access-log bucket', () => {
    const buckets = resourcesOf(all, 'AWS::S3::Bucket');
    expect(buckets).toHaveLength(3);
    for (const [, b] of buckets) {
      expect(b.PublicAccessBlockConfiguration).toEqual({
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      });
      expect(b.VersioningConfiguration).toEqual({ Status: 'Enabled' });
    }
    const kms = buckets.filter(([, b]) =>
      JSON.stringify(b.BucketEncryption).includes('"SSEAlgorithm":"aws:kms"'),
    );
    expect(kms.map(([id]) => id.replace(/[0-9A-F]{8}$/, '')).sort()).toEqual(['Artifacts', 'Exports']);
    for (const [, b] of kms)
      expect(b.LoggingConfiguration).toMatchObject({
        DestinationBucketName: { Ref: expect.stringMatching(/^AccessLogs/) },
      });
    // TLS only: every bucket policy denies aws:SecureTransport=false.
    const policies = resourcesOf(all, 'AWS::S3::BucketPolicy');
    expect(policies).toHaveLength(3);
    for (const [, p] of policies) expect(JSON.stringify(p)).toContain('"aws:SecureTransport":"false"');
  });

  it('encrypts every log group with a key and keeps it at least 90 days', () => {
    const groups = resourcesOf(all, 'AWS::Logs::LogGroup');
    // 10 functions (the sweep's start, poll, search, stage, plan, item and finish among them),
    // notify access + WAF logs, partner access logs, state machine.
    expect(groups).toHaveLength(14);
    for (const [, g] of groups) {
      expect(g.KmsKeyId).toBeDefined();
      expect(g.RetentionInDays).toBeGreaterThanOrEqual(90);
    }
  });

  it('encrypts the alarm topic, the secrets, the state machine, the schedules and data capture', () => {
    app.templates.pipeline.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: Match.anyValue() });
    app.templates.pipeline.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'ops@example.org',
    });
    const secrets = resourcesOf(all, 'AWS::SecretsManager::Secret');
    expect(secrets).toHaveLength(2);
    for (const [, s] of secrets) expect(s.KmsKeyId).toBeDefined();
    app.templates.pipeline.hasResourceProperties('AWS::StepFunctions::StateMachine', {
      EncryptionConfiguration: { Type: 'CUSTOMER_MANAGED_KMS_KEY', KmsKeyId: Match.anyValue() },
    });
    app.templates.pipeline.hasResourceProperties('AWS::Scheduler::Schedule', { KmsKeyArn: Match.anyValue() });
    for (const [, c] of resourcesOf(all, 'AWS::SageMaker::EndpointConfig')) {
      expect(c.DataCaptureConfig).toMatchObject({ KmsKeyId: expect.anything(), EnableCapture: true });
    }
    for (const [, k] of resourcesOf(all, 'AWS::KMS::Key')) expect(k.EnableKeyRotation).toBe(true);
  });

  it('retains data on stack deletion', () => {
    for (const type of [
      'AWS::S3::Bucket',
      'AWS::DynamoDB::Table',
      'AWS::KMS::Key',
      'AWS::Logs::LogGroup',
      'AWS::SecretsManager::Secret',
    ]) {
      for (const t of all) {
        for (const r of Object.values(t.findResources(type)))
          expect((r as { DeletionPolicy?: string }).DeletionPolicy).toBe('Retain');
      }
    }
  });
});

describe('functions', () => {
  it('builds ten arm64 Node 22 functions with tracing, reserved concurrency and their own log group', () => {
    const fns = resourcesOf([app.templates.pipeline], 'AWS::Lambda::Function');
    expect(fns).toHaveLength(10);
    for (const [id, f] of fns) {
      expect(f).toMatchObject({
        Architectures: ['arm64'],
        Runtime: 'nodejs22.x',
        // The sweep's bundle has one entry point per state (test/infra/sweep.test.ts).
        Handler: id.startsWith('PopulationSweep')
          ? expect.stringMatching(/^index\.(start|poll|search|stageFile|plan|item|finish)Handler$/)
          : 'index.handler',
        TracingConfig: { Mode: 'Active' },
        LoggingConfig: { LogGroup: { Ref: expect.stringMatching(/Logs/) } },
      });
      expect(f.ReservedConcurrentExecutions).toBeGreaterThan(0);
      expect((f.Environment as { Variables: Record<string, unknown> }).Variables).toMatchObject({
        NODE_OPTIONS: '--enable-source-maps',
        FHIR_BASE_URL: 'https://fhir.example.org/r4',
        FHIR_AUTH_MODE: 'smart-backend-services',
        FHIR_CREDENTIALS_SECRET_ARN: expect.anything(),
        DICOMWEB_ALLOWED_BASE_URLS: 'https://pacs.example.org/dicomweb',
      });
    }
    const sweepWorker = fns.find(([id]) => id.startsWith('PopulationSweepFunction'));
    expect(sweepWorker?.[1].ReservedConcurrentExecutions).toBe(8);
  });

  it('feeds resource-event from the queue with partial batch failures', () => {
    app.templates.pipeline.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      BatchSize: 10,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
    });
  });

  it('sets the environment variable of each binding', () => {
    const env = (prefix: string) =>
      (
        resourcesOf([app.templates.pipeline], 'AWS::Lambda::Function').find(([id]) =>
          id.startsWith(prefix),
        )?.[1].Environment as { Variables: Record<string, unknown> }
      ).Variables;
    expect(Object.keys(env('ResourceEventFunction'))).toEqual(
      expect.arrayContaining([
        'QUEUE_URL',
        'SAGEMAKER_ENDPOINT_PREFIX',
        'SAGEMAKER_ENDPOINT_MODE',
        'MODELS_DIR',
      ]),
    );
    expect(Object.keys(env('NotifyFunction'))).toEqual(
      expect.arrayContaining(['QUEUE_URL', 'EVENT_STATE_TABLE', 'NOTIFY_SUBSCRIPTIONS', 'NOTIFY_AUDIENCE']),
    );
    expect(env('PopulationSweepFunction')).toMatchObject({
      SWEEP_BUCKET: expect.anything(),
      SWEEP_PREFIX: 'bulk/sweeps',
      SWEEP_TABLE: expect.anything(),
    });
  });
});

describe('sweeps', () => {
  it('schedules the state machine with EventBridge Scheduler in the configured time zone', () => {
    app.templates.pipeline.hasResourceProperties('AWS::Scheduler::Schedule', {
      ScheduleExpression: 'cron(0 3 * * ? *)',
      ScheduleExpressionTimezone: 'Europe/Berlin',
      Target: Match.objectLike({ Arn: { Ref: Match.stringLikeRegexp('^SweepStateMachine') } }),
    });
  });

  it('fans the staged items out through a Distributed Map, without logging execution data', () => {
    const sm = resourcesOf([app.templates.pipeline], 'AWS::StepFunctions::StateMachine')[0]?.[1];
    const definition = JSON.stringify(sm?.DefinitionString);
    expect(definition).toContain('\\"ProcessorConfig\\":{\\"Mode\\":\\"DISTRIBUTED\\"');
    expect(definition).toContain('\\"MaxConcurrency\\":8');
    expect(definition).toContain('\\"ItemReader\\"');
    expect(sm?.LoggingConfiguration).toMatchObject({ IncludeExecutionData: false, Level: 'ERROR' });
    expect(sm?.TracingConfiguration).toEqual({ Enabled: true });
  });
});

describe('monitoring', () => {
  it('alarms on DLQ depth, each function error rate, each endpoint latency and 5xx, the sweep, all to the topic', () => {
    const alarms = resourcesOf([app.templates.pipeline], 'AWS::CloudWatch::Alarm');
    expect(alarms).toHaveLength(1 + 10 + 2 * app.models.length + 1);
    const sweep = alarms.find(([id]) => id.startsWith('MonitoringPopulationSweepUnfinished'))?.[1];
    const expression = (sweep?.Metrics as { Expression?: string }[] | undefined)?.find((m) => m.Expression);
    expect(expression?.Expression).toBe('failed + timedOut + aborted');
    expect(JSON.stringify(sweep?.Metrics)).toContain('ExecutionsFailed');
    for (const [, a] of alarms) {
      expect(a.AlarmActions).toEqual([{ Ref: expect.stringMatching(/^MonitoringAlarms/) }]);
    }
    const metricNames = alarms.map(([, a]) => a.MetricName).filter(Boolean);
    expect(metricNames.filter((m) => m === 'ModelLatency')).toHaveLength(app.models.length);
    expect(metricNames.filter((m) => m === 'Invocation5XXErrors')).toHaveLength(app.models.length);
    expect(metricNames).toContain('ApproximateNumberOfMessagesVisible');
    app.templates.pipeline.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
  });
});

describe('cdk-nag HIPAA Security', () => {
  it('finds nothing unacknowledged in the whole app', () => {
    expect(nagFindings(app.app)).toEqual([]);
  });

  it('gives every acknowledgement a reason and keeps the list to the expected rules', () => {
    const acks = acknowledgements(app.app).filter((a) => a.rule.startsWith('HIPAA.'));
    for (const a of acks) expect(a.reason.length).toBeGreaterThan(40);
    expect(new Set(acks.map((a) => a.rule))).toEqual(
      new Set([
        'HIPAA.Security-LambdaDLQ',
        'HIPAA.Security-LambdaInsideVPC',
        'HIPAA.Security-IAMNoInlinePolicy',
        'HIPAA.Security-S3BucketReplicationEnabled',
        'HIPAA.Security-S3DefaultEncryptionKMS',
        'HIPAA.Security-S3BucketLoggingEnabled',
        'HIPAA.Security-SecretsManagerRotationEnabled',
        'HIPAA.Security-APIGWCacheEnabledAndEncrypted',
        'HIPAA.Security-APIGWSSLEnabled',
        'HIPAA.Security-SageMakerEndpointConfigurationKMSKeyConfigured',
      ]),
    );
    // Never on a whole stack or the app: always on a resource or its owning construct.
    for (const a of acks) expect(a.path.split('/').length).toBeGreaterThan(1);
  });

  it('reports a non-compliant resource (the check is live)', async () => {
    const { Stack, App } = await import('aws-cdk-lib');
    const { Bucket } = await import('aws-cdk-lib/aws-s3');
    const scratch = new Stack(new App(), 'Scratch');
    new Bucket(scratch, 'Plain');
    const rules = nagFindings(scratch).map((f) => f.rule);
    expect(rules).toEqual(
      expect.arrayContaining([
        'HIPAA.Security-S3DefaultEncryptionKMS',
        'HIPAA.Security-S3BucketSSLRequestsOnly',
      ]),
    );
  });
});
