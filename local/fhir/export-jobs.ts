/**
 * The jobs behind the embedded server's Bulk Data `$export`: what a kick-off asks for, the
 * NDJSON files a job writes (split by type and by size), and the fault knobs tests turn.
 */
import { once } from 'node:events';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import * as path from 'node:path';
import type { Filter, Operator as OperatorType } from '@medplum/core';
import { Operator, matchesSearchRequest } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import type { TypeFilters } from './export-filters.js';
import type { IndexedRepository } from './indexed-repository.js';
import { kindOf } from './search-index.js';

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
  /** The next N kick-offs that carry `_typeFilter` answer 400, as a server without it does. */
  refuseTypeFilter?: number;
}

export interface ExportRequest {
  readonly level: 'system' | 'patient' | 'group';
  readonly groupId?: string;
  readonly types: readonly string[];
  readonly since?: string;
  /** `_typeFilter`: per type, alternative filter lists (a type without one is exported whole). */
  readonly typeFilters?: TypeFilters;
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

const SYSTEM_PAGE = 2000;

class NdjsonWriter {
  private stream: WriteStream | undefined;
  private file: OutputFile | undefined;
  private seq = 0;
  private failure: Error | undefined;
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
      const stream = createWriteStream(path.join(this.job.dir, name));
      // A job cancelled while it writes loses its folder: the stream's error fails the job (the
      // caller's catch), instead of going unhandled and taking the server down.
      stream.on('error', (err) => (this.failure ??= err));
      this.stream = stream;
    }
    if (this.failure) throw this.failure;
    if (counted) this.file.count++;
    this.file.bytes += Buffer.byteLength(line) + 1;
    // `once` rejects if the stream errors instead of draining, and removes its listeners either way.
    if (!this.stream.write(line + '\n')) await once(this.stream, 'drain');
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
  /** Patients per step of a patient- or group-level job's cursor. Default 500. */
  readonly patientsPerPage?: number;
  /** A `_since` job with at most this many changes reads them in one search per type. Default 250,000. */
  readonly changesAtOnce?: number;
  /** Checked between pages (the job yields to the event loop there, so the server keeps answering). */
  readonly isCancelled: () => boolean;
}

const yieldToLoop = (): Promise<void> => new Promise((r) => setImmediate(r));

/**
 * The version of `r` the export holds: `r` itself when it was last written at or before the
 * job's transactionTime, else the newest older version from its history (undefined when it did
 * not exist then). So a job is a snapshot as of its transactionTime, whatever is written while
 * it runs; what was written after is the next `_since` export's.
 */
async function asOf(repo: IndexedRepository, r: Resource, txTime: number): Promise<Resource | undefined> {
  const updated = r.meta?.lastUpdated ? Date.parse(r.meta.lastUpdated) : 0;
  if (updated <= txTime) return r;
  const history = await repo.readHistory(r.resourceType, r.id ?? '');
  for (const e of history.entry ?? []) {
    const at = e.resource?.meta?.lastUpdated;
    if (at && Date.parse(at) <= txTime) return e.resource;
  }
  return undefined;
}

/** The indexed reference parameter that finds a type's resources by patient, if any. */
function patientParam(type: string): string | undefined {
  return ['subject', 'patient'].find((code) => kindOf(type, code) === 'reference');
}

/**
 * A search of one type with the job's `_typeFilter` alternatives for it: one search per
 * alternative (each answered from the indexes like any other), each resource once, in the
 * order found.
 */
async function searchFiltered(
  repo: IndexedRepository,
  request: ExportRequest,
  type: string,
  filters: readonly Filter[],
  page?: { offset: number; count: number },
): Promise<Resource[]> {
  const search = async (extra: readonly Filter[]): Promise<Resource[]> => {
    const bundle = await repo.search({
      resourceType: type as Resource['resourceType'],
      filters: [...filters, ...extra],
      ...(page ?? {}),
    });
    return (bundle.entry ?? []).flatMap((e) => (e.resource ? [e.resource] : []));
  };
  const alternatives = request.typeFilters?.get(type);
  if (!alternatives) return search([]);
  const seen = new Set<string>();
  const out: Resource[] = [];
  for (const alt of alternatives) {
    for (const r of await search(alt)) {
      if (seen.has(r.id ?? '')) continue;
      seen.add(r.id ?? '');
      out.push(r);
    }
  }
  return out;
}

/** Whether a resource read by id passes the job's `_typeFilter` for its type. */
function passesTypeFilter(request: ExportRequest, r: Resource): boolean {
  const alternatives = request.typeFilters?.get(r.resourceType);
  return (
    !alternatives ||
    alternatives.some((alt) => matchesSearchRequest(r, { resourceType: r.resourceType, filters: [...alt] }))
  );
}

/** Writes a job's files. Members of a Group export come from `Group.member.entity`. */
export async function runJob(job: ExportJob, opts: RunJobOptions): Promise<void> {
  await mkdir(job.dir, { recursive: true });
  const { request } = job;
  const faults = opts.faults;
  let malformed = faults.malformedLines ?? 0;
  faults.malformedLines = 0;
  const txTime = Date.parse(job.transactionTime);
  const since = request.since ? Date.parse(request.since) : undefined;
  const writers = new Map<string, NdjsonWriter>();
  const writerOf = (type: string): NdjsonWriter => {
    let w = writers.get(type);
    if (!w) {
      w = new NdjsonWriter(job, type, opts.maxResourcesPerFile, opts.maxBytesPerFile, job.output);
      writers.set(type, w);
    }
    return w;
  };
  /** Writes the job's version of `r` when it belongs in the export. */
  const emit = async (r: Resource): Promise<void> => {
    const v = await asOf(opts.repo, r, txTime);
    if (!v) return;
    if (since !== undefined && !(v.meta?.lastUpdated && Date.parse(v.meta.lastUpdated) > since)) return;
    const writer = writerOf(v.resourceType);
    await writer.write(JSON.stringify(v));
    if (v.resourceType === 'Observation' && malformed > 0 && writer.written() % 3 === 1) {
      await writer.write('{"resourceType":"Observation", this is not json', false);
      malformed--;
    }
  };
  const sinceFilters = request.since
    ? [{ code: '_lastUpdated', operator: Operator.GREATER_THAN as OperatorType, value: request.since }]
    : [];

  if (request.level === 'system') await systemLevel(job, opts, emit, sinceFilters);
  else if (
    request.since &&
    (await changesCount(opts.repo, request.types, sinceFilters)) <= (opts.changesAtOnce ?? 250_000)
  ) {
    // A `_since` export with few changes: one search per type for what changed (a cheap date
    // check per resource, nothing cloned but the changes), rather than a walk over every
    // patient: an unchanged re-run costs a scan, not the population.
    const members = request.level === 'group' ? new Set(await cohortOf(job, opts.repo)) : undefined;
    for (const type of request.types) {
      if (opts.isCancelled()) return;
      if (type !== 'Patient' && !patientParam(type)) continue;
      for (const r of await searchFiltered(opts.repo, request, type, sinceFilters)) {
        const pid = patientIdOf(r);
        if (pid !== undefined && (!members || members.has(pid))) await emit(r);
      }
      job.progress = `changes: ${type}`;
      await yieldToLoop();
    }
  } else {
    const ids = await cohortOf(job, opts.repo);
    const perPage = opts.patientsPerPage ?? 500;
    const compartment = request.types.filter((t) => t !== 'Patient');
    for (let from = 0; from < ids.length; from += perPage) {
      if (opts.isCancelled()) return;
      const page = ids.slice(from, from + perPage);
      const inPage = new Set(page);
      if (request.types.includes('Patient')) {
        for (const id of page) {
          const patient = await opts.repo.readResource('Patient', id).catch(() => undefined);
          if (patient && passesTypeFilter(request, patient)) await emit(patient);
        }
      }
      const refs = page.map((id) => `Patient/${id}`).join(',');
      for (const type of compartment) {
        const code = patientParam(type);
        if (!code) continue; // not in the patient compartment as served here
        const found = await searchFiltered(opts.repo, request, type, [
          { code, operator: Operator.EQUALS, value: refs },
          ...sinceFilters,
        ]);
        for (const r of found) {
          // Each resource once: in the page of the patient it names.
          const pid = patientIdOf(r);
          if (pid !== undefined && inPage.has(pid)) await emit(r);
        }
      }
      job.progress = `${Math.min(from + perPage, ids.length)}/${ids.length} patients`;
      await yieldToLoop();
    }
  }
  if (malformed > 0) {
    const writer = writerOf('Observation');
    while (malformed-- > 0) await writer.write('not json at all', false);
  }
  for (const w of writers.values()) await w.close();
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

/** Resources of `types` changed since the filter's instant (counted, none cloned). */
async function changesCount(
  repo: IndexedRepository,
  types: readonly string[],
  filters: { code: string; operator: OperatorType; value: string }[],
): Promise<number> {
  let n = 0;
  for (const type of types) {
    const counted = await repo.search({ resourceType: type as Resource['resourceType'], filters, count: 0 });
    n += counted.total ?? 0;
  }
  return n;
}

/**
 * The job's patients, its cursor: a Group's members in member order, or every Patient's id
 * read at once (one synchronous search: a consistent snapshot; later Patients are the next
 * export's). Pages then read by id and by the posting lists of `subject`/`patient`, so a
 * page costs what it returns, whatever the population: no offset, no rescans.
 */
async function cohortOf(job: ExportJob, repo: IndexedRepository): Promise<string[]> {
  const { request } = job;
  if (request.level === 'group' && request.groupId) {
    const group = await repo.readResource<Resource & { member?: { entity?: { reference?: string } }[] }>(
      'Group',
      request.groupId,
    );
    const members = (group.member ?? [])
      .map((m) => m.entity?.reference)
      .filter((r): r is string => r?.startsWith('Patient/') === true)
      .map((r) => r.slice(8));
    return [...new Set(members)];
  }
  const all = await repo.search({ resourceType: 'Patient' });
  return (all.entry ?? []).map((e) => e.resource?.id ?? '').filter((id) => id !== '');
}

/**
 * A system-level job: every resource of each type. The repository has no cursor over a
 * type, so this one pages by offset over insertion order (new resources append; what changed
 * after the transactionTime is read as of it); the sweeps never use it.
 */
async function systemLevel(
  job: ExportJob,
  opts: RunJobOptions,
  emit: (r: Resource) => Promise<void>,
  filters: { code: string; operator: OperatorType; value: string }[],
): Promise<void> {
  for (const [t, type] of job.request.types.entries()) {
    for (let offset = 0; ; offset += SYSTEM_PAGE) {
      if (opts.isCancelled()) return;
      const bundle = await opts.repo.search({
        resourceType: type as Resource['resourceType'],
        filters,
        offset,
        count: SYSTEM_PAGE,
      });
      const page = bundle.entry ?? [];
      for (const entry of page) {
        if (entry.resource && passesTypeFilter(job.request, entry.resource)) await emit(entry.resource);
      }
      job.progress = `${type} ${t + 1}/${job.request.types.length}, ${offset + page.length} read`;
      await yieldToLoop();
      if (page.length < SYSTEM_PAGE) break;
    }
  }
}

export async function removeJobFiles(job: ExportJob): Promise<void> {
  await rm(job.dir, { recursive: true, force: true });
}
