/**
 * The partner API's `patient-view` call with prefetch, over HTTP through the local functions
 * gateway and the real handler (ES384 CDS client JWT verified per call, jti cached, the
 * feature extractor, InvokeEndpoint to the local endpoint server, the card), beside its
 * reference measured in the same run: the bare InvokeEndpoint call for the same row through
 * the SDK. Target: patient-view p99 ≤ 3× the bare call's p99.
 *
 * Figures: sequential latency (p50/p99, hrtime, both paths measured the same way), autocannon
 * latency at one connection, and throughput and error rate under load (autocannon, many
 * connections). Every request carries its own freshly minted JWT (minted before the run).
 *
 * Run alone: `npx tsx bench/partner-api.ts` prints the JSON.
 */
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import type { Observation, Patient } from '@medplum/fhirtypes';
import { buildDemoCohort, loadHeldOutRows } from '../local/demo/cohort.js';
import { loadDemoPatient } from '../local/demo/load.js';
import { startFunctionsGateway } from '../local/gateway.js';
import { startJwksIssuer } from '../local/jwks-issuer.js';
import { createLocalPartnerHandler, partnerApiRoutes } from '../local/partner.js';
import { ROOT, startStack } from '../local/stack.js';
import { createFhirGateway } from '../shared/fhir/gateway.js';
import { createInvoker } from '../shared/inference/invoker.js';
import { loadRegistry } from '../shared/inference/registry.js';
import { silentLogger } from '../shared/log.js';
import { compileExtractor } from '../shared/ports.js';
import { machineInfo } from './machine.js';

interface AutocannonResult {
  latency: { p50: number; p99: number; average: number; max: number };
  requests: { average: number; total: number };
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  '2xx': number;
}
interface AutocannonRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
  setupRequest: (req: AutocannonRequest) => AutocannonRequest;
}
type Autocannon = (opts: {
  url: string;
  connections: number;
  amount: number;
  requests: AutocannonRequest[];
}) => Promise<AutocannonResult>;

export interface PartnerApiBenchOptions {
  /** Model of the service called. Default `diabetes-gbm`. */
  model?: string;
  /** Sequential calls timed on each path. Default 500. */
  sequential?: number;
  /** Requests of the load run. Default 4,000. */
  loadRequests?: number;
  /** Connections of the load run. Default 16. */
  connections?: number;
}

const round = (x: number): number => Math.round(x * 1000) / 1000;

function percentiles(samples: number[]): { p50: number; p99: number; mean: number } {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number): number => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
  return { p50: round(at(0.5)), p99: round(at(0.99)), mean: round(s.reduce((a, b) => a + b, 0) / s.length) };
}

async function timed(n: number, fn: () => Promise<void>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await fn();
    out.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return out;
}

export async function benchPartnerApi(opts: PartnerApiBenchOptions = {}): Promise<Record<string, unknown>> {
  const modelId = opts.model ?? 'diabetes-gbm';
  const sequential = opts.sequential ?? 500;
  const loadRequests = opts.loadRequests ?? 4000;
  const connections = opts.connections ?? 16;
  const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

  const stack = await startStack({ anyPorts: true });
  const issuer = await startJwksIssuer({ port: 0 });
  let gatewayUrl = '';
  const gateway = await startFunctionsGateway({
    port: 0,
    routes: partnerApiRoutes(
      createLocalPartnerHandler({
        fhirBaseUrl: stack.fhir.baseUrl,
        sagemakerUrl: stack.sagemaker.url,
        modelsDir: stack.modelsDir,
        issuer,
        publicBaseUrl: () => gatewayUrl,
        logger: silentLogger,
        rate: { burst: 1_000_000, perSecond: 1_000_000 },
      }),
    ),
  });
  gatewayUrl = gateway.url;
  try {
    // One demo patient, read back with server ids and versions: the prefetch a client would send.
    const fhir = createFhirGateway({ baseUrl: stack.fhir.baseUrl });
    const rows = loadHeldOutRows(path.join(ROOT, 'local/demo/data/diabetes-heldout.json')).slice(0, 1);
    const [demo] = buildDemoCohort(rows, new Date());
    if (!demo) throw new Error('no demo patient');
    const patientId = (await loadDemoPatient(fhir, demo))?.patient?.split('/')[1] ?? '';
    const patient = await fhir.read<Patient>('Patient', patientId);
    const observations = await fhir.searchAll<Observation>('Observation', {
      subject: `Patient/${patientId}`,
    });
    const body = JSON.stringify({
      hook: 'patient-view',
      hookInstance: '2f0f7d1e-58a8-4a54-9d2e-3c1f0f6b8a11',
      context: { userId: 'Practitioner/bench', patientId },
      prefetch: {
        patient,
        observations: {
          resourceType: 'Bundle',
          type: 'searchset',
          entry: observations.map((resource) => ({ resource })),
        },
      },
    });
    const serviceUrl = `${gateway.url}/cds-services/${modelId}`;

    // The reference: the same row, InvokeEndpoint through the SDK, nothing else.
    const manifest = (await loadRegistry(stack.modelsDir)).get(modelId);
    if (!manifest) throw new Error(`model ${modelId} not found`);
    const extracted = compileExtractor(manifest).extract(patient, observations, new Date());
    if (extracted.status !== 'ok') throw new Error('the bench patient has insufficient data');
    const invoker = createInvoker({
      client: new SageMakerRuntimeClient({
        region: 'us-east-1',
        endpoint: stack.sagemaker.url,
        credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
      }),
      endpointName: (m) => m.id,
    });
    const bare = async (): Promise<void> => {
      await invoker.predict(manifest, [extracted.row]);
    };

    const tokens = async (n: number): Promise<string[]> => {
      const out: string[] = [];
      for (let i = 0; i < n; i++) out.push(await issuer.mintCds(serviceUrl));
      return out;
    };
    const hook = (token: string) => async (): Promise<void> => {
      const res = await fetch(serviceUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body,
      });
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`patient-view answered ${res.status}`);
    };

    // Warm up both paths (JIT, JWKS cache, sessions, keep-alive).
    for (const t of await tokens(50)) await hook(t)();
    await timed(50, bare);

    // Interleave the two sequential series in blocks, so drift affects both alike.
    const seqTokens = await tokens(sequential);
    const hookSamples: number[] = [];
    const bareSamples: number[] = [];
    for (let i = 0; i < sequential; i += 50) {
      for (const t of seqTokens.slice(i, i + 50)) hookSamples.push(...(await timed(1, hook(t))));
      bareSamples.push(...(await timed(Math.min(50, sequential - i), bare)));
    }

    const cannon = async (n: number, conns: number): Promise<AutocannonResult> => {
      const pool = await tokens(n);
      let next = 0;
      return autocannon({
        url: gateway.url,
        connections: conns,
        amount: n,
        requests: [
          {
            method: 'POST',
            path: `/cds-services/${modelId}`,
            headers: { 'content-type': 'application/json' },
            body,
            setupRequest: (req) => ({
              ...req,
              headers: { ...req.headers, authorization: `Bearer ${pool[next++ % pool.length] ?? ''}` },
            }),
          },
        ],
      });
    };
    const single = await cannon(Math.min(500, sequential), 1);
    const load = await cannon(loadRequests, connections);

    const hookStats = percentiles(hookSamples);
    const bareStats = percentiles(bareSamples);
    const ratio = round(hookStats.p99 / bareStats.p99);
    return {
      machine: machineInfo(),
      model: modelId,
      patientViewWithPrefetchMs: { ...hookStats, n: hookSamples.length },
      bareInvokeEndpointMs: { ...bareStats, n: bareSamples.length },
      p99Ratio: ratio,
      targetP99RatioAtMost: 3,
      meetsTarget: ratio <= 3,
      autocannonOneConnection: {
        latencyMs: { p50: single.latency.p50, p99: single.latency.p99, mean: single.latency.average },
        requests: single.requests.total,
        errors: single.errors + single.timeouts + single.non2xx,
      },
      autocannonLoad: {
        connections,
        requests: load.requests.total,
        requestsPerSecond: round(load.requests.total / Math.max(load.duration, 1e-9)),
        latencyMs: { p50: load.latency.p50, p99: load.latency.p99, max: load.latency.max },
        non2xx: load.non2xx,
        errors: load.errors,
        timeouts: load.timeouts,
        errorRate: round((load.non2xx + load.errors + load.timeouts) / Math.max(1, load.requests.total)),
      },
    };
  } finally {
    await gateway.close();
    await issuer.close();
    await stack.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  benchPartnerApi()
    .then((r) => {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    })
    .catch((err: unknown) => {
      process.stderr.write(
        `bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      process.exit(1);
    });
}
