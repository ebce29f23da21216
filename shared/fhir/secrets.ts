/**
 * Reads a JSON secret from AWS Secrets Manager (the SMART client's private key). The value is
 * parsed and returned; neither the value nor parse errors that might quote it are logged or
 * put into error messages. The SDK module is imported on the first read (SMART mode only).
 */
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { FhirAuthError } from './auth.js';

export async function readJsonSecret(client: SecretsManagerClient, secretId: string): Promise<unknown> {
  let text: string | undefined;
  try {
    const { GetSecretValueCommand } = await import('@aws-sdk/client-secrets-manager');
    const out = await client.send(new GetSecretValueCommand({ SecretId: secretId }));
    text =
      out.SecretString ?? (out.SecretBinary ? Buffer.from(out.SecretBinary).toString('utf8') : undefined);
  } catch (err) {
    const name = err instanceof Error ? err.name : 'Error';
    throw new FhirAuthError('credentials', `cannot read secret ${secretId} (${name})`, { cause: err });
  }
  if (text === undefined || text.trim() === '') {
    throw new FhirAuthError('credentials', `secret ${secretId} has no value yet (put it: docs/deploy.md)`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new FhirAuthError('credentials', `secret ${secretId} is not JSON`);
  }
}
