/**
 * One latency series of the event bench (bench/event-path.ts): its samples (end-to-end per
 * event, the bare calls and the bare delivery interleaved with it) and its summary, with the
 * ratio to the bare calls and the floor (bench/event-floor.ts).
 */
import { bareStats, newBareSamples, type BareSamples } from './event-bare.js';
import { round, stats, type Stats } from './event-common.js';
import { deliveryStats, newDeliverySamples, type DeliverySamples } from './event-floor.js';

export interface SeriesSamples {
  readonly bare: BareSamples;
  readonly delivery: DeliverySamples;
  readonly commitToCommit: number[];
  readonly commitToGet: number[];
  readonly handler: number[];
  readonly beforeHandler: number[];
  readonly handlerStartToReportCommit: number[];
  readonly finalRead: number[];
}

export const newSeries = (): SeriesSamples => ({
  bare: newBareSamples(),
  delivery: newDeliverySamples(),
  commitToCommit: [],
  commitToGet: [],
  handler: [],
  beforeHandler: [],
  handlerStartToReportCommit: [],
  finalRead: [],
});

export function summarize(s: SeriesSamples): Record<string, unknown> {
  const withBare = s.bare.transaction.length > 0;
  const reference = withBare ? bareStats(s.bare) : undefined;
  const bareP50Sum = reference?.p50Sum;
  const floorStats = withBare ? deliveryStats(s.delivery) : undefined;
  const c2c = stats(s.commitToCommit);
  const c2get = stats(s.commitToGet);
  const against = (e2e: Stats) => {
    const ratio = bareP50Sum ? round(e2e.p50 / bareP50Sum) : NaN;
    const floorRatio =
      bareP50Sum && floorStats ? round((bareP50Sum + floorStats.total.p50) / bareP50Sum) : NaN;
    const tail = round(e2e.p99 / e2e.p50);
    return {
      p50Ratio: ratio,
      floorRatio,
      // The end-to-end time above the floor: what the product's own delivery and handler add.
      aboveFloorMs: round(e2e.p50 - (bareP50Sum ?? NaN) - (floorStats?.total.p50 ?? NaN)),
      meetsP50Target: ratio <= 1.3,
      p99OverP50: tail,
      meetsTailTarget: tail <= 3,
    };
  };
  return {
    ...(reference ? { bareCallsMs: reference.calls, bareP50SumMs: bareP50Sum } : {}),
    ...(floorStats ? { bareDeliveryMs: floorStats } : {}),
    ...(reference
      ? { targets: { commitToReportCommit: against(c2c), commitToReportGet: against(c2get) } }
      : {}),
    commitToReportCommitMs: c2c,
    commitToReportGetMs: c2get,
    breakdownP50Ms: {
      commitToHandlerStart: stats(s.beforeHandler).p50,
      handlerStartToReportCommit: stats(s.handlerStartToReportCommit).p50,
      reportCommitToGetReturned: stats(s.finalRead).p50,
      handlerWhole: stats(s.handler).p50,
    },
    breakdownP99Ms: {
      commitToHandlerStart: stats(s.beforeHandler).p99,
      handlerStartToReportCommit: stats(s.handlerStartToReportCommit).p99,
      reportCommitToGetReturned: stats(s.finalRead).p99,
    },
  };
}
