/**
 * `npm run bench [-- name ...]`: runs the benchmarks and prints one JSON document with every
 * figure beside its peer measured in the same run, and the machine. Speed is measured here,
 * never asserted in tests.
 *
 *   fhir       FHIR transactions/s, indexed repository vs Medplum's MemoryRepository
 *   inference  per-row vs batched, JSON vs binary, HTTP path vs in-process session.run, Python peers
 *   features   compiled extractor vs fhirpath.js, NDJSON vs JSON.parse ceiling
 *   bundles    Lambda bundle sizes and cold init vs an empty bundle
 *   partner    CDS Hooks patient-view latency and load vs the bare InvokeEndpoint call
 *   event      FHIR write → report latency through Subscriptions and the queue vs the bare calls
 *   sweep      population sweep patients/s vs the export-read ceiling, RSS, unchanged re-run
 */
import { machineInfo } from './machine.js';

type Bench = () => Promise<Record<string, unknown>>;

const BENCHES: Record<string, () => Promise<Bench>> = {
  fhir: async () => (await import('./fhir-transactions.js')).benchFhirTransactions,
  'fhir-index': async () => {
    const { benchFastExtract } = await import('./fast-extract.js');
    return () => Promise.resolve({ ...benchFastExtract() });
  },
  inference: async () => (await import('./inference.js')).benchInference,
  features: async () => (await import('./features.js')).benchFeatures,
  bundles: async () => (await import('./bundles.js')).benchBundles,
  partner: async () => (await import('./partner-api.js')).benchPartnerApi,
  event: async () => (await import('./event-path.js')).benchEventPath,
  sweep: async () => (await import('./sweep.js')).benchSweep,
};

async function main(names: string[]): Promise<void> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const selected = names.length ? names : Object.keys(BENCHES);
  const unknown = selected.filter((n) => !(n in BENCHES));
  if (unknown.length)
    throw new Error(`unknown benchmark(s): ${unknown.join(', ')}; known: ${Object.keys(BENCHES).join(', ')}`);
  const results: Record<string, unknown> = { machine: machineInfo(), startedAt: new Date().toISOString() };
  for (const name of selected) {
    const load = BENCHES[name];
    if (!load) continue;
    process.stderr.write(`bench: ${name}...\n`);
    const started = Date.now();
    results[name] = await (await load())();
    process.stderr.write(`bench: ${name} done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  }
  process.stdout.write(JSON.stringify(results, null, 2) + '\n');
}

main(process.argv.slice(2).filter((a) => !a.startsWith('-'))).catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
