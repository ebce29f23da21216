/**
 * `fhir-analytics invoke <function> --event <file>`: one handler, one event, like
 * `sam local invoke`. The endpoint server (and, without --fhir, an empty embedded FHIR
 * server) is started for the call.
 */
import { createResourceEventHandler } from '../functions/resource-event/handler.js';
import { loadConfig } from '../shared/config.js';
import { createLogger, type LogLevel } from '../shared/log.js';
import { createPipelinePorts } from '../shared/ports.js';
import { startStack, type StackOptions } from './stack.js';
import type { Context } from 'aws-lambda';
import { randomUUID } from 'node:crypto';

export async function invokeFunction(
  name: string,
  event: unknown,
  opts: StackOptions & { logLevel?: LogLevel },
): Promise<unknown> {
  if (name !== 'resource-event') throw new Error(`unknown function: ${name} (known: resource-event)`);
  const stack = await startStack({ ...opts, anyPorts: true });
  try {
    const logger = createLogger({
      level: opts.logLevel ?? 'info',
      sink: (line) => process.stderr.write(line + '\n'),
    });
    const config = loadConfig({
      FHIR_BASE_URL: stack.fhir.baseUrl,
      SAGEMAKER_ENDPOINT_URL: stack.sagemaker.url,
      MODELS_DIR: stack.modelsDir,
    });
    const handler = createResourceEventHandler(logger, () => createPipelinePorts(config, logger));
    return await handler(event as never, { awsRequestId: randomUUID(), functionName: name } as Context);
  } finally {
    await stack.close();
  }
}
