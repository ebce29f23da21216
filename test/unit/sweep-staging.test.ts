/**
 * Staging without a parse per line (`routeLine`), the staging buffers' total bound, and the
 * tally's bounded size with exact counts. S3 is aws-sdk-client-mock: what was put is read back.
 */
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import type { Observation, Patient, Resource } from '@medplum/fhirtypes';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { createNdjsonPrefilter, parseNdjsonLines } from '../../shared/features/index.js';
import { isWrittenByFhirAnalytics, WRITTEN_BY_TAG } from '../../shared/reports/index.js';
import { PartitionWriter, patientIdOf, routeLine } from '../../shared/sweep/staging.js';
import { addFailed, addScore, emptyTally, mergeTally, type Histogram } from '../../shared/sweep/tally.js';

const MARKER = JSON.stringify(WRITTEN_BY_TAG.code);

const observation = (patient: string, extra: Partial<Observation> = {}): Observation => ({
  resourceType: 'Observation',
  id: `o-${patient}`,
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code: '2345-7' }] },
  subject: { reference: `Patient/${patient}` },
  valueQuantity: { value: 101, unit: 'mg/dL' },
  ...extra,
});

const s3 = mockClient(S3Client);
let puts: { key: string; body: string }[] = [];
beforeEach(() => {
  s3.reset();
  puts = [];
  s3.on(PutObjectCommand).callsFake((input: { Key: string; Body: string }) => {
    puts.push({ key: input.Key, body: input.Body });
    return {};
  });
});

describe('routeLine: type and patient from the text, only where certain', () => {
  it('routes the plain Patient and Observation lines as a parse would', () => {
    // Arrange
    const lines: Resource[] = [
      { resourceType: 'Patient', id: 'p-1.a', gender: 'female' },
      observation('p2'),
      observation('p3', { subject: { reference: 'https://ehr.example/fhir/Patient/p3/_history/4' } }),
      observation('p4', { subject: { display: 'first', reference: 'Patient/p4' } }),
    ];

    // Act
    const routed = lines.map((r) => routeLine(JSON.stringify(r), MARKER));

    // Assess: the same patient as `patientIdOf` of the parsed resource, except the last line,
    // whose `subject` does not start with its reference: parsed instead.
    expect(routed.slice(0, 3)).toEqual(
      lines.slice(0, 3).map((r) => ({ type: r.resourceType, patient: patientIdOf(r) })),
    );
    expect(routed[3]).toBeUndefined();
  });

  it('leaves to the parse: escapes, contained resources, own writes, a second subject, other types, no marker', () => {
    const plain = JSON.stringify(observation('p1'));
    const cases = [
      JSON.stringify(observation('p1', { note: [{ text: 'a "quoted" word' }] })),
      JSON.stringify(observation('p1', { contained: [{ resourceType: 'Patient', id: 'x' }] })),
      JSON.stringify(observation('p1', { meta: { tag: [WRITTEN_BY_TAG] } })),
      JSON.stringify(
        observation('p1', { focus: [{ reference: 'Patient/p9' }], code: { text: '"subject"' } }),
      ),
      JSON.stringify({ ...observation('p1'), subject: { reference: 'Group/g1' } }),
      JSON.stringify({ resourceType: 'Condition', subject: { reference: 'Patient/p1' } }),
      JSON.stringify({ resourceType: 'Patient', gender: 'male', id: 'p1' }),
    ];
    expect(routeLine(plain, MARKER)).toEqual({ type: 'Observation', patient: 'p1' });
    expect(routeLine(plain, undefined)).toBeUndefined();
    for (const line of cases) expect(routeLine(line, MARKER)).toBeUndefined();
  });

  it('a routed line that is not JSON is counted by the worker parse, not lost', () => {
    const broken = '{"resourceType":"Observation","subject":{"reference":"Patient/p1"},"code":"2345-7", oops';
    expect(routeLine(broken, MARKER)).toEqual({ type: 'Observation', patient: 'p1' });
    const parsed = parseNdjsonLines([broken], createNdjsonPrefilter([{ codeValues: ['2345-7'] }]));
    expect(parsed.malformed).toBe(1);
  });
});

describe('PartitionWriter', () => {
  const writer = (over: Partial<ConstructorParameters<typeof PartitionWriter>[0]> = {}): PartitionWriter =>
    new PartitionWriter({
      store: { s3: new S3Client({ region: 'us-east-1' }), bucket: 'b' },
      prefix: 'sweeps/s1',
      partitions: 16,
      isOwnWrite: (r) => isWrittenByFhirAnalytics(r),
      ownWriteMarker: MARKER,
      ...over,
    });

  it('stages each line once under its patient, unparsed when routable, and drops own writes', async () => {
    // Arrange
    const w = writer();
    const patients = Array.from({ length: 40 }, (_, i): Patient => ({
      resourceType: 'Patient',
      id: `p${i}`,
    }));
    const lines = [
      ...patients.map((p) => JSON.stringify(p)),
      ...patients.map((p) => JSON.stringify(observation(p.id ?? ''))),
      JSON.stringify(observation('p1', { meta: { tag: [WRITTEN_BY_TAG] } })),
      JSON.stringify(observation('p2', { note: [{ text: 'back\\slash' }] })),
      'not json',
    ];

    // Act
    for (const l of lines) await w.addLine(l);
    const staged = await w.close();

    // Assess
    const keyed = puts.flatMap((p) => p.body.trim().split('\n'));
    expect(keyed).toHaveLength(81);
    expect(w.routedUnparsed).toBe(80);
    expect(w.counts).toMatchObject({
      resources: { Patient: 40, Observation: 41 },
      ownWrites: 1,
      malformedLines: 1,
    });
    for (const k of keyed) {
      const [patient, json] = k.split('\t') as [string, string];
      expect(patientIdOf(JSON.parse(json) as Resource)).toBe(patient);
    }
    expect(staged.reduce((n, p) => n + p.lines, 0)).toBe(81);
  });

  it('keeps the buffers of all partitions under bufferBytes together, whatever the partition count', async () => {
    // Arrange: 64 partitions of 1 MiB parts, 64 KiB for all of them together.
    const w = writer({ partitions: 64, partBytes: 1024 * 1024, bufferBytes: 64 * 1024 });
    let maxBuffered = 0;
    let added = 0;

    // Act
    for (let i = 0; i < 5000; i++) {
      const patient = `p${i % 500}`;
      const line = JSON.stringify(observation(patient));
      await w.addLine(line);
      added += patient.length + 1 + line.length + 1; // the keyed line and its newline
      const written = puts.reduce((n, p) => n + p.body.length, 0);
      maxBuffered = Math.max(maxBuffered, added - written);
    }
    await w.close();

    // Assess: every line is staged once, and what waited in memory never passed ~64 KiB
    // (one line of slack), against the 64 MiB that 64 full parts would hold.
    expect(puts.reduce((n, p) => n + p.body.trim().split('\n').length, 0)).toBe(5000);
    expect(maxBuffered).toBeLessThan(64 * 1024 + 1024);
  });
});

describe('PartitionWriter uploads', () => {
  it('keeps a few part uploads in flight and fails the staging when one fails', async () => {
    // Arrange: the third PUT fails.
    let calls = 0;
    s3.on(PutObjectCommand).callsFake(() => {
      calls++;
      if (calls === 3) throw Object.assign(new Error('slow down'), { name: 'SlowDown' });
      return {};
    });
    const w = new PartitionWriter({
      store: { s3: new S3Client({ region: 'us-east-1' }), bucket: 'b' },
      prefix: 'sweeps/s2',
      partitions: 2,
      partBytes: 1024,
      isOwnWrite: (r) => isWrittenByFhirAnalytics(r),
      ownWriteMarker: MARKER,
      uploads: 2,
    });

    // Act
    const staging = (async (): Promise<void> => {
      for (let i = 0; i < 200; i++) await w.addLine(JSON.stringify(observation(`p${i % 7}`)));
      await w.close();
    })();

    // Assess
    await expect(staging).rejects.toThrow('slow down');
  });
});

describe('tally: bounded size, exact counts', () => {
  it('holds the same few numbers after 100,000 scores and 5,000 failures, and every count is exact', () => {
    // Arrange
    const hist = (): Histogram => ({
      lo: 0,
      hi: 1,
      bins: new Array<number>(20).fill(0),
      below: 0,
      above: 0,
      n: 0,
      sum: 0,
      min: null,
      max: null,
    });
    const parts = Array.from({ length: 4 }, () => {
      const t = emptyTally();
      t.histograms.m = hist();
      return t;
    });
    let size10 = 0;
    const expected = { below: 0, above: 0 };

    // Act: scores spread over [-0.1, 1.1) across four items, then merged.
    for (let i = 0; i < 100_000; i++) {
      const t = parts[i % 4] ?? emptyTally();
      const score = (i % 1200) / 1000 - 0.1;
      if (score < 0) expected.below++;
      if (score > 1) expected.above++;
      addScore(t.histograms.m ?? hist(), score);
      if (i % 20 === 0) addFailed(t, `Patient/p${i}`);
      if (i === 10) size10 = JSON.stringify(t).length;
    }
    const merged = parts.reduce((into, t) => mergeTally(into, t), emptyTally());

    // Assess
    const h = merged.histograms.m as Histogram;
    expect(h.n).toBe(100_000);
    expect(h.below + h.above + h.bins.reduce((a, b) => a + b, 0)).toBe(100_000);
    expect({ below: h.below, above: h.above }).toEqual(expected);
    expect(merged.failedPatients.length + merged.failedNotListed).toBe(5000);
    expect(merged.failedPatients).toHaveLength(1000);
    // Bounded: one item's tally is the size it was after 10 scores, apart from the failed list
    // (capped) and the digits of its counters.
    const noList = (t: typeof merged): number => JSON.stringify({ ...t, failedPatients: [] }).length;
    expect(noList(parts[0] ?? emptyTally())).toBeLessThan(size10 + 200);
  });
});
