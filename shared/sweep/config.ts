/**
 * The sweep's own settings, parsed from an environment record the caller passes in (the
 * handler passes `process.env`; nothing here reads it). Candidates for `shared/config.ts`.
 */
import * as z from 'zod';
import { DEFAULT_SWEEP_TABLE } from './checkpoint.js';

const SweepConfigSchema = z.object({
  /** DynamoDB table of sweep records and checkpoints. */
  SWEEP_TABLE: z.string().min(3).default(DEFAULT_SWEEP_TABLE),
  /** S3 bucket the export is staged in. */
  SWEEP_BUCKET: z.string().min(3).default('fhir-analytics-sweeps'),
  /** S3 key prefix. */
  SWEEP_PREFIX: z.string().default('sweeps'),
  /** Override for the S3 endpoint (fauxqs locally); path-style addressing then. */
  S3_ENDPOINT_URL: z.url().optional(),
  /** Where sorted runs spill (Lambda: /tmp, up to its ephemeral storage). */
  SWEEP_TMP_DIR: z.string().default('/tmp'),
  /** Bound on the wait for the export manifest, in ms. */
  SWEEP_EXPORT_MAX_WAIT_MS: z.coerce
    .number()
    .int()
    .positive()
    .default(30 * 60_000),
  /** One Search call's time budget (paged-search fallback), in ms: ample margin under Lambda's 15 minutes. */
  SWEEP_SEARCH_BUDGET_MS: z.coerce
    .number()
    .int()
    .positive()
    .default(10 * 60_000),
  /** Report transactions in flight at once. */
  SWEEP_WRITE_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(8),
  /** OAuth2 client credentials for the FHIR server (the secret comes from Secrets Manager in AWS). */
  FHIR_TOKEN_URL: z.url().optional(),
  FHIR_CLIENT_ID: z.string().optional(),
  FHIR_CLIENT_SECRET: z.string().optional(),
  FHIR_SCOPE: z.string().optional(),
});
export type SweepConfig = z.infer<typeof SweepConfigSchema>;

export function parseSweepConfig(env: Readonly<Record<string, string | undefined>>): SweepConfig {
  const parsed = SweepConfigSchema.safeParse(env);
  if (!parsed.success) {
    throw new Error(
      `invalid sweep configuration: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  }
  return parsed.data;
}

/**
 * The item worker's memory in AWS (MB): sized for its CPU share (Lambda gives CPU with memory).
 * Its heap is not bounded by a flag (Lambda's own on the command line win); it collects between
 * batches (shared/sweep/heap.ts).
 */
export const SWEEP_ITEM_MEMORY_MB = 2048;
