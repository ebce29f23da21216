/**
 * The sweep item worker on a multi-model endpoint: told the mode and the one endpoint, allowed
 * to invoke it, and its context addresses it (the rest of the sweep's wiring: sweep.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config.js';
import { endpointAddressing } from '../../shared/inference/addressing.js';
import { build, config, NO_BUNDLING, resourcesOf, TEST_MODELS } from './helpers.js';
import { SAMPLE } from './sweep-definition.js';

describe('sweep item worker: multi-model endpoint', () => {
  it('is told the mode and the one endpoint, may invoke it, and its context addresses it', () => {
    const built = build(config({ models: { endpointMode: 'multi-model' } }), {
      models: TEST_MODELS,
      appProps: NO_BUNDLING,
    });
    const [[id, fn] = ['', {}]] = resourcesOf([built.templates.pipeline], 'AWS::Lambda::Function').filter(
      ([fid]) => fid.startsWith('PopulationSweepFunction'),
    );
    const vars = (fn as { Environment: { Variables: Record<string, unknown> } }).Environment.Variables;
    const env = Object.fromEntries(
      Object.entries(vars).map(([k, v]) => [k, typeof v === 'string' ? v : (SAMPLE[k] ?? `unresolved ${k}`)]),
    );
    const cfg = loadConfig(env);
    expect(cfg.SAGEMAKER_ENDPOINT_MODE, id).toBe('multi-model');
    expect(cfg.SAGEMAKER_ENDPOINT_NAME, id).toMatch(/\S/);
    expect(endpointAddressing(cfg)).toMatchObject({
      endpointMode: 'multi-model',
      multiModelEndpointName: cfg.SAGEMAKER_ENDPOINT_NAME,
    });
    const invokes = resourcesOf([built.templates.pipeline], 'AWS::IAM::Policy')
      .filter(([pid]) => pid.startsWith('PopulationSweepFunction'))
      .flatMap(
        ([, p]) =>
          (p.PolicyDocument as { Statement: { Action: string | string[]; Resource: unknown }[] }).Statement,
      )
      .filter((s) => ([] as string[]).concat(s.Action).includes('sagemaker:InvokeEndpoint'));
    expect(invokes).toHaveLength(1);
    expect(JSON.stringify(invokes[0]?.Resource)).toContain(
      `endpoint/${(cfg.SAGEMAKER_ENDPOINT_NAME ?? '').toLowerCase()}`,
    );
  });
});
