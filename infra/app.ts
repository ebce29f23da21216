/**
 * The CDK app. `npx cdk synth` works offline: bundling uses the local esbuild, no Docker.
 * Configuration comes from CDK context (`-c fhirBaseUrl=...`), validated with zod.
 */
import { App } from 'aws-cdk-lib';
import { z } from 'zod';
import { PipelineStack } from './stacks/pipeline-stack.js';

const ContextSchema = z.object({
  fhirBaseUrl: z.url().default('https://fhir.example.org/r4'),
  endpointPrefix: z
    .string()
    .regex(/^[A-Za-z0-9-]*$/)
    .default('fhir-analytics-'),
});

const app = new App();
const parsed = ContextSchema.safeParse({
  fhirBaseUrl: app.node.tryGetContext('fhirBaseUrl') as unknown,
  endpointPrefix: app.node.tryGetContext('endpointPrefix') as unknown,
});
if (!parsed.success) {
  const detail = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
  throw new Error(`invalid fhir-analytics configuration: ${detail}`);
}
new PipelineStack(app, 'FhirAnalyticsPipeline', parsed.data);
app.synth();
