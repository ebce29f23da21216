/**
 * The sweep summary: counts, duration and the risk distribution per model, as JSON and as a
 * self-contained HTML page (inline SVG histograms, no external assets). No patient data: the
 * only references are the failed patients', listed for a retry.
 */
import type { SweepRecord } from './checkpoint.js';
import type { StagedExport } from './stage.js';
import type { Histogram, OutcomeCounts, Tally } from './tally.js';

export interface SweepSummary {
  readonly sweepId: string;
  readonly name: string;
  readonly mode: 'full' | 'incremental';
  readonly source: 'export' | 'search';
  readonly since?: string;
  readonly transactionTime: string;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly durationMs: number;
  readonly items: number;
  readonly patients: OutcomeCounts & {
    /** Patients scored in this run. */
    readonly processed: number;
    /** Incremental runs: patients of the cohort whose inputs did not change (not scored again). */
    readonly skippedUnchanged: number;
  };
  readonly perModel: Record<string, OutcomeCounts>;
  readonly failedPatients: readonly string[];
  readonly failedNotListed: number;
  readonly export: {
    readonly attempts: number;
    readonly polls: number;
    readonly throttled: number;
    readonly waitedMs: number;
    readonly resources: Record<string, number>;
    readonly malformedLines: number;
    readonly ownWritesSkipped: number;
    readonly unlinked: number;
    readonly errors: StagedExport['exportErrors'];
  };
  readonly histograms: Record<string, Histogram>;
}

export function buildSummary(args: {
  record: SweepRecord;
  staged: StagedExport;
  tally: Tally;
  finishedAt: string;
  population: number;
  items: number;
}): SweepSummary {
  const { record, staged, tally } = args;
  const incremental = staged.since !== undefined;
  return {
    sweepId: record.sweepId,
    name: record.definition.name,
    mode: incremental ? 'incremental' : 'full',
    source: staged.source,
    ...(staged.since ? { since: staged.since } : {}),
    transactionTime: staged.transactionTime,
    startedAt: record.startedAt,
    finishedAt: args.finishedAt,
    durationMs: Date.parse(args.finishedAt) - Date.parse(record.startedAt),
    items: args.items,
    patients: {
      processed: tally.patients,
      ...tally.outcomes,
      skippedUnchanged: incremental ? Math.max(0, args.population - tally.patients) : 0,
    },
    perModel: tally.perModel,
    failedPatients: tally.failedPatients,
    failedNotListed: tally.failedNotListed,
    export: {
      attempts: staged.attempts,
      polls: staged.poll.polls,
      throttled: staged.poll.throttled,
      waitedMs: staged.poll.waitedMs,
      resources: staged.counts.resources,
      malformedLines: staged.counts.malformedLines + (tally.malformedLines ?? 0),
      ownWritesSkipped: staged.counts.ownWrites,
      unlinked: staged.counts.unlinked,
      errors: staged.exportErrors,
    },
    histograms: tally.histograms,
  };
}

const escapeHtml = (s: string): string =>
  s.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
  );

const fmt = (n: number): string =>
  Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 1 ? n.toFixed(1) : n.toFixed(2);

/** One histogram as an inline SVG bar chart. */
export function histogramSvg(model: string, h: Histogram): string {
  const width = 520;
  const height = 220;
  const pad = { l: 44, r: 12, t: 24, b: 36 };
  const plotW = width - pad.l - pad.r;
  const plotH = height - pad.t - pad.b;
  const max = Math.max(1, ...h.bins);
  const barW = plotW / h.bins.length;
  const step = (h.hi - h.lo) / h.bins.length;
  const bars = h.bins
    .map((v, i) => {
      const bh = (v / max) * plotH;
      const x = pad.l + i * barW;
      const from = h.lo + i * step;
      return `<rect x="${x.toFixed(1)}" y="${(pad.t + plotH - bh).toFixed(1)}" width="${(barW - 1).toFixed(1)}" height="${bh.toFixed(1)}" fill="#3b6ea5"><title>${fmt(from)}–${fmt(from + step)}: ${v}</title></rect>`;
    })
    .join('');
  const ticks = [0, 0.25, 0.5, 0.75, 1]
    .map((f) => {
      const x = pad.l + f * plotW;
      return `<text x="${x.toFixed(1)}" y="${height - pad.b + 16}" font-size="11" text-anchor="middle">${fmt(h.lo + f * (h.hi - h.lo))}</text>`;
    })
    .join('');
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" role="img" aria-label="Score distribution of ${escapeHtml(model)}">` +
    `<text x="${pad.l}" y="16" font-size="13" font-weight="bold">${escapeHtml(model)} (n = ${h.n})</text>` +
    `<line x1="${pad.l}" y1="${pad.t + plotH}" x2="${width - pad.r}" y2="${pad.t + plotH}" stroke="#333"/>` +
    `<line x1="${pad.l}" y1="${pad.t}" x2="${pad.l}" y2="${pad.t + plotH}" stroke="#333"/>` +
    `<text x="${pad.l - 6}" y="${pad.t + 10}" font-size="11" text-anchor="end">${max}</text>` +
    `<text x="${pad.l - 6}" y="${pad.t + plotH}" font-size="11" text-anchor="end">0</text>` +
    bars +
    ticks +
    `<text x="${pad.l + plotW / 2}" y="${height - 4}" font-size="11" text-anchor="middle">score${h.below + h.above > 0 ? ` (${h.below} below, ${h.above} above the range)` : ''}</text>` +
    `</svg>`
  );
}

export function renderSummaryHtml(s: SweepSummary): string {
  const row = (k: string, v: string | number): string =>
    `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(String(v))}</td></tr>`;
  const models = Object.entries(s.perModel)
    .map(
      ([m, c]) =>
        `<tr><td>${escapeHtml(m)}</td><td>${c.written}</td><td>${c.unchanged}</td><td>${c.insufficientData}</td><td>${c.failed}</td></tr>`,
    )
    .join('');
  const charts = Object.entries(s.histograms)
    .map(([m, h]) => {
      const mean = h.n > 0 ? fmt(h.sum / h.n) : '–';
      return `<figure>${histogramSvg(m, h)}<figcaption>mean ${mean}, min ${h.min === null ? '–' : fmt(h.min)}, max ${h.max === null ? '–' : fmt(h.max)}</figcaption></figure>`;
    })
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sweep ${escapeHtml(s.sweepId)}</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}figure{display:inline-block;margin:1rem}</style>
</head><body>
<h1>Population sweep ${escapeHtml(s.sweepId)}</h1>
<p>AI-generated risk scores; not for clinical use.</p>
<table>${row('mode', s.mode)}${row('source', s.source)}${row('since', s.since ?? '–')}${row('transactionTime', s.transactionTime)}${row('duration (ms)', s.durationMs)}${row('patients processed', s.patients.processed)}${row('written', s.patients.written)}${row('unchanged', s.patients.unchanged)}${row('insufficient data', s.patients.insufficientData)}${row('failed', s.patients.failed)}${row('skipped (unchanged inputs)', s.patients.skippedUnchanged)}${row('malformed export lines', s.export.malformedLines)}${row('export error entries', s.export.errors.length)}</table>
<h2>Per model</h2>
<table><tr><th>model</th><th>written</th><th>unchanged</th><th>insufficient data</th><th>failed</th></tr>${models}</table>
<h2>Risk distribution</h2>
${charts || '<p>No scores.</p>'}
${s.failedPatients.length > 0 ? `<h2>Failed patients (retry)</h2><p>${s.failedPatients.map(escapeHtml).join(', ')}${s.failedNotListed > 0 ? ` and ${s.failedNotListed} more` : ''}</p>` : ''}
</body></html>
`;
}
