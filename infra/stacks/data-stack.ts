/**
 * Data at rest: one customer-managed key, the buckets (exports and data capture, model
 * artifacts, access logs), the tables (sweep checkpoints, subscription event-number state,
 * replay caches) with PITR and a backup plan, the FHIR credentials secret, and the VPC (if any).
 */
import { CfnOutput, Duration, RemovalPolicy, Stack, Validations, type StackProps } from 'aws-cdk-lib';
import { BackupPlan, BackupResource, BackupVault } from 'aws-cdk-lib/aws-backup';
import { AttributeType, BillingMode, Table, TableEncryption } from 'aws-cdk-lib/aws-dynamodb';
import { Key } from 'aws-cdk-lib/aws-kms';
import type { IVpc } from 'aws-cdk-lib/aws-ec2';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import { Secret } from 'aws-cdk-lib/aws-secretsmanager';
import type { Construct } from 'constructs';
import { sweepTableDefinition } from '../../shared/sweep/checkpoint.js';
import { logRetention, type AppConfig } from '../config.js';
import { allowLogsToUseKey } from '../constructs/keys.js';
import { Network } from '../constructs/network.js';
import { AccessLogsBucket, SecureBucket } from '../constructs/secure-bucket.js';

export interface DataStackProps extends StackProps {
  readonly config: AppConfig;
}

/** Where things live in the buckets. */
export const PREFIX = {
  /** Bulk $export NDJSON copies and Distributed Map results (PHI). */
  bulk: 'bulk/',
  /** SageMaker data capture (PHI: model inputs and outputs). */
  dataCapture: 'data-capture/',
  /** Triton model repositories, one per model version (no PHI). */
  triton: 'triton/',
  /** Multi-model endpoint archives `<model>.tar.gz` (no PHI). */
  tritonMme: 'triton-mme/',
} as const;

export class DataStack extends Stack {
  readonly key: Key;
  readonly accessLogsBucket: IBucket;
  readonly exportBucket: SecureBucket;
  readonly artifactBucket: SecureBucket;
  readonly checkpointTable: Table;
  readonly eventStateTable: Table;
  readonly replayCacheTable: Table;
  /** SMART Backend Services client credentials; absent in SigV4 (HealthLake) mode. */
  readonly fhirCredentials?: Secret;
  /** Shared token FHIR Subscriptions send in their `Authorization` header; only with notify. */
  readonly notificationToken?: Secret;
  /** Undefined with `vpc.mode: none`. */
  readonly vpc?: IVpc;

  constructor(scope: Construct, id: string, props: DataStackProps) {
    super(scope, id, props);
    const { config } = props;
    this.key = new Key(this, 'DataKey', {
      enableKeyRotation: true,
      description: 'fhir-analytics: data at rest (buckets, tables, secrets, data capture, backups)',
      removalPolicy: RemovalPolicy.RETAIN,
    });
    allowLogsToUseKey(this.key);
    this.vpc = new Network(this, 'Network', {
      vpc: config.vpc,
      key: this.key,
      logRetention: logRetention(config),
    }).vpc;

    this.accessLogsBucket = new AccessLogsBucket(this, 'AccessLogs');
    this.exportBucket = new SecureBucket(this, 'Exports', {
      encryptionKey: this.key,
      accessLogsBucket: this.accessLogsBucket,
      logPrefix: 'exports/',
      lifecycleRules: [
        // Bulk export copies are working data: the FHIR server remains the record.
        { prefix: PREFIX.bulk, expiration: Duration.days(30), noncurrentVersionExpiration: Duration.days(1) },
        { noncurrentVersionExpiration: Duration.days(90) },
      ],
    });
    this.artifactBucket = new SecureBucket(this, 'Artifacts', {
      encryptionKey: this.key,
      accessLogsBucket: this.accessLogsBucket,
      logPrefix: 'artifacts/',
    });

    new CfnOutput(this, 'ArtifactBucketName', { value: this.artifactBucket.bucketName });
    new CfnOutput(this, 'ExportBucketName', { value: this.exportBucket.bucketName });

    const table = (tid: string, partitionKey: string, ttl?: string, sortKey?: string) =>
      new Table(this, tid, {
        partitionKey: { name: partitionKey, type: AttributeType.STRING },
        ...(sortKey ? { sortKey: { name: sortKey, type: AttributeType.STRING } } : {}),
        billingMode: BillingMode.PAY_PER_REQUEST,
        encryption: TableEncryption.CUSTOMER_MANAGED,
        encryptionKey: this.key,
        pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
        deletionProtection: true,
        removalPolicy: RemovalPolicy.RETAIN,
        ...(ttl ? { timeToLiveAttribute: ttl } : {}),
      });
    // The key schema the sweep's checkpoint store reads and writes (`sweepId` + `item`).
    const sweepKeys = sweepTableDefinition().KeySchema ?? [];
    const keyOf = (type: 'HASH' | 'RANGE') => sweepKeys.find((k) => k.KeyType === type)?.AttributeName;
    this.checkpointTable = table('Checkpoints', keyOf('HASH') ?? 'sweepId', undefined, keyOf('RANGE'));
    this.eventStateTable = table('EventState', 'subscription');
    this.replayCacheTable = table('ReplayCache', 'key', 'expiresAt');

    const vault = new BackupVault(this, 'BackupVault', {
      encryptionKey: this.key,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    const plan = BackupPlan.daily35DayRetention(this, 'BackupPlan', vault);
    plan.addSelection('Tables', {
      resources: [this.checkpointTable, this.eventStateTable, this.replayCacheTable].map((t) =>
        BackupResource.fromDynamoDbTable(t),
      ),
    });

    if (config.fhir.auth.mode === 'smart-backend-services') {
      this.fhirCredentials = new Secret(this, 'FhirCredentials', {
        description:
          'SMART Backend Services client key for the FHIR server: {"privateKeyJwk":{...,"kid","alg":"ES384"|"RS384"}} (or "privateKeyPem" with "kid" and "alg"; optional "jku", "clientId"); put it after deployment (docs/fhir-server.md).',
        encryptionKey: this.key,
        removalPolicy: RemovalPolicy.RETAIN,
      });
      Validations.of(this.fhirCredentials).acknowledge({
        id: 'HIPAA.Security-SecretsManagerRotationEnabled',
        reason:
          'Holds the private key of a SMART Backend Services client: rotating it means registering a new public key (JWKS) with the FHIR server, which no generic rotation function can do. Rotate by hand per docs/deploy.md (new kid, publish JWKS, put the secret).',
      });
    }
    if (config.notify.enabled) {
      this.notificationToken = new Secret(this, 'NotificationToken', {
        description: 'Bearer token FHIR Subscriptions send to the notify endpoint (Subscription.header)',
        encryptionKey: this.key,
        generateSecretString: { passwordLength: 48, excludePunctuation: true },
        removalPolicy: RemovalPolicy.RETAIN,
      });
      Validations.of(this.notificationToken).acknowledge({
        id: 'HIPAA.Security-SecretsManagerRotationEnabled',
        reason:
          'Shared with the FHIR server in each Subscription.header: a rotation must update the Subscriptions in the same step, which is an operator procedure (docs/deploy.md), not a rotation Lambda.',
      });
    }
  }
}
