import { createHmac } from 'node:crypto';
import type { IncomingHttpHeaders, Server } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type {
  Bundle,
  ImagingStudy,
  Observation,
  OperationOutcome,
  Parameters,
  ParametersParameter,
  Resource,
  Subscription,
} from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningFhirServer } from '../../local/fhir/server.js';
import { startFhirServer } from '../../local/fhir/server.js';
import type { InstalledSubscriptions } from '../../local/fhir/subscriptions.js';
import {
  BACKPORT_EXTENSIONS as EXT,
  TOPIC_BASE,
  installSubscriptions,
} from '../../local/fhir/subscriptions.js';

const OBSERVATION_TOPIC = `${TOPIC_BASE}/observation-write`;
const IMAGING_TOPIC = `${TOPIC_BASE}/imagingstudy-write`;
const LOINC = 'http://loinc.org';
const SECRET = 'test-signing-secret';
const RETRY_ATTEMPTS = 3;

interface Received {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  readonly bundle: Bundle;
}

/** A rest-hook receiver: records every POST, answers each path with the status set for it (200). */
class Receiver {
  readonly received: Received[] = [];
  readonly statusFor = new Map<string, number>();
  /** Answers at a held path wait until the hold is released. */
  readonly holds = new Map<string, Promise<void>>();
  private waiters: (() => void)[] = [];
  private server: Server | undefined;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const path = req.url ?? '/';
        this.received.push({ path, headers: req.headers, body, bundle: JSON.parse(body) as Bundle });
        for (const wake of this.waiters.splice(0)) wake();
        void (this.holds.get(path) ?? Promise.resolve()).then(() => {
          res.writeHead(this.statusFor.get(path) ?? 200).end();
        });
      });
    });
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  at(path: string): Received[] {
    return this.received.filter((r) => r.path === path);
  }

  /** Resolves with the first notification at `path` that satisfies `predicate`, when it arrives. */
  async waitFor(path: string, predicate: (r: Received) => boolean): Promise<Received> {
    for (;;) {
      const found = this.at(path).find(predicate);
      if (found) return found;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server?.closeAllConnections();
      this.server?.close(() => {
        resolve();
      });
    });
  }
}

let fhir: RunningFhirServer;
let subs: InstalledSubscriptions;
const receiver = new Receiver();

beforeAll(async () => {
  await receiver.start();
  fhir = await startFhirServer({ port: 0 });
  subs = installSubscriptions(fhir, {
    heartbeatScale: 0.02,
    retry: { attempts: RETRY_ATTEMPTS, baseDelayMs: 5, maxDelayMs: 20 },
    signingSecretFor: (s) => (s.reason === 'signed' ? SECRET : undefined),
  });
});
afterAll(async () => {
  await subs.close();
  await fhir.close();
  await receiver.close();
});

// ---- helpers -------------------------------------------------------------------------------

// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the caller names the body's type
async function request<T = Resource>(
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: T }>;
async function request(
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${fhir.baseUrl}/${path}`, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/fhir+json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as unknown) : undefined };
}

async function write<T extends Resource>(resource: T): Promise<T & { id: string }> {
  const { status, body } = resource.id
    ? await request<T & { id: string }>('PUT', `${resource.resourceType}/${resource.id}`, resource)
    : await request<T & { id: string }>('POST', resource.resourceType, resource);
  expect(status, JSON.stringify(body)).toBeLessThan(300);
  return body;
}

interface SubscriptionSpec {
  readonly path: string;
  readonly topic?: string;
  readonly filters?: readonly string[];
  /** `null`: no `channel.payload` at all. */
  readonly content?: 'empty' | 'id-only' | 'full-resource' | null;
  readonly heartbeatSeconds?: number;
  readonly headers?: readonly string[];
  readonly reason?: string;
}

function subscription(spec: SubscriptionSpec): Subscription {
  const channel: Record<string, unknown> = {
    type: 'rest-hook',
    endpoint: receiver.url + spec.path,
    ...(spec.headers ? { header: spec.headers } : {}),
    ...(spec.heartbeatSeconds
      ? { extension: [{ url: EXT.heartbeatPeriod, valueUnsignedInt: spec.heartbeatSeconds }] }
      : {}),
  };
  if (spec.content !== null) {
    channel.payload = 'application/fhir+json';
    channel._payload = { extension: [{ url: EXT.payloadContent, valueCode: spec.content ?? 'id-only' }] };
  }
  return {
    resourceType: 'Subscription',
    status: 'requested',
    reason: spec.reason ?? 'test',
    criteria: spec.topic ?? OBSERVATION_TOPIC,
    _criteria: { extension: (spec.filters ?? []).map((f) => ({ url: EXT.filterCriteria, valueString: f })) },
    channel,
  } as unknown as Subscription;
}

/** Creates the Subscription and waits for its handshake; returns it as stored afterwards. */
async function subscribe(spec: SubscriptionSpec): Promise<Subscription & { id: string }> {
  const created = await write(subscription(spec));
  await subs.flush();
  return (await request<Subscription & { id: string }>('GET', `Subscription/${created.id}`)).body;
}

function observation(patient: string, code = '2345-7', extra: Partial<Observation> = {}): Observation {
  return {
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: LOINC, code }] },
    subject: { reference: `Patient/${patient}` },
    valueQuantity: { value: 5.4, unit: 'mmol/L' },
    ...extra,
  };
}

const statusOf = (bundle: Bundle): Parameters => bundle.entry?.[0]?.resource as Parameters;
const param = (bundle: Bundle, name: string): ParametersParameter | undefined =>
  statusOf(bundle).parameter?.find((p) => p.name === name);
const typeOf = (r: Received): string | undefined => param(r.bundle, 'type')?.valueCode;

interface EventView {
  readonly number: number;
  readonly focus?: string;
  readonly timestamp?: string;
}
function eventsOf(bundle: Bundle): EventView[] {
  return (statusOf(bundle).parameter ?? [])
    .filter((p) => p.name === 'notification-event')
    .map((p) => {
      const part = (n: string): ParametersParameter | undefined => p.part?.find((x) => x.name === n);
      const focus = part('focus')?.valueReference?.reference;
      const timestamp = part('timestamp')?.valueInstant;
      return {
        number: Number(part('event-number')?.valueString),
        ...(focus ? { focus } : {}),
        ...(timestamp ? { timestamp } : {}),
      };
    });
}
/** The value, failing the test when it is missing. */
function must<T>(value: T | undefined): T {
  if (value === undefined) throw new Error('expected a value');
  return value;
}
const notificationsAt = (path: string): Received[] =>
  receiver.at(path).filter((r) => typeOf(r) === 'event-notification');
const numbersAt = (path: string): number[] =>
  notificationsAt(path).flatMap((r) => eventsOf(r.bundle).map((e) => e.number));

// ---- tests ---------------------------------------------------------------------------------

describe('Subscription lifecycle', () => {
  it('handshakes a requested Subscription and activates it', async () => {
    const sub = await subscribe({
      path: '/life',
      filters: [`Observation?code=${LOINC}|2345-7&patient=Patient/life`],
    });
    expect(sub.status).toBe('active');
    const [handshake, ...rest] = receiver.at('/life');
    expect(rest).toHaveLength(0);
    expect(handshake?.bundle.type).toBe('history');
    expect(handshake?.headers['content-type']).toBe('application/fhir+json');
    expect(typeOf(must(handshake))).toBe('handshake');
    expect(param(must(handshake).bundle, 'subscription')?.valueReference?.reference).toBe(
      `Subscription/${sub.id}`,
    );
    expect(param(must(handshake).bundle, 'topic')?.valueCanonical).toBe(OBSERVATION_TOPIC);
    expect(param(must(handshake).bundle, 'events-since-subscription-start')?.valueString).toBe('0');
    expect(statusOf(must(handshake).bundle).meta?.profile).toContain(
      'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4',
    );
  });

  it('numbers matching writes per subscription, skips non-matching ones, and versions the focus', async () => {
    const sub = await subscribe({
      path: '/numbers',
      filters: [`Observation?code=${LOINC}|2345-7&patient=Patient/numbers`],
    });
    const created = await write(observation('numbers'));
    await write(observation('numbers', '4548-4')); // HbA1c: other code
    await write(observation('someone-else')); // other patient
    await subs.flush();
    expect(numbersAt('/numbers')).toEqual([1]);
    const first = must(notificationsAt('/numbers')[0]).bundle;
    expect(param(first, 'subscription')?.valueReference?.reference).toBe(`Subscription/${sub.id}`);
    expect(param(first, 'status')?.valueCode).toBe('active');
    expect(param(first, 'events-since-subscription-start')?.valueString).toBe('1');
    expect(eventsOf(first)[0]?.focus).toBe(`Observation/${created.id}/_history/1`);
    expect(eventsOf(first)[0]?.timestamp).toMatch(/^\d{4}-\d\d-\d\dT/);

    await write({ ...created, valueQuantity: { value: 7.9, unit: 'mmol/L' } });
    await subs.flush();
    expect(numbersAt('/numbers')).toEqual([1, 2]);
    expect(eventsOf(must(notificationsAt('/numbers')[1]).bundle)[0]?.focus).toBe(
      `Observation/${created.id}/_history/2`,
    );
  });

  it('never makes a write wait for a delivery', async () => {
    await subscribe({ path: '/slow', filters: ['Observation?patient=Patient/slow'] });
    let release = (): void => undefined;
    receiver.holds.set('/slow', new Promise<void>((resolve) => (release = resolve)));
    await write(observation('slow'));
    await write(observation('slow'));
    // Both writes answered while the receiver still holds the first notification.
    await receiver.waitFor('/slow', (r) => typeOf(r) === 'event-notification');
    expect(numbersAt('/slow')).toEqual([1]);
    expect(subs.stats().queued).toBe(1);
    release();
    receiver.holds.delete('/slow');
    await subs.flush();
    expect(numbersAt('/slow')).toEqual([1, 2]);
  });

  it('raises events for writes inside transaction bundles', async () => {
    await subscribe({ path: '/tx', filters: ['Observation?patient=Patient/tx'] });
    const { status } = await request('POST', '', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { resource: observation('tx'), request: { method: 'POST', url: 'Observation' } },
        { resource: observation('tx', '4548-4'), request: { method: 'POST', url: 'Observation' } },
      ],
    });
    expect(status).toBe(200);
    await subs.flush();
    expect(numbersAt('/tx')).toEqual([1, 2]);
  });

  it('sends empty, id-only and full-resource payloads as subscribed', async () => {
    const filters = ['Observation?patient=Patient/payload'];
    await subscribe({ path: '/empty', filters, content: 'empty' });
    await subscribe({ path: '/id-only', filters, content: 'id-only' });
    await subscribe({ path: '/full', filters, content: 'full-resource' });
    await subscribe({ path: '/no-payload', filters, content: null });
    const created = await write(observation('payload'));
    await subs.flush();

    const empty = must(notificationsAt('/empty')[0]).bundle;
    expect(empty.entry).toHaveLength(1);
    expect(eventsOf(empty)).toEqual([{ number: 1, timestamp: expect.any(String) as string }]);
    expect(must(notificationsAt('/no-payload')[0]).bundle.entry).toHaveLength(1);

    const idOnly = must(notificationsAt('/id-only')[0]).bundle;
    expect(eventsOf(idOnly)[0]?.focus).toBe(`Observation/${created.id}/_history/1`);
    expect(idOnly.entry).toHaveLength(2);
    expect(idOnly.entry?.[1]?.fullUrl).toBe(`${fhir.baseUrl}/Observation/${created.id}`);
    expect(idOnly.entry?.[1]?.resource).toBeUndefined();

    const full = must(notificationsAt('/full')[0]).bundle;
    expect(eventsOf(full)[0]?.focus).toBe(`Observation/${created.id}/_history/1`);
    const resource = full.entry?.[1]?.resource as Observation;
    expect(resource).toMatchObject({ resourceType: 'Observation', id: created.id, meta: { versionId: '1' } });
    expect(resource.valueQuantity?.value).toBe(5.4);
    expect(full.entry?.[1]?.request).toEqual({ method: 'POST', url: 'Observation' });
  });

  it('filters by category, _tag:not and ImagingStudy modality', async () => {
    await subscribe({
      path: '/lab-not-ours',
      filters: [
        'Observation?patient=Patient/filters&category=laboratory&_tag:not=urn:fhir-analytics|written-by-us',
      ],
    });
    await subscribe({
      path: '/ct',
      topic: IMAGING_TOPIC,
      filters: ['ImagingStudy?modality=CT&patient=Patient/filters'],
    });
    const lab = { category: [{ coding: [{ code: 'laboratory' }] }] };
    await write(observation('filters', '2345-7', lab));
    await write(
      observation('filters', '2345-7', {
        ...lab,
        meta: { tag: [{ system: 'urn:fhir-analytics', code: 'written-by-us' }] },
      }),
    );
    await write(observation('filters', '2345-7', { category: [{ coding: [{ code: 'vital-signs' }] }] }));
    const study = (modality: string): ImagingStudy => ({
      resourceType: 'ImagingStudy',
      status: 'available',
      subject: { reference: 'Patient/filters' },
      series: [
        {
          uid: '1.2.3',
          modality: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: modality },
        },
      ],
    });
    const ct = await write(study('CT'));
    await write(study('MR'));
    await subs.flush();
    expect(numbersAt('/lab-not-ours')).toEqual([1]);
    expect(numbersAt('/ct')).toEqual([1]);
    expect(eventsOf(must(notificationsAt('/ct')[0]).bundle)[0]?.focus).toBe(
      `ImagingStudy/${ct.id}/_history/1`,
    );
  });

  it('puts an unusable Subscription in error with the reason', async () => {
    const unknownTopic = await subscribe({ path: '/bad', topic: `${TOPIC_BASE}/encounter-complete` });
    expect(unknownTopic.status).toBe('error');
    expect(unknownTopic.error).toMatch(/Unknown topic/);
    const badFilter = await subscribe({ path: '/bad', filters: ['Observation?value-quantity=5'] });
    expect(badFilter.status).toBe('error');
    expect(badFilter.error).toMatch(/value-quantity/);
    const wrongType = await subscribe({ path: '/bad', filters: ['Patient?name=x'] });
    expect(wrongType.status).toBe('error');
    expect(receiver.at('/bad')).toHaveLength(0);
  });

  it('handshakes again when a client changes the channel or filters, not for other edits', async () => {
    const sub = await subscribe({ path: '/reconf', filters: ['Observation?patient=Patient/reconf'] });
    await write(observation('reconf'));
    await subs.flush();
    await write({ ...sub, reason: 'renamed' }); // not channel or criteria: nothing new
    await subs.flush();
    expect(receiver.at('/reconf').map(typeOf)).toEqual(['handshake', 'event-notification']);

    const current = (await request<Subscription & { id: string }>('GET', `Subscription/${sub.id}`)).body;
    await write({ ...current, channel: { ...current.channel, endpoint: `${receiver.url}/reconf-2` } });
    await subs.flush();
    expect(receiver.at('/reconf-2').map(typeOf)).toEqual(['handshake']);
    expect(
      param(must(receiver.at('/reconf-2')[0]).bundle, 'events-since-subscription-start')?.valueString,
    ).toBe('1');
    await write(observation('reconf'));
    await subs.flush();
    expect(numbersAt('/reconf-2')).toEqual([2]);
    expect(receiver.at('/reconf')).toHaveLength(2);
  });

  it('stops sending when a Subscription is set off', async () => {
    const sub = await subscribe({ path: '/off', filters: ['Observation?patient=Patient/off'] });
    await write(observation('off'));
    await subs.flush();
    await write({ ...sub, status: 'off' });
    await write(observation('off'));
    await subs.flush();
    expect(numbersAt('/off')).toEqual([1]);
    const { body } = await request<Bundle>('GET', `Subscription/${sub.id}/$status`);
    expect(
      (body.entry?.[0]?.resource as Parameters).parameter?.find((p) => p.name === 'status')?.valueCode,
    ).toBe('off');
  });
});

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
