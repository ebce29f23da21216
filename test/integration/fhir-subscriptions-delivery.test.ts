/**
 * Delivering Subscription notifications over real HTTP: heartbeats, $status and $events,
 * retries and the error state, HMAC signatures and channel headers, and injected delivery
 * faults (drop, duplicate, reorder) recovered through $events.
 */
import { createHmac } from 'node:crypto';
import type { Bundle, Observation, OperationOutcome, Subscription } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  eventsOf,
  must,
  notificationsAt,
  numbersAt,
  observation,
  param,
  type Received,
  receiver,
  request,
  RETRY_ATTEMPTS,
  SECRET,
  startSubscriptions,
  stopSubscriptions,
  subs,
  subscribe,
  typeOf,
  write,
} from './fhir-subscriptions-harness.js';

beforeAll(startSubscriptions);
afterAll(stopSubscriptions);

describe('heartbeats', () => {
  it('sends heartbeats with the current event count', async () => {
    const sub = await subscribe({
      path: '/heartbeat',
      filters: ['Observation?patient=Patient/heartbeat'],
      heartbeatSeconds: 1,
    });
    await write(observation('heartbeat'));
    await subs.flush();
    // The first heartbeat after the event's notification (on a slow machine one may come before it).
    const event = await receiver.waitFor('/heartbeat', (r) => typeOf(r) === 'event-notification');
    const after = (r: Received) =>
      receiver.at('/heartbeat').indexOf(r) > receiver.at('/heartbeat').indexOf(event);
    const beat = await receiver.waitFor('/heartbeat', (r) => typeOf(r) === 'heartbeat' && after(r));
    expect(param(beat.bundle, 'events-since-subscription-start')?.valueString).toBe('1');
    expect(param(beat.bundle, 'subscription')?.valueReference?.reference).toBe(`Subscription/${sub.id}`);
    expect(eventsOf(beat.bundle)).toEqual([]);
    expect(beat.bundle.entry).toHaveLength(1);
    await subs.flush();
    expect(subs.stats().heartbeats).toBeGreaterThan(0);
  });
});

describe('$status and $events', () => {
  it('answers $status with the status Parameters in a searchset', async () => {
    const sub = await subscribe({ path: '/status', filters: ['Observation?patient=Patient/status'] });
    await write(observation('status'));
    await write(observation('status'));
    await subs.flush();
    for (const res of [
      await request<Bundle>('GET', `Subscription/${sub.id}/$status`),
      await request<Bundle>('POST', `Subscription/${sub.id}/$status`, { resourceType: 'Parameters' }),
      await request<Bundle>('GET', `Subscription/$status?id=${sub.id}`),
    ]) {
      expect(res.status).toBe(200);
      expect(res.body.type).toBe('searchset');
      expect(res.body.total).toBe(1);
      const status = { resourceType: 'Bundle', type: 'history', entry: res.body.entry } as Bundle;
      expect(param(status, 'type')?.valueCode).toBe('query-status');
      expect(param(status, 'status')?.valueCode).toBe('active');
      expect(param(status, 'events-since-subscription-start')?.valueString).toBe('2');
      expect(param(status, 'subscription')?.valueReference?.reference).toBe(`Subscription/${sub.id}`);
    }
    const missing = await request<OperationOutcome>('GET', 'Subscription/nope/$status');
    expect(missing.status).toBe(404);
    expect(missing.body.resourceType).toBe('OperationOutcome');
  });

  it('replays stored events with $events, ranges inclusive, content on request', async () => {
    const sub = await subscribe({
      path: '/events',
      filters: ['Observation?patient=Patient/events'],
      content: 'id-only',
    });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await write(observation('events'))).id);
    await subs.flush();

    const all = await request<Bundle>('GET', `Subscription/${sub.id}/$events`);
    expect(all.status).toBe(200);
    expect(all.body.type).toBe('history');
    expect(param(all.body, 'type')?.valueCode).toBe('query-event');
    expect(param(all.body, 'events-since-subscription-start')?.valueString).toBe('4');
    expect(eventsOf(all.body).map((e) => e.number)).toEqual([1, 2, 3, 4]);
    expect(eventsOf(all.body).map((e) => e.focus)).toEqual(ids.map((id) => `Observation/${id}/_history/1`));
    // The replayed events are the ones that were notified.
    expect(eventsOf(all.body)).toEqual(notificationsAt('/events').flatMap((r) => eventsOf(r.bundle)));

    const range = await request<Bundle>(
      'GET',
      `Subscription/${sub.id}/$events?eventsSinceNumber=2&eventsUntilNumber=3&content=full-resource`,
    );
    expect(eventsOf(range.body).map((e) => e.number)).toEqual([2, 3]);
    expect(range.body.entry?.slice(1).map((e) => (e.resource as Observation).id)).toEqual([ids[1], ids[2]]);

    const posted = await request<Bundle>('POST', `Subscription/${sub.id}/$events`, {
      resourceType: 'Parameters',
      parameter: [
        { name: 'eventsSinceNumber', valueString: '4' },
        { name: 'content', valueCode: 'empty' },
      ],
    });
    expect(eventsOf(posted.body)).toEqual([{ number: 4, timestamp: expect.any(String) as string }]);
    expect(posted.body.entry).toHaveLength(1);

    expect((await request('GET', `Subscription/${sub.id}/$events?eventsSinceNumber=x`)).status).toBe(400);
    expect((await request('GET', `Subscription/${sub.id}/$events?content=everything`)).status).toBe(400);
  });
});

describe('delivery failures', () => {
  it('retries a failing receiver, then puts the Subscription in error; reactivation shows the gap', async () => {
    const path = '/failing';
    const sub = await subscribe({ path, filters: ['Observation?patient=Patient/failing'] });
    await write(observation('failing'));
    await subs.flush();
    expect(numbersAt(path)).toEqual([1]);

    receiver.statusFor.set(path, 500);
    const before = subs.stats();
    await write(observation('failing'));
    await subs.flush();
    const attempts = notificationsAt(path).filter((r) => eventsOf(r.bundle)[0]?.number === 2);
    expect(attempts).toHaveLength(RETRY_ATTEMPTS);
    expect(new Set(attempts.map((a) => a.body)).size).toBe(1); // retries resend the same bundle
    expect(subs.stats().retries - before.retries).toBe(RETRY_ATTEMPTS - 1);
    const errored = (await request<Subscription>('GET', `Subscription/${sub.id}`)).body;
    expect(errored.status).toBe('error');
    expect(errored.error).toMatch(/failed after 3 attempts \(HTTP 500\)/);

    // Events keep their numbers while in error, and are not sent.
    const sent = receiver.at(path).length;
    await write(observation('failing'));
    await subs.flush();
    expect(receiver.at(path)).toHaveLength(sent);

    // The receiver recovers and asks for a new handshake.
    receiver.statusFor.delete(path);
    await write({ ...errored, status: 'requested' });
    await subs.flush();
    const handshakes = receiver.at(path).filter((r) => typeOf(r) === 'handshake');
    expect(param(must(handshakes.at(-1)).bundle, 'events-since-subscription-start')?.valueString).toBe('3');
    expect((await request<Subscription>('GET', `Subscription/${sub.id}`)).body.status).toBe('active');
    await write(observation('failing'));
    await subs.flush();
    const delivered = [...new Set(numbersAt(path))];
    expect(delivered).toEqual([1, 2, 4]);
    const replay = await request<Bundle>(
      'GET',
      `Subscription/${sub.id}/$events?eventsSinceNumber=2&eventsUntilNumber=3`,
    );
    expect(eventsOf(replay.body).map((e) => e.number)).toEqual([2, 3]);
  });

  it('puts a Subscription whose handshake fails in error', async () => {
    receiver.statusFor.set('/no-handshake', 503);
    const sub = await subscribe({ path: '/no-handshake' });
    expect(sub.status).toBe('error');
    expect(receiver.at('/no-handshake').filter((r) => typeOf(r) === 'handshake')).toHaveLength(
      RETRY_ATTEMPTS,
    );
  });
});

describe('signing and headers', () => {
  it('signs the exact body with HMAC-SHA256 and sends channel headers as given', async () => {
    await subscribe({
      path: '/signed',
      reason: 'signed',
      filters: ['Observation?patient=Patient/signed'],
      headers: ['Authorization: Bearer receiver-token', 'X-Tenant: demo'],
    });
    await write(observation('signed'));
    await subs.flush();
    const all = receiver.at('/signed');
    expect(all.map(typeOf)).toEqual(['handshake', 'event-notification']);
    for (const r of all) {
      const expected = createHmac('sha256', SECRET).update(r.body).digest('hex');
      expect(r.headers['x-signature']).toBe(`sha256=${expected}`);
      expect(r.headers.authorization).toBe('Bearer receiver-token');
      expect(r.headers['x-tenant']).toBe('demo');
    }
    const forged = createHmac('sha256', 'another-secret').update(must(all[1]).body).digest('hex');
    expect(must(all[1]).headers['x-signature']).not.toBe(`sha256=${forged}`);
    await subscribe({ path: '/unsigned', filters: ['Observation?patient=Patient/signed'] });
    expect(receiver.at('/unsigned')[0]?.headers['x-signature']).toBeUndefined();
  });
});

describe('delivery faults', () => {
  it('drops a notification: the receiver sees a gap and recovers it through $events', async () => {
    const sub = await subscribe({ path: '/drop', filters: ['Observation?patient=Patient/drop'] });
    const ids = [(await write(observation('drop'))).id];
    await subs.flush();
    subs.setDeliveryFault({ dropRate: 1 });
    ids.push((await write(observation('drop'))).id);
    await subs.flush();
    subs.setDeliveryFault(undefined);
    ids.push((await write(observation('drop'))).id);
    await subs.flush();
    const seen = numbersAt('/drop');
    expect(seen).toEqual([1, 3]);
    const missing = [...Array(Math.max(...seen)).keys()].map((i) => i + 1).filter((n) => !seen.includes(n));
    expect(missing).toEqual([2]);
    const replay = await request<Bundle>(
      'GET',
      `Subscription/${sub.id}/$events?eventsSinceNumber=${missing[0]}&eventsUntilNumber=${missing[0]}`,
    );
    expect(eventsOf(replay.body)).toMatchObject([{ number: 2, focus: `Observation/${ids[1]}/_history/1` }]);
  });

  it('duplicates and reorders notifications on request', async () => {
    await subscribe({ path: '/dup', filters: ['Observation?patient=Patient/dup'] });
    subs.setDeliveryFault({ duplicateRate: 1 });
    await write(observation('dup'));
    await subs.flush();
    const dup = notificationsAt('/dup');
    expect(dup.map((r) => eventsOf(r.bundle)[0]?.number)).toEqual([1, 1]);
    expect(dup[0]?.body).toBe(dup[1]?.body);

    await subscribe({ path: '/shuffle', filters: ['Observation?patient=Patient/shuffle'] });
    subs.setDeliveryFault({ shuffle: true, random: () => 0 });
    await write(observation('shuffle'));
    await write(observation('shuffle'));
    await subs.flush();
    subs.setDeliveryFault(undefined);
    expect(numbersAt('/shuffle')).toEqual([2, 1]);
  });
});
