/**
 * Bulk Data `$export` (FHIR Bulk Data Access 2.0) for the embedded FHIR server, as raw HTTP
 * middleware in front of the router:
 *
 * - kick-off `GET [base]/$export`, `[base]/Patient/$export`, `[base]/Group/[id]/$export` with
 *   `_type`, `_since`, `_typeFilter` (see export-filters.ts), `_outputFormat`; `Accept: application/fhir+json` and
 *   `Prefer: respond-async` are required (400 otherwise) → 202 + `Content-Location`;
 * - status `GET [base]/$export-status/[job]`: 202 with `X-Progress` and `Retry-After` while the
 *   job runs, then 200 with the manifest; `DELETE` cancels (202) and removes the files;
 * - files `GET [base]/$export-files/[job]/[name]`: NDJSON streamed from disk, one resource a
 *   line, split into files by type and by size (`chunkSize` resources, `maxFileBytes`).
 *
 * Group membership is `Group.member.entity`; `_since` keeps resources whose
 * `meta.lastUpdated` is after it. A job is a snapshot as of the kick-off's `transactionTime`:
 * a resource changed while the job runs is exported as it was then (from its history), one
 * created after it is left for the next export. Patient- and group-level jobs walk a cursor
 * over the cohort's patient ids and read each page through the `subject`/`patient` indexes
 * (see `runJob`), so an export costs what it returns rather than a rescan per page. Fault knobs (`setFaults`): 429 while polling, an `error`
 * entry, expired download URLs (410), malformed NDJSON lines, no `$export` at all (404).
 */
import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { OperationOutcome } from '@medplum/fhirtypes';
import { parseTypeFilters } from './export-filters.js';
import { isKnownResourceType } from './validate.js';
import type { RunningFhirServer } from './server.js';
import {
  PATIENT_TYPES,
  removeJobFiles,
  runJob,
  type ExportFaults,
  type ExportJob,
  type ExportRequest,
} from './export-jobs.js';

export type { ExportFaults } from './export-jobs.js';

export interface BulkExportOptions {
  /** Where job folders go. Default a folder under the OS temp dir. */
  exportDir?: string;
  /** Most resources per NDJSON file. Default 10,000. */
  chunkSize?: number;
  /** Most bytes per NDJSON file (a file is closed once past it). Default 64 MiB. */
  maxFileBytes?: number;
  /** `Retry-After` while a job runs, in seconds. Default 1. */
  retryAfterSeconds?: number;
  /** Download URLs answer 410 this long after the job completed. Default: never. */
  fileTtlMs?: number;
  /** Patients per step of a patient- or group-level job (its cursor over the cohort). Default 500. */
  patientsPerPage?: number;
  /** `_since` jobs with at most this many changed resources read them in one search per type. Default 250,000 (the unchanged re-run after a 100,000-patient sweep holds its 85,500 score Observations). */
  changesAtOnce?: number;
  /** Hold each job back this long before it starts (to test polling). Default 0. */
  startDelayMs?: number;
}

export interface BulkExport {
  /** Sets fault knobs (merged into the current ones). */
  setFaults(faults: ExportFaults): void;
  /** Jobs kicked off so far (cancelled ones included). */
  readonly kickOffs: () => number;
  close(): Promise<void>;
}

const OUTPUT_FORMATS = new Set(['application/fhir+ndjson', 'application/ndjson', 'ndjson']);
const FHIR_JSON = 'application/fhir+json; charset=utf-8';

function outcome(status: number, res: ServerResponse, text: string, code = 'invalid'): true {
  const body: OperationOutcome = {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code: code as 'invalid', details: { text } }],
  };
  res.writeHead(status, { 'Content-Type': FHIR_JSON });
  res.end(JSON.stringify(body));
  return true;
}

function json(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): true {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
  return true;
}

const KICK_OFF = /^(?:(Patient)|Group\/([A-Za-z0-9\-.]{1,64}))?\/?\$export$/;

export function installBulkExport(server: RunningFhirServer, opts: BulkExportOptions = {}): BulkExport {
  const root =
    opts.exportDir ?? path.join(tmpdir(), `fhir-export-${process.pid}-${randomUUID().slice(0, 8)}`);
  const jobs = new Map<string, ExportJob>();
  const faults: ExportFaults = {};
  let kickOffs = 0;
  let closed = false;

  const kickOff = (req: IncomingMessage, res: ServerResponse, url: URL, match: RegExpExecArray): true => {
    if (faults.unsupported) return outcome(404, res, 'Unknown operation $export', 'not-supported');
    const accept = req.headers.accept ?? '';
    if (!accept.split(',').some((a) => a.trim().startsWith('application/fhir+json'))) {
      return outcome(400, res, 'Accept: application/fhir+json is required');
    }
    if (!/respond-async/.test(String(req.headers.prefer ?? ''))) {
      return outcome(400, res, 'Prefer: respond-async is required');
    }
    const format = url.searchParams.get('_outputFormat');
    if (format !== null && !OUTPUT_FORMATS.has(format)) return outcome(400, res, 'Unsupported _outputFormat');
    const since = url.searchParams.get('_since') ?? undefined;
    if (since !== undefined && !Number.isFinite(Date.parse(since)))
      return outcome(400, res, 'Invalid _since');
    const level: ExportRequest['level'] = match[2] ? 'group' : match[1] ? 'patient' : 'system';
    const typeParam = url.searchParams.get('_type');
    const types = typeParam
      ? typeParam
          .split(',')
          .map((t) => t.trim())
          .filter(Boolean)
      : PATIENT_TYPES;
    const unknown = types.find((t) => !isKnownResourceType(t));
    if (unknown) return outcome(400, res, `Unknown resource type in _type: ${unknown}`);
    if (url.searchParams.has('_typeFilter') && (faults.refuseTypeFilter ?? 0) > 0) {
      faults.refuseTypeFilter = (faults.refuseTypeFilter ?? 0) - 1;
      return outcome(400, res, '_typeFilter is not supported', 'not-supported');
    }
    const typeFilter = parseTypeFilters(url.searchParams.getAll('_typeFilter'), types);
    if ('error' in typeFilter) return outcome(400, res, typeFilter.error);
    const id = randomUUID();
    const job: ExportJob = {
      id,
      request: {
        level,
        ...(match[2] ? { groupId: match[2] } : {}),
        types,
        ...(since ? { since } : {}),
        ...(typeFilter.filters.size > 0 ? { typeFilters: typeFilter.filters } : {}),
        requestUrl: url.href,
      },
      transactionTime: new Date().toISOString(),
      status: 'in-progress',
      progress: 'queued',
      output: [],
      error: [],
      expired: false,
      dir: path.join(root, id),
    };
    jobs.set(id, job);
    kickOffs++;
    const run = async (): Promise<void> => {
      if (opts.startDelayMs) await new Promise((r) => setTimeout(r, opts.startDelayMs));
      if (match[2]) await server.repo.readResource('Group', match[2]);
      await runJob(job, {
        repo: server.repo,
        maxResourcesPerFile: opts.chunkSize ?? 10_000,
        maxBytesPerFile: opts.maxFileBytes ?? 64 * 1024 * 1024,
        ...(opts.patientsPerPage ? { patientsPerPage: opts.patientsPerPage } : {}),
        ...(opts.changesAtOnce !== undefined ? { changesAtOnce: opts.changesAtOnce } : {}),
        faults,
        isCancelled: () => closed || job.status === 'cancelled',
      });
      if (job.status === 'in-progress') {
        job.status = 'complete';
        job.completedAt = Date.now();
      }
    };
    run().catch((err: unknown) => {
      if (job.status === 'cancelled') return; // its files went with the DELETE
      job.status = 'failed';
      job.failure = (err as Error).message.slice(0, 200);
    });
    res.writeHead(202, { 'Content-Location': `${server.baseUrl}/$export-status/${id}` });
    res.end();
    return true;
  };

  const status = async (req: IncomingMessage, res: ServerResponse, id: string): Promise<true> => {
    const job = jobs.get(id);
    if (!job) return outcome(404, res, 'No such export job', 'not-found');
    if (req.method === 'DELETE') {
      job.status = 'cancelled';
      jobs.delete(id);
      await removeJobFiles(job);
      return outcome(202, res, 'Export cancelled', 'informational');
    }
    if ((faults.throttlePolls ?? 0) > 0) {
      faults.throttlePolls = (faults.throttlePolls ?? 0) - 1;
      res.writeHead(429, {
        'Retry-After': String(faults.throttleRetryAfterSeconds ?? 1),
        'Content-Type': FHIR_JSON,
      });
      res.end(
        JSON.stringify({
          resourceType: 'OperationOutcome',
          issue: [{ severity: 'error', code: 'throttled' }],
        }),
      );
      return true;
    }
    switch (job.status) {
      case 'in-progress':
      case 'cancelled':
        res.writeHead(202, {
          'X-Progress': job.progress,
          'Retry-After': String(opts.retryAfterSeconds ?? 1),
        });
        res.end();
        return true;
      case 'failed':
        return outcome(500, res, `Export failed: ${job.failure ?? 'unknown'}`, 'exception');
      case 'complete': {
        const fileUrl = (name: string): string => `${server.baseUrl}/$export-files/${id}/${name}`;
        return json(
          res,
          200,
          {
            transactionTime: job.transactionTime,
            request: job.request.requestUrl,
            requiresAccessToken: false,
            output: job.output.map((f) => ({ type: f.type, url: fileUrl(f.name), count: f.count })),
            error: job.error.map((f) => ({ type: f.type, url: fileUrl(f.name), count: f.count })),
          },
          { Expires: new Date(Date.now() + (opts.fileTtlMs ?? 86_400_000)).toUTCString() },
        );
      }
    }
  };

  const download = async (res: ServerResponse, id: string, name: string): Promise<true> => {
    const job = jobs.get(id);
    const file = job && [...job.output, ...job.error].find((f) => f.name === name);
    if (!job || !file) return outcome(404, res, 'No such export file', 'not-found');
    const ttl = opts.fileTtlMs;
    if (
      job.expired ||
      (ttl !== undefined && job.completedAt !== undefined && Date.now() - job.completedAt > ttl)
    ) {
      return outcome(410, res, 'Export file expired', 'expired');
    }
    res.writeHead(200, { 'Content-Type': 'application/fhir+ndjson' });
    await pipeline(createReadStream(path.join(job.dir, file.name)), res);
    return true;
  };

  server.use(async (req, res, ctx) => {
    if (closed) return false;
    const p = decodeURIComponent(ctx.path);
    if (!p.includes('$export')) return false;
    const statusMatch = /^\$export-status\/([0-9a-f-]{36})$/.exec(p);
    if (statusMatch?.[1]) {
      if (req.method !== 'GET' && req.method !== 'DELETE') return outcome(405, res, 'GET or DELETE only');
      return status(req, res, statusMatch[1]);
    }
    const fileMatch = /^\$export-files\/([0-9a-f-]{36})\/([A-Za-z]+-\d{4}\.ndjson)$/.exec(p);
    if (fileMatch?.[1] && fileMatch[2]) {
      if (req.method !== 'GET') return outcome(405, res, 'GET only');
      return download(res, fileMatch[1], fileMatch[2]);
    }
    const kick = KICK_OFF.exec(p);
    if (kick) {
      if (req.method !== 'GET')
        return outcome(405, res, 'Kick-off is GET (POST with Parameters is not served)');
      if (kick[2]) {
        const exists = await server.repo.readResource('Group', kick[2]).then(
          () => true,
          () => false,
        );
        if (!exists) return outcome(404, res, `Group/${kick[2]} not found`, 'not-found');
      }
      return kickOff(req, res, ctx.url, kick);
    }
    return false;
  });

  return {
    setFaults: (f) => {
      Object.assign(faults, f);
    },
    kickOffs: () => kickOffs,
    close: async () => {
      closed = true;
      for (const job of jobs.values()) await removeJobFiles(job);
      jobs.clear();
    },
  };
}
