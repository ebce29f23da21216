/**
 * What the Subscriptions tests (fhir-subscriptions*.test.ts) share: a rest-hook receiver, the
 * embedded FHIR server with topic-based Subscriptions installed, started by each test file
 * (`beforeAll(startSubscriptions)`, `afterAll(stopSubscriptions)`), and helpers that write,
 * subscribe and read the notifications received.
 */
import type { IncomingHttpHeaders, Server } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type {
  Bundle,
  Observation,
  Parameters,
  ParametersParameter,
  Resource,
  Subscription,
} from '@medplum/fhirtypes';
import { expect } from 'vitest';
import type { RunningFhirServer } from '../../local/fhir/server.js';
import { startFhirServer } from '../../local/fhir/server.js';
import type { InstalledSubscriptions } from '../../local/fhir/subscriptions.js';
import {
  BACKPORT_EXTENSIONS as EXT,
  TOPIC_BASE,
  installSubscriptions,
} from '../../local/fhir/subscriptions.js';

export const OBSERVATION_TOPIC = `${TOPIC_BASE}/observation-write`;
export const IMAGING_TOPIC = `${TOPIC_BASE}/imagingstudy-write`;
export const LOINC = 'http://loinc.org';
export const SECRET = 'test-signing-secret';
export const RETRY_ATTEMPTS = 3;

export interface Received {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  readonly bundle: Bundle;
}

/** A rest-hook receiver: records every POST, answers each path with the status set for it (200). */
export class Receiver {
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

export let fhir: RunningFhirServer;
export let subs: InstalledSubscriptions;
export const receiver = new Receiver();

export async function startSubscriptions(): Promise<void> {
  await receiver.start();
  fhir = await startFhirServer({ port: 0 });
  subs = installSubscriptions(fhir, {
    heartbeatScale: 0.02,
    retry: { attempts: RETRY_ATTEMPTS, baseDelayMs: 5, maxDelayMs: 20 },
    signingSecretFor: (s) => (s.reason === 'signed' ? SECRET : undefined),
  });
}
export async function stopSubscriptions(): Promise<void> {
  await subs.close();
  await fhir.close();
  await receiver.close();
}

// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the caller names the body's type
export async function request<T = Resource>(
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: T }>;
export async function request(
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

export async function write<T extends Resource>(resource: T): Promise<T & { id: string }> {
  const { status, body } = resource.id
    ? await request<T & { id: string }>('PUT', `${resource.resourceType}/${resource.id}`, resource)
    : await request<T & { id: string }>('POST', resource.resourceType, resource);
  expect(status, JSON.stringify(body)).toBeLessThan(300);
  return body;
}

export interface SubscriptionSpec {
  readonly path: string;
  readonly topic?: string;
  readonly filters?: readonly string[];
  /** `null`: no `channel.payload` at all. */
  readonly content?: 'empty' | 'id-only' | 'full-resource' | null;
  readonly heartbeatSeconds?: number;
  readonly headers?: readonly string[];
  readonly reason?: string;
}

export function subscription(spec: SubscriptionSpec): Subscription {
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
export async function subscribe(spec: SubscriptionSpec): Promise<Subscription & { id: string }> {
  const created = await write(subscription(spec));
  await subs.flush();
  return (await request<Subscription & { id: string }>('GET', `Subscription/${created.id}`)).body;
}

export function observation(patient: string, code = '2345-7', extra: Partial<Observation> = {}): Observation {
  return {
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: LOINC, code }] },
    subject: { reference: `Patient/${patient}` },
    valueQuantity: { value: 5.4, unit: 'mmol/L' },
    ...extra,
  };
}

export const statusOf = (bundle: Bundle): Parameters => bundle.entry?.[0]?.resource as Parameters;
export const param = (bundle: Bundle, name: string): ParametersParameter | undefined =>
  statusOf(bundle).parameter?.find((p) => p.name === name);
export const typeOf = (r: Received): string | undefined => param(r.bundle, 'type')?.valueCode;

export interface EventView {
  readonly number: number;
  readonly focus?: string;
  readonly timestamp?: string;
}
export function eventsOf(bundle: Bundle): EventView[] {
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
export function must<T>(value: T | undefined): T {
  if (value === undefined) throw new Error('expected a value');
  return value;
}
export const notificationsAt = (path: string): Received[] =>
  receiver.at(path).filter((r) => typeOf(r) === 'event-notification');
export const numbersAt = (path: string): number[] =>
  notificationsAt(path).flatMap((r) => eventsOf(r.bundle).map((e) => e.number));
