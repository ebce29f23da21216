import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  NotificationShapeError,
  parseInbound,
  parseNotificationBundle,
  parseReference,
  peekSubscription,
} from '../../shared/events/notification.js';
import { buildNotificationBundle } from '../../shared/notify/bundle.js';

const SUB = 'https://ehr.example/fhir/Subscription/obs-labs';
const T1 = '2026-03-01T10:00:01.000Z';

function fixtureBody(name: string): unknown {
  const event = JSON.parse(
    readFileSync(new URL(`../../events/notify/${name}.json`, import.meta.url), 'utf8'),
  ) as { body?: string };
  return event.body === undefined ? undefined : JSON.parse(event.body);
}

/** The location a body fails at. */
function failingPath(raw: unknown): string {
  try {
    parseInbound(raw);
  } catch (err) {
    if (err instanceof NotificationShapeError) return err.location;
    throw err;
  }
  throw new Error('expected a NotificationShapeError');
}

/** A valid event-notification whose parts tests then break. */
function eventBundle(): { entry: { resource: { parameter: Record<string, unknown>[] } }[] } {
  return buildNotificationBundle({
    subscription: SUB,
    type: 'event-notification',
    eventsSinceSubscriptionStart: 7,
    events: [{ eventNumber: 7, timestamp: T1, focus: 'Observation/o-7', additionalContext: ['Patient/p-1'] }],
  }) as never;
}

type Broken = ReturnType<typeof eventBundle>;
function params(b: Broken): Record<string, unknown>[] {
  const first = b.entry[0];
  if (!first) throw new Error('no status entry');
  return first.resource.parameter;
}
function param(b: Broken, i: number): Record<string, unknown> {
  const p = params(b)[i];
  if (!p) throw new Error(`no parameter ${i}`);
  return p;
}
function part(b: Broken, i: number, j: number): Record<string, unknown> {
  const p = (param(b, i).part as Record<string, unknown>[])[j];
  if (!p) throw new Error(`no part ${i}.${j}`);
  return p;
}

describe('notification bundle parsing', () => {
  it('reads a handshake and a heartbeat: type, status, topic and the event count', () => {
    const hs = parseNotificationBundle(fixtureBody('handshake'));
    expect(hs).toMatchObject({
      subscription: { type: 'Subscription', id: 'obs-labs', relative: 'Subscription/obs-labs' },
      type: 'handshake',
      status: 'requested',
      topic: 'http://example.org/SubscriptionTopic/observations',
      eventsSinceSubscriptionStart: 0,
      events: [],
    });
    expect(parseNotificationBundle(fixtureBody('heartbeat')).type).toBe('heartbeat');
  });

  it('reads an id-only event: absolute focus made relative with its version, additional context', () => {
    const n = parseNotificationBundle(fixtureBody('event-id-only'));
    expect(n.events).toEqual([
      {
        eventNumber: 1,
        timestamp: '2026-03-01T10:00:02.000Z',
        focus: { type: 'Observation', id: 'glucose-1', relative: 'Observation/glucose-1', version: '1' },
        additionalContext: [{ type: 'Patient', id: 'p-1', relative: 'Patient/p-1' }],
      },
    ]);
    expect(n.resources.size).toBe(0);
  });

  it('reads a full-resource event: the resources after the status, by Type/id', () => {
    const n = parseNotificationBundle(fixtureBody('event-full-resource'));
    expect(n.events[0]?.focus?.relative).toBe('Observation/hba1c-1');
    expect(n.resources.get('Observation/hba1c-1')?.meta?.versionId).toBe('3');
  });

  it('reads empty content (no focus), query-status and query-event', () => {
    const empty = parseNotificationBundle(
      buildNotificationBundle({
        subscription: SUB,
        type: 'event-notification',
        events: [{ eventNumber: 4 }],
      }),
    );
    expect(empty.events).toEqual([{ eventNumber: 4, additionalContext: [] }]);
    const status = parseNotificationBundle(
      buildNotificationBundle({ subscription: SUB, type: 'query-status', eventsSinceSubscriptionStart: 12 }),
    );
    expect(status).toMatchObject({ type: 'query-status', eventsSinceSubscriptionStart: 12 });
    const replay = parseNotificationBundle(
      buildNotificationBundle({
        subscription: 'Subscription/obs-labs',
        type: 'query-event',
        events: [
          { eventNumber: 2, focus: 'Observation/a' },
          { eventNumber: 3, focus: 'Observation/b' },
        ],
      }),
    );
    expect(replay.events.map((e) => [e.eventNumber, e.focus?.relative])).toEqual([
      [2, 'Observation/a'],
      [3, 'Observation/b'],
    ]);
  });

  it('tells pings, legacy resources and bundles apart', () => {
    expect(parseInbound(undefined)).toEqual({ kind: 'ping' });
    const legacy = parseInbound({ resourceType: 'Observation', id: 'o-1', status: 'final' });
    expect(legacy).toMatchObject({ kind: 'resource', resource: { resourceType: 'Observation', id: 'o-1' } });
    expect(parseInbound(fixtureBody('heartbeat')).kind).toBe('bundle');
  });
});

describe('failing paths', () => {
  it('names the event-number part of the malformed fixture', () => {
    expect(failingPath(fixtureBody('malformed'))).toBe(
      'Bundle.entry[0].resource.parameter[5].part[0].valueString',
    );
  });

  it('names each broken element by its FHIRPath-like location', () => {
    const cases: [string, (b: ReturnType<typeof eventBundle>) => void][] = [
      ['Bundle.entry[0].resource.parameter[3].valueCode', (b) => (param(b, 3).valueCode = 'ping')],
      [
        'Bundle.entry[0].resource.parameter[0].valueReference.reference',
        (b) => (param(b, 0).valueReference = { reference: 'not a reference' }),
      ],
      ['Bundle.entry[0].resource.parameter[4].valueString', (b) => (param(b, 4).valueString = '-1')],
      [
        'Bundle.entry[0].resource.parameter[5].part[1].valueInstant',
        (b) => (part(b, 5, 1).valueInstant = 'yesterday'),
      ],
      [
        'Bundle.entry[0].resource.parameter[5].part[2].valueReference.reference',
        (b) =>
          (part(b, 5, 2).valueReference = {
            reference: '#contained',
          }),
      ],
      ['Bundle.entry[0].resource.parameter', (b) => params(b).splice(3, 1)],
      [
        'Bundle.entry[0].resource.parameter[5].part',
        (b) => (param(b, 5).part = [{ name: 'focus', valueReference: { reference: 'Observation/x' } }]),
      ],
      [
        'Bundle.entry[0].resource.resourceType',
        (b) => (((b.entry[0]?.resource ?? {}) as Record<string, unknown>).resourceType = 'Bundle'),
      ],
    ];
    for (const [path, breakIt] of cases) {
      const b = eventBundle();
      breakIt(b);
      expect(failingPath(b), path).toBe(path);
    }
  });

  it('refuses a bundle of another type, one without entries, and a resource without an id', () => {
    expect(failingPath({ ...eventBundle(), type: 'transaction' })).toBe('Bundle.type');
    expect(failingPath({ ...eventBundle(), entry: [] })).toBe('Bundle.entry[0]');
    expect(failingPath({ resourceType: 'Observation', status: 'final' })).toBe('Resource.id');
    expect(failingPath({ resourceType: 'observation', id: 'x' })).toBe('Resource.resourceType');
    expect(failingPath(42)).toBe('Resource');
  });

  it('never puts the offending value in the message', () => {
    const b = eventBundle();
    param(b, 4).valueString = 'Jane Doe 1970-01-01';
    try {
      parseInbound(b);
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).not.toContain('Jane');
    }
  });
});

describe('references and peeking', () => {
  it('parses relative, absolute and versioned references, and refuses others', () => {
    expect(parseReference('https://x.example/fhir/Observation/a.1/_history/7')).toEqual({
      type: 'Observation',
      id: 'a.1',
      relative: 'Observation/a.1',
      version: '7',
    });
    expect(parseReference('Patient/p')?.relative).toBe('Patient/p');
    for (const bad of [
      'urn:uuid:1234',
      '#x',
      'Observation',
      'Observation/',
      'observation/1',
      'Observation/a b',
    ]) {
      expect(parseReference(bad), bad).toBeUndefined();
    }
  });

  it('peeks the subscription of a body without validating the rest', () => {
    expect(peekSubscription(fixtureBody('malformed'))?.id).toBe('obs-labs');
    expect(peekSubscription({ resourceType: 'Observation' })).toBeUndefined();
    expect(peekSubscription(null)).toBeUndefined();
  });
});
