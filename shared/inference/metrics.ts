/**
 * Metrics of the inference path: an in-process sink interface, a no-op default, and a small
 * CloudWatch Embedded Metric Format (EMF) emitter that buffers metrics and writes them as JSON
 * lines through an injected writer on `flush()` (in Lambda: `console.log`/stdout, which
 * CloudWatch Logs turns into metrics).
 *
 * Dimensions carry model ids, endpoint names and error classes only: never patient data.
 */

export type MetricUnit = 'Milliseconds' | 'Count' | 'Bytes' | 'None';

export interface Metric {
  name: string;
  value: number;
  unit: MetricUnit;
  /** Low-cardinality labels: `Model`, `Endpoint`, `ErrorClass`. */
  dimensions: Readonly<Record<string, string>>;
}

export interface MetricsSink {
  onMetric(metric: Metric): void;
}

export const noopMetrics: MetricsSink = { onMetric: () => undefined };

/** The metric names the invoker emits. */
export const METRIC = {
  /** One InvokeEndpoint call (the SDK's retries included), ms. */
  latency: 'InvocationLatency',
  /** Rows in one InvokeEndpoint call. */
  batchSize: 'BatchSize',
  /** Request body bytes of one call. */
  requestBytes: 'RequestBytes',
  /** 1 per failed call, dimension `ErrorClass` = the error's code. */
  errors: 'InvocationErrors',
} as const;

export interface EmfEmitterOptions {
  /** CloudWatch namespace. Default `FhirAnalytics/Inference`. */
  namespace?: string;
  /** Receives each JSON line (without a newline). */
  write: (line: string) => void;
  /** Clock (ms since the epoch). Default `Date.now`. */
  now?: () => number;
}

export interface EmfEmitter extends MetricsSink {
  /** Writes what was collected since the last flush and clears it. */
  flush(): void;
}

/** EMF allows at most 100 values per metric in one document. */
const MAX_VALUES = 100;

interface Group {
  dimensions: Record<string, string>;
  metrics: Map<string, { unit: MetricUnit; values: number[] }>;
}

/**
 * One line per flush and per distinct set of dimension values (EMF takes dimension values from
 * the document's top level, so two models cannot share a document); a metric with more than
 * 100 values in a group is split over further lines.
 */
export function createEmfEmitter(opts: EmfEmitterOptions): EmfEmitter {
  const namespace = opts.namespace ?? 'FhirAnalytics/Inference';
  const now = opts.now ?? Date.now;
  let groups = new Map<string, Group>();

  const keyOf = (dims: Readonly<Record<string, string>>): string =>
    JSON.stringify(Object.entries(dims).sort(([a], [b]) => a.localeCompare(b)));

  const writeGroup = (g: Group): void => {
    let rest = [...g.metrics.entries()];
    while (rest.length > 0) {
      const doc: Record<string, unknown> = { ...g.dimensions };
      const defs: { Name: string; Unit: MetricUnit }[] = [];
      const next: typeof rest = [];
      for (const [name, m] of rest) {
        defs.push({ Name: name, Unit: m.unit });
        const head = m.values.slice(0, MAX_VALUES);
        doc[name] = head.length === 1 ? head[0] : head;
        if (m.values.length > MAX_VALUES)
          next.push([name, { unit: m.unit, values: m.values.slice(MAX_VALUES) }]);
      }
      doc._aws = {
        Timestamp: now(),
        CloudWatchMetrics: [{ Namespace: namespace, Dimensions: [Object.keys(g.dimensions)], Metrics: defs }],
      };
      opts.write(JSON.stringify(doc));
      rest = next;
    }
  };

  return {
    onMetric(metric) {
      const key = keyOf(metric.dimensions);
      let g = groups.get(key);
      if (!g) {
        g = { dimensions: { ...metric.dimensions }, metrics: new Map() };
        groups.set(key, g);
      }
      let m = g.metrics.get(metric.name);
      if (!m) {
        m = { unit: metric.unit, values: [] };
        g.metrics.set(metric.name, m);
      }
      m.values.push(metric.value);
    },
    flush() {
      const pending = groups;
      groups = new Map();
      for (const g of pending.values()) writeGroup(g);
    },
  };
}
