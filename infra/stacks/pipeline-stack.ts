/**
 * The functions and their triggers: the FIFO event queue (KMS, DLQ) feeding resource-event,
 * and, by configuration, the notify API (REST + WAF), the partner API (HTTP + JWT), and the
 * sweeps (Scheduler → Step Functions Distributed Map). Alarms and the dashboard live here too.
 *
 * Function entries default to their folders under `functions/`; `entries` lets a test stand
 * one function in for another that does not exist yet.
 */
import { CfnOutput, Duration, RemovalPolicy, Size, Stack, type StackProps } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import type { IVpc } from 'aws-cdk-lib/aws-ec2';
import { PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { Key } from 'aws-cdk-lib/aws-kms';
import type { CfnFunction } from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import type { RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import type { ISecret } from 'aws-cdk-lib/aws-secretsmanager';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { ENV } from '../../shared/config.js';
import { SWEEP_ITEM_MEMORY_MB, type SweepConfig } from '../../shared/sweep/config.js';
import { logRetention, type AppConfig } from '../config.js';
import { HouseFunction, type IEndpointCatalog } from '../constructs/function.js';
import { allowAlarmsToUseKey, allowLogsToUseKey } from '../constructs/keys.js';
import type { DeployedEndpoint } from '../constructs/model-endpoints.js';
import { Monitoring } from '../constructs/monitoring.js';
import { NotifyApi } from '../constructs/notify-api.js';
import { PartnerApi } from '../constructs/partner-api.js';
import { Sweep, SWEEP_STAGE_CONCURRENCY } from '../constructs/sweep.js';
import { PREFIX } from './data-stack.js';

/** The function folders this stack deploys, by role. */
export const FUNCTION_ENTRIES = {
  resourceEvent: 'resource-event',
  notify: 'notify',
  partnerApi: 'partner-api',
  populationSweep: 'population-sweep',
} as const;
export type FunctionRole = keyof typeof FUNCTION_ENTRIES;

/** Reserved concurrency when `reservedConcurrency` does not name the function. */
const DEFAULT_CONCURRENCY: Record<FunctionRole, number> = {
  resourceEvent: 20,
  notify: 20,
  partnerApi: 20,
  populationSweep: 0, // the item worker: sweeps.maxConcurrency
};

/** The sweep's coordinator and staging functions (same bundle as the item worker, other entry points). */
type SweepPhaseRole =
  | 'populationSweepStart'
  | 'populationSweepPoll'
  | 'populationSweepSearch'
  | 'populationSweepStage'
  | 'populationSweepPlan'
  | 'populationSweepFinish';

/**
 * The sweep's settings (`shared/sweep/config.ts`), by name. The type checks each name is a key
 * of the sweep's parsed configuration; test/infra/sweep-env.test.ts checks the sweep parses them.
 */
export const SWEEP_ENV = {
  SWEEP_TABLE: 'SWEEP_TABLE',
  SWEEP_BUCKET: 'SWEEP_BUCKET',
  SWEEP_PREFIX: 'SWEEP_PREFIX',
  SWEEP_TMP_DIR: 'SWEEP_TMP_DIR',
  SWEEP_EXPORT_MAX_WAIT_MS: 'SWEEP_EXPORT_MAX_WAIT_MS',
} as const satisfies { readonly [K in keyof SweepConfig]?: K };

/** Where the sweep stages exports, items and summaries (no trailing slash: the sweep adds `/<id>/`). */
export const SWEEP_PREFIX = `${PREFIX.bulk}sweeps`;

/**
 * Start's timeout (a kick-off, or the first steps of the paged-search fallback), and the bound
 * on waiting for the export: the state machine's Wait/Choice loop, inside the 24 h execution
 * timeout with time left to stage and score.
 */
export const SWEEP_START_TIMEOUT = Duration.minutes(15);
export const SWEEP_EXPORT_MAX_WAIT = Duration.hours(12);

export interface PipelineStackProps extends StackProps {
  readonly config: AppConfig;
  readonly endpoints: IEndpointCatalog & { readonly endpoints: readonly DeployedEndpoint[] };
  readonly exportBucket: IBucket;
  readonly checkpointTable: ITable;
  readonly eventStateTable: ITable;
  readonly replayCacheTable: ITable;
  readonly fhirCredentials?: ISecret;
  readonly notificationToken?: ISecret;
  readonly vpc?: IVpc;
  /** Function folder per role. Default `FUNCTION_ENTRIES`. */
  readonly entries?: Partial<Record<FunctionRole, string>>;
}

export class PipelineStack extends Stack {
  readonly key: Key;
  readonly queue: Queue;
  readonly deadLetterQueue: Queue;
  /** By role; the sweep's start and finish functions beside its item worker (`populationSweep`). */
  readonly functions: Partial<Record<FunctionRole | SweepPhaseRole, HouseFunction>> = {};
  readonly notifyApi?: NotifyApi;
  readonly partnerApi?: PartnerApi;
  readonly sweep?: Sweep;
  readonly monitoring: Monitoring;

  constructor(
    scope: Construct,
    id: string,
    private readonly props: PipelineStackProps,
  ) {
    super(scope, id, props);
    const { config } = props;
    this.key = new Key(this, 'PipelineKey', {
      enableKeyRotation: true,
      description: 'fhir-analytics: queues, logs, alarm topic, state machine, schedules',
      removalPolicy: RemovalPolicy.RETAIN,
    });
    allowLogsToUseKey(this.key);
    allowAlarmsToUseKey(this.key);

    this.deadLetterQueue = new Queue(this, 'ResourceEventsDlq', {
      fifo: true,
      encryption: QueueEncryption.KMS,
      encryptionMasterKey: this.key,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    // Visibility timeout is six times the function timeout, as Lambda's SQS guidance advises.
    this.queue = new Queue(this, 'ResourceEvents', {
      fifo: true,
      contentBasedDeduplication: false,
      encryption: QueueEncryption.KMS,
      encryptionMasterKey: this.key,
      enforceSSL: true,
      retentionPeriod: Duration.days(4),
      visibilityTimeout: Duration.seconds(360),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: 5 },
    });

    const resourceEvent = this.fn('resourceEvent', { withManifests: true })
      .bindQueueConsumer(this.queue, ENV.QUEUE_URL)
      .bindEndpointInvoker(props.endpoints);
    resourceEvent.addEventSource(
      new SqsEventSource(this.queue, { batchSize: 10, reportBatchItemFailures: true }),
    );

    if (config.notify.enabled) {
      const notify = this.fn('notify', { timeout: Duration.seconds(29) })
        .bindQueueProducer(this.queue, ENV.QUEUE_URL)
        .bindTable(props.eventStateTable, ENV.EVENT_STATE_TABLE);
      this.notifyApi = new NotifyApi(this, 'NotifyApi', {
        handler: notify,
        logKey: this.key,
        logRetention: this.retention,
        throttle: config.notify.throttle,
      });
      // Built from the API's id and the literal stage name: the stage itself depends on the function.
      notify.addEnvironment(
        ENV.NOTIFY_AUDIENCE,
        config.notify.audience ??
          `https://${this.notifyApi.api.restApiId}.execute-api.${this.region}.${this.urlSuffix}/v1/notify`,
      );
      notify.addEnvironment(
        ENV.NOTIFY_SUBSCRIPTIONS,
        JSON.stringify(
          config.notify.subscriptions.map((s) => ({
            id: s.id,
            jwt: { issuer: s.issuer, jwksUrl: s.jwksUrl },
            resourceTypes: s.resourceTypes,
          })),
        ),
      );
      new CfnOutput(this, 'NotifyUrl', { value: this.notifyApi.notifyUrl });
    }

    if (config.partnerApi.enabled) {
      const partner = this.fn('partnerApi', {
        timeout: Duration.seconds(29),
        withManifests: true,
      }).bindEndpointInvoker(props.endpoints);
      this.partnerApi = new PartnerApi(this, 'PartnerApi', {
        handler: partner,
        issuers: config.partnerApi.issuers,
        logKey: this.key,
        logRetention: this.retention,
        throttle: config.partnerApi.throttle,
      });
      partner.addEnvironment(
        ENV.PARTNER_PUBLIC_BASE_URL,
        config.partnerApi.publicBaseUrl ??
          `https://${this.partnerApi.api.apiId}.execute-api.${this.region}.${this.urlSuffix}/${this.partnerApi.stage.stageName}`,
      );
      partner.addEnvironment(
        ENV.PARTNER_OAUTH_ISSUERS,
        JSON.stringify(
          config.partnerApi.issuers.map((i) => ({
            issuer: i.issuer,
            jwksUri: i.jwksUri,
            audience: i.audiences,
          })),
        ),
      );
      partner.addEnvironment(ENV.PARTNER_CDS_ISSUERS, JSON.stringify(config.partnerApi.cdsClients));
      // CDS calls may name only the configured FHIR server as their `fhirServer`.
      partner.addEnvironment(ENV.PARTNER_FHIR_ALLOWLIST, config.fhir.baseUrl);
      new CfnOutput(this, 'PartnerApiUrl', { value: this.partnerApi.stage.url });
    }

    if (config.sweeps.enabled) this.sweep = this.sweeps();

    this.monitoring = new Monitoring(this, 'Monitoring', {
      alarmEmail: config.alarms.email,
      key: this.key,
      deadLetterQueues: [{ name: 'ResourceEventsDlq', queue: this.deadLetterQueue }],
      functions: Object.entries(this.functions).map(([name, fn]) => ({ name, fn })),
      endpoints: props.endpoints.endpoints,
      stateMachines: this.sweep ? [{ name: 'PopulationSweep', machine: this.sweep.stateMachine }] : [],
      errorRatePercent: config.alarms.errorRatePercent,
      modelLatencyMs: config.alarms.modelLatencyMs,
    });
    new CfnOutput(this, 'QueueUrl', { value: this.queue.queueUrl });
  }

  /**
   * The sweep functions (one bundle, an entry point each: `startHandler`, `pollHandler`,
   * `stageFileHandler`, `planHandler`, `itemHandler`, `finishHandler`) with the sweep's settings
   * and grants, and the state machine that runs them.
   */
  private sweeps(): Sweep {
    const { config, exportBucket: bucket, checkpointTable: table } = this.props;
    const env = {
      [SWEEP_ENV.SWEEP_BUCKET]: bucket.bucketName,
      [SWEEP_ENV.SWEEP_PREFIX]: SWEEP_PREFIX,
      [SWEEP_ENV.SWEEP_TABLE]: table.tableName,
      [SWEEP_ENV.SWEEP_TMP_DIR]: '/tmp',
      [SWEEP_ENV.SWEEP_EXPORT_MAX_WAIT_MS]: String(SWEEP_EXPORT_MAX_WAIT.toMilliseconds()),
    };
    const objects = `${SWEEP_PREFIX}/*`;
    const coordinators = Math.max(2, config.sweeps.schedules.length + 1);
    // The coordinator's steps and the file stager: the item worker's bundle, another entry point.
    const step = (role: SweepPhaseRole, handler: string, timeout: Duration, concurrency = coordinators) =>
      this.fn(role, { entryRole: 'populationSweep', handler, timeout, concurrency, withManifests: true });
    const start = step('populationSweepStart', 'startHandler', SWEEP_START_TIMEOUT);
    const poll = step('populationSweepPoll', 'pollHandler', Duration.minutes(1));
    const search = step('populationSweepSearch', 'searchHandler', Duration.minutes(15));
    const stageFile = step(
      'populationSweepStage',
      'stageFileHandler',
      Duration.minutes(15),
      SWEEP_STAGE_CONCURRENCY,
    );
    const plan = step('populationSweepPlan', 'planHandler', Duration.minutes(5));
    const finish = step('populationSweepFinish', 'finishHandler', Duration.minutes(5));
    // The item worker: sorted runs spill to /tmp (2x the largest item's bytes, docs/sweeps.md).
    const item = this.fn('populationSweep', {
      handler: 'itemHandler',
      timeout: Duration.minutes(15),
      memorySize: SWEEP_ITEM_MEMORY_MB,
      ephemeralStorageSize: Size.gibibytes(4),
      withManifests: true,
    }).bindEndpointInvoker(this.props.endpoints);
    // No heap flag in its NODE_OPTIONS (only `--enable-source-maps`): Lambda's bootstrap puts its
    // own on the command line, which wins; the worker collects between batches (shared/sweep/heap.ts).
    for (const fn of [start, poll, search, stageFile, plan, item, finish]) {
      for (const [k, v] of Object.entries(env)) fn.addEnvironment(k, v);
    }
    for (const fn of [start, search, plan, item, finish]) {
      // What the checkpoint store calls (shared/sweep/checkpoint.ts; Query: Finish lists the items).
      table.grant(fn, 'dynamodb:GetItem', 'dynamodb:PutItem', ...(fn === finish ? ['dynamodb:Query'] : []));
      table.encryptionKey?.grantEncryptDecrypt(fn);
    }
    // Gets and puts under the prefix, no deletes (a lifecycle rule deletes); reads keep the
    // bucket's list, so a missing key is a 404, not a 403. Stage reads its file's entry.
    for (const fn of [start, search, stageFile, plan, finish]) bucket.grantRead(fn, objects);
    for (const fn of [start, poll, search, stageFile, plan, finish]) bucket.grantPut(fn, objects);
    bucket.grantRead(item, objects);
    const sweep = new Sweep(this, 'Sweep', {
      functions: { start, poll, search, stageFile, plan, item, finish },
      bucket,
      prefix: `${SWEEP_PREFIX}/`,
      table,
      schedules: config.sweeps.schedules,
      maxConcurrency: config.sweeps.maxConcurrency,
      key: this.key,
      logRetention: this.retention,
    });
    new CfnOutput(this, 'SweepStateMachineArn', { value: sweep.stateMachine.stateMachineArn });
    return sweep;
  }

  private get retention(): RetentionDays {
    return logRetention(this.props.config);
  }

  /**
   * `secretsmanager:GetSecretValue` on the SMART client's secret and nothing else (its key only
   * through Secrets Manager); sets FHIR_CREDENTIALS_SECRET_ARN.
   */
  private grantFhirCredentials(fn: HouseFunction, secret: ISecret): void {
    fn.addToRolePolicy(
      new PolicyStatement({
        actions: ['secretsmanager:GetSecretValue'],
        resources: [secret.secretFullArn ?? `${secret.secretArn}-??????`],
      }),
    );
    if (secret.encryptionKey) {
      fn.addToRolePolicy(
        new PolicyStatement({
          actions: ['kms:Decrypt'],
          resources: [secret.encryptionKey.keyArn],
          conditions: {
            StringEquals: { 'kms:ViaService': `secretsmanager.${this.region}.${this.urlSuffix}` },
          },
        }),
      );
    }
    fn.addEnvironment(ENV.FHIR_CREDENTIALS_SECRET_ARN, secret.secretArn);
  }

  /**
   * A house function for a role, with FHIR access and its environment. `entryRole` names the
   * function folder when the role shares another's bundle; `handler` its exported entry point
   * (default `handler`).
   */
  private fn(
    role: FunctionRole | SweepPhaseRole,
    extra: {
      entryRole?: FunctionRole;
      handler?: string;
      concurrency?: number;
      timeout?: Duration;
      memorySize?: number;
      ephemeralStorageSize?: Size;
      withManifests?: boolean;
    } = {},
  ): HouseFunction {
    const { config } = this.props;
    const entryRole = extra.entryRole ?? (role as FunctionRole);
    const entryName = this.props.entries?.[entryRole] ?? FUNCTION_ENTRIES[entryRole];
    const concurrency =
      extra.concurrency ??
      config.reservedConcurrency[FUNCTION_ENTRIES[entryRole]] ??
      (entryRole === 'populationSweep' ? config.sweeps.maxConcurrency : DEFAULT_CONCURRENCY[entryRole]);
    const fn = new HouseFunction(this, `${role[0]?.toUpperCase() ?? ''}${role.slice(1)}Function`, {
      entryName,
      logKey: this.key,
      logGroupRetention: this.retention,
      reservedConcurrentExecutions: concurrency,
      vpc: this.props.vpc,
      ...(extra.timeout ? { timeout: extra.timeout } : {}),
      ...(extra.memorySize ? { memorySize: extra.memorySize } : {}),
      ...(extra.ephemeralStorageSize ? { ephemeralStorageSize: extra.ephemeralStorageSize } : {}),
      withManifests: extra.withManifests ?? false,
      environment: {
        [ENV.FHIR_BASE_URL]: config.fhir.baseUrl,
        [ENV.FHIR_AUTH_MODE]: config.fhir.auth.mode,
        ...(config.fhir.dicomWebAllowList.length
          ? { [ENV.DICOMWEB_ALLOWED_BASE_URLS]: config.fhir.dicomWebAllowList.join(',') }
          : {}),
        ...(config.fhir.auth.mode === 'smart-backend-services'
          ? {
              [ENV.FHIR_CLIENT_ID]: config.fhir.auth.clientId,
              [ENV.FHIR_SCOPES]: config.fhir.auth.scopes.join(' '),
              ...(config.fhir.auth.tokenUrl ? { [ENV.FHIR_TOKEN_URL]: config.fhir.auth.tokenUrl } : {}),
            }
          : {}),
      },
    });
    if (config.fhir.auth.mode === 'sigv4') {
      fn.addToRolePolicy(
        new PolicyStatement({
          actions: [
            'healthlake:ReadResource',
            'healthlake:SearchWithGet',
            'healthlake:SearchWithPost',
            // Only the functions that write reports write; notify, start and finish read.
            ...(role === 'resourceEvent' || role === 'partnerApi' || role === 'populationSweep'
              ? ['healthlake:CreateResource', 'healthlake:UpdateResource']
              : []),
            ...(role === 'populationSweepStart' ? ['healthlake:StartFHIRExportJobWithGet'] : []),
            // Poll describes the job; so does a retried Begin, checking the job it started.
            ...(/^populationSweep(Poll|Start)$/.test(role)
              ? ['healthlake:DescribeFHIRExportJobWithGet']
              : []),
            ...(role === 'populationSweepPlan' ? ['healthlake:CancelFHIRExportJobWithDelete'] : []),
          ],
          resources: [config.fhir.auth.datastoreArn],
        }),
      );
    } else if (this.props.fhirCredentials) {
      this.grantFhirCredentials(fn, this.props.fhirCredentials);
    }
    // HouseFunction bundles `handler.ts` as `index.mjs` and points at `index.handler`; the sweep's
    // bundle exports one entry point per state instead.
    if (extra.handler) (fn.node.defaultChild as CfnFunction).handler = `index.${extra.handler}`;
    this.functions[role] = fn;
    return fn;
  }
}
