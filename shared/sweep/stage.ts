/**
 * Gets the cohort's resources into S3, once. Bulk `$export` is staged file by file by the
 * steps in steps.ts (kick-off, poll, one export file → its lines routed to their patients'
 * partitions, plan); this module holds what they share, and the paged-search stage for servers
 * without `$export` (`Patient?_count=…`, then `Observation?subject=<page of patients>&code=…`).
 * The result (`StagedExport`) is written to S3 and named in the sweep record, so a resumed
 * sweep streams from S3 instead of exporting again.
 */
import type { Observation, OperationOutcome, Patient, Resource } from '@medplum/fhirtypes';
import type { FhirGateway } from '../fhir/gateway.js';
import type { Logger } from '../log.js';
import type { BulkClient, ExportManifest, PollStats } from './bulk-client.js';
import type { Cohort } from './definition.js';
import { ExportFailedError } from './errors.js';
import {
  lines,
  PartitionWriter,
  type StageCounts,
  type StagedPartition,
  type StagingStore,
} from './staging.js';

export interface ExportErrorReport {
  readonly type: string;
  /** Issues in the error file, by issue code (no text: it may name patients). */
  readonly codes: Record<string, number>;
  readonly count: number;
}

/**
 * A partition as staged.json names it: its lines and bytes, and where its part keys are listed
 * (`keysKey`: a JSON array in S3, one per partition), so that neither staged.json nor an item
 * grows with the number of export files.
 */
export interface PartitionSummary {
  readonly partition: number;
  readonly lines: number;
  readonly bytes: number;
  readonly keysKey: string;
}

export interface StagedExport {
  readonly source: 'export' | 'search';
  readonly transactionTime: string;
  readonly since?: string;
  readonly partitions: PartitionSummary[];
  readonly counts: StageCounts;
  readonly exportErrors: ExportErrorReport[];
  readonly poll: PollStats;
  /** Kick-offs made (a re-kick after expired URLs makes it 2). */
  readonly attempts: number;
}

/** What staging produced before the key lists are written (`recordStaged`): each partition's keys. */
export type StagedParts = Omit<StagedExport, 'partitions'> & { readonly partitions: StagedPartition[] };

export interface StageOptions {
  readonly store: StagingStore;
  /** S3 prefix of this sweep's parts, e.g. `sweeps/<sweepId>`. */
  readonly prefix: string;
  readonly isOwnWrite: (r: Resource) => boolean;
  /** See `PartitionWriterOptions.ownWriteMarker`. */
  readonly ownWriteMarker?: string;
  readonly logger: Logger;
  /** Resources per partition aimed at (the manifest's counts decide how many partitions). Default 250,000. */
  readonly resourcesPerPartition?: number;
  readonly maxPartitions?: number;
  readonly partBytes?: number;
  /** Kick-offs allowed when download URLs expire. Default 2. */
  readonly maxExportAttempts?: number;
  readonly onProgress?: (event: { phase: 'export' | 'stage'; done: number; total: number }) => void;
}

/** Partitions for `total` resources (the manifest's counts, or the expected population). */
export function partitionsFor(
  total: number,
  opts: Pick<StageOptions, 'resourcesPerPartition' | 'maxPartitions'>,
): number {
  return Math.max(
    1,
    Math.min(opts.maxPartitions ?? 64, Math.ceil(total / (opts.resourcesPerPartition ?? 250_000))),
  );
}

/** The manifest's error files, by issue code (never their text). */
export async function readErrors(bulk: BulkClient, manifest: ExportManifest): Promise<ExportErrorReport[]> {
  const reports: ExportErrorReport[] = [];
  for (const entry of manifest.error) {
    const codes: Record<string, number> = {};
    let count = 0;
    for await (const line of lines(await bulk.download(entry.url, manifest.requiresAccessToken))) {
      try {
        const oo = JSON.parse(line) as OperationOutcome;
        for (const issue of oo.issue) codes[issue.code] = (codes[issue.code] ?? 0) + 1;
        count++;
      } catch {
        codes['malformed'] = (codes['malformed'] ?? 0) + 1;
      }
    }
    reports.push({ type: entry.type, codes, count });
  }
  return reports;
}

export interface SearchStageOptions extends StageOptions {
  readonly fhir: FhirGateway;
  readonly cohort: Cohort;
  readonly since?: string;
  /** `system|code` of the Observations the models read. */
  readonly codes: readonly string[];
  /** Patients per page (and per Observation search). Default 100. */
  readonly pageSize?: number;
  /** Expected population, for the partition count. Default 100,000. */
  readonly expected?: number;
}

/** Paged search instead of `$export`; the same staged shape. */
export async function stageSearch(opts: SearchStageOptions): Promise<StagedParts> {
  const transactionTime = new Date().toISOString();
  const pageSize = opts.pageSize ?? 100;
  const writer = new PartitionWriter({
    store: opts.store,
    prefix: `${opts.prefix}/search`,
    partitions: partitionsFor((opts.expected ?? 100_000) * (1 + opts.codes.length), opts),
    isOwnWrite: opts.isOwnWrite,
    ...(opts.partBytes ? { partBytes: opts.partBytes } : {}),
  });
  const since: Record<string, string> = opts.since ? { _lastUpdated: `gt${opts.since}` } : {};
  const changed = (r: Resource): boolean =>
    opts.since === undefined || (r.meta?.lastUpdated !== undefined && r.meta.lastUpdated > opts.since);
  const observationsOf = async (ids: readonly string[]): Promise<void> => {
    if (ids.length === 0 || opts.codes.length === 0) return;
    const found = await opts.fhir.searchAll<Observation>(
      'Observation',
      {
        subject: ids.map((id) => `Patient/${id}`).join(','),
        code: opts.codes.join(','),
        _count: '1000',
        ...since,
      },
      { maxResources: 10_000_000 },
    );
    for (const o of found) await writer.addResource(o);
  };

  let done = 0;
  if (opts.cohort.kind === 'group') {
    const group = await opts.fhir.read<Resource & { member?: { entity?: { reference?: string } }[] }>(
      'Group',
      opts.cohort.group,
    );
    if (!group) throw new ExportFailedError(`Group/${opts.cohort.group} not found`, 404);
    const ids = (group.member ?? [])
      .map((m) => m.entity?.reference)
      .filter((r): r is string => r?.startsWith('Patient/') === true)
      .map((r) => r.slice(8));
    for (let i = 0; i < ids.length; i += pageSize) {
      const page = ids.slice(i, i + pageSize);
      const patients = await opts.fhir.searchAll<Patient>('Patient', {
        _id: page.join(','),
        _count: String(pageSize),
      });
      for (const p of patients) if (changed(p)) await writer.addResource(p);
      await observationsOf(patients.map((p) => p.id ?? ''));
      done += page.length;
      opts.onProgress?.({ phase: 'stage', done, total: ids.length });
    }
  } else {
    const query =
      opts.cohort.kind === 'search'
        ? Object.fromEntries(new URLSearchParams(opts.cohort.query.replace(/^Patient\?/, '')))
        : {};
    const patients = await opts.fhir.searchAll<Patient>(
      'Patient',
      { ...query, _count: String(pageSize), ...(opts.cohort.kind === 'all' ? since : {}) },
      { maxResources: 10_000_000 },
    );
    for (let i = 0; i < patients.length; i += pageSize) {
      const page = patients.slice(i, i + pageSize);
      for (const p of page) if (changed(p)) await writer.addResource(p);
      // All patients, incremental: changed Observations are searched below, whoever's they are.
      if (!(opts.since && opts.cohort.kind === 'all')) await observationsOf(page.map((p) => p.id ?? ''));
      done += page.length;
      opts.onProgress?.({ phase: 'stage', done, total: patients.length });
    }
  }
  if (opts.since && opts.cohort.kind === 'all' && opts.codes.length > 0) {
    // Incremental: Observations changed since, whoever's they are (their patients are rescored).
    const recent = await opts.fhir.searchAll<Observation>(
      'Observation',
      { code: opts.codes.join(','), _count: '1000', ...since },
      { maxResources: 10_000_000 },
    );
    for (const o of recent) await writer.addResource(o);
  }
  return {
    source: 'search',
    transactionTime,
    ...(opts.since ? { since: opts.since } : {}),
    partitions: await writer.close(),
    counts: writer.counts,
    exportErrors: [],
    poll: { polls: 0, throttled: 0, serverErrors: 0, waitedMs: 0 },
    attempts: 0,
  };
}
