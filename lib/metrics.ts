/**
 * What the pipeline counts and times. lib/ records into a MetricsRecorder (no AWS types); the
 * Lambda entry points publish it as CloudWatch Embedded Metric Format at the end of an invocation.
 */
export type Unit = "Count" | "Milliseconds";

export interface MetricPoint {
  name: string;
  unit: Unit;
  dimensions: Record<string, string>;
  values: number[];
}

export interface Metrics {
  count(name: string, value?: number, dimensions?: Record<string, string>): void;
  timing(name: string, ms: number, dimensions?: Record<string, string>): void;
}

/** Aggregates points by name and dimensions until drained, so one invocation emits a few lines. */
export class MetricsRecorder implements Metrics {
  private points = new Map<string, MetricPoint>();

  private add(name: string, unit: Unit, value: number, dimensions: Record<string, string>): void {
    const key = `${name}|${JSON.stringify(dimensions)}`;
    const p = this.points.get(key);
    if (!p) this.points.set(key, { name, unit, dimensions, values: [value] });
    else if (unit === "Count") p.values[0] = (p.values[0] ?? 0) + value;
    else p.values.push(value);
  }

  count(name: string, value = 1, dimensions: Record<string, string> = {}): void {
    if (value !== 0) this.add(name, "Count", value, dimensions);
  }

  timing(name: string, ms: number, dimensions: Record<string, string> = {}): void {
    this.add(name, "Milliseconds", Math.round(ms * 100) / 100, dimensions);
  }

  /** Returns everything recorded since the last drain, and forgets it. */
  drain(): MetricPoint[] {
    const out = [...this.points.values()];
    this.points = new Map();
    return out;
  }
}

export const noMetrics: Metrics = { count() {}, timing() {} };

/** Metric names: documented in the README. */
export const Metric = {
  eventsReceived: "EventsReceived",
  eventsAccepted: "EventsAccepted",
  eventsRejected: "EventsRejected",
  webhooksAccepted: "WebhooksAccepted",
  webhooksRejected: "WebhooksRejected",
  eventsBilled: "EventsBilled",
  eventsDuplicate: "EventsAlreadyBilled",
  eventsRetried: "EventsRetried",
  eventsIgnored: "EventsIgnored",
  /** Messages whose combined (pre-aggregated) event went back on the queue to be retried. */
  eventsRequeued: "EventsRequeued",
  eventsDeadLettered: "EventsDeadLettered",
  stripeRequests: "StripeRequests",
  stripeLatency: "StripeLatency",
} as const;
