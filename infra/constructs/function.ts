/**
 * The house Lambda: arm64, Node 22, minified ESM bundle with source maps (local esbuild through
 * `bundling.ts`, the same build `npm run bench` measures; no Docker), X-Ray
 * tracing, an explicit KMS-encrypted log group with retention, reserved concurrency, and
 * `bind*()` helpers that grant least-privilege access and set the environment variable in one
 * call.
 */
import * as path from 'node:path';
import { AssetHashType, DockerImage, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import type { IVpc } from 'aws-cdk-lib/aws-ec2';
import { SubnetType } from 'aws-cdk-lib/aws-ec2';
import { PolicyStatement } from 'aws-cdk-lib/aws-iam';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import { Architecture, Code, Runtime, Tracing } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, type NodejsFunctionProps } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import type { ISecret } from 'aws-cdk-lib/aws-secretsmanager';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { functionEntry, REPO_ROOT } from '../paths.js';
import { bundleFunctionSync } from './bundling.js';

/** What a function may invoke: SageMaker endpoints by name (see `ModelEndpoints`). */
export interface IEndpointCatalog {
  /** `per-model` (`<prefix><model id>`) or `multi-model` (one endpoint, `TargetModel` per model). */
  readonly mode: 'per-model' | 'multi-model';
  readonly endpointPrefix: string;
  readonly endpointNames: readonly string[];
}

export interface HouseFunctionProps extends Omit<
  NodejsFunctionProps,
  | 'entry'
  | 'runtime'
  | 'architecture'
  | 'functionName'
  | 'logGroup'
  | 'logRetention'
  | 'code'
  | 'handler'
  | 'bundling'
  | 'projectRoot'
  | 'depsLockFilePath'
> {
  /** The function's folder under `functions/` (its entry is `functions/<entryName>/handler.ts`). */
  readonly entryName: string;
  /** Key that encrypts the log group (its policy must let CloudWatch Logs use it). */
  readonly logKey: IKey;
  /** Retention of the function's log group. */
  readonly logGroupRetention: RetentionDays;
  /** Reserved concurrency: every function has a ceiling (HIPAA.Security-LambdaConcurrency). */
  readonly reservedConcurrentExecutions: number;
  /** Copy the model manifests and cards into the bundle (`models/<id>/{manifest.json,card.md}`). Default false. */
  readonly withManifests?: boolean;
  /** Run in this VPC's private subnets. Default: no VPC (acknowledged, with the reason). */
  readonly vpc?: IVpc;
}

/**
 * The function's code asset: `functions/<entryName>/handler.ts` bundled locally by `bundling.ts`
 * (which can run esbuild plugins; NodejsFunction's own bundling cannot), plus the model manifests
 * when asked. The asset hash is the output's, as NodejsFunction's; `command` only names the
 * bundle in the asset cache key and the Docker image is never used (local bundling answers or
 * throws).
 */
function houseCode(entryName: string, withManifests: boolean): Code {
  const entry = functionEntry(entryName);
  return Code.fromAsset(REPO_ROOT, {
    assetHashType: AssetHashType.OUTPUT,
    bundling: {
      image: DockerImage.fromRegistry('local-bundling-only'),
      command: [
        'bundling.ts',
        path.relative(REPO_ROOT, entry),
        ...(withManifests ? ['--with-manifests'] : []),
      ],
      local: {
        tryBundle(outputDir: string): boolean {
          bundleFunctionSync(entry, outputDir, { withManifests });
          return true;
        },
      },
    },
  });
}

export class HouseFunction extends NodejsFunction {
  readonly entryName: string;

  constructor(scope: Construct, id: string, props: HouseFunctionProps) {
    const logGroup = new LogGroup(scope, `${id}Logs`, {
      retention: props.logGroupRetention,
      removalPolicy: RemovalPolicy.RETAIN,
      encryptionKey: props.logKey,
    });
    const {
      entryName,
      logKey: _logKey,
      logGroupRetention: _logGroupRetention,
      withManifests,
      vpc,
      ...rest
    } = props;
    super(scope, id, {
      timeout: Duration.seconds(60),
      memorySize: 1024,
      tracing: Tracing.ACTIVE,
      ...rest,
      logGroup,
      code: houseCode(entryName, withManifests ?? false),
      handler: 'index.handler',
      runtime: Runtime.NODEJS_22_X,
      architecture: Architecture.ARM_64,
      ...(vpc ? { vpc, vpcSubnets: { subnetType: SubnetType.PRIVATE_WITH_EGRESS } } : {}),
      environment: {
        NODE_OPTIONS: '--enable-source-maps',
        ...(withManifests ? { MODELS_DIR: '/var/task/models' } : {}),
        ...props.environment,
      },
    });
    this.entryName = entryName;

    Validations.of(this).acknowledge({
      id: 'HIPAA.Security-LambdaDLQ',
      reason:
        'Invoked synchronously only (SQS event source mapping, API Gateway, Step Functions): failed SQS records go to the queue DLQ, API and state-machine callers see the error; a function DLQ only serves asynchronous invocations.',
    });
    if (!vpc) {
      Validations.of(this).acknowledge({
        id: 'HIPAA.Security-LambdaInsideVPC',
        reason:
          'Deployed with `vpc.mode: none` by configuration: the function reaches the FHIR server and AWS APIs over TLS; choose `create` or `import` to place it in private subnets.',
      });
    }
    if (this.role) {
      Validations.of(this.role).acknowledge({
        id: 'HIPAA.Security-IAMNoInlinePolicy',
        reason:
          "The function's own role carries one CDK-generated policy written by bind*() grants, scoped to resource ARNs; it is attached to this role only.",
      });
    }
  }

  /** Consumes (receive, delete, visibility) and decrypts a queue's messages; sets `envName` to its URL. */
  bindQueueConsumer(queue: IQueue, envName = 'QUEUE_URL'): this {
    queue.grantConsumeMessages(this);
    this.addEnvironment(envName, queue.queueUrl);
    return this;
  }

  /** Sends (and encrypts) messages to a queue; sets `envName` to its URL. */
  bindQueueProducer(queue: IQueue, envName = 'QUEUE_URL'): this {
    queue.grantSendMessages(this);
    this.addEnvironment(envName, queue.queueUrl);
    return this;
  }

  /**
   * `sagemaker:InvokeEndpoint` on exactly the catalog's endpoint ARNs; sets
   * `SAGEMAKER_ENDPOINT_PREFIX` and `SAGEMAKER_ENDPOINT_MODE` (and `SAGEMAKER_ENDPOINT_NAME` for
   * a multi-model endpoint).
   */
  bindEndpointInvoker(catalog: IEndpointCatalog): this {
    const stack = Stack.of(this);
    this.addToRolePolicy(
      new PolicyStatement({
        actions: ['sagemaker:InvokeEndpoint'],
        resources: catalog.endpointNames.map((name) =>
          stack.formatArn({ service: 'sagemaker', resource: 'endpoint', resourceName: name.toLowerCase() }),
        ),
      }),
    );
    this.addEnvironment('SAGEMAKER_ENDPOINT_PREFIX', catalog.endpointPrefix);
    this.addEnvironment('SAGEMAKER_ENDPOINT_MODE', catalog.mode);
    if (catalog.mode === 'multi-model' && catalog.endpointNames[0]) {
      this.addEnvironment('SAGEMAKER_ENDPOINT_NAME', catalog.endpointNames[0]);
    }
    return this;
  }

  /** Data-plane access to a table (and its key); sets `envName` to the table name. */
  bindTable(table: ITable, envName: string, access: 'read' | 'readWrite' = 'readWrite'): this {
    if (access === 'read') table.grantReadData(this);
    else table.grantReadWriteData(this);
    this.addEnvironment(envName, table.tableName);
    return this;
  }

  /**
   * Object access under one prefix of a bucket (and its key); sets `envName` to the bucket name
   * and `${envName}_PREFIX` to the prefix.
   */
  bindBucket(bucket: IBucket, envName: string, prefix: string, access: 'read' | 'readWrite' = 'read'): this {
    const pattern = `${prefix}*`;
    if (access === 'read') bucket.grantRead(this, pattern);
    else bucket.grantReadWrite(this, pattern);
    this.addEnvironment(envName, bucket.bucketName);
    this.addEnvironment(`${envName}_PREFIX`, prefix);
    return this;
  }

  /**
   * Reads (and decrypts) one secret; sets `envName` to its ARN. Both grants go on the function's
   * role (not the key policy, which `Secret.grantRead` would edit), so a secret in another stack
   * creates no dependency cycle.
   */
  bindSecret(secret: ISecret, envName: string): this {
    const stack = Stack.of(this);
    this.addToRolePolicy(
      new PolicyStatement({
        actions: ['secretsmanager:GetSecretValue', 'secretsmanager:DescribeSecret'],
        resources: [secret.secretFullArn ?? `${secret.secretArn}-??????`],
      }),
    );
    if (secret.encryptionKey) {
      this.addToRolePolicy(
        new PolicyStatement({
          actions: ['kms:Decrypt'],
          resources: [secret.encryptionKey.keyArn],
          conditions: {
            StringEquals: { 'kms:ViaService': `secretsmanager.${stack.region}.${stack.urlSuffix}` },
          },
        }),
      );
    }
    this.addEnvironment(envName, secret.secretArn);
    return this;
  }
}
