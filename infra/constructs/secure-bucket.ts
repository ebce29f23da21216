/**
 * A bucket for data: KMS (bucket key on), versioned, public access blocked, TLS only, access
 * logs to the access-log bucket, retained on stack deletion.
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import {
  BlockPublicAccess,
  Bucket,
  BucketEncryption,
  ObjectOwnership,
  type IBucket,
  type LifecycleRule,
} from 'aws-cdk-lib/aws-s3';
import { Validations } from 'aws-cdk-lib';
import type { Construct } from 'constructs';

export interface SecureBucketProps {
  readonly encryptionKey: IKey;
  /** Server access logs go here, under `<logPrefix>`. */
  readonly accessLogsBucket: IBucket;
  readonly logPrefix: string;
  /** Lifecycle rules. Default: noncurrent versions expire after 90 days. */
  readonly lifecycleRules?: LifecycleRule[];
}

const REPLICATION_REASON =
  'Cross-region replication is a disaster-recovery choice of the deploying organisation (a second region, its own key); versioning and KMS are on, and replication can be added without changing this app.';

export class SecureBucket extends Bucket {
  constructor(scope: Construct, id: string, props: SecureBucketProps) {
    super(scope, id, {
      encryption: BucketEncryption.KMS,
      encryptionKey: props.encryptionKey,
      bucketKeyEnabled: true,
      versioned: true,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      objectOwnership: ObjectOwnership.BUCKET_OWNER_ENFORCED,
      serverAccessLogsBucket: props.accessLogsBucket,
      serverAccessLogsPrefix: props.logPrefix,
      removalPolicy: RemovalPolicy.RETAIN,
      lifecycleRules: props.lifecycleRules ?? [{ noncurrentVersionExpiration: Duration.days(90) }],
    });
    Validations.of(this).acknowledge({
      id: 'HIPAA.Security-S3BucketReplicationEnabled',
      reason: REPLICATION_REASON,
    });
  }
}

/** The server-access-log bucket: SSE-S3 (S3 log delivery cannot write to SSE-KMS targets). */
export class AccessLogsBucket extends Bucket {
  constructor(scope: Construct, id: string) {
    super(scope, id, {
      encryption: BucketEncryption.S3_MANAGED,
      versioned: true,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      objectOwnership: ObjectOwnership.BUCKET_OWNER_ENFORCED,
      removalPolicy: RemovalPolicy.RETAIN,
      lifecycleRules: [{ noncurrentVersionExpiration: Duration.days(90) }],
    });
    const v = Validations.of(this);
    v.acknowledge({
      id: 'HIPAA.Security-S3DefaultEncryptionKMS',
      reason:
        'Target of S3 server access logging, which supports only SSE-S3 destination buckets; the logs hold request metadata, not object contents.',
    });
    v.acknowledge({
      id: 'HIPAA.Security-S3BucketLoggingEnabled',
      reason: 'This is the access-log bucket itself; logging it into itself would loop.',
    });
    v.acknowledge({ id: 'HIPAA.Security-S3BucketReplicationEnabled', reason: REPLICATION_REASON });
  }
}
