/**
 * The shapes the population-sweep functions receive (Step Functions passes them as the
 * Lambda event): start (from EventBridge Scheduler through the state machine), one item
 * (from the Distributed Map), finish.
 */
import { z } from 'zod';
import { SweepDefinitionSchema } from './definition.js';

const SWEEP_ID = /^[A-Za-z0-9_.-]{1,128}$/;

export const StartSweepEventSchema = z.object({
  definition: SweepDefinitionSchema,
  /** Resume a sweep (a Step Functions retry or redrive passes the id it got first). */
  sweepId: z.string().regex(SWEEP_ID).optional(),
});
export type StartSweepEvent = z.infer<typeof StartSweepEventSchema>;

/** One Distributed Map item (a line of `items.json`); see `SweepItem`. */
export const SweepItemSchema = z.object({
  sweepId: z.string().regex(SWEEP_ID),
  partition: z.number().int().nonnegative(),
  keys: z.array(z.string().min(1).max(1024)).min(1),
  mode: z.enum(['full', 'incremental']),
  lines: z.number().int().nonnegative(),
});

export const FinishSweepEventSchema = z.object({ sweepId: z.string().regex(SWEEP_ID) });
