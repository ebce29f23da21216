/**
 * The CDK app. `npx cdk synth` works offline: bundling uses the local esbuild (no Docker), the
 * stacks need no lookups, and without `env` in the configuration they are environment-agnostic.
 *
 * Configuration: `infra/config.json` (or `-c configFile=path`), patched by
 * `-c overrides='{"alarms":{"email":"ops@example.org"}}'`; see docs/deploy.md.
 */
import * as path from 'node:path';
import { App } from 'aws-cdk-lib';
import { buildApp } from './build-app.js';
import { ConfigError, loadConfigFile } from './config.js';
import { REPO_ROOT } from './paths.js';

// Context is read from a bare App: the real one is created by buildApp with the same context.
const context = new App({ autoSynth: false });
const configFile = path.resolve(
  REPO_ROOT,
  (context.node.tryGetContext('configFile') as string | undefined) ?? 'infra/config.json',
);
try {
  const config = loadConfigFile(configFile, context.node.tryGetContext('overrides') as unknown);
  buildApp(config).app.synth();
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`fhir-analytics: ${err.message}`);
    process.exit(1);
  }
  throw err;
}
