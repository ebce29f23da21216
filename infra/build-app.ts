/**
 * Builds the CDK app from a validated configuration: the data stack (keys, buckets, tables,
 * secrets, VPC), the serving stack (Triton endpoints) and the pipeline stack (queue, functions,
 * APIs, sweeps, alarms). Used by `infra/app.ts` and by the tests.
 */
import { App, Tags, type AppProps } from 'aws-cdk-lib';
import { ConfigError, type AppConfig } from './config.js';
import { readManifests, selectModels, type ServedModel } from './models.js';
import { addHipaaChecks } from './nag.js';
import { functionExists } from './paths.js';
import { DataStack } from './stacks/data-stack.js';
import { FUNCTION_ENTRIES, PipelineStack, type FunctionRole } from './stacks/pipeline-stack.js';
import { ServingStack } from './stacks/serving-stack.js';

/** Feature flags the app relies on (cdk.json context may add more; the CLI's context wins). */
export const FEATURE_FLAGS = {
  // Server access logs delivered through a bucket policy, not the LogDeliveryWrite ACL.
  '@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy': true,
} as const;

export interface BuildOptions {
  /** Function folder per role (tests stand resource-event in for functions not written yet). */
  readonly entries?: Partial<Record<FunctionRole, string>>;
  /** Register the HIPAA pack as a synthesis-time validation plugin. Default true. */
  readonly hipaaChecks?: boolean;
  readonly appProps?: AppProps;
  /** Manifests to serve instead of `models/*`. */
  readonly models?: readonly ServedModel[];
}

export interface FhirAnalyticsApp {
  readonly app: App;
  readonly data: DataStack;
  readonly serving: ServingStack;
  readonly pipeline: PipelineStack;
  readonly models: readonly ServedModel[];
}

/** Names the configuration field of a feature whose function folder does not exist. */
function checkFunctionsExist(config: AppConfig, entries: BuildOptions['entries']): void {
  const needed: [FunctionRole, boolean, string][] = [
    ['notify', config.notify.enabled, 'notify.enabled'],
    ['partnerApi', config.partnerApi.enabled, 'partnerApi.enabled'],
    ['populationSweep', config.sweeps.enabled, 'sweeps.enabled'],
  ];
  for (const [role, enabled, field] of needed) {
    const entry = entries?.[role] ?? FUNCTION_ENTRIES[role];
    if (enabled && !functionExists(entry)) {
      throw new ConfigError(
        `${field}: functions/${entry}/handler.ts does not exist yet; set ${field} to false`,
      );
    }
  }
}

export function buildApp(config: AppConfig, options: BuildOptions = {}): FhirAnalyticsApp {
  checkFunctionsExist(config, options.entries);
  const models = options.models ?? selectModels(config, readManifests());
  if (models.length === 0) throw new ConfigError('models.include: no models selected to deploy');

  const app = new App({
    ...options.appProps,
    context: { ...FEATURE_FLAGS, ...options.appProps?.context },
  });
  if (options.hipaaChecks ?? true) addHipaaChecks(app);
  const env = config.env ? { account: config.env.account, region: config.env.region } : undefined;
  const name = (s: string) => `${config.stackPrefix}${s}`;

  const data = new DataStack(app, name('Data'), {
    env,
    config,
    description: 'fhir-analytics: keys, storage, network',
  });
  const serving = new ServingStack(app, name('Serving'), {
    env,
    config,
    models,
    key: data.key,
    artifactBucket: data.artifactBucket,
    captureBucket: data.exportBucket,
    vpc: data.vpc,
    description: 'fhir-analytics: SageMaker Triton endpoints',
  });
  const pipeline = new PipelineStack(app, name('Pipeline'), {
    env,
    config,
    endpoints: serving.endpoints,
    exportBucket: data.exportBucket,
    checkpointTable: data.checkpointTable,
    eventStateTable: data.eventStateTable,
    replayCacheTable: data.replayCacheTable,
    fhirCredentials: data.fhirCredentials,
    notificationToken: data.notificationToken,
    vpc: data.vpc,
    entries: options.entries,
    description: 'fhir-analytics: queue, functions, APIs, sweeps, alarms',
  });
  pipeline.addStackDependency(serving, 'functions invoke the endpoints by name');
  for (const stack of [data, serving, pipeline]) {
    Tags.of(stack).add('project', 'fhir-analytics');
    Tags.of(stack).add('data-classification', 'phi');
  }
  return { app, data, serving, pipeline, models };
}
