/**
 * `fhir-analytics`: the command line of the embedded stack.
 *   serve                         the stack, kept running
 *   demo [--serve] [--fhir URL]   what `npm start` runs
 *   invoke <function> --event F   one handler, one event file (like `sam local invoke`)
 *   models                        the model manifests and their card metrics
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { runDemo } from './demo/run.js';
import { DEFAULT_PORTS, MODELS_DIR, startStack, type RunningStack, type StackOptions } from './stack.js';
import { createFhirGateway } from '../shared/fhir/gateway.js';
import { loadRegistry } from '../shared/inference/registry.js';
import { createLogger, type LogLevel } from '../shared/log.js';
import { DEMO_CLIENT } from './jwks-issuer.js';
import { registerSubscriptions, startEventConsumer } from './live.js';
import { partnerApiHowTo } from './partner.js';
import { sweepCommand } from './sweep-cli.js';
import { invokeFunction } from './invoke.js';
import { listModels } from './models.js';

const USAGE = `usage: fhir-analytics <command> [options]

commands:
  serve                         start the embedded stack and keep it running
  demo                          start the stack, load the demo cohort, process it, print a summary
  invoke <function> --event F   run one function's handler on one event file
  sweep --fhir URL [options]    a population-risk sweep against any FHIR server (sweep --help)
  models                        list the models with their held-out metrics

options:
  --fhir URL          use this FHIR server instead of the embedded one (demo, invoke)
  --fhir-port N       embedded FHIR server port (default ${DEFAULT_PORTS.fhir}, env FHIR_PORT)
  --sagemaker-port N  SageMaker-runtime endpoint server port (default ${DEFAULT_PORTS.sagemaker}, env SAGEMAKER_PORT)
  --dicomweb-port N   DICOMweb server port (default ${DEFAULT_PORTS.dicomweb}, env DICOMWEB_PORT)
  --functions-port N  functions gateway port: notify, partner API (default ${DEFAULT_PORTS.functions}, env FUNCTIONS_PORT)
  --queue-port N      SQS (fauxqs) port (default ${DEFAULT_PORTS.queue}, env QUEUE_PORT)
  --issuer-port N     local OAuth2/JWKS issuer port (default ${DEFAULT_PORTS.issuer}, env ISSUER_PORT)
  --dynamo-port N     DynamoDB (dynalite) port (default ${DEFAULT_PORTS.dynamo}, env DYNAMO_PORT)
  --any-ports         pick free ports for every server (port 0)
  --serve             demo: keep the servers up after the summary
  --log-level L       pipeline logs on stderr: debug|info|warn|error (default warn)
  --event F           invoke: the event JSON file
  -h, --help          this text
`;

/** Hides the AWS SDK's notice about its future Node.js requirement (this project supports Node 20). */
function quietSdkNotice(): void {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
}

function port(flag: string | undefined, env: string | undefined, fallback: number): number {
  const raw = flag ?? env;
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`not a port number: ${raw}`);
  return n;
}

class UsageError extends Error {
  override name = 'UsageError';
}

export async function main(argv: readonly string[]): Promise<number> {
  quietSdkNotice();
  // `sweep` has its own flags (local/sweep-cli.ts).
  if (argv[0] === 'sweep') return sweepCommand(argv.slice(1));
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      fhir: { type: 'string' },
      'fhir-port': { type: 'string' },
      'sagemaker-port': { type: 'string' },
      'queue-port': { type: 'string' },
      'dicomweb-port': { type: 'string' },
      'functions-port': { type: 'string' },
      'issuer-port': { type: 'string' },
      'dynamo-port': { type: 'string' },
      'any-ports': { type: 'boolean', default: false },
      serve: { type: 'boolean', default: false },
      'log-level': { type: 'string' },
      event: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const [command, ...rest] = positionals;
  if (values.help || !command) {
    process.stdout.write(USAGE);
    return command || values.help ? 0 : 2;
  }
  const any = values['any-ports'];
  const pick = (flag: string | undefined, env: string | undefined, fallback: number): number =>
    any && flag === undefined ? 0 : port(flag, env, fallback);
  const stackOptions: StackOptions = {
    ...(values.fhir ? { fhirBaseUrl: values.fhir } : {}),
    fhirPort: pick(values['fhir-port'], process.env.FHIR_PORT, DEFAULT_PORTS.fhir),
    sagemakerPort: pick(values['sagemaker-port'], process.env.SAGEMAKER_PORT, DEFAULT_PORTS.sagemaker),
    dicomwebPort: pick(values['dicomweb-port'], process.env.DICOMWEB_PORT, DEFAULT_PORTS.dicomweb),
    functionsPort: pick(values['functions-port'], process.env.FUNCTIONS_PORT, DEFAULT_PORTS.functions),
    queuePort: pick(values['queue-port'], process.env.QUEUE_PORT, DEFAULT_PORTS.queue),
    issuerPort: pick(values['issuer-port'], process.env.ISSUER_PORT, DEFAULT_PORTS.issuer),
    dynamoPort: pick(values['dynamo-port'], process.env.DYNAMO_PORT, DEFAULT_PORTS.dynamo),
  };
  const logLevel = values['log-level'] ?? 'warn';
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel))
    throw new UsageError(`unknown log level: ${logLevel}`);

  switch (command) {
    case 'serve': {
      const logger = createLogger({
        level: logLevel as LogLevel,
        sink: (line) => process.stderr.write(line + '\n'),
      });
      const stack = await startStack({ ...stackOptions, logger });
      const fhir = createFhirGateway({ baseUrl: stack.fhir.baseUrl });
      const statuses = stack.subscriptions
        ? await registerSubscriptions(stack, fhir, (await loadRegistry(stack.modelsDir)).all())
        : [];
      const consumer = startEventConsumer(stack, logger);
      process.stdout.write(
        [
          'fhir-analytics stack running',
          `  FHIR server        ${stack.fhir.baseUrl}`,
          `  subscriptions      ${statuses.join(', ') || 'none (external FHIR server)'}`,
          `  SageMaker runtime  ${stack.sagemaker.url}`,
          `  DICOMweb           ${stack.dicomweb.url}`,
          `  functions          ${stack.gateway.url}  (/notify, /cds-services, /v1)`,
          `  SQS (FIFO)         ${stack.queues.endpoint}`,
          `  DynamoDB           ${stack.dynamo.endpoint}`,
          `  OAuth2 issuer      ${stack.issuer.url}`,
          '',
          await howToCallPartnerApi(stack),
          '',
          'Write an Observation to the FHIR server and its reports appear. Press Ctrl-C to stop.',
          '',
        ].join('\n'),
      );
      await untilSignal();
      await consumer.stop();
      await stack.close();
      return 0;
    }
    case 'demo': {
      const { summary, stack } = await runDemo({ ...stackOptions, logLevel: logLevel as never });
      process.stdout.write('\n' + (await howToCallPartnerApi(stack)) + '\n');
      if (!values.serve) {
        process.stdout.write(
          '\nThe servers stop now. To keep them up and try these calls: npm start -- --serve\n',
        );
      }
      if (values.serve) {
        process.stdout.write('Servers stay up (--serve). Press Ctrl-C to stop.\n');
        await untilSignal();
      }
      await stack.close();
      return summary.deadLettered === 0 ? 0 : 1;
    }
    case 'invoke': {
      const fn = rest[0];
      if (!fn || !values.event) throw new UsageError('invoke needs a function name and --event <file>');
      const event: unknown = JSON.parse(readFileSync(values.event, 'utf8'));
      const result = await invokeFunction(fn, event, { ...stackOptions, logLevel: logLevel as never });
      process.stdout.write(JSON.stringify(result, null, 2) + '\n');
      return 0;
    }
    case 'models': {
      process.stdout.write(await listModels(MODELS_DIR));
      return 0;
    }
    default:
      throw new UsageError(`unknown command: ${command}`);
  }
}

async function howToCallPartnerApi(stack: RunningStack): Promise<string> {
  return partnerApiHowTo(
    { gateway: stack.gateway.url, tokenUrl: stack.issuer.tokenUrl },
    await stack.issuer.accessToken(DEMO_CLIENT),
  );
}

function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => {
      resolve();
    });
    process.once('SIGTERM', () => {
      resolve();
    });
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exit(code);
  },
  (err: unknown) => {
    if ((err as { code?: unknown }).code === 'EADDRINUSE') {
      const address = (err as { address?: string; port?: number }).address ?? '127.0.0.1';
      process.stderr.write(
        `fhir-analytics: port ${String((err as { port?: number }).port)} on ${address} is in use (another stack running?).\n` +
          'Stop it, pick ports with --fhir-port, --sagemaker-port, …, or use --any-ports.\n',
      );
      process.exit(2);
    }
    if (err instanceof UsageError || (err instanceof Error && err.name === 'TypeError' && 'code' in err)) {
      process.stderr.write(`fhir-analytics: ${err.message}\n\n${USAGE}`);
      process.exit(2);
    }
    process.stderr.write(
      `fhir-analytics: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(1);
  },
);
