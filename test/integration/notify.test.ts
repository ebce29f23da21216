/**
 * The notify function end to end on the embedded stack: the real handler behind the local
 * functions gateway (real HTTP, API Gateway v2 events), a real SQS FIFO queue (fauxqs) driven
 * by @aws-sdk/client-sqs, real DynamoDB state (dynalite) driven by @aws-sdk/client-dynamodb,
 * gap catch-up through a small fake `$events` server and through `_lastUpdated` searches on
 * the embedded FHIR server.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DeleteMessageCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import type { Observation } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

let queues: LocalQueues;
let dynamo: LocalDynamo;
let fhir: RunningFhirServer;
let eventsServer: Server;
let eventsBase = '';
const eventsRequests: string[] = [];
/** What the fake server's `$events` knows, per subscription id. */
const eventLog = new Map<string, BundleEventInput[]>();
const gateways: RunningGateway[] = [];

beforeAll(async () => {
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
});

afterAll(async () => {
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
});

/** Mounts the real handler, catching up from `fhirBase`, on a fresh gateway. */
async function mount(fhirBase: string, maxBodyBytes?: number): Promise<string> {
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

interface Posted {
  status: number;
  body: { issue?: { code?: string; expression?: string[]; diagnostics?: string }[] };
}

async function post(
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

function notification(
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

interface Received {
  body: Record<string, string>;
  groupId: string | undefined;
  dedupId: string | undefined;
}

/** Receives and deletes everything on the queue (FIFO groups unlock as messages are deleted). */
async function drain(): Promise<Received[]> {
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

/** A deterministic shuffle (mulberry32), so a failure reproduces. */
function shuffle<T>(items: T[], seed: number): T[] {
  let a = seed;
  const random = (): number => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

describe('notify over HTTP, SQS FIFO and DynamoDB', () => {
  it('answers a handshake and a heartbeat with 200, queues nothing, and records the heartbeat', async () => {
    const url = await mount(eventsBase);
    expect((await post(url, notification('hs', 'handshake', [], 0))).status).toBe(200);
    expect((await post(url, notification('hs', 'heartbeat', [], 0))).status).toBe(200);
    expect(await drain()).toEqual([]);
    const state = await createDynamoStateStore(dynamo.client, TABLE_NAMES.eventState).get('Subscription/hs');
    expect(state).toMatchObject({ highWater: 0, eventsSinceStart: 0, revision: 1 });
    expect(state?.lastSeenAt).toBeDefined();
  });

  it('queues id-only and full-resource events (the resource carried) with the patient as group and a hashed dedup id', async () => {
    const url = await mount(eventsBase);
    await post(url, notification('ids', 'handshake', [], 0));
    const idOnly = await post(
      url,
      notification('ids', 'event-notification', [
        {
          eventNumber: 1,
          timestamp: '2026-03-01T10:00:01Z',
          focus: `${eventsBase}/Observation/g-1/_history/2`,
          additionalContext: ['Patient/p-1'],
        },
      ]),
    );
    const full = await post(
      url,
      notification('ids', 'event-notification', [
        {
          eventNumber: 2,
          timestamp: '2026-03-01T10:00:02Z',
          focus: `${eventsBase}/Observation/h-1`,
          resource: {
            resourceType: 'Observation',
            id: 'h-1',
            meta: { versionId: '4' },
            status: 'final',
            code: { text: 'x' },
            subject: { reference: 'Patient/p-2' },
          } satisfies Observation,
        },
      ]),
    );
    expect([idOnly.status, full.status]).toEqual([200, 200]);
    const got = await drain();
    expect(got.map((m) => [m.body, m.groupId])).toEqual([
      [
        {
          v: 1,
          focus: 'Observation/g-1',
          versionId: '2',
          action: 'update',
          patient: 'Patient/p-1',
          subscription: 'Subscription/ids',
          eventNumber: '1',
          timestamp: '2026-03-01T10:00:01Z',
        },
        'Patient/p-1',
      ],
      [
        {
          v: 1,
          focus: 'Observation/h-1',
          versionId: '4',
          action: 'update',
          patient: 'Patient/p-2',
          subscription: 'Subscription/ids',
          eventNumber: '2',
          timestamp: '2026-03-01T10:00:02Z',
          // Small enough to travel with the message: the consumer need not read it.
          resource: {
            resourceType: 'Observation',
            id: 'h-1',
            meta: { versionId: '4' },
            status: 'final',
            code: { text: 'x' },
            subject: { reference: 'Patient/p-2' },
          },
        },
        'Patient/p-2',
      ],
    ]);
    for (const m of got) expect(m.dedupId).toMatch(/^[0-9a-f]{64}$/);
  });

  it('queues every event exactly once when each is delivered three times in random order', async () => {
    const url = await mount(eventsBase);
    const all: BundleEventInput[] = Array.from({ length: 15 }, (_, i) => ({
      eventNumber: i + 1,
      timestamp: new Date(Date.UTC(2026, 2, 1, 11, 0, i + 1)).toISOString(),
      focus: `Observation/t-${i + 1}`,
      additionalContext: [`Patient/p-${(i % 3) + 1}`],
    }));
    eventLog.set('triple', all);
    await post(url, notification('triple', 'handshake', [], 0));
    const deliveries = shuffle([...all, ...all, ...all], 20260301);
    // Four senders at once: out-of-order arrivals, duplicates in flight together.
    for (let i = 0; i < deliveries.length; i += 4) {
      const batch = deliveries
        .slice(i, i + 4)
        .map((e) => post(url, notification('triple', 'event-notification', [e])));
      for (const res of await Promise.all(batch)) expect(res.status).toBe(200);
    }
    const got = await drain();
    const numbers = got.map((m) => Number(m.body.eventNumber)).sort((a, b) => a - b);
    expect(numbers).toEqual(all.map((e) => e.eventNumber));
    for (const m of got) expect(m.groupId).toBe(m.body.patient);
    const state = await createDynamoStateStore(dynamo.client, TABLE_NAMES.eventState).get(
      'Subscription/triple',
    );
    expect(state).toMatchObject({ highWater: 15, seen: [] });
  });

  it('catches up a gap through $events', async () => {
    const url = await mount(eventsBase);
    const all: BundleEventInput[] = [1, 2, 3, 4, 5].map((n) => ({
      eventNumber: n,
      focus: `Observation/e-${n}`,
      additionalContext: ['Patient/p-7'],
    }));
    eventLog.set('gap-events', all);
    await post(url, notification('gap-events', 'handshake', [], 0));
    await post(url, notification('gap-events', 'event-notification', all.slice(0, 2)));
    eventsRequests.length = 0;
    expect((await post(url, notification('gap-events', 'event-notification', all.slice(4)))).status).toBe(
      200,
    );
    expect(eventsRequests).toEqual([
      '/fhir/Subscription/gap-events/$events?eventsSinceNumber=3&eventsUntilNumber=4&content=id-only',
    ]);
    const got = await drain();
    expect(got.map((m) => [m.body.eventNumber, m.body.focus])).toEqual([
      ['1', 'Observation/e-1'],
      ['2', 'Observation/e-2'],
      ['5', 'Observation/e-5'],
      ['3', 'Observation/e-3'],
      ['4', 'Observation/e-4'],
    ]);
    // The missed events arriving late are duplicates now.
    await post(url, notification('gap-events', 'event-notification', all.slice(2, 4)));
    expect(await drain()).toEqual([]);
  });

  it('catches up a gap by a _lastUpdated search on the FHIR server when it has no $events', async () => {
    const url = await mount(fhir.baseUrl);
    const created: Observation[] = [];
    for (let i = 1; i <= 4; i++) {
      const res = await fetch(`${fhir.baseUrl}/Observation`, {
        method: 'POST',
        headers: { 'content-type': 'application/fhir+json' },
        body: JSON.stringify({
          resourceType: 'Observation',
          status: 'final',
          code: { text: `s-${i}` },
          subject: { reference: `Patient/p-${i}` },
        }),
      });
      expect(res.status).toBe(201);
      created.push((await res.json()) as Observation);
    }
    const [o1, o2, o3, o4] = created as [Observation, Observation, Observation, Observation];
    const ev = (n: number, o: Observation): BundleEventInput => ({
      eventNumber: n,
      timestamp: o.meta?.lastUpdated ?? '',
      focus: `Observation/${o.id ?? ''}/_history/1`,
    });
    await post(url, notification('gap-search', 'handshake', [], 0));
    await post(url, notification('gap-search', 'event-notification', [ev(1, o1)]));
    expect((await post(url, notification('gap-search', 'event-notification', [ev(4, o4)]))).status).toBe(200);
    const got = await drain();
    const foci = got.map((m) => m.body.focus);
    expect(foci.slice(0, 2)).toEqual([`Observation/${o1.id ?? ''}`, `Observation/${o4.id ?? ''}`]);
    // The search covers the gap (o2, o3), bounded by events 1 and 4 (which it may repeat).
    expect(foci).toContain(`Observation/${o2.id ?? ''}`);
    expect(foci).toContain(`Observation/${o3.id ?? ''}`);
    const searched = got.filter((m) => m.body.eventNumber === undefined);
    for (const m of searched) expect(m.groupId).toBe(m.body.patient);
    const state = await createDynamoStateStore(dynamo.client, TABLE_NAMES.eventState).get(
      'Subscription/gap-search',
    );
    expect(state).toMatchObject({ highWater: 4, seen: [] });
  });

  it('refuses unsigned and forged posts (401), malformed ones (400 naming the path), oversize ones (413); queues nothing', async () => {
    const url = await mount(eventsBase, 64 * 1024);
    await post(url, notification('refuse', 'handshake', [], 0));
    const body = notification('refuse', 'event-notification', [{ eventNumber: 1, focus: 'Observation/r-1' }]);
    const unsigned = await post(url, body, '');
    const forged = await post(url, body, signBody('not-the-secret-0123456789', body));
    for (const res of [unsigned, forged]) {
      expect(res.status).toBe(401);
      expect(res.body.issue).toEqual([
        { severity: 'error', code: 'login', diagnostics: 'authentication required' },
      ]);
    }
    const broken = JSON.parse(body) as {
      entry: { resource: { parameter: { part?: { valueString?: string }[] }[] } }[];
    };
    const part = broken.entry[0]?.resource.parameter[5]?.part?.[0];
    if (part) part.valueString = 'one';
    const malformed = await post(url, JSON.stringify(broken));
    expect(malformed.status).toBe(400);
    expect(malformed.body.issue?.[0]?.expression).toEqual([
      'Bundle.entry[0].resource.parameter[5].part[0].valueString',
    ]);
    const big = JSON.stringify({ ...JSON.parse(body), padding: 'x'.repeat(70 * 1024) });
    expect((await post(url, big)).status).toBe(413);
    expect(await drain()).toEqual([]);
  });

  it('accepts a legacy rest-hook post of the resource itself on /notify/{subscriptionId}', async () => {
    const url = await mount(eventsBase);
    const body = JSON.stringify({
      resourceType: 'Observation',
      id: 'l-1',
      meta: { versionId: '3', lastUpdated: '2026-03-01T12:00:00Z' },
      status: 'final',
      code: { text: 'x' },
      subject: { reference: 'Patient/p-5' },
    });
    expect((await post(`${url}/legacy`, body)).status).toBe(200);
    expect((await post(`${url}/legacy`, body)).status).toBe(200);
    const got = await drain();
    expect(got.map((m) => m.body)).toEqual([
      {
        v: 1,
        focus: 'Observation/l-1',
        versionId: '3',
        action: 'update',
        patient: 'Patient/p-5',
        subscription: 'Subscription/legacy',
        timestamp: '2026-03-01T12:00:00Z',
      },
    ]);
  });
});
