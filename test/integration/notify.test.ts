/**
 * The notify function end to end on the embedded stack: the real handler behind the local
 * functions gateway (real HTTP, API Gateway v2 events), a real SQS FIFO queue (fauxqs) driven
 * by @aws-sdk/client-sqs, real DynamoDB state (dynalite) driven by @aws-sdk/client-dynamodb:
 * acknowledgements, messages, exactly-once under redelivery, refusals, legacy posts. Gap
 * catch-up through `$events` and `_lastUpdated` searches: notify-catch-up.test.ts.
 */
import type { Observation } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TABLE_NAMES } from '../../local/dynamo.js';
import { signBody } from '../../shared/notify/auth.js';
import type { BundleEventInput } from '../../shared/notify/bundle.js';
import { createDynamoStateStore } from '../../shared/notify/state.js';
import {
  drain,
  dynamo,
  eventLog,
  eventsBase,
  mount,
  notification,
  post,
  startNotifyStack,
  stopNotifyStack,
} from './notify-harness.js';

beforeAll(startNotifyStack);
afterAll(stopNotifyStack);

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
