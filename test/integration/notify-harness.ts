/**
 * What the notify function's end-to-end tests (notify*.test.ts) share: a real SQS FIFO queue
 * (fauxqs), real DynamoDB state (dynalite), the embedded FHIR server and a small fake `$events`
 * server, started by each test file (`beforeAll(startNotifyStack)`, `afterAll(stopNotifyStack)`);
 * the real handler mounted on a fresh local functions gateway; signed posts; a queue drain.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DeleteMessageCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { createNotifyHandler } from '../../functions/notify/handler.js';
import { startLocalDynamo, TABLE_NAMES, type LocalDynamo } from '../../local/dynamo.js';
import { startFhirServer, type RunningFhirServer } from '../../local/fhir/server.js';
import { startFunctionsGateway, type RunningGateway } from '../../local/gateway.js';
import { startLocalQueues, type LocalQueues } from '../../local/queue.js';
import { createLogger } from '../../shared/log.js';
import { createInMemoryAuthStore, signBody } from '../../shared/notify/auth.js';
import { buildNotificationBundle, type BundleEventInput } from '../../shared/notify/bundle.js';
import { createFhirCatchUp } from '../../shared/notify/catch-up.js';
import { createSqsEventQueue } from '../../shared/notify/queue.js';
import { createDynamoStateStore } from '../../shared/notify/state.js';

const SECRET = 'notify-integration-secret-0123456789';

export let queues: LocalQueues;
export let dynamo: LocalDynamo;
export let fhir: RunningFhirServer;
export let eventsServer: Server;
export let eventsBase = '';
export const eventsRequests: string[] = [];
/** What the fake server's `$events` knows, per subscription id. */
export const eventLog = new Map<string, BundleEventInput[]>();
export const gateways: RunningGateway[] = [];

export async function startNotifyStack(): Promise<void> {
  queues = await startLocalQueues({ queueName: 'notify-it' });
  dynamo = await startLocalDynamo({ port: 0 });
  fhir = await startFhirServer({ port: 0 });
  eventsServer = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    eventsRequests.push(`${url.pathname}?${url.searchParams.toString()}`);
    const m = /^\/fhir\/Subscription\/([^/]+)\/\$events$/.exec(url.pathname);
    const known = m ? eventLog.get(m[1] ?? '') : undefined;
    if (!m || !known) {
      res.writeHead(404, { 'content-type': 'application/fhir+json' });
      res.end(
        JSON.stringify({
          resourceType: 'OperationOutcome',
          issue: [{ severity: 'error', code: 'not-found' }],
        }),
      );
      return;
    }
    const since = Number(url.searchParams.get('eventsSinceNumber'));
    const until = Number(url.searchParams.get('eventsUntilNumber'));
    const bundle = buildNotificationBundle({
      subscription: `${eventsBase}/Subscription/${m[1] ?? ''}`,
      type: 'query-event',
      events: known.filter((e) => e.eventNumber >= since && e.eventNumber <= until),
    });
    res.writeHead(200, { 'content-type': 'application/fhir+json' });
    res.end(JSON.stringify(bundle));
  });
  await new Promise<void>((resolve) => eventsServer.listen(0, '127.0.0.1', resolve));
  eventsBase = `http://127.0.0.1:${(eventsServer.address() as AddressInfo).port}/fhir`;
}

export async function stopNotifyStack(): Promise<void> {
  for (const g of gateways) await g.close();
  await queues.stop();
  await dynamo.close();
  await fhir.close();
  await new Promise<void>((resolve) => {
    eventsServer.closeAllConnections();
    eventsServer.close(() => {
      resolve();
    });
  });
}

/** Mounts the real handler, catching up from `fhirBase`, on a fresh gateway. */
export async function mount(fhirBase: string, maxBodyBytes?: number): Promise<string> {
  const logger = createLogger({ sink: () => undefined });
  const handler = createNotifyHandler(logger, () =>
    Promise.resolve({
      queue: createSqsEventQueue({ client: queues.client, queueUrl: queues.queueUrl }),
      state: createDynamoStateStore(dynamo.client, TABLE_NAMES.eventState),
      registry: createInMemoryAuthStore(
        ['hs', 'ids', 'triple', 'gap-events', 'gap-search', 'refuse', 'legacy'].map((id) => ({
          id,
          hmac: { secret: SECRET },
          resourceTypes: { Observation: {} },
        })),
      ),
      catchUp: createFhirCatchUp({ baseUrl: fhirBase }),
      verify: {},
      ...(maxBodyBytes ? { options: { maxBodyBytes } } : {}),
      logger,
    }),
  );
  const gateway = await startFunctionsGateway({
    port: 0,
    routes: [
      { route: 'POST /notify', handler, functionName: 'notify' },
      { route: 'POST /notify/{subscriptionId}', handler, functionName: 'notify' },
    ],
  });
  gateways.push(gateway);
  return `${gateway.url}/notify`;
}

export interface Posted {
  status: number;
  body: { issue?: { code?: string; expression?: string[]; diagnostics?: string }[] };
}

export async function post(
  url: string,
  body: string,
  signature: string | undefined = signBody(SECRET, body),
): Promise<Posted> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/fhir+json', ...(signature ? { 'x-signature': signature } : {}) },
    body,
  });
  return { status: res.status, body: (await res.json()) as Posted['body'] };
}

export function notification(
  sub: string,
  type: 'handshake' | 'heartbeat' | 'event-notification',
  events: BundleEventInput[] = [],
  since?: number,
): string {
  return JSON.stringify(
    buildNotificationBundle({
      subscription: `${eventsBase}/Subscription/${sub}`,
      type,
      events,
      eventsSinceSubscriptionStart: since ?? Math.max(0, ...events.map((e) => e.eventNumber)),
    }),
  );
}

export interface Received {
  body: Record<string, string>;
  groupId: string | undefined;
  dedupId: string | undefined;
}

/** Receives and deletes everything on the queue (FIFO groups unlock as messages are deleted). */
export async function drain(): Promise<Received[]> {
  const out: Received[] = [];
  for (let empty = 0; empty < 2;) {
    const { Messages } = await queues.client.send(
      new ReceiveMessageCommand({
        QueueUrl: queues.queueUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 0,
        MessageSystemAttributeNames: ['All'],
      }),
    );
    if (!Messages?.length) {
      empty++;
      continue;
    }
    empty = 0;
    for (const m of Messages) {
      out.push({
        body: JSON.parse(m.Body ?? '{}') as Record<string, string>,
        groupId: m.Attributes?.MessageGroupId,
        dedupId: m.Attributes?.MessageDeduplicationId,
      });
      await queues.client.send(
        new DeleteMessageCommand({ QueueUrl: queues.queueUrl, ReceiptHandle: m.ReceiptHandle }),
      );
    }
  }
  return out;
}
