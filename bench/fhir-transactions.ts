/**
 * Write-back transactions per second against the embedded FHIR server's repository, in-process
 * (router + repository, no HTTP). Each transaction is what the pipeline writes: a conditional
 * create of a DiagnosticReport (`ifNoneExist: identifier=…`), a conditional create of an
 * Observation, and a Provenance, linked by `urn:uuid` references.
 *
 * Figures: the indexed repository at each store size, and beside it Medplum's stock
 * `MemoryRepository` at small sizes (it scans with FHIRPath, too slow for more), with the ratio.
 *
 * Run alone: `npx tsx bench/fhir-transactions.ts` prints the JSON.
 */
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import type { FhirRepository, FhirRequest } from '@medplum/fhir-router';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import type { Bundle, DiagnosticReport, Observation, Provenance } from '@medplum/fhirtypes';
import { IndexedRepository } from '../local/fhir/indexed-repository.js';

export interface FhirTransactionsBenchOptions {
  /** Store sizes (DiagnosticReports) at which the indexed repository is measured. Default 1k, 10k, 100k. */
  sizes?: number[];
  /** Store sizes for the stock MemoryRepository. Default 200 and 1,000. */
  stockSizes?: number[];
  /** Transactions timed at each size for the indexed repository. Default 2,000. */
  txPerSize?: number;
}

const KEY_SYSTEM = 'urn:fhir-analytics:idempotency-key';

function writeBack(n: number): Bundle {
  const reportUrl = `urn:uuid:${randomUUID()}`;
  const scoreUrl = `urn:uuid:${randomUUID()}`;
  const key = `key-${n}`;
  const patient = { reference: `Patient/p${n % 5000}` };
  const meta = {
    security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'AIAST' }],
  };
  const report: DiagnosticReport = {
    resourceType: 'DiagnosticReport',
    meta,
    status: 'preliminary',
    identifier: [{ system: KEY_SYSTEM, value: key }],
    subject: patient,
    code: { coding: [{ system: 'http://loinc.org', code: '11526-1' }] },
    effectiveDateTime: new Date(Date.UTC(2024, 0, 1) + n * 60_000).toISOString(),
    issued: new Date().toISOString(),
    performer: [{ reference: 'Device/model-gbm-1' }],
    result: [{ reference: scoreUrl }],
    conclusion: 'Risk: low',
  };
  const score: Observation = {
    resourceType: 'Observation',
    meta,
    status: 'preliminary',
    identifier: [{ system: KEY_SYSTEM, value: `${key}/score` }],
    subject: patient,
    code: { coding: [{ system: 'http://loinc.org', code: '75323-6' }] },
    valueQuantity: { value: (n % 100) / 100, unit: '1', system: 'http://unitsofmeasure.org', code: '1' },
  };
  const provenance: Provenance = {
    resourceType: 'Provenance',
    target: [{ reference: reportUrl }, { reference: scoreUrl }],
    recorded: new Date().toISOString(),
    agent: [{ who: { reference: 'Device/model-gbm-1' } }],
    entity: [{ role: 'source', what: { reference: `Observation/in-${n}/_history/1` } }],
  };
  return {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        fullUrl: reportUrl,
        resource: report,
        request: { method: 'POST', url: 'DiagnosticReport', ifNoneExist: `identifier=${KEY_SYSTEM}|${key}` },
      },
      {
        fullUrl: scoreUrl,
        resource: score,
        request: { method: 'POST', url: 'Observation', ifNoneExist: `identifier=${KEY_SYSTEM}|${key}/score` },
      },
      { resource: provenance, request: { method: 'POST', url: 'Provenance' } },
    ],
  };
}

const request = (body: Bundle): FhirRequest => ({
  method: 'POST',
  url: '',
  pathname: '',
  params: {},
  query: {},
  body,
  config: { transactions: true },
});

async function transact(router: FhirRouter, repo: FhirRepository, n: number): Promise<void> {
  const [outcome, result] = await router.handleRequest(request(writeBack(n)), repo);
  const statuses = (result as Bundle | undefined)?.entry?.map((e) => e.response?.status);
  if (outcome.id !== 'ok' || statuses?.some((s) => s !== '201' && s !== '200')) {
    throw new Error(`transaction ${n} failed: ${JSON.stringify(outcome.issue)}`);
  }
}

/** Runs transactions n = from.. until both `minTx` and `minMs` are reached; returns tx/s. */
async function timed(
  router: FhirRouter,
  repo: FhirRepository,
  from: number,
  minTx: number,
  minMs: number,
): Promise<{ txPerSec: number; tx: number }> {
  const start = performance.now();
  let done = 0;
  while (done < minTx || performance.now() - start < minMs) {
    await transact(router, repo, from + done);
    done++;
  }
  return { txPerSec: Math.round((done / (performance.now() - start)) * 1000 * 10) / 10, tx: done };
}

export async function benchFhirTransactions(
  opts: FhirTransactionsBenchOptions = {},
): Promise<Record<string, unknown>> {
  const sizes = [...(opts.sizes ?? [1_000, 10_000, 100_000])].sort((a, b) => a - b);
  const stockSizes = [...(opts.stockSizes ?? [200, 1_000])].sort((a, b) => a - b);
  const txPerSize = opts.txPerSize ?? 2_000;
  const router = new FhirRouter();

  // Warm the JIT on a throwaway repository, so that the first size is not measured cold.
  await timed(router, new IndexedRepository(), 0, 3_000, 1_000);

  const indexed = await measureIndexed(router, sizes, txPerSize);

  // Stock MemoryRepository: filled directly (its transactions are too slow to fill with), then timed.
  const stock = new MemoryRepository();
  const stockFigures: Record<string, unknown>[] = [];
  let m = 0;
  for (const size of stockSizes) {
    for (; m < size; m++) {
      for (const entry of writeBack(m).entry ?? [])
        if (entry.resource) await stock.createResource(entry.resource);
    }
    const fresh = await timed(router, stock, 1_000_000 + m, 3, 2_000);
    stockFigures.push({ reports: size, txPerSec: fresh.txPerSec, tx: fresh.tx });
  }

  const ratios: Record<string, number> = {};
  for (const s of stockFigures) {
    const mine = await measureAt(router, s.reports as number);
    ratios[`at${String(s.reports)}Reports`] = Math.round(mine / (s.txPerSec as number));
  }
  return {
    benchmark: 'fhir-transactions',
    transaction: 'conditional-create DiagnosticReport + conditional-create Observation + Provenance',
    node: process.version,
    indexed,
    stock: stockFigures,
    indexedOverStock: ratios,
  };
}

/** The indexed repository, filled through the same transactions: fresh writes and redeliveries at each size. */
async function measureIndexed(
  router: FhirRouter,
  sizes: number[],
  txPerSize: number,
): Promise<Record<string, unknown>[]> {
  const repo = new IndexedRepository();
  const indexed: Record<string, unknown>[] = [];
  let n = 0;
  for (const size of sizes) {
    while (n < size) await transact(router, repo, n++);
    const fresh = await timed(router, repo, n, txPerSize, 500);
    const replayFrom = Math.max(0, n - fresh.tx);
    const replay = await timed(router, repo, replayFrom, Math.min(txPerSize, n), 0);
    n += fresh.tx;
    indexed.push({
      reports: size,
      txPerSec: fresh.txPerSec,
      redeliveredTxPerSec: replay.txPerSec,
      heapUsedMiB: Math.round(process.memoryUsage().heapUsed / 2 ** 20),
    });
  }

  return indexed;
}

/** Indexed tx/s at a small store size, for the side-by-side ratio with the stock repository. */
async function measureAt(router: FhirRouter, size: number): Promise<number> {
  const repo = new IndexedRepository();
  for (let i = 0; i < size; i++) await transact(router, repo, i);
  return (await timed(router, repo, size, 1_000, 300)).txPerSec;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const result = await benchFhirTransactions();
  console.log(JSON.stringify(result, null, 2));
}
