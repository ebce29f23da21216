/**
 * Issue 6, the event path under chaos, through the real path on the embedded stack: a FHIR write
 * → the server's topic-based Subscription → notify (HMAC-verified, event numbers in DynamoDB) →
 * SQS FIFO (fauxqs, redrive to a DLQ) → the local event source mapping → resource-event → a
 * transaction back on the FHIR server.
 *
 * - FHIR failing 20% of writes and every model endpoint throttling 20%: every event is
 *   processed or dead-lettered with its reason; none lost, none duplicated.
 * - Every notification delivered three times in random order: one report per model and input.
 * - Entered-in-error and deleted inputs: no report from them.
 */
import type { Message } from '@aws-sdk/client-sqs';
import type { DiagnosticReport, Observation, Provenance } from '@medplum/fhirtypes';
import { afterEach, describe, expect, it } from 'vitest';
import { loadTrigger } from '../../local/demo/load.js';
import { startEventConsumer } from '../../local/live.js';
import { queueDepth, sendMessages } from '../../local/queue.js';
import type { ResourceEventMessage } from '../../shared/events/resource-event.js';
import { createLogger } from '../../shared/log.js';
import { mulberry32 } from '../../local/prng.js';
import {
  bare,
  cohort,
  deadLetters,
  keyOf,
  LOINC,
  MODELS,
  reportCode,
  reportsOf,
  settle,
  setUp,
  tearDown,
  type LogLine,
} from './event-path-harness.js';

afterEach(tearDown);

describe('event path chaos (issue 6)', () => {
  it('FHIR failing 20% of writes and every endpoint throttling 20%: each event processed or dead-lettered with its reason, none lost, none duplicated', async () => {
    const patients = cohort(10, 5);
    const h = await setUp(patients);
    const { stack, fhir, logs, models } = h;
    const logger = createLogger({ level: 'info', sink: (line) => logs.push(JSON.parse(line) as LogLine) });
    h.consumer = startEventConsumer(stack, logger, 4);

    // Faults from now on: the history is loaded, the new results and the reports face them.
    stack.fhir.server?.setFault({ writeFailureRate: 0.2 });
    for (const m of MODELS) stack.sagemaker.setFault(m, { errorType: 'ThrottlingException', errorRate: 0.2 });

    // The new results. A write the server refused (after the gateway's retries) is not a new result.
    const written: { patient: string; cohort: 'diabetes' | 'pbc'; ref: string }[] = [];
    let refused = 0;
    for (const [i, p] of patients.entries()) {
      const patient = h.patientRefs[i] ?? '';
      try {
        for (const ref of await loadTrigger(fhir, p, patient)) {
          written.push({ patient, cohort: p.key.startsWith('pbc-') ? 'pbc' : 'diabetes', ref });
        }
      } catch {
        refused++;
      }
    }
    expect(written.length + refused).toBe(patients.length);
    expect(written.length).toBeGreaterThan(0);
    const focuses = new Set(written.map((w) => bare(w.ref)));
    expect(focuses.size).toBe(written.length);

    await settle(h, focuses);
    stack.fhir.server?.setFault(undefined);
    for (const m of MODELS) stack.sagemaker.setFault(m, undefined);
    await h.consumer.stop();
    h.consumer = undefined;

    // The faults were real: the servers refused some of the pipeline's calls.
    const throttled = MODELS.reduce(
      (n, m) => n + (stack.sagemaker.stats(m).errors.ThrottlingException ?? 0),
      0,
    );
    const fhirFaults = logs.filter((l) => l.msg === 'fhir retry' || l.msg === 'record failed').length;
    expect(throttled + fhirFaults, 'faults seen by the pipeline').toBeGreaterThan(0);

    // (3) One event per new result: the Subscription numbered exactly that many, and the
    // consumer saw exactly those focuses (processed, or failed until dead-lettered).
    expect(stack.subscriptions?.stats().events).toBe(written.length);
    expect(await queueDepth(stack.queues.client, stack.queues.queueUrl)).toBe(0);
    const dlq = await deadLetters(stack);
    const dlqFocus = new Map<string, Message>();
    for (const m of dlq) {
      const body = JSON.parse(m.Body ?? '{}') as ResourceEventMessage;
      expect(dlqFocus.has(body.focus)).toBe(false);
      dlqFocus.set(body.focus, m);
    }
    const processed = logs.filter((l) => l.msg === 'event processed');
    const processedFocus = new Set(processed.map((l) => String(l.focus)));
    for (const f of focuses) expect(processedFocus.has(f) || dlqFocus.has(f), `lost: ${f}`).toBe(true);
    for (const f of [...processedFocus, ...dlqFocus.keys()])
      expect(focuses.has(f), `unknown: ${f}`).toBe(true);
    // Each dead-lettered event carries its reason: the failures logged for its message.
    for (const m of dlq) {
      const reasons = logs.filter((l) => l.msg === 'record failed' && l.messageId === m.MessageId);
      const processedTimes = processed.filter((l) => l.messageId === m.MessageId).length;
      expect(
        reasons.length,
        `${m.Body ?? ''} dead-lettered, processed ${processedTimes}×`,
      ).toBeGreaterThanOrEqual(1);
      for (const r of reasons) expect(typeof r.error).toBe('string');
    }
    // A record may still be processed more than once (at-least-once delivery); what must not
    // repeat is its effect, checked below.

    // (1) Per new result: one report per model (or insufficient data, or the event dead-lettered).
    const allReports: DiagnosticReport[] = [];
    for (const w of written) {
      const reports = await reportsOf(fhir, w.patient);
      allReports.push(...reports);
      const models_ = w.cohort === 'pbc' ? ['pbc-gru', 'pbc-attention'] : ['diabetes-gbm'];
      for (const model of models_) {
        const n = reports.filter((r) => r.code.coding?.[0]?.code === reportCode(models, model)).length;
        const insufficient = logs.some(
          (l) => l.msg === 'insufficient data' && l.model === model && l.patient === w.patient,
        );
        const deadLettered = dlqFocus.has(bare(w.ref));
        if (insufficient) expect(n, `${model} ${w.patient}`).toBe(0);
        else if (deadLettered) expect(n, `${model} ${w.patient}`).toBeLessThanOrEqual(1);
        else expect(n, `${model} ${w.patient}`).toBe(1);
      }
    }
    // The demo cohort's 9th diabetes patient has no glucose on purpose: that is the only gap.
    const insufficient = logs.filter((l) => l.msg === 'insufficient data');
    expect(
      new Set(insufficient.map((l) => `${String(l.model)} ${String(l.patient)}`)).size,
    ).toBeLessThanOrEqual(1);
    // Each report names its inputs, the new result with its version among them.
    const provenance = await fhir.searchAll<Provenance>('Provenance', { _count: '1000' });
    const entities = new Set(provenance.flatMap((p) => (p.entity ?? []).map((e) => e.what.reference ?? '')));
    for (const w of written) {
      if (dlqFocus.has(bare(w.ref))) continue;
      const hasReport = allReports.some((r) => r.subject?.reference === w.patient);
      if (hasReport) expect(entities.has(w.ref), w.ref).toBe(true);
    }

    // (2) No duplicates on the whole server: each report's idempotency key is unique, and the
    // log's 'report written' lines match the reports one to one.
    const everything = await fhir.searchAll<DiagnosticReport>('DiagnosticReport', { _count: '1000' });
    const keys = everything.map(keyOf);
    expect(keys.every((k) => typeof k === 'string')).toBe(true);
    expect(new Set(keys).size).toBe(everything.length);
    expect(logs.filter((l) => l.msg === 'report written')).toHaveLength(everything.length);
    expect(everything.length).toBe(allReports.length);
  }, 120_000);

  it.each(['id-only', 'full-resource'] as const)(
    '%s: every notification delivered three times in random order: exactly one report per model and input state',
    async (content) => {
      const patients = cohort(6, 3);
      const h = await setUp(patients, content);
      const { stack, fhir, logs, models } = h;
      h.consumer = startEventConsumer(
        stack,
        createLogger({ level: 'info', sink: (line) => logs.push(JSON.parse(line) as LogLine) }),
        4,
      );
      // Twice from the Subscription (byte for byte), every other one held back behind the next.
      stack.subscriptions?.setDeliveryFault({ duplicateRate: 1, shuffle: true, random: mulberry32(6) });
      const written: { patient: string; ref: string; pbc: boolean }[] = [];
      for (const [i, p] of patients.entries()) {
        const patient = h.patientRefs[i] ?? '';
        for (const ref of await loadTrigger(fhir, p, patient)) {
          written.push({ patient, ref, pbc: p.key.startsWith('pbc-') });
        }
      }
      await stack.subscriptions?.flush();
      const stats = stack.subscriptions?.stats();
      expect(stats?.events).toBe(written.length);
      // Each notification was either sent twice in a row or held back behind the next one.
      expect((stats?.duplicated ?? 0) + (stats?.reordered ?? 0)).toBe(written.length);
      expect(stats?.duplicated).toBeGreaterThan(0);
      expect(stats?.reordered).toBeGreaterThan(0);
      // A third time, as an integration engine resending in reverse order: new deduplication ids,
      // so neither notify's event numbers nor SQS's deduplication can absorb it.
      const resend: ResourceEventMessage[] = [...written].reverse().map((w) => {
        const [type, id, , versionId] = w.ref.split('/');
        return {
          v: 1,
          focus: `${type ?? ''}/${id ?? ''}`,
          ...(versionId ? { versionId } : {}),
          action: 'create',
          patient: w.patient,
          timestamp: new Date().toISOString(),
        };
      });
      await sendMessages(
        stack.queues.client,
        stack.queues.queueUrl,
        resend.map((e) => ({
          body: JSON.stringify(e),
          groupId: e.patient ?? e.focus,
          deduplicationId: `${e.focus}-${e.versionId ?? '0'}-third`.replace(/[^A-Za-z0-9_.-]/g, '-'),
        })),
      );
      const focuses = new Set(written.map((w) => bare(w.ref)));
      await settle(h, focuses);
      const deadline = Date.now() + 20_000;
      while (
        logs.filter((l) => l.msg === 'event processed').length < 2 * written.length &&
        Date.now() < deadline
      ) {
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(await queueDepth(stack.queues.client, stack.queues.queueUrl)).toBe(0);
      expect(await queueDepth(stack.queues.client, stack.queues.dlqUrl)).toBe(0);

      // Each focus processed at least twice (Subscription + resend), never more than three times.
      const processed = logs.filter((l) => l.msg === 'event processed');
      for (const f of focuses) {
        const n = processed.filter((l) => l.focus === f).length;
        expect(n, f).toBeGreaterThanOrEqual(2);
        expect(n, f).toBeLessThanOrEqual(3);
      }
      // Exactly one report per model and patient (one input state each); the rest matched it.
      const everything = await fhir.searchAll<DiagnosticReport>('DiagnosticReport', { _count: '1000' });
      const keys = everything.map(keyOf);
      expect(new Set(keys).size).toBe(everything.length);
      let expectedReports = 0;
      for (const w of written) {
        for (const model of w.pbc ? ['pbc-gru', 'pbc-attention'] : ['diabetes-gbm']) {
          const n = everything.filter(
            (r) =>
              r.subject?.reference === w.patient && r.code.coding?.[0]?.code === reportCode(models, model),
          ).length;
          const insufficient = logs.some(
            (l) => l.msg === 'insufficient data' && l.model === model && l.patient === w.patient,
          );
          expect(n, `${model} ${w.patient}`).toBe(insufficient ? 0 : 1);
          expectedReports += insufficient ? 0 : 1;
        }
      }
      expect(everything).toHaveLength(expectedReports);
      expect(logs.filter((l) => l.msg === 'report written')).toHaveLength(expectedReports);
      const unchanged = logs.filter((l) => l.msg === 'report unchanged').length;
      expect(unchanged).toBeGreaterThanOrEqual(expectedReports);
      // With full-resource content the Subscription's events carried the focus: those were not
      // read. Events notify caught up through $events (a reordered notification is a gap first)
      // and the resend carry only references: those were read.
      if (content === 'full-resource') {
        const fromMessage = processed.filter((l) => l.focusFrom === 'message').length;
        const caughtUp = logs
          .filter((l) => l.msg === 'notification processed')
          .reduce((n, l) => n + Number(l.caughtUp ?? 0), 0);
        expect(fromMessage).toBeGreaterThan(0);
        expect(fromMessage).toBeGreaterThanOrEqual(written.length - caughtUp);
      } else expect(processed.every((l) => l.focusFrom === 'read')).toBe(true);
    },
    90_000,
  );

  it.each(['id-only', 'full-resource'] as const)(
    '%s: entered-in-error and deleted inputs: their events are ignored and no report comes from them',
    async (content) => {
      const patients = cohort(3, 0);
      const h = await setUp(patients, content);
      const { stack, fhir, logs } = h;
      const logger = createLogger({ level: 'info', sink: (line) => logs.push(JSON.parse(line) as LogLine) });
      h.consumer = startEventConsumer(stack, logger, 2);
      const triggers: string[] = [];
      for (const [i, p] of patients.entries()) {
        triggers.push(...(await loadTrigger(fhir, p, h.patientRefs[i] ?? '')));
      }
      await settle(h, new Set(triggers.map(bare)));
      const before = await fhir.searchAll<DiagnosticReport>('DiagnosticReport', { _count: '1000' });
      expect(before.length).toBe(3);
      const [p0, p1] = h.patientRefs as [string, string];
      const eventsBefore = stack.subscriptions?.stats().events ?? 0;

      const glucose = (patient: string, status: Observation['status'], value: number): Observation => ({
        resourceType: 'Observation',
        status,
        code: { coding: [{ system: LOINC, code: '2345-7' }] },
        subject: { reference: patient },
        effectiveDateTime: new Date().toISOString(),
        valueQuantity: { value, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' },
      });
      const create = async (o: Observation): Promise<string> => {
        const res = await fhir.transaction({
          resourceType: 'Bundle',
          type: 'transaction',
          entry: [{ resource: o, request: { method: 'POST', url: 'Observation' } }],
        });
        return bare(
          /(Observation\/[^/]+\/_history\/[^/]+)$/.exec(res.entry?.[0]?.response?.location ?? '')?.[1] ?? '',
        );
      };

      // 1. An entered-in-error result: its event arrives and is ignored; no new report.
      const wrong = await create(glucose(p0, 'entered-in-error', 250));
      // 2. A result deleted before its event is handled: the consumer is paused, the event queued,
      //    the Observation deleted, then the consumer resumes and finds it gone.
      // 3. A final result marked entered-in-error before its event is handled: its first event
      //    (carrying the final version, with full-resource content) must not produce a report.
      await h.consumer.stop();
      const gone = await create(glucose(p1, 'final', 260));
      const retracted = await create(glucose(p0, 'final', 270));
      await stack.subscriptions?.flush();
      const del = await fetch(`${stack.fhir.baseUrl}/${gone}`, { method: 'DELETE' });
      expect(del.ok).toBe(true);
      expect(await fhir.read<Observation>('Observation', gone.split('/')[1] ?? '')).toBeUndefined();
      const final = await fhir.read<Observation>('Observation', retracted.split('/')[1] ?? '');
      if (!final) throw new Error('the result to retract is missing');
      const retract = await fetch(`${stack.fhir.baseUrl}/${retracted}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/fhir+json' },
        body: JSON.stringify({ ...final, status: 'entered-in-error' }),
      });
      expect(retract.ok).toBe(true);
      h.consumer = startEventConsumer(stack, logger, 2);
      await settle(h, new Set([wrong, gone, retracted]));

      // The three creates and the update were events (the delete is none: the topic triggers on
      // create and update).
      expect(stack.subscriptions?.stats().events).toBe(eventsBefore + 4);
      const events = (focus: string) => logs.filter((l) => l.msg === 'event processed' && l.focus === focus);
      const ignored = (focus: string): unknown => events(focus)[0]?.ignored;
      expect(ignored(wrong)).toBe('entered-in-error');
      expect(ignored(gone)).toBe('focus-gone');
      expect(events(retracted).map((l) => l.ignored)).toEqual(['entered-in-error', 'entered-in-error']);
      const from = content === 'full-resource' ? 'message' : 'read';
      for (const f of [wrong, gone, retracted]) for (const l of events(f)) expect(l.focusFrom, f).toBe(from);
      const after = await fhir.searchAll<DiagnosticReport>('DiagnosticReport', { _count: '1000' });
      expect(after.map((r) => r.id).sort()).toEqual(before.map((r) => r.id).sort());
      expect(await queueDepth(stack.queues.client, stack.queues.dlqUrl)).toBe(0);
      // No Provenance names either input.
      const provenance = await fhir.searchAll<Provenance>('Provenance', { _count: '1000' });
      const entities = provenance.flatMap((p) => (p.entity ?? []).map((e) => bare(e.what.reference ?? '')));
      expect(entities).not.toContain(wrong);
      expect(entities).not.toContain(gone);
      expect(entities).not.toContain(retracted);
    },
    60_000,
  );
});
