/**
 * The jobs behind the embedded server's Bulk Data `$export`: what a kick-off asks for, the
 * NDJSON files a job writes (split by type and by size), and the fault knobs tests turn.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import * as path from 'node:path';
import type { Operator as OperatorType } from '@medplum/core';
import { Operator } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import type { IndexedRepository } from './indexed-repository.js';

/** Fault knobs, each counted down as it is used. */
export interface ExportFaults {
  /** The next N status polls answer 429 with `Retry-After: retryAfterSeconds` (default 1). */
  throttlePolls?: number;
  throttleRetryAfterSeconds?: number;
  /** The next N completed jobs list an OperationOutcome file in the manifest's `error`. */
  errorEntries?: number;
  /** The next N completed jobs have download URLs that are already expired (410). */
  expiredJobs?: number;
  /** Malformed lines written into the first Observation file of the next job. */
  malformedLines?: number;
  /** Answer kick-offs with 404, as a server without `$export` does. */
  unsupported?: boolean;
}

export interface ExportRequest {
  readonly level: 'system' | 'patient' | 'group';
  readonly groupId?: string;
  readonly types: readonly string[];
  readonly since?: string;
  readonly requestUrl: string;
}

export interface OutputFile {
  readonly type: string;
  readonly name: string;
  count: number;
  bytes: number;
}

export interface ExportJob {
  readonly id: string;
  readonly request: ExportRequest;
  readonly transactionTime: string;
  status: 'in-progress' | 'complete' | 'failed' | 'cancelled';
  progress: string;
  readonly output: OutputFile[];
  readonly error: OutputFile[];
  completedAt?: number;
  expired: boolean;
  failure?: string;
  readonly dir: string;
}

/** The patient a resource belongs to (`subject` or `patient`, or the Patient itself). */
export function patientIdOf(resource: Resource): string | undefined {
  if (resource.resourceType === 'Patient') return resource.id;
  const holder = resource as { subject?: { reference?: string }; patient?: { reference?: string } };
  const ref = holder.subject?.reference ?? holder.patient?.reference;
  return ref?.startsWith('Patient/') ? ref.slice(8).split('/')[0] : undefined;
}

/** Resource types a patient-level export reads by default (the patient compartment we serve). */
export const PATIENT_TYPES = ['Patient', 'Observation', 'ImagingStudy', 'Condition', 'DiagnosticReport'];

const PAGE = 2000;

class NdjsonWriter {
  private stream: WriteStream | undefined;
  private file: OutputFile | undefined;
  private seq = 0;
  constructor(
    private readonly job: ExportJob,
    private readonly type: string,
    private readonly maxResources: number,
    private readonly maxBytes: number,
    private readonly into: OutputFile[],
  ) {}

  async write(line: string, counted = true): Promise<void> {
    if (
      !this.stream ||
      !this.file ||
      this.file.count >= this.maxResources ||
      this.file.bytes >= this.maxBytes
    ) {
      await this.close();
      const name = `${this.type}-${String(++this.seq).padStart(4, '0')}.ndjson`;
      this.file = { type: this.type, name, count: 0, bytes: 0 };
      this.into.push(this.file);
      this.stream = createWriteStream(path.join(this.job.dir, name));
    }
    if (counted) this.file.count++;
    this.file.bytes += Buffer.byteLength(line) + 1;
    if (!this.stream.write(line + '\n')) {
      const s = this.stream;
      await new Promise<void>((resolve) => s.once('drain', resolve));
    }
  }

  /** Resources written to the current file. */
  written(): number {
    return this.file?.count ?? 0;
  }

  async close(): Promise<void> {
    const s = this.stream;
    this.stream = undefined;
    if (s)
      await new Promise<void>((resolve, reject) =>
        s.end((err?: Error | null) => {
          if (err) reject(err);
          else resolve();
        }),
      );
  }
}

export interface RunJobOptions {
  readonly repo: IndexedRepository;
  readonly maxResourcesPerFile: number;
  readonly maxBytesPerFile: number;
  readonly faults: ExportFaults;
  /** Yields to the event loop between pages, so the server keeps answering. */
  readonly isCancelled: () => boolean;
}

/** Writes a job's files. Members of a Group export come from `Group.member.entity`. */
export async function runJob(job: ExportJob, opts: RunJobOptions): Promise<void> {
  await mkdir(job.dir, { recursive: true });
  const { request } = job;
  let members: Set<string> | undefined;
  if (request.level === 'group' && request.groupId) {
    const group = await opts.repo.readResource<Resource & { member?: { entity?: { reference?: string } }[] }>(
      'Group',
      request.groupId,
    );
    members = new Set(
      (group.member ?? [])
        .map((m) => m.entity?.reference)
        .filter((r): r is string => r?.startsWith('Patient/') === true)
        .map((r) => r.slice(8)),
    );
  }
  const patientLevel = request.level !== 'system';
  const faults = opts.faults;
  const malformed = faults.malformedLines ?? 0;
  faults.malformedLines = 0;
  const txTime = Date.parse(job.transactionTime);
  for (const [t, type] of request.types.entries()) {
    const writer = new NdjsonWriter(job, type, opts.maxResourcesPerFile, opts.maxBytesPerFile, job.output);
    let injected = type === 'Observation' ? malformed : 0;
    const filters = request.since
      ? [{ code: '_lastUpdated', operator: Operator.GREATER_THAN as OperatorType, value: request.since }]
      : [];
    for (let offset = 0; ; offset += PAGE) {
      if (opts.isCancelled()) return;
      const bundle = await opts.repo.search({
        resourceType: type as Resource['resourceType'],
        filters,
        offset,
        count: PAGE,
      });
      const page = bundle.entry ?? [];
      for (const entry of page) {
        const r = entry.resource;
        if (!r) continue;
        // Written after the kick-off: the next `_since` export picks it up.
        if (r.meta?.lastUpdated && Date.parse(r.meta.lastUpdated) > txTime) continue;
        if (patientLevel) {
          const pid = patientIdOf(r);
          if (pid === undefined || (members && !members.has(pid))) continue;
        }
        await writer.write(JSON.stringify(r));
        if (injected > 0 && writer.written() % 3 === 1) {
          await writer.write('{"resourceType":"Observation", this is not json', false);
          injected--;
        }
      }
      job.progress = `${type} ${t + 1}/${request.types.length}, ${offset + page.length} read`;
      await new Promise((r) => setImmediate(r));
      if (page.length < PAGE) break;
    }
    while (injected-- > 0) await writer.write('not json at all', false);
    await writer.close();
  }
  if ((faults.errorEntries ?? 0) > 0) {
    faults.errorEntries = (faults.errorEntries ?? 0) - 1;
    const writer = new NdjsonWriter(job, 'OperationOutcome', 1, Infinity, job.error);
    await writer.write(
      JSON.stringify({
        resourceType: 'OperationOutcome',
        issue: [
          {
            severity: 'error',
            code: 'processing',
            details: { text: 'Some resources could not be exported' },
          },
        ],
      }),
    );
    await writer.close();
  }
  if ((faults.expiredJobs ?? 0) > 0) {
    faults.expiredJobs = (faults.expiredJobs ?? 0) - 1;
    job.expired = true;
  }
}

export async function removeJobFiles(job: ExportJob): Promise<void> {
  await rm(job.dir, { recursive: true, force: true });
}
