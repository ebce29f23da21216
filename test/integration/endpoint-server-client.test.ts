/**
 * The functions' SageMaker-runtime client (createSageMakerClient, as shared/ports.ts builds it)
 * against the local endpoint server: calls made one after another travel on one kept-alive
 * connection, concurrent calls on at most one connection each, and every answer is right.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEndpointServer, type EndpointServer } from '../../local/sagemaker/server.js';
import { createSageMakerClient } from '../../shared/inference/client.js';
import { createInvoker } from '../../shared/inference/invoker.js';
import type { ModelManifest } from '../../shared/inference/manifest.js';
import { loadRegistry } from '../../shared/inference/registry.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/models', import.meta.url));
let server: EndpointServer;
let tiny: ModelManifest;

beforeAll(async () => {
  server = await startEndpointServer({ modelsDir: FIXTURES, port: 0 });
  const m = (await loadRegistry(FIXTURES)).get('tiny-linear');
  if (!m) throw new Error('fixture tiny-linear missing');
  tiny = m;
});
afterAll(async () => {
  await server.close();
});

const row = (i: number) => ({ values: Float32Array.from([i, 1, 0, 0]), shape: [4] });
const want = (i: number) => Math.fround(i * 0.1) + Math.fround(0.2) + 0.5;

describe('the functions’ SageMaker client', () => {
  it('reuses one kept-alive connection for calls made one after another', async () => {
    const client = createSageMakerClient({ region: 'us-east-1', endpoint: server.url });
    const invoker = createInvoker({ client });
    const before = server.connections();
    for (let i = 0; i < 20; i++) {
      const [p] = await invoker.predict(tiny, [row(i)]);
      expect(p?.score).toBeCloseTo(want(i), 5);
    }
    expect(server.connections() - before).toBe(1);
    client.destroy();
  });

  it('opens at most one connection per concurrent call, and reuses them for the next round', async () => {
    const client = createSageMakerClient({ region: 'us-east-1', endpoint: server.url });
    const invoker = createInvoker({ client });
    const before = server.connections();
    for (let round = 0; round < 3; round++) {
      const answers = await Promise.all(
        [0, 1, 2, 3].map((i) => invoker.predict(tiny, [row(10 * round + i)])),
      );
      answers.forEach(([p], i) => {
        expect(p?.score).toBeCloseTo(want(10 * round + i), 5);
      });
    }
    const opened = server.connections() - before;
    expect(opened).toBeGreaterThanOrEqual(1);
    expect(opened).toBeLessThanOrEqual(4);
    client.destroy();
  });
});
