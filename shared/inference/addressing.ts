/**
 * Endpoint addressing from configuration: `per-model` endpoints (`SAGEMAKER_ENDPOINT_PREFIX` +
 * model id) or one `multi-model` endpoint (`SAGEMAKER_ENDPOINT_NAME`, TargetModel per call), as
 * the invoker's options. The event path (shared/ports.ts) and the population sweep use this one
 * mapping, so both address the endpoints infra deployed.
 */
import type { Config } from '../config.js';
import type { InvokerOptions } from './invoker.js';

export type EndpointAddressing = Pick<
  InvokerOptions,
  'endpointMode' | 'endpointPrefix' | 'multiModelEndpointName'
>;

export function endpointAddressing(
  config: Pick<Config, 'SAGEMAKER_ENDPOINT_MODE' | 'SAGEMAKER_ENDPOINT_PREFIX' | 'SAGEMAKER_ENDPOINT_NAME'>,
): EndpointAddressing {
  return {
    endpointMode: config.SAGEMAKER_ENDPOINT_MODE,
    endpointPrefix: config.SAGEMAKER_ENDPOINT_PREFIX,
    ...(config.SAGEMAKER_ENDPOINT_NAME ? { multiModelEndpointName: config.SAGEMAKER_ENDPOINT_NAME } : {}),
  };
}
