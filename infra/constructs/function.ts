/**
 * The house Lambda: arm64, Node 22, ESM bundle with source maps, X-Ray tracing, an explicit
 * log group with retention, and `bind*()` helpers that grant access and set the environment
 * variable in one call.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import { Architecture, Runtime, Tracing } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat, type NodejsFunctionProps } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface HouseFunctionProps extends Omit<NodejsFunctionProps, 'entry' | 'runtime' | 'architecture'> {
  /** The function's folder under `functions/`. */
  readonly functionName: string;
  /** Key that encrypts the log group. */
  readonly logKey?: IKey;
  /** Copy the model manifests into the bundle (`models/<id>/manifest.json`). Default false. */
  readonly withManifests?: boolean;
}

export class HouseFunction extends NodejsFunction {
  constructor(scope: Construct, id: string, props: HouseFunctionProps) {
    const logGroup = new LogGroup(scope, `${id}Logs`, {
      retention: RetentionDays.ONE_YEAR,
      removalPolicy: RemovalPolicy.RETAIN,
      ...(props.logKey ? { encryptionKey: props.logKey } : {}),
    });
    super(scope, id, {
      timeout: Duration.seconds(60),
      memorySize: 1024,
      tracing: Tracing.ACTIVE,
      logGroup,
      ...props,
      entry: path.join(ROOT, 'functions', props.functionName, 'handler.ts'),
      handler: 'handler',
      runtime: Runtime.NODEJS_22_X,
      architecture: Architecture.ARM_64,
      projectRoot: ROOT,
      depsLockFilePath: path.join(ROOT, 'package-lock.json'),
      bundling: {
        format: OutputFormat.ESM,
        minify: true,
        sourceMap: true,
        target: 'node22',
        forceDockerBundling: false,
        mainFields: ['module', 'main'],
        // ESM bundles need a require shim for the CommonJS dependencies they inline.
        banner: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
        externalModules: ['@aws-sdk/*', 'onnxruntime-node'],
        ...(props.withManifests
          ? {
              commandHooks: {
                beforeBundling: () => [],
                beforeInstall: () => [],
                afterBundling: (input: string, output: string) => [
                  `cd "${input}" && for m in models/*/manifest.json; do mkdir -p "${output}/$(dirname "$m")" && cp "$m" "${output}/$m"; done`,
                ],
              },
            }
          : {}),
        ...props.bundling,
      },
      environment: {
        NODE_OPTIONS: '--enable-source-maps',
        ...(props.withManifests ? { MODELS_DIR: '/var/task/models' } : {}),
        ...props.environment,
      },
    });
  }

  /** Lets the function consume a queue's messages and decrypt them. */
  bindQueueConsumer(queue: IQueue): this {
    queue.grantConsumeMessages(this);
    return this;
  }
}
