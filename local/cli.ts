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
import { DEFAULT_PORTS, MODELS_DIR, startStack, type StackOptions } from './stack.js';
import { invokeFunction } from './invoke.js';
import { listModels } from './models.js';

const USAGE = `usage: fhir-analytics <command> [options]

commands:
  serve                         start the embedded stack and keep it running
  demo                          start the stack, load the demo cohort, process it, print a summary
  invoke <function> --event F   run one function's handler on one event file
  models                        list the models with their held-out metrics

options:
  --fhir URL          use this FHIR server instead of the embedded one (demo, invoke)
  --fhir-port N       embedded FHIR server port (default ${DEFAULT_PORTS.fhir}, env FHIR_PORT)
  --sagemaker-port N  SageMaker-runtime endpoint server port (default ${DEFAULT_PORTS.sagemaker}, env SAGEMAKER_PORT)
  --queue-port N      SQS (fauxqs) port (default ${DEFAULT_PORTS.queue}, env QUEUE_PORT)
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
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      fhir: { type: 'string' },
      'fhir-port': { type: 'string' },
      'sagemaker-port': { type: 'string' },
      'queue-port': { type: 'string' },
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
  const stackOptions: StackOptions = {
    ...(values.fhir ? { fhirBaseUrl: values.fhir } : {}),
    fhirPort: port(values['fhir-port'], process.env.FHIR_PORT, DEFAULT_PORTS.fhir),
    sagemakerPort: port(values['sagemaker-port'], process.env.SAGEMAKER_PORT, DEFAULT_PORTS.sagemaker),
    queuePort: port(values['queue-port'], process.env.QUEUE_PORT, DEFAULT_PORTS.queue),
  };
  const logLevel = values['log-level'] ?? 'warn';
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel))
    throw new UsageError(`unknown log level: ${logLevel}`);

  switch (command) {
    case 'serve': {
      const stack = await startStack(stackOptions);
      process.stdout.write(
        `fhir-analytics stack running\n  FHIR server        ${stack.fhir.baseUrl}\n  SageMaker runtime  ${stack.sagemaker.url}\n  SQS (FIFO)         ${stack.queues.endpoint}  queue ${stack.queues.queueUrl}\nPress Ctrl-C to stop.\n`,
      );
      await untilSignal();
      await stack.close();
      return 0;
    }
    case 'demo': {
      const { summary, stack } = await runDemo({ ...stackOptions, logLevel: logLevel as never });
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
