/**
 * The embedded stack: every piece a real server on loopback, on the default ports of
 * ARCHITECTURE.md unless told otherwise (port 0 picks a free one, for tests): the FHIR server
 * (with topic-based Subscriptions and Bulk `$export`), the SageMaker-runtime endpoint server, DICOMweb, SQS
 * (fauxqs), DynamoDB (dynalite), a JWKS issuer, and the functions gateway that serves the
 * notify and partner-api functions as API Gateway would.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNotifyHandler } from '../functions/notify/handler.js';
import { loadConfig, type Config } from '../shared/config.js';
import { silentLogger, type Logger } from '../shared/log.js';
import { createNotifyPorts } from '../shared/notify/ports.js';
import { startDicomWebServer, type RunningDicomWebServer } from './dicomweb/server.js';
import { createTables, startLocalDynamo, TABLE_NAMES, type LocalDynamo } from './dynamo.js';
import { startFhirServer, type RunningFhirServer } from './fhir/server.js';
import { installSubscriptions } from './fhir/subscriptions.js';
import { installBulkExport } from './fhir/export.js';
import { startFunctionsGateway, type RunningGateway } from './gateway.js';
import { startJwksIssuer, type RunningJwksIssuer } from './jwks-issuer.js';
import {
  createLocalSmartClient,
  localSmartAuth,
  startSmartTokenServer,
  type LocalSmartClient,
  type RunningSmartTokenServer,
  type SmartTokenServerOptions,
} from './smart-token.js';
import { createLocalPartnerHandler, partnerApiRoutes } from './partner.js';
import { startEndpointServer } from './sagemaker/server.js';
import { startLocalQueues, type LocalQueues } from './queue.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const MODELS_DIR = path.join(ROOT, 'models');
export const DICOM_DIR = path.join(ROOT, 'local', 'demo', 'data', 'dicom');

export const DEFAULT_PORTS = {
  fhir: 8080,
  sagemaker: 8081,
  dicomweb: 8082,
  functions: 8083,
  queue: 8084,
  issuer: 8085,
  dynamo: 8086,
} as const;

/** The local subscriptions' HMAC secret (the FHIR server signs, notify verifies). Local only. */
export const LOCAL_NOTIFY_SECRET = 'fhir-analytics-local-notify-secret';
/** The Subscription ids the stack registers (with PUT) and notify knows. */
export const SUBSCRIPTION_IDS = {
  observations: 'fhir-analytics-observations',
  imaging: 'fhir-analytics-imaging',
} as const;

export interface StackOptions {
  /** Pick a free port for every server not given one explicitly (tests, benchmarks). */
  anyPorts?: boolean;
  /** Use this FHIR server instead of starting the embedded one (no Subscriptions then). */
  fhirBaseUrl?: string;
  fhirPort?: number;
  sagemakerPort?: number;
  dicomwebPort?: number;
  functionsPort?: number;
  queuePort?: number;
  issuerPort?: number;
  dynamoPort?: number;
  modelsDir?: string;
  /**
   * Seconds before an unacknowledged queue message is delivered again. Default 30, SQS's own:
   * a shorter one redelivered messages still being processed on a loaded 2-core machine (a
   * receive of 10 waits for the invocations before it), harmless (the report is written once)
   * but counted twice. Tests of redelivery and dead-lettering set their own.
   */
  visibilityTimeoutSeconds?: number;
  /** Receives before a message is dead-lettered. Default 3. */
  maxReceiveCount?: number;
  /** Logger for the functions behind the gateway. Default silent. */
  logger?: Logger;
  /**
   * Make the embedded FHIR server require SMART Backend Services tokens from a local token
   * server (one registered client; notify's catch-up uses it). Default off.
   */
  smartAuth?: Pick<SmartTokenServerOptions, 'tokenLifetimeSeconds' | 'now'>;
}

export type RunningEndpointServer = Awaited<ReturnType<typeof startEndpointServer>>;

export interface RunningStack {
  /** The FHIR server in use; `server` is set when it is the embedded one. */
  readonly fhir: { readonly baseUrl: string; readonly server?: RunningFhirServer };
  readonly sagemaker: RunningEndpointServer;
  readonly dicomweb: RunningDicomWebServer;
  readonly queues: LocalQueues;
  readonly dynamo: LocalDynamo;
  readonly issuer: RunningJwksIssuer;
  readonly gateway: RunningGateway;
  /** The SMART token server and its registered client, with `smartAuth`. */
  readonly smart?: { readonly server: RunningSmartTokenServer; readonly client: LocalSmartClient };
  /** Subscription notifications from the embedded FHIR server (undefined with an external one). */
  readonly subscriptions?: ReturnType<typeof installSubscriptions>;
  readonly modelsDir: string;
  /** The configuration the functions run with (as their Lambda environment would give it). */
  readonly functionsConfig: Config;
  close(): Promise<void>;
}

export async function startStack(opts: StackOptions = {}): Promise<RunningStack> {
  const modelsDir = opts.modelsDir ?? MODELS_DIR;
  const logger = opts.logger ?? silentLogger;
  const portOf = (given: number | undefined, fallback: number): number =>
    given ?? (opts.anyPorts ? 0 : fallback);
  const started: { close: () => Promise<void> }[] = [];
  try {
    let fhir: RunningStack['fhir'];
    let subscriptions: RunningStack['subscriptions'];
    let smart: RunningStack['smart'];
    if (opts.fhirBaseUrl) {
      fhir = { baseUrl: opts.fhirBaseUrl.replace(/\/+$/, '') };
    } else {
      const server = await startFhirServer({
        port: portOf(opts.fhirPort, DEFAULT_PORTS.fhir),
        host: '127.0.0.1',
      });
      started.push(server);
      if (opts.smartAuth) {
        // Installed first, so that every FHIR route (subscriptions and $export included) needs a token.
        const client = await createLocalSmartClient();
        const tokenServer = await startSmartTokenServer({
          ...opts.smartAuth,
          clients: [client.registration],
        });
        started.push(tokenServer);
        server.use(tokenServer.requireBearer());
        smart = { server: tokenServer, client };
      }
      subscriptions = installSubscriptions(server, {
        signingSecretFor: (s) =>
          Object.values(SUBSCRIPTION_IDS).includes(s.id as never) ? LOCAL_NOTIFY_SECRET : undefined,
        logger,
      });
      started.push(subscriptions);
      started.push(installBulkExport(server));
      fhir = { baseUrl: server.baseUrl, server };
    }
    const sagemaker = await startEndpointServer({
      modelsDir,
      port: portOf(opts.sagemakerPort, DEFAULT_PORTS.sagemaker),
      host: '127.0.0.1',
    });
    started.push(sagemaker);
    const dicomweb = await startDicomWebServer({
      dir: DICOM_DIR,
      port: portOf(opts.dicomwebPort, DEFAULT_PORTS.dicomweb),
    });
    started.push(dicomweb);
    const queues = await startLocalQueues({
      port: portOf(opts.queuePort, DEFAULT_PORTS.queue),
      visibilityTimeoutSeconds: opts.visibilityTimeoutSeconds ?? 30,
      maxReceiveCount: opts.maxReceiveCount ?? 3,
    });
    started.push({ close: () => queues.stop() });
    const dynamo = await startLocalDynamo({ port: portOf(opts.dynamoPort, DEFAULT_PORTS.dynamo) });
    started.push(dynamo);
    await createTables(dynamo.client);
    const issuer = await startJwksIssuer({ port: portOf(opts.issuerPort, DEFAULT_PORTS.issuer) });
    started.push(issuer);

    let gatewayUrl = '';
    const functionsConfig = (): Config =>
      loadConfig({
        FHIR_BASE_URL: fhir.baseUrl,
        SAGEMAKER_ENDPOINT_URL: sagemaker.url,
        MODELS_DIR: modelsDir,
        DICOMWEB_ALLOWED_BASE_URLS: dicomweb.url,
        QUEUE_URL: queues.queueUrl,
        SQS_ENDPOINT_URL: queues.endpoint,
        DYNAMODB_ENDPOINT_URL: dynamo.endpoint,
        EVENT_STATE_TABLE: TABLE_NAMES.eventState,
        NOTIFY_AUDIENCE: `${gatewayUrl}/notify`,
        NOTIFY_SUBSCRIPTIONS: JSON.stringify(
          Object.values(SUBSCRIPTION_IDS).map((id) => ({ id, hmac: { secret: LOCAL_NOTIFY_SECRET } })),
        ),
      });
    const fhirAuth = smart
      ? localSmartAuth(fhir.baseUrl, smart.client, opts.smartAuth?.now ? { now: opts.smartAuth.now } : {})
      : undefined;
    const notify = createNotifyHandler(logger, () =>
      createNotifyPorts(functionsConfig(), logger, fhirAuth ? { fhirAuth } : {}),
    );
    const partner = createLocalPartnerHandler({
      fhirBaseUrl: fhir.baseUrl,
      sagemakerUrl: sagemaker.url,
      modelsDir,
      issuer,
      dicomWebUrl: dicomweb.url,
      publicBaseUrl: () => gatewayUrl,
      logger,
    });
    const gateway = await startFunctionsGateway({
      port: portOf(opts.functionsPort, DEFAULT_PORTS.functions),
      routes: [
        { route: 'POST /notify', handler: notify, functionName: 'notify' },
        { route: 'POST /notify/{subscriptionId}', handler: notify, functionName: 'notify' },
        ...partnerApiRoutes(partner),
      ],
    });
    started.push(gateway);
    gatewayUrl = gateway.url;

    return {
      fhir,
      sagemaker,
      dicomweb,
      queues,
      dynamo,
      issuer,
      gateway,
      ...(subscriptions ? { subscriptions } : {}),
      ...(smart ? { smart } : {}),
      modelsDir,
      functionsConfig: functionsConfig(),
      close: async () => {
        for (const s of started.reverse()) await s.close();
      },
    };
  } catch (err) {
    for (const s of started.reverse()) await s.close().catch(() => undefined);
    throw err;
  }
}
