/**
 * Staging in S3: the export's NDJSON, downloaded once, split into partitions by patient (a
 * stable hash of the patient id), so that a worker (a Distributed Map item) holds every
 * resource of its patients, and a resumed sweep streams from S3 instead of exporting again.
 *
 * A staged part is "keyed NDJSON": each line is `<patient id>\t<the resource's JSON>`. Parts
 * are cut at line boundaries once past `partBytes`, so memory holds at most one part per
 * partition.
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
  const ref = holder.subject?.reference ?? holder.patient?.reference;
  if (!ref) return undefined;
  const match = /(?:^|\/)Patient\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/.*)?$/.exec(ref);
  return match?.[1];
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
  /** A part is written once past this many bytes. Default 4 MiB. */
  readonly partBytes?: number;
  /** Drops resources this system wrote. */
  readonly isOwnWrite: (resource: Resource) => boolean;
}

/** Routes NDJSON lines to per-patient partitions and writes them to S3 in parts. */
export class PartitionWriter {
  readonly counts: StageCounts = { resources: {}, malformedLines: 0, ownWrites: 0, unlinked: 0 };
  readonly staged: StagedPartition[];
  private readonly buffers: { lines: string[]; bytes: number }[];
  private seq = 0;
  private readonly partBytes: number;

  constructor(private readonly opts: PartitionWriterOptions) {
    this.partBytes = opts.partBytes ?? 4 * 1024 * 1024;
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
    const p = partitionOf(patient, this.opts.partitions);
    const buffer = this.buffers[p] as { lines: string[]; bytes: number };
    const keyed = `${patient}\t${line.includes('\n') ? JSON.stringify(resource) : line}`;
    buffer.lines.push(keyed);
    buffer.bytes += keyed.length + 1;
    if (buffer.bytes >= this.partBytes) await this.flush(p);
  }

  private async flush(p: number): Promise<void> {
    const buffer = this.buffers[p] as { lines: string[]; bytes: number };
    const staged = this.staged[p] as StagedPartition;
    if (buffer.lines.length === 0) return;
    const key = `${this.opts.prefix}/p${String(p).padStart(4, '0')}/${String(++this.seq).padStart(6, '0')}.kndjson`;
    const body = buffer.lines.join('\n') + '\n';
    staged.lines += buffer.lines.length;
    staged.bytes += buffer.bytes;
    buffer.lines = [];
    buffer.bytes = 0;
    await putObject(this.opts.store, key, body);
    staged.keys.push(key);
  }

  /** Writes what is left in every buffer. */
  async close(): Promise<StagedPartition[]> {
    for (let p = 0; p < this.opts.partitions; p++) await this.flush(p);
    return this.staged;
  }
}
