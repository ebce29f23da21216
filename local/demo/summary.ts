/** The demo's summary: counts per model from the functions' logs, latencies, what is on the server. */

export interface ModelTally {
  written: number;
  unchanged: number;
  insufficient: number;
}

export interface Tally {
  processed: number;
  ignored: number;
  failed: number;
  perModel: Map<string, ModelTally>;
  /** Handler time per event, ms. */
  latencies: number[];
  /** From the new result's write to its event being processed, ms. */
  endToEnd: number[];
}

export interface DemoSummary {
  patients: number;
  /** Events processed by resource-event. */
  events: number;
  written: number;
  unchanged: number;
  insufficientData: number;
  ignored: number;
  failedRecords: number;
  deadLettered: number;
  reportsOnServer: number;
  perModel: Record<string, ModelTally>;
  /** Per event, from the handler receiving it to its reports being written. */
  latencyMs: { p50: number; p95: number };
  /** Per event, from the FHIR write to the event being processed (notification, queue and handler). */
  endToEndMs: { p50: number; p95: number };
  durationMs: number;
  fhirBaseUrl: string;
  viaSubscriptions: boolean;
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;
}

export function summarise(args: {
  tally: Tally;
  patients: number;
  deadLettered: number;
  reportsOnServer: number;
  durationMs: number;
  fhirBaseUrl: string;
  viaSubscriptions: boolean;
}): DemoSummary {
  const { tally } = args;
  const perModel = Object.fromEntries([...tally.perModel.entries()].sort(([a], [b]) => a.localeCompare(b)));
  const sum = (k: keyof ModelTally): number => Object.values(perModel).reduce((n, m) => n + m[k], 0);
  return {
    patients: args.patients,
    events: tally.processed,
    written: sum('written'),
    unchanged: sum('unchanged'),
    insufficientData: sum('insufficient'),
    ignored: tally.ignored,
    failedRecords: tally.failed,
    deadLettered: args.deadLettered,
    reportsOnServer: args.reportsOnServer,
    perModel,
    latencyMs: { p50: percentile(tally.latencies, 0.5), p95: percentile(tally.latencies, 0.95) },
    endToEndMs: { p50: percentile(tally.endToEnd, 0.5), p95: percentile(tally.endToEnd, 0.95) },
    durationMs: args.durationMs,
    fhirBaseUrl: args.fhirBaseUrl,
    viaSubscriptions: args.viaSubscriptions,
  };
}

export function printSummary(say: (line: string) => void, s: DemoSummary, demoSystem: string): void {
  say('');
  say('summary');
  say(`  patients loaded          ${s.patients}`);
  say(
    `  events processed         ${s.events}${s.viaSubscriptions ? ' (delivered by FHIR Subscriptions)' : ''}`,
  );
  say(`  reports written          ${s.written}`);
  say(`  reports already present  ${s.unchanged}`);
  say(`  insufficient data        ${s.insufficientData}`);
  say(`  events ignored           ${s.ignored}`);
  say(`  failed deliveries        ${s.failedRecords}  (dead-lettered: ${s.deadLettered})`);
  say(`  DiagnosticReports stored ${s.reportsOnServer}`);
  say('  per model                written  unchanged  insufficient');
  for (const [model, m] of Object.entries(s.perModel)) {
    say(
      `    ${model.padEnd(22)} ${String(m.written).padStart(7)}  ${String(m.unchanged).padStart(9)}  ${String(m.insufficient).padStart(12)}`,
    );
  }
  say(`  per-event latency        p50 ${s.latencyMs.p50} ms, p95 ${s.latencyMs.p95} ms (handler)`);
  say(
    `  write to report          p50 ${s.endToEndMs.p50} ms, p95 ${s.endToEndMs.p95} ms (all results written at once)`,
  );
  say(`  duration                 ${(s.durationMs / 1000).toFixed(1)} s`);
  say('');
  say(`Look at the reports:  curl -s '${s.fhirBaseUrl}/DiagnosticReport?_count=5' | head -c 2000`);
  say(`Demo patients carry the identifier system ${demoSystem}.`);
}
