/**
 * Staging in S3: the export's NDJSON, downloaded once, split into partitions by patient (a
 * stable hash of the patient id), so that a worker (a Distributed Map item) holds every
 * resource of its patients, and a resumed sweep streams from S3 instead of exporting again.
 *
 * A staged part is "keyed NDJSON": each line is `<patient id>\t<the resource's JSON>`. Parts
 * are cut at line boundaries once past `partBytes`, and the buffers of all partitions
 * together stay under `bufferBytes` (the fullest is written first), so staging memory does not
 * grow with the partition count, hence with the population.
 *
 * Lines are routed from their text where that is certain (`routeLine`), without a
 * `JSON.parse`: the worker parses each line once, later. Anything else is parsed here.
 */
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Resource } from '@medplum/fhirtypes';

export interface StagingStore {
  readonly s3: S3Client;
  readonly bucket: string;
}

export interface StagedPartition {
  readonly partition: number;
  readonly keys: string[];
  lines: number;
  bytes: number;
}

export interface StageCounts {
  /** Resources staged, by type. */
  readonly resources: Record<string, number>;
  /** Lines that were not a JSON resource. */
  malformedLines: number;
  /** Resources this system wrote (reports, scores): never inputs. */
  ownWrites: number;
  /** Resources that name no patient. */
  unlinked: number;
}

/** FNV-1a over the id: the same partition for a patient in every run and every file. */
export function partitionOf(patientId: string, partitions: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < patientId.length; i++) {
    h ^= patientId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % partitions;
}

/** The patient id of a resource: the Patient's own, or `subject`/`patient` → `Patient/<id>`. */
export function patientIdOf(resource: Resource): string | undefined {
  if (resource.resourceType === 'Patient') return resource.id;
  const holder = resource as { subject?: { reference?: string }; patient?: { reference?: string } };
  return patientOfReference(holder.subject?.reference ?? holder.patient?.reference);
}

const PATIENT_REF = /(?:^|\/)Patient\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/.*)?$/;

/** The patient id of a resource: the Patient's own, or `subject`/`patient` → `Patient/<id>`. */
function patientOfReference(ref: string | undefined): string | undefined {
  return ref ? PATIENT_REF.exec(ref)?.[1] : undefined;
}

const PATIENT_PREFIX = /^\{"resourceType":"Patient","id":"([A-Za-z0-9\-.]{1,64})"[,}]/;
const OBSERVATION_PREFIX = '{"resourceType":"Observation"';
const SUBJECT = /"subject":\{"reference":"([^"]*)"[,}]/g;

const occurrences = (line: string, text: string, from = 0): number => {
  let n = 0;
  for (let i = line.indexOf(text, from); i >= 0; i = line.indexOf(text, i + text.length)) n++;
  return n;
};

/**
 * Type and patient of an NDJSON line from its text alone, when that is certain; undefined
 * means "parse it". Certain only for a Patient whose `id` is the key right after its
 * `resourceType` (so at the top level), or an Observation with exactly one `"subject"` key,
 * shaped `{"reference":"…Patient/<id>"`; in both cases a line with no backslash (every string is
 * its own text), one `"resourceType"` (nothing contained) and without `ownWriteMarker` (the
 * text every resource this system wrote carries). It does not prove the rest of the line is
 * JSON: the worker's parse counts what is not.
 */
export function routeLine(
  line: string,
  ownWriteMarker: string | undefined,
): { type: 'Patient' | 'Observation'; patient: string } | undefined {
  if (ownWriteMarker === undefined || line.includes('\\') || line.includes(ownWriteMarker)) return undefined;
  if (occurrences(line, '"resourceType"') !== 1) return undefined;
  const patient = PATIENT_PREFIX.exec(line);
  if (patient?.[1]) return { type: 'Patient', patient: patient[1] };
  if (!line.startsWith(OBSERVATION_PREFIX) || occurrences(line, '"subject"') !== 1) return undefined;
  SUBJECT.lastIndex = 0;
  const id = patientOfReference(SUBJECT.exec(line)?.[1]);
  return id === undefined ? undefined : { type: 'Observation', patient: id };
}

export async function putObject(store: StagingStore, key: string, body: string | Buffer): Promise<void> {
  await store.s3.send(new PutObjectCommand({ Bucket: store.bucket, Key: key, Body: body }));
}

export async function getObjectStream(store: StagingStore, key: string): Promise<Readable> {
  const out = await store.s3.send(new GetObjectCommand({ Bucket: store.bucket, Key: key }));
  if (!out.Body) throw new Error(`staged object ${key} has no body`);
  return out.Body as Readable;
}

export async function getJson<T>(store: StagingStore, key: string): Promise<T | undefined> {
  try {
    const out = await store.s3.send(new GetObjectCommand({ Bucket: store.bucket, Key: key }));
    const text = await out.Body?.transformToString();
    return text === undefined ? undefined : (JSON.parse(text) as T);
  } catch (err) {
    if ((err as { name?: string }).name === 'NoSuchKey') return undefined;
    throw err;
  }
}

/** Lines of a byte stream, without the line ends; empty lines dropped. */
export async function* lines(stream: Readable): AsyncGenerator<string> {
  const rl = createInterface({ input: stream, crlfDelay: Infinity });
  try {
    for await (const line of rl) if (line.trim() !== '') yield line;
  } finally {
    rl.close();
    stream.destroy();
  }
}

export interface PartitionWriterOptions {
  readonly store: StagingStore;
  /** Object keys are `<prefix>/p<nnnn>/<seq>.kndjson`. */
  readonly prefix: string;
  readonly partitions: number;
  /** A part is written once past this many bytes. Default 1 MiB. */
  readonly partBytes?: number;
  /** All partitions' buffers together: past it, the fullest is written. Default 4 MiB. */
  readonly bufferBytes?: number;
  /** Part uploads in flight at once. Default 4. */
  readonly uploads?: number;
  /** Drops resources this system wrote. */
  readonly isOwnWrite: (resource: Resource) => boolean;
  /**
   * Text that the JSON of every resource `isOwnWrite` accepts contains (e.g. its tag code, in
   * quotes): lines without it are routed unparsed (`routeLine`). Absent: every line is parsed.
   */
  readonly ownWriteMarker?: string;
}

/** Routes NDJSON lines to per-patient partitions and writes them to S3 in parts. */
export class PartitionWriter {
  readonly counts: StageCounts = { resources: {}, malformedLines: 0, ownWrites: 0, unlinked: 0 };
  readonly staged: StagedPartition[];
  private readonly buffers: { lines: string[]; bytes: number }[];
  private seq = 0;
  private buffered = 0;
  private readonly partBytes: number;
  private readonly bufferBytes: number;
  /** Lines routed from their text, unparsed. */
  routedUnparsed = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private uploadError: unknown;

  constructor(private readonly opts: PartitionWriterOptions) {
    this.partBytes = opts.partBytes ?? 1024 * 1024;
    this.bufferBytes = opts.bufferBytes ?? 4 * 1024 * 1024;
    this.staged = Array.from({ length: opts.partitions }, (_, partition) => ({
      partition,
      keys: [],
      lines: 0,
      bytes: 0,
    }));
    this.buffers = Array.from({ length: opts.partitions }, () => ({ lines: [], bytes: 0 }));
  }

  /** One NDJSON line from an export file (or a resource from a search). */
  async addLine(line: string): Promise<void> {
    const routed = routeLine(line, this.opts.ownWriteMarker);
    if (routed) {
      this.routedUnparsed++;
      this.counts.resources[routed.type] = (this.counts.resources[routed.type] ?? 0) + 1;
      await this.append(routed.patient, line);
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      this.counts.malformedLines++;
      return;
    }
    if (
      typeof parsed !== 'object' ||
      parsed === null ||
      typeof (parsed as Resource).resourceType !== 'string'
    ) {
      this.counts.malformedLines++;
      return;
    }
    await this.addResource(parsed as Resource, line);
  }

  async addResource(resource: Resource, line = JSON.stringify(resource)): Promise<void> {
    if (this.opts.isOwnWrite(resource)) {
      this.counts.ownWrites++;
      return;
    }
    const patient = patientIdOf(resource);
    if (patient === undefined) {
      this.counts.unlinked++;
      return;
    }
    this.counts.resources[resource.resourceType] = (this.counts.resources[resource.resourceType] ?? 0) + 1;
    await this.append(patient, line.includes('\n') ? JSON.stringify(resource) : line);
  }

  private async append(patient: string, line: string): Promise<void> {
    const p = partitionOf(patient, this.opts.partitions);
    const buffer = this.buffers[p] as { lines: string[]; bytes: number };
    const keyed = `${patient}\t${line}`;
    buffer.lines.push(keyed);
    buffer.bytes += keyed.length + 1;
    this.buffered += keyed.length + 1;
    if (buffer.bytes >= this.partBytes) await this.flush(p);
    else if (this.buffered >= this.bufferBytes) {
      let fullest = 0;
      this.buffers.forEach((b, i) => {
        if (b.bytes > (this.buffers[fullest]?.bytes ?? 0)) fullest = i;
      });
      await this.flush(fullest);
    }
  }

  private async flush(p: number): Promise<void> {
    const buffer = this.buffers[p] as { lines: string[]; bytes: number };
    const staged = this.staged[p] as StagedPartition;
    if (buffer.lines.length === 0) return;
    const key = `${this.opts.prefix}/p${String(p).padStart(4, '0')}/${String(++this.seq).padStart(6, '0')}.kndjson`;
    const body = buffer.lines.join('\n') + '\n';
    staged.lines += buffer.lines.length;
    staged.bytes += buffer.bytes;
    this.buffered -= buffer.bytes;
    buffer.lines = [];
    buffer.bytes = 0;
    // A few PUTs in flight: the download goes on while a part uploads (one at a time, each PUT's
    // round trip stalled it). Memory: at most `uploads` bodies besides the buffers.
    const put: Promise<void> = putObject(this.opts.store, key, body)
      .then(
        () => {
          staged.keys.push(key);
        },
        (err: unknown) => {
          this.uploadError ??= err;
        },
      )
      .finally(() => this.inFlight.delete(put));
    this.inFlight.add(put);
    if (this.inFlight.size >= (this.opts.uploads ?? 4)) await Promise.race(this.inFlight);
    this.throwIfFailed();
  }

  private throwIfFailed(): void {
    if (this.uploadError !== undefined) throw this.uploadError as Error;
  }

  /** Writes what is left in every buffer, and waits for every upload. */
  async close(): Promise<StagedPartition[]> {
    for (let p = 0; p < this.opts.partitions; p++) await this.flush(p);
    await Promise.all(this.inFlight);
    this.throwIfFailed();
    return this.staged;
  }
}
