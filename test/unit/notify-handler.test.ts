import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { createNotifyHandler } from '../../functions/notify/handler.js';
import { createLogger, type Logger } from '../../shared/log.js';
import { createInMemoryAuthStore, signBody } from '../../shared/notify/auth.js';
import { buildNotificationBundle, type BundleEventInput } from '../../shared/notify/bundle.js';
import type { CatchUpSource } from '../../shared/notify/catch-up.js';
import { createSqsEventQueue } from '../../shared/notify/queue.js';
import type { NotifyPorts } from '../../shared/notify/request.js';
import { createInMemoryStateStore } from '../../shared/notify/state.js';

const SECRET = 'notify-demo-secret-0123456789abcdef';
const QUEUE_URL = 'https://sqs.us-east-1.amazonaws.com/000000000000/resource-events.fifo';
const SUB = 'http://127.0.0.1:8080/fhir/Subscription/obs-labs';
const context = { awsRequestId: 'req-1', functionName: 'notify' } as Context;
const sqsMock = mockClient(SQSClient);

afterEach(() => {
  sqsMock.reset();
});

function loadEvent(name: string): Record<string, unknown> {
  return JSON.parse(
    readFileSync(new URL(`../../events/notify/${name}.json`, import.meta.url), 'utf8'),
  ) as Record<string, unknown>;
}

function httpEvent(body: string | undefined, headers: Record<string, string> = {}, subscriptionId?: string) {
  return {
    version: '2.0',
    headers: {
      'content-type': 'application/fhir+json',
      'x-signature': signBody(SECRET, body ?? ''),
      ...headers,
    },
    ...(subscriptionId ? { pathParameters: { subscriptionId } } : {}),
    ...(body === undefined ? {} : { body }),
    isBase64Encoded: false,
  };
}

function events(type: 'event-notification' | 'heartbeat', list: BundleEventInput[], since?: number) {
  return JSON.stringify(
    buildNotificationBundle({
      subscription: SUB,
      type,
      events: list,
      eventsSinceSubscriptionStart: since ?? Math.max(0, ...list.map((e) => e.eventNumber)),
    }),
  );
}

interface Harness {
  handler: ReturnType<typeof createNotifyHandler>;
  state: ReturnType<typeof createInMemoryStateStore>;
  lines: string[];
  catchUpCalls: string[];
}

function harness(catchUp: Partial<CatchUpSource> = {}): Harness {
  const lines: string[] = [];
  const logger: Logger = createLogger({ level: 'debug', sink: (l) => lines.push(l) });
  const state = createInMemoryStateStore();
  const catchUpCalls: string[] = [];
  const ports: NotifyPorts = {
    queue: createSqsEventQueue({
      client: new SQSClient({ region: 'us-east-1' }),
      queueUrl: QUEUE_URL,
      sleep: () => Promise.resolve(),
    }),
    state,
    registry: createInMemoryAuthStore([
      {
        id: 'obs-labs',
        hmac: { secret: SECRET },
        resourceTypes: { Observation: { category: 'laboratory' } },
      },
      { id: 'legacy-obs', hmac: { secret: SECRET } },
    ]),
    catchUp: {
      events: (id, since, until) => {
        catchUpCalls.push(`$events ${id} ${since}..${until}`);
        return catchUp.events ? catchUp.events(id, since, until) : Promise.reject(new Error('no $events'));
      },
      search: (type, params, max) => {
        catchUpCalls.push(`search ${type} ${params.map(([k, v]) => `${k}=${v}`).join('&')}`);
        return catchUp.search ? catchUp.search(type, params, max) : Promise.resolve([]);
      },
    },
    verify: {},
    options: { maxBodyBytes: 4096 },
    logger,
  };
  return { handler: createNotifyHandler(logger, () => Promise.resolve(ports)), state, lines, catchUpCalls };
}

function accept() {
  sqsMock.on(SendMessageBatchCommand).callsFake((input: { Entries: { Id: string }[] }) => ({
    Successful: input.Entries.map((e) => ({ Id: e.Id, MessageId: `m-${e.Id}`, MD5OfMessageBody: '' })),
    Failed: [],
  }));
}

type Entry = { MessageBody: string; MessageGroupId: string; MessageDeduplicationId: string };
function sent(): Entry[] {
  return sqsMock
    .commandCalls(SendMessageBatchCommand)
    .flatMap((c) => (c.args[0].input.Entries ?? []) as Entry[]);
}
const bodies = () => sent().map((e) => JSON.parse(e.MessageBody) as Record<string, unknown>);

async function call(
  h: Harness,
  event: unknown,
): Promise<APIGatewayProxyStructuredResultV2 & { json: unknown }> {
  const res = await h.handler(event as never, context);
  return { ...res, json: res.body ? JSON.parse(res.body) : undefined };
}

describe('notify handler: acknowledgements', () => {
  it('answers a handshake and a heartbeat with 200 and queues nothing; the heartbeat is recorded', async () => {
    accept();
    const h = harness();
    expect((await call(h, loadEvent('handshake'))).statusCode).toBe(200);
    expect(h.state.items.get('Subscription/obs-labs')).toMatchObject({ highWater: 0, eventsSinceStart: 0 });
    expect((await call(h, loadEvent('heartbeat'))).statusCode).toBe(200);
    expect(sqsMock.commandCalls(SendMessageBatchCommand)).toHaveLength(0);
    expect(h.state.items.get('Subscription/obs-labs')?.revision).toBe(1);
  });
});

describe('notify handler: events to queue messages', () => {
  it('queues an id-only event: focus, version, patient from additional-context as the group, hashed dedup id', async () => {
    accept();
    const h = harness();
    const res = await call(h, loadEvent('event-id-only'));
    expect(res.statusCode).toBe(200);
    expect(sent()).toEqual([
      {
        Id: '0',
        MessageBody: JSON.stringify({
          v: 1,
          focus: 'Observation/glucose-1',
          versionId: '1',
          action: 'update',
          patient: 'Patient/p-1',
          subscription: 'Subscription/obs-labs',
          eventNumber: '1',
          timestamp: '2026-03-01T10:00:02.000Z',
        }),
        MessageGroupId: 'Patient/p-1',
        MessageDeduplicationId: createHash('sha256')
          .update(['Subscription/obs-labs', 1, 'Observation/glucose-1', '1', ''].join('\n'))
          .digest('hex'),
      },
    ]);
    expect(sqsMock.commandCalls(SendMessageBatchCommand)[0]?.args[0].input.QueueUrl).toBe(QUEUE_URL);
  });

  it('takes the version and patient of a full resource', async () => {
    accept();
    const h = harness();
    await call(h, loadEvent('event-full-resource'));
    expect(bodies()).toMatchObject([
      {
        focus: 'Observation/hba1c-1',
        versionId: '3',
        patient: 'Patient/p-2',
        eventNumber: '2',
        // The focus travels with the message (small enough): the consumer skips its read.
        resource: { resourceType: 'Observation', id: 'hba1c-1', meta: { versionId: '3' }, status: 'final' },
      },
    ]);
    expect(sent()[0]?.MessageGroupId).toBe('Patient/p-2');
  });

  it('groups by the focus when it is a Patient, and by the focus itself when no patient is known', async () => {
    accept();
    const h = harness();
    await call(
      h,
      httpEvent(
        events('event-notification', [
          { eventNumber: 1, focus: 'Patient/p-9' },
          { eventNumber: 2, focus: 'Device/d-1' },
        ]),
      ),
    );
    expect(sent().map((e) => e.MessageGroupId)).toEqual(['Patient/p-9', 'Device/d-1']);
    expect(bodies()[1]).not.toHaveProperty('patient');
  });

  it('drops event numbers already queued, in and across notifications', async () => {
    accept();
    const h = harness();
    const body = events('event-notification', [
      { eventNumber: 1, focus: 'Observation/a' },
      { eventNumber: 1, focus: 'Observation/a' },
      { eventNumber: 2, focus: 'Observation/b' },
    ]);
    await call(h, httpEvent(body));
    await call(h, httpEvent(body));
    expect(bodies().map((b) => b.eventNumber)).toEqual(['1', '2']);
  });

  it('does not queue resources this system wrote (tagged), but counts their numbers as handled', async () => {
    accept();
    const h = harness();
    const own = {
      resourceType: 'Observation',
      id: 'score-1',
      meta: {
        versionId: '1',
        tag: [{ system: 'urn:fhir-analytics:tag', code: 'written-by-fhir-analytics' }],
      },
      status: 'final',
      code: { text: 'score' },
    } as const;
    await call(
      h,
      httpEvent(
        events('event-notification', [
          { eventNumber: 1, focus: 'Observation/score-1', resource: own as never },
        ]),
      ),
    );
    expect(sent()).toHaveLength(0);
    expect(h.state.items.get('Subscription/obs-labs')?.highWater).toBe(1);
  });

  it('queues a legacy rest-hook resource post identified by the path', async () => {
    accept();
    const h = harness();
    expect((await call(h, loadEvent('legacy-resource'))).statusCode).toBe(200);
    expect(bodies()).toMatchObject([
      {
        focus: 'Observation/glucose-9',
        versionId: '2',
        patient: 'Patient/p-1',
        subscription: 'Subscription/legacy-obs',
      },
    ]);
    expect(bodies()[0]).not.toHaveProperty('eventNumber');
  });
});

describe('notify handler: gaps', () => {
  it('catches up a gap through $events and queues the missed events in order', async () => {
    accept();
    const h = harness({
      events: (_id, since, until) =>
        Promise.resolve(
          buildNotificationBundle({
            subscription: 'Subscription/obs-labs',
            type: 'query-event',
            events: [2, 3, 4]
              .filter((n) => n >= since && n <= until)
              .map((n) => ({
                eventNumber: n,
                focus: `Observation/o-${n}`,
                additionalContext: ['Patient/p-1'],
              })),
          }),
        ),
    });
    await call(h, httpEvent(events('event-notification', [{ eventNumber: 1, focus: 'Observation/o-1' }])));
    await call(h, httpEvent(events('event-notification', [{ eventNumber: 5, focus: 'Observation/o-5' }])));
    expect(h.catchUpCalls).toEqual(['$events obs-labs 2..4']);
    expect(bodies().map((b) => [b.eventNumber, b.focus])).toEqual([
      ['1', 'Observation/o-1'],
      ['5', 'Observation/o-5'],
      ['2', 'Observation/o-2'],
      ['3', 'Observation/o-3'],
      ['4', 'Observation/o-4'],
    ]);
    expect(h.state.items.get('Subscription/obs-labs')).toMatchObject({ highWater: 5, seen: [] });
  });

  it('falls back to a _lastUpdated search between the last event and the one after the gap', async () => {
    accept();
    const h = harness({
      search: () =>
        Promise.resolve([
          {
            resourceType: 'Observation',
            id: 'o-3',
            meta: { versionId: '1', lastUpdated: '2026-03-01T10:00:03Z' },
            subject: { reference: 'Patient/p-3' },
          },
        ]),
    });
    await call(
      h,
      httpEvent(
        events('event-notification', [
          { eventNumber: 1, timestamp: '2026-03-01T10:00:01Z', focus: 'Observation/o-1' },
        ]),
      ),
    );
    await call(
      h,
      httpEvent(
        events('event-notification', [
          { eventNumber: 4, timestamp: '2026-03-01T10:00:04Z', focus: 'Observation/o-4' },
        ]),
      ),
    );
    expect(h.catchUpCalls).toEqual([
      '$events obs-labs 2..3',
      'search Observation _lastUpdated=ge2026-03-01T10:00:01Z&_lastUpdated=le2026-03-01T10:00:04Z&category=laboratory',
    ]);
    expect(bodies().map((b) => [b.eventNumber ?? '-', b.focus, b.patient])).toEqual([
      ['1', 'Observation/o-1', undefined],
      ['4', 'Observation/o-4', undefined],
      ['-', 'Observation/o-3', 'Patient/p-3'],
    ]);
    expect(h.state.items.get('Subscription/obs-labs')?.highWater).toBe(4);
  });

  it('keeps a gap open when no catch-up works, and fills it on a later heartbeat', async () => {
    accept();
    let up = false;
    const h = harness({
      search: () => (up ? Promise.resolve([]) : Promise.reject(new Error('FHIR down'))),
    });
    await call(h, httpEvent(events('event-notification', [{ eventNumber: 1, focus: 'Observation/o-1' }])));
    const res = await call(
      h,
      httpEvent(events('event-notification', [{ eventNumber: 3, focus: 'Observation/o-3' }])),
    );
    expect(res.statusCode).toBe(200);
    expect(h.state.items.get('Subscription/obs-labs')).toMatchObject({ highWater: 1, seen: [[3, null]] });
    up = true;
    await call(h, httpEvent(events('heartbeat', [], 3)));
    expect(h.state.items.get('Subscription/obs-labs')).toMatchObject({ highWater: 3, seen: [] });
    expect(h.lines.some((l) => l.includes('search catch-up failed'))).toBe(true);
  });
});

describe('notify handler: refusals', () => {
  it('answers 5xx when SQS fails, records nothing, and queues on the retry', async () => {
    const h = harness();
    sqsMock.on(SendMessageBatchCommand).rejects(new Error('ServiceUnavailable'));
    const failed = await call(h, loadEvent('event-id-only'));
    expect(failed.statusCode).toBe(503);
    expect(failed.headers?.['retry-after']).toBe('5');
    expect(h.state.items.size).toBe(0);
    sqsMock.reset();
    accept();
    expect((await call(h, loadEvent('event-id-only'))).statusCode).toBe(200);
    expect(sent()).toHaveLength(1);
  });

  it('retries entries SQS failed on its side, and gives up with 503 on a sender fault', async () => {
    const h = harness();
    sqsMock
      .on(SendMessageBatchCommand)
      .resolvesOnce({ Successful: [], Failed: [{ Id: '0', SenderFault: false, Code: 'InternalError' }] })
      .resolvesOnce({ Successful: [{ Id: '0', MessageId: 'm', MD5OfMessageBody: '' }], Failed: [] });
    expect((await call(h, loadEvent('event-id-only'))).statusCode).toBe(200);
    expect(sqsMock.commandCalls(SendMessageBatchCommand)).toHaveLength(2);
    sqsMock.reset();
    sqsMock
      .on(SendMessageBatchCommand)
      .resolves({ Successful: [], Failed: [{ Id: '0', SenderFault: true, Code: 'InvalidParameterValue' }] });
    expect((await call(h, loadEvent('event-full-resource'))).statusCode).toBe(503);
  });

  it('answers 401 for a forged, missing or unknown-subscription signature, saying nothing else', async () => {
    accept();
    const h = harness();
    const forged = await call(h, loadEvent('forged-signature'));
    const body = events('event-notification', [{ eventNumber: 1, focus: 'Observation/a' }]);
    const missing = await call(h, httpEvent(body, { 'x-signature': '' }));
    const unknown = await call(h, httpEvent(body.replace('Subscription/obs-labs', 'Subscription/nobody')));
    const mismatch = await call(h, httpEvent(body, {}, 'legacy-obs'));
    for (const res of [forged, missing, unknown, mismatch]) {
      expect(res.statusCode).toBe(401);
      expect(res.json).toEqual({
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'login', diagnostics: 'authentication required' }],
      });
    }
    expect(sqsMock.commandCalls(SendMessageBatchCommand)).toHaveLength(0);
    expect(h.state.items.size).toBe(0);
  });

  it('answers 400 naming the failing path, and 413 over the size limit', async () => {
    accept();
    const h = harness();
    const bad = await call(h, loadEvent('malformed'));
    expect(bad.statusCode).toBe(400);
    expect(bad.json).toMatchObject({
      issue: [{ code: 'invalid', expression: ['Bundle.entry[0].resource.parameter[5].part[0].valueString'] }],
    });
    const notJson = await call(h, httpEvent('{"resourceType":', {}, 'obs-labs'));
    expect(notJson.statusCode).toBe(400);
    const big = await call(
      h,
      httpEvent(JSON.stringify({ resourceType: 'Observation', id: 'x', note: 'x'.repeat(5000) })),
    );
    expect(big.statusCode).toBe(413);
    expect(sqsMock.commandCalls(SendMessageBatchCommand)).toHaveLength(0);
  });

  it('keeps patient data out of the logs', async () => {
    accept();
    const h = harness();
    const body = JSON.stringify({
      resourceType: 'Observation',
      id: 'o-1',
      status: 'final',
      subject: { reference: 'Patient/p-1', display: 'Jane Doe' },
      valueQuantity: { value: 187, unit: 'mg/dL' },
    });
    await call(h, httpEvent(body, {}, 'legacy-obs'));
    const log = h.lines.join('\n');
    expect(log).toContain('notification processed');
    expect(log).not.toMatch(/Jane|187|mg\/dL/);
  });
});
