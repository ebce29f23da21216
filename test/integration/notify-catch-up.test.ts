/**
 * The notify function's gap catch-up end to end: a missed event range read back through a
 * server's `$events` (a small fake one), or through a `_lastUpdated` search on the embedded FHIR
 * server when it has no `$events`; the queue (fauxqs) and the state (dynalite) are real.
 */
import type { Observation } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TABLE_NAMES } from '../../local/dynamo.js';
import type { BundleEventInput } from '../../shared/notify/bundle.js';
import { createDynamoStateStore } from '../../shared/notify/state.js';
import {
  drain,
  dynamo,
  eventLog,
  eventsBase,
  eventsRequests,
  fhir,
  mount,
  notification,
  post,
  startNotifyStack,
  stopNotifyStack,
} from './notify-harness.js';

beforeAll(startNotifyStack);
afterAll(stopNotifyStack);

describe('notify over HTTP, SQS FIFO and DynamoDB', () => {
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
});
