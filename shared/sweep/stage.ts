/**
 * Gets the cohort's resources into S3, once. Bulk `$export` is staged file by file by the
 * steps in steps.ts (kick-off, poll, one export file → its lines routed to their patients'
 * partitions, plan); this module holds what they share. Servers without `$export` are searched
 * page by page instead, in resumable steps too (search-steps.ts).
 * The result (`StagedExport`) is written to S3 and named in the sweep record, so a resumed
 * sweep streams from S3 instead of exporting again.
 */
import type { OperationOutcome, Resource } from '@medplum/fhirtypes';
import type { Logger } from '../log.js';
import type { BulkClient, ExportManifest, PollStats } from './bulk-client.js';
import { lines, type StageCounts, type StagedPartition, type StagingStore } from './staging.js';

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
  /** Paged search (search-steps.ts): one Search call's time budget in ms. Default 10 minutes. */
  readonly searchBudgetMs?: number;
  /** Paged search: patients per page (and per Observation search). Default 100. */
  readonly searchPageSize?: number;
  /** Paged search: the population expected, for the partition count. Default 100,000. */
  readonly expectedPatients?: number;
}

/** The staging knobs a sweep context sets. */
export type StageKnobs = Pick<
  StageOptions,
  | 'resourcesPerPartition'
  | 'maxPartitions'
  | 'partBytes'
  | 'maxExportAttempts'
  | 'searchBudgetMs'
  | 'searchPageSize'
  | 'expectedPatients'
>;

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
