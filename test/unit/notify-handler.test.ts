/**
 * The notify handler (API Gateway v2 events in, SQS FIFO messages out, SQS mocked): handshakes
 * and heartbeats, events to queue messages, gap catch-up. Refusals: notify-handler-refusals.test.ts.
 */
import { createHash } from 'node:crypto';
import { SendMessageBatchCommand } from '@aws-sdk/client-sqs';
import { afterEach, describe, expect, it } from 'vitest';
import { buildNotificationBundle } from '../../shared/notify/bundle.js';
import {
  accept,
  bodies,
  call,
  events,
  harness,
  httpEvent,
  loadEvent,
  QUEUE_URL,
  sent,
  sqsMock,
} from './notify-handler-harness.js';

afterEach(() => {
  sqsMock.reset();
});

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
