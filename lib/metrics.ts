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

/**
 * A dimension set as a map key, the same whatever the order of its keys. The Stripe client
 * records every request with one of a few shared, frozen dimension objects, whose keys are kept:
 * serialising one per request was the recorder's main cost in v1, a metric per event. Any other
 * object may change, so it is serialised each time.
 */
const frozenKeys = new WeakMap<Record<string, string>, string>();
export function dimensionsKey(dimensions: Record<string, string>): string {
  let key = frozenKeys.get(dimensions);
  if (key === undefined) {
    key = JSON.stringify(Object.entries(dimensions).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    if (Object.isFrozen(dimensions)) frozenKeys.set(dimensions, key);
  }
  return key;
}

/** Aggregates points by name and dimensions until drained, so one invocation emits a few lines. */
export class MetricsRecorder implements Metrics {
  /**
   * Points by name, then by dimensions key ("" for none): both keys are strings V8 has already
   * hashed (names are literals, frozen sets' keys are cached), where one `name|dimensions` key
   * was a new string to hash per value (it showed in the v1 profile: two values per request).
   */
  private points = new Map<string, Map<string, MetricPoint>>();

  private add(name: string, unit: Unit, value: number, dimensions: Record<string, string> | undefined): void {
    const key = dimensions ? dimensionsKey(dimensions) : "";
    let byDimensions = this.points.get(name);
    if (!byDimensions) {
      byDimensions = new Map();
      this.points.set(name, byDimensions);
    }
    const p = byDimensions.get(key);
    if (!p) {
      // A copy unless frozen: the caller may reuse and change its object.
      const dims = dimensions === undefined ? {} : Object.isFrozen(dimensions) ? dimensions : { ...dimensions };
      byDimensions.set(key, { name, unit, dimensions: dims, values: [value] });
    } else if (unit === "Count") p.values[0] = (p.values[0] ?? 0) + value;
    else p.values.push(value);
  }

  count(name: string, value = 1, dimensions?: Record<string, string>): void {
    if (value !== 0) this.add(name, "Count", value, dimensions);
  }

  timing(name: string, ms: number, dimensions?: Record<string, string>): void {
    this.add(name, "Milliseconds", Math.round(ms * 100) / 100, dimensions);
  }

  /** Returns everything recorded since the last drain, and forgets it. */
  drain(): MetricPoint[] {
    const out: MetricPoint[] = [];
    for (const byDimensions of this.points.values()) for (const p of byDimensions.values()) out.push(p);
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
  /** Requests that presented a Bearer key matching none of METERHOOK_API_KEYS (a retired key, a typo). */
  apiKeysRefused: "ApiKeysRefused",
  /** Events API requests refused whole, by code (unauthorized, payload_too_large, invalid_json, ...). */
  requestsRejected: "RequestsRejected",
  /** Cancellations the HTTP API queued (POST /v1/events/cancel). */
  cancellationsAccepted: "CancellationsAccepted",
  webhooksAccepted: "WebhooksAccepted",
  webhooksRejected: "WebhooksRejected",
  eventsBilled: "EventsBilled",
  /** Triggers some of whose meter events were billed, the rest dead-lettered (also in EventsDeadLettered). */
  eventsBilledInPart: "EventsBilledInPart",
  eventsDuplicate: "EventsAlreadyBilled",
  eventsRetried: "EventsRetried",
  eventsIgnored: "EventsIgnored",
  /** Meter events cancelled at Stripe (lib/cancellation.ts). */
  eventsCancelled: "EventsCancelled",
  /** Cancellations Stripe said an earlier delivery had made: done, as EventsAlreadyBilled is for events. */
  eventsAlreadyCancelled: "EventsAlreadyCancelled",
  /** Messages whose combined (pre-aggregated) event went back on the queue to be retried. */
  eventsRequeued: "EventsRequeued",
  eventsDeadLettered: "EventsDeadLettered",
  /** Events sent without the meter check: Stripe would not let the key list its meters (lib/stripe/meters.ts). */
  eventsUnchecked: "EventsUnchecked",
  /** Events sent before their customer could be checked in Stripe (lib/stripe/customer-check.ts). */
  eventsCustomerUnchecked: "EventsCustomerUnchecked",
  /**
   * Of those, the events sent unchecked because Stripe refused to let the key read customers: the
   * check is off until the key is fixed (alarmed, unlike a cold start's events waiting for a turn).
   */
  eventsCustomerCheckOff: "EventsCustomerCheckOff",
  /** Former dead letters' meter events not sent because an earlier replay billed them (lib/replay-ledger.ts); also in EventsAlreadyBilled. */
  replayLedgerHits: "ReplayLedgerHits",
  /** Meter events billed whose billing the replay ledger could not record: they stay marked sent. */
  replayLedgerUnrecorded: "ReplayLedgerUnrecorded",
  /** Former dead letters' meter events retried because the replay ledger could not be read or marked. */
  replayLedgerUnavailable: "ReplayLedgerUnavailable",
  /** Former dead letters' meter events a replay sent over 23 h ago unanswered: dead-lettered dedupe_window_passed. */
  replayLedgerHeld: "ReplayLedgerHeld",
  stripeRequests: "StripeRequests",
  stripeLatency: "StripeLatency",
} as const;
