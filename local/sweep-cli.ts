/**
 * `fhir-analytics sweep --fhir <base>`: a population-risk sweep against any FHIR server.
 * Starts what is not given: the SageMaker-runtime endpoint server over `models/`, dynalite
 * (checkpoints) and fauxqs S3 (staging). Runnable alone: `node --import tsx local/sweep-cli.ts …`.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { createLogger, type LogLevel } from '../shared/log.js';
import type { FhirAuth } from '../shared/sweep/auth.js';
import { DEFAULT_SWEEP_TABLE, sweepTableDefinition } from '../shared/sweep/checkpoint.js';
import { createSweepContext } from '../shared/sweep/context.js';
import type { SweepDefinitionInput } from '../shared/sweep/definition.js';
import { SweepError } from '../shared/sweep/errors.js';
import { renderSummaryHtml } from '../shared/sweep/summary.js';
import { runSweep, type SweepProgress } from '../shared/sweep/sweep.js';

export const SWEEP_USAGE = `usage: fhir-analytics sweep --fhir URL [options]

Scores a cohort with the models, writing one DiagnosticReport per patient and model
(idempotent: a re-run writes nothing new), and writes summary.json + summary.html.

cohort and models:
  --fhir URL               FHIR R4 base URL (required)
  --models a,b             model ids (default: every tabular and sequence model)
  --group ID               the members of Group/ID (default: every patient)
  --cohort-search Q        a Patient search instead, e.g. 'Patient?address-state=MA' (paged search)
  --since S                full | incremental (default; _since = the last successful sweep) | ISO instant
  --name N                 sweep name: incremental runs follow the last success of this name (default "default")
  --sweep-id ID            resume this sweep (after a crash) instead of starting a new one
  --batch-size N           patients per inference call, write-back batch and checkpoint (default 500)
  --write-concurrency N    report transactions in flight (default 8)

authentication (FHIR server):
  --token T                a bearer token
  --client-id ID --client-secret S --token-url URL [--scope S]
                           OAuth2 client credentials (token refreshed before it expires)

where things run (each started locally when not given):
  --sagemaker-endpoint URL SageMaker runtime (default: a local endpoint server over --models-dir)
  --endpoint-prefix P      endpoint name = P + model id (default '')
  --multi-model-endpoint N one multi-model endpoint N for every model (TargetModel), instead
  --dynamodb-endpoint URL  DynamoDB (default: in-process dynalite); --table T (default ${DEFAULT_SWEEP_TABLE})
  --s3-endpoint URL        S3 (default: in-process fauxqs S3); --bucket B (default fhir-analytics-sweeps)
  --aws                    use AWS itself for whatever endpoint is not given (default credentials chain)
  --region R               AWS region (default us-east-1)
  --models-dir D           model manifests (default models/)
  --tmp-dir D              where sorted runs spill (default the OS temp dir)

output:
  --out D                  summary.json and summary.html go here (default ./sweep-out)
  --log-level L            JSON logs on stderr: debug|info|warn|error (default warn)
  --quiet                  no progress bar
  -h, --help               this text

exit status: 0 done (every patient scored or insufficient data), 1 done with failed patients
(listed in the summary for a retry), 2 usage error, 3 sweep failed.
`;

class UsageError extends Error {
  override name = 'UsageError';
}

const LOCAL_CREDENTIALS = { accessKeyId: 'local', secretAccessKey: 'local' };

function positiveInt(raw: string | undefined, flag: string): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag} must be a positive integer`);
  return n;
}

function authOf(v: Record<string, string | boolean | undefined>): FhirAuth {
  const s = (k: string): string | undefined => (typeof v[k] === 'string' ? v[k] : undefined);
  const token = s('token');
  const clientId = s('client-id');
  if (token && clientId) throw new UsageError('--token and --client-id exclude each other');
  if (token) return { kind: 'bearer', token };
  if (clientId) {
    const clientSecret = s('client-secret');
    const tokenUrl = s('token-url');
    if (!clientSecret || !tokenUrl) throw new UsageError('--client-id needs --client-secret and --token-url');
    const scope = s('scope');
    return { kind: 'client-credentials', clientId, clientSecret, tokenUrl, ...(scope ? { scope } : {}) };
  }
  return { kind: 'none' };
}

/** A progress line on stderr: a bar on a terminal, a line per phase change otherwise. */
function progressReporter(
  out: NodeJS.WriteStream,
  quiet: boolean,
): { on: (e: SweepProgress) => void; end: () => void } {
  const tty = out.isTTY;
  let patients = 0;
  let lastPhase = '';
  let lastDraw = 0;
  const draw = (text: string): void => {
    if (tty) out.write(`\r\x1b[2K${text}`);
    else out.write(text + '\n');
  };
  return {
    on: (e) => {
      if (quiet) return;
      if (e.phase === 'process') patients += e.done;
      const now = Date.now();
      if (!tty && e.phase === lastPhase) return;
      if (tty && now - lastDraw < 100 && e.phase === lastPhase) return;
      lastDraw = now;
      lastPhase = e.phase;
      if (e.phase === 'process') draw(`  sweep   ${patients} patients scored`);
      else {
        const pct = e.total > 0 ? Math.min(100, Math.floor((e.done / e.total) * 100)) : 0;
        const width = 30;
        const filled = Math.round((pct / 100) * width);
        draw(`  ${e.phase.padEnd(7)} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${pct}%`);
      }
    },
    end: () => {
      if (!quiet && tty) out.write('\n');
    },
  };
}

export async function sweepCommand(argv: string[]): Promise<number> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const stderr = process.stderr;
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      allowPositionals: false,
      options: {
        fhir: { type: 'string' },
        models: { type: 'string' },
        group: { type: 'string' },
        'cohort-search': { type: 'string' },
        since: { type: 'string' },
        name: { type: 'string' },
        'sweep-id': { type: 'string' },
        'batch-size': { type: 'string' },
        'write-concurrency': { type: 'string' },
        token: { type: 'string' },
        'client-id': { type: 'string' },
        'client-secret': { type: 'string' },
        'token-url': { type: 'string' },
        scope: { type: 'string' },
        'sagemaker-endpoint': { type: 'string' },
        'endpoint-prefix': { type: 'string' },
        'multi-model-endpoint': { type: 'string' },
        'dynamodb-endpoint': { type: 'string' },
        table: { type: 'string' },
        's3-endpoint': { type: 'string' },
        bucket: { type: 'string' },
        aws: { type: 'boolean' },
        region: { type: 'string' },
        'models-dir': { type: 'string' },
        'tmp-dir': { type: 'string' },
        out: { type: 'string' },
        'log-level': { type: 'string' },
        quiet: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    stderr.write(`${(err as Error).message}\n\n${SWEEP_USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(SWEEP_USAGE);
    return 0;
  }
  const closers: (() => Promise<void>)[] = [];
  try {
    if (!values.fhir) throw new UsageError('--fhir is required');
    if (values.group && values['cohort-search'])
      throw new UsageError('--group and --cohort-search exclude each other');
    const auth = authOf(values);
    const batchSize = positiveInt(values['batch-size'], '--batch-size');
    const writeConcurrency = positiveInt(values['write-concurrency'], '--write-concurrency');
    const logLevel = (values['log-level'] ?? 'warn') as LogLevel;
    if (!['debug', 'info', 'warn', 'error'].includes(logLevel))
      throw new UsageError('--log-level: debug|info|warn|error');
    const since = values.since ?? 'incremental';
    const definition: SweepDefinitionInput = {
      name: values.name ?? 'default',
      models: values.models
        ? values.models
            .split(',')
            .map((m) => m.trim())
            .filter(Boolean)
        : [],
      cohort: values.group
        ? { kind: 'group', group: values.group }
        : values['cohort-search']
          ? { kind: 'search', query: values['cohort-search'] }
          : { kind: 'all' },
      since: since,
      ...(batchSize ? { batchSize } : {}),
    };
    const region = values.region ?? 'us-east-1';
    const aws = values.aws === true;
    // The local servers are loaded only when this process starts them (and the demo stack's
    // modules only for its models folder): a sweep against given endpoints holds what the
    // Lambda item worker holds, not the servers' modules.
    const modelsDir = path.resolve(values['models-dir'] ?? (await import('./stack.js')).MODELS_DIR);
    const logger = createLogger({ level: logLevel, sink: (line) => stderr.write(line + '\n') });

    // SageMaker runtime.
    let sagemakerUrl = values['sagemaker-endpoint'];
    if (!sagemakerUrl && !aws) {
      const { startEndpointServer } = await import('./sagemaker/server.js');
      const server = await startEndpointServer({ modelsDir, port: 0, host: '127.0.0.1' });
      closers.push(() => server.close());
      sagemakerUrl = server.url;
    }
    const local = (url: string | undefined): object =>
      url ? { endpoint: url, ...(aws ? {} : { credentials: LOCAL_CREDENTIALS }) } : {};
    const sagemaker = new SageMakerRuntimeClient({ region, ...local(sagemakerUrl) });

    // DynamoDB.
    const table = values.table ?? DEFAULT_SWEEP_TABLE;
    let dynamo: DynamoDBClient;
    const { createTables, startLocalDynamo } = await import('./dynamo.js');
    if (values['dynamodb-endpoint'] || aws) {
      dynamo = new DynamoDBClient({ region, ...local(values['dynamodb-endpoint']) });
      if (!aws) await createTables(dynamo, [sweepTableDefinition(table)]);
    } else {
      const d = await startLocalDynamo({ port: 0, createTables: false });
      closers.push(() => d.close());
      dynamo = d.client;
      await createTables(dynamo, [sweepTableDefinition(table)]);
    }

    // S3.
    const bucket = values.bucket ?? 'fhir-analytics-sweeps';
    let s3Endpoint = values['s3-endpoint'];
    if (!s3Endpoint && !aws) {
      const { startFauxqs } = await import('fauxqs');
      const fauxqs = await startFauxqs({ port: 0, logger: false, host: '127.0.0.1' });
      closers.push(() => fauxqs.stop());
      s3Endpoint = fauxqs.address;
    }
    const s3 = new S3Client({
      region,
      ...local(s3Endpoint),
      ...(s3Endpoint ? { forcePathStyle: true } : {}),
    });
    if (!aws) {
      await s3.send(new CreateBucketCommand({ Bucket: bucket })).catch((err: unknown) => {
        const name = (err as { name?: string }).name ?? '';
        if (!/BucketAlreadyOwnedByYou|BucketAlreadyExists/.test(name)) throw err;
      });
    }

    const progress = progressReporter(stderr, values.quiet === true);
    const ctx = await createSweepContext({
      fhirBaseUrl: values.fhir.replace(/\/+$/, ''),
      auth,
      sagemaker,
      ...(values['endpoint-prefix'] ? { endpointPrefix: values['endpoint-prefix'] } : {}),
      ...(values['multi-model-endpoint']
        ? { endpointMode: 'multi-model' as const, multiModelEndpointName: values['multi-model-endpoint'] }
        : {}),
      s3,
      bucket,
      dynamo,
      table,
      modelsDir,
      tmpDir: values['tmp-dir'] ?? tmpdir(),
      logger,
      ...(writeConcurrency ? { writeConcurrency } : {}),
      extra: { onProgress: progress.on },
    });
    closers.push(() => Promise.resolve(ctx.close?.()));
    const summary = await runSweep(
      ctx,
      definition,
      values['sweep-id'] ? { sweepId: values['sweep-id'] } : {},
    );
    progress.end();
    const out = path.resolve(values.out ?? 'sweep-out');
    await mkdir(out, { recursive: true });
    await writeFile(path.join(out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
    await writeFile(path.join(out, 'summary.html'), renderSummaryHtml(summary));
    const p = summary.patients;
    process.stdout.write(
      `sweep ${summary.sweepId} (${summary.mode}, ${summary.source}${summary.resumed ? ', resumed' : ''}): ` +
        `${p.processed} patients: ${p.written} written, ${p.unchanged} unchanged, ${p.insufficientData} insufficient data, ` +
        `${p.failed} failed, ${p.skippedUnchanged} skipped; ${summary.durationMs} ms; summary in ${out}\n`,
    );
    return p.failed > 0 ? 1 : 0;
  } catch (err) {
    if (err instanceof UsageError) {
      stderr.write(`${err.message}\n\n${SWEEP_USAGE}`);
      return 2;
    }
    stderr.write(
      `sweep failed: ${err instanceof SweepError ? `${err.name}: ${err.message}` : String(err)}\n`,
    );
    return 3;
  } finally {
    for (const close of closers.reverse()) await close().catch(() => undefined);
  }
}

const invokedDirectly =
  process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (invokedDirectly) {
  sweepCommand(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`${String(err)}\n`);
      process.exit(3);
    },
  );
}
