/**
 * Topic-based Subscriptions (R4 backport) on the embedded FHIR server, delivered over real HTTP
 * to a rest-hook receiver: the lifecycle (handshake, event numbers, payloads, filters, errors,
 * reconfiguration, off). Heartbeats, $status and $events, delivery failures, signing and
 * faults: fhir-subscriptions-delivery.test.ts.
 */
import type { Bundle, ImagingStudy, Observation, Parameters, Subscription } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOPIC_BASE } from '../../local/fhir/subscriptions.js';
import {
  eventsOf,
  fhir,
  IMAGING_TOPIC,
  LOINC,
  must,
  notificationsAt,
  numbersAt,
  OBSERVATION_TOPIC,
  observation,
  param,
  receiver,
  request,
  startSubscriptions,
  statusOf,
  stopSubscriptions,
  subs,
  subscribe,
  typeOf,
  write,
} from './fhir-subscriptions-harness.js';

beforeAll(startSubscriptions);
afterAll(stopSubscriptions);

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
