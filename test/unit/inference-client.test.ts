/**
 * The functions' SageMaker-runtime client (shared/inference/client.ts): placeholder
 * credentials only for a loopback endpoint (the local endpoint server), the provider chain
 * everywhere else (AWS, a VPC endpoint URL), and keep-alive agents in its request handler.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createSageMakerClient, isLoopbackUrl, LOCAL_CREDENTIALS } from '../../shared/inference/client.js';

afterEach(() => {
  vi.unstubAllEnvs();
});

describe('createSageMakerClient', () => {
  it.each([
    ['http://127.0.0.1:8081', true],
    ['http://localhost:8081', true],
    ['http://[::1]:8081', true],
    ['http://127.10.0.3', true],
    ['https://runtime.sagemaker.us-east-1.amazonaws.com', false],
    ['https://vpce-0abc.runtime.sagemaker.eu-west-1.vpce.amazonaws.com', false],
    ['http://127.0.0.1.example.com', false],
    ['not a url', false],
  ])('%s is loopback: %s', (url, loopback) => {
    expect(isLoopbackUrl(url)).toBe(loopback);
  });

  it('signs for the local endpoint server with placeholder credentials', async () => {
    const client = createSageMakerClient({ region: 'us-east-1', endpoint: 'http://127.0.0.1:8081' });
    const credentials = await client.config.credentials();
    expect(credentials).toMatchObject(LOCAL_CREDENTIALS);
    client.destroy();
  });

  it('takes the provider chain for any other endpoint, a VPC endpoint URL included', async () => {
    vi.stubEnv('AWS_ACCESS_KEY_ID', 'AKIDFROMTHEENV');
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'secret-from-the-env');
    const client = createSageMakerClient({
      region: 'eu-west-1',
      endpoint: 'https://vpce-0abc.runtime.sagemaker.eu-west-1.vpce.amazonaws.com',
    });
    expect((await client.config.credentials()).accessKeyId).toBe('AKIDFROMTHEENV');
    client.destroy();
  });

  it('uses keep-alive agents for HTTP and HTTPS', async () => {
    const client = createSageMakerClient({ region: 'us-east-1', maxSockets: 7 });
    const handler = client.config.requestHandler as unknown as {
      httpHandlerConfigs(): Record<string, unknown>;
      handle(...args: unknown[]): Promise<unknown>;
    };
    // The handler resolves its configuration lazily; a request to nowhere makes it do so.
    await handler
      .handle({ protocol: 'http:', hostname: '127.0.0.1', port: 9, method: 'GET', path: '/', headers: {} })
      .catch(() => undefined);
    const config = handler.httpHandlerConfigs() as {
      httpAgent?: { keepAlive?: boolean; maxSockets?: number };
      httpsAgent?: { keepAlive?: boolean; maxSockets?: number };
      connectionTimeout?: number;
    };
    expect(config.httpAgent).toMatchObject({ keepAlive: true, maxSockets: 7 });
    expect(config.httpsAgent).toMatchObject({ keepAlive: true, maxSockets: 7 });
    expect(config.connectionTimeout).toBe(3000);
    client.destroy();
  });
});
