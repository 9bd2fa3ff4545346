/**
 * Stripe's active meters, checked before events are sent (METERHOOK_METER_CHECK=on). Stripe
 * answers the v2 stream for a whole batch before it looks at its events, and drops an event
 * whose `event_name` has no active meter, or whose payload lacks the meter's customer or value
 * key, only in its error reports (lib/stripe/error-reports.ts). Checked here instead, such an
 * event is dead-lettered with a reason, and replayed once the meter exists; and each event is
 * sent with its meter's own payload keys (`customer_mapping.event_payload_key`,
 * `value_settings.event_payload_key`), as shared/stripe/METER_API.md §11 asks of a client.
 */
import { DeadLetterCode } from "../errors.js";
import type { Logger } from "../logger.js";
import { CUSTOMER_KEY, type MeterEvent, VALUE_KEY } from "../meter-event.js";
import { Metric, type Metrics } from "../metrics.js";
import { redact } from "../redact.js";
import { reloading } from "../reloading.js";
import type { StripeClient } from "./client.js";
import type { Verdict } from "./retry-policy.js";
import { behindCheck, type MeterEventSubmitter, type SubmitOutcome, submitSome } from "./submitter.js";

/** An active meter, as the check needs it. */
export interface StripeMeter {
  id: string;
  eventName: string;
  customerKey: string;
  valueKey: string;
  /** Stripe's default keys: the meter takes events as meterhook makes them. */
  defaultKeys: boolean;
}

/** Active meters by event_name. */
export type ActiveMeters = ReadonlyMap<string, StripeMeter>;

/** Listing the meters failed: the verdict of the request that failed. */
export class MetersUnavailable extends Error {
  override name = "MetersUnavailable";
  constructor(readonly verdict: Exclude<Verdict, { kind: "ok" }>) {
    super(`listing Stripe's meters failed: ${verdict.reason}`);
  }
}

const text = (x: unknown): string | undefined => (typeof x === "string" && x.length > 0 ? x : undefined);

interface MeterObject {
  id?: unknown;
  event_name?: unknown;
  status?: unknown;
  customer_mapping?: { event_payload_key?: unknown } | null;
  value_settings?: { event_payload_key?: unknown } | null;
}

/** Every active meter: each page of `GET /v1/billing/meters?status=active`, 100 at a time. */
export async function readActiveMeters(client: StripeClient, deadline: number): Promise<Map<string, StripeMeter>> {
  const meters = new Map<string, StripeMeter>();
  let after: string | undefined;
  do {
    const query: Record<string, string> = { status: "active", limit: "100" };
    if (after) query.starting_after = after;
    const v = await client.call({ base: "api", method: "GET", path: "/v1/billing/meters", query, deadline });
    if (v.kind !== "ok") throw new MetersUnavailable(v);
    const page = JSON.parse(v.body) as { data?: MeterObject[]; has_more?: unknown };
    const data = Array.isArray(page.data) ? page.data : [];
    for (const m of data) {
      const id = text(m.id);
      const eventName = text(m.event_name);
      if (!id || !eventName || m.status !== "active") continue;
      const customerKey = text(m.customer_mapping?.event_payload_key) ?? CUSTOMER_KEY;
      const valueKey = text(m.value_settings?.event_payload_key) ?? VALUE_KEY;
      const defaultKeys = customerKey === CUSTOMER_KEY && valueKey === VALUE_KEY;
      meters.set(eventName, { id, eventName, customerKey, valueKey, defaultKeys });
    }
    // A page without a last id cannot be followed: stop rather than read the first page again.
    after = page.has_more === true ? text(data[data.length - 1]?.id) : undefined;
  } while (after);
  return meters;
}

/**
 * The event with its meter's payload keys, or why it cannot have them: one of its properties
 * has the name the meter gives the customer or the value.
 */
function withMeterKeys(e: MeterEvent, meter: StripeMeter): MeterEvent | string {
  // Null prototype: a meter's key is Stripe's string, and could be any name.
  const payload = Object.create(null) as Record<string, string>;
  for (const k in e.payload) {
    if (k === CUSTOMER_KEY || k === VALUE_KEY) continue;
    if (k === meter.customerKey || k === meter.valueKey) {
      return `property "${k}" is the payload key meter ${meter.id} reads the ${k === meter.customerKey ? "customer" : "value"} from`;
    }
    payload[k] = e.payload[k] as string;
  }
  payload[meter.customerKey] = e.payload[CUSTOMER_KEY] as string;
  const value = e.payload[VALUE_KEY];
  if (value !== undefined) payload[meter.valueKey] = value;
  return { event_name: e.event_name, identifier: e.identifier, timestamp: e.timestamp, payload };
}

export interface MeterCheckOptions {
  /** The meters are read again when this old. */
  maxAgeMs: number;
  /** Counts the events sent unchecked (Metric.eventsUnchecked). */
  metrics?: Metrics;
  /** After an event_name no active meter has, read again at most this often (10 s unless set). */
  missIntervalMs?: number;
  now?: () => number;
}

/** How often an unknown event_name reads the meters again: a meter just created is found within it. */
export const METER_MISS_INTERVAL_MS = 10_000;

/** Names the check remembers as missing at once; beyond, the oldest is forgotten (its events retried once more). */
const MAX_MISSING_NAMES = 1_000;

/** The active meters and when the read that found them started. */
interface MetersRead {
  meters: ActiveMeters;
  startedAt: number;
}

/**
 * `inner` behind the meter check: an event whose event_name has no active meter is refused
 * `meter_not_found` and not sent; the rest are sent with their meter's payload keys. The meters
 * are read at the first batch, again when `maxAgeMs` old, and after an event_name none has (at
 * most once per `missIntervalMs`). An event_name is refused only by a read that started after
 * it was first seen missing; until then (the last read may predate a meter just made) its events
 * are retried. While no read has succeeded, a batch's events are retried; while Stripe refuses
 * the key the listing (a restricted key), they are sent unchecked, with an error in the log.
 */
export function checkingMeters(
  inner: MeterEventSubmitter,
  client: StripeClient,
  logger: Logger,
  options: MeterCheckOptions,
): MeterEventSubmitter {
  const now = options.now ?? Date.now;
  // The deadline of the batch that starts a read: reloading's reads take no arguments, and a
  // read shared by several batches ends by the deadline of the one that started it.
  let readBy = 0;
  let failure: unknown;
  const meters = reloading<MetersRead | undefined>(
    undefined,
    async () => {
      const startedAt = now();
      const read = await readActiveMeters(client, readBy);
      failure = undefined;
      logger.info("Stripe's active meters read", { meters: read.size });
      return { meters: read, startedAt };
    },
    {
      maxAgeMs: options.maxAgeMs,
      missIntervalMs: options.missIntervalMs ?? METER_MISS_INTERVAL_MS,
      now,
      onReloadFailed: (err) => {
        failure = err;
        logger.warn("reading Stripe's meters failed; the meters read before stay in use", {
          reason: redact(err instanceof Error ? err.message : String(err)),
        });
      },
    },
  );

  /**
   * When each event_name the meters lacked was first seen in a batch: a list read since then
   * that lacks it too refuses its events at once, so an event_name with no meter costs each of
   * its events at most one retry, however busy the function (and not METERHOOK_MAX_ATTEMPTS).
   */
  const missingSince = new Map<string, number>();

  /**
   * Until then the check is off: Stripe refused to let this key list the meters (401/403), as it
   * would a restricted key without read access to Billing meters. Events are sent unchecked, as
   * before the check existed, rather than all held back; the list is tried again every maxAgeMs.
   */
  let uncheckedUntil = Number.NEGATIVE_INFINITY;
  const refusedKey = () =>
    failure instanceof MetersUnavailable &&
    failure.verdict.kind === "permanent" &&
    failure.verdict.code === DeadLetterCode.stripeUnauthorized;

  /** The meters, or undefined while none could be read. */
  const current = async (): Promise<MetersRead | undefined> => {
    if (meters.current() !== undefined) return meters.get();
    if (now() < uncheckedUntil) return undefined;
    const read = await meters.reload();
    if (read === undefined && refusedKey()) {
      uncheckedUntil = now() + options.maxAgeMs;
      logger.error(
        "the meter check is off: Stripe refused to list its meters with this key; events are sent unchecked",
        {
          reason: redact(failure instanceof Error ? failure.message : String(failure)),
          fix: "give the key read access to Billing meters, or set METERHOOK_METER_CHECK=off",
          retryInSeconds: Math.round(options.maxAgeMs / 1000),
        },
      );
    }
    return read;
  };

  /** Checks `events`, and sends those that pass through `target` (`inner`, or its dry run). */
  const submit = async (
    target: MeterEventSubmitter,
    events: readonly MeterEvent[],
    deadline: number,
  ): Promise<SubmitOutcome[]> => {
    const arrived = now();
    readBy = deadline;
    let read = await current();
    if (read === undefined) {
      if (now() < uncheckedUntil) {
        options.metrics?.count(Metric.eventsUnchecked, events.length);
        return target.submit(events, deadline);
      }
      const reason = redact(failure instanceof Error ? failure.message : String(failure));
      return events.map(() => ({ kind: "retry", reason }));
    }
    // The common case in one pass, allocating nothing: every event's meter is known and reads
    // Stripe's default keys, so the events go as they are.
    if (events.every((e) => read?.meters.get(e.event_name)?.defaultKeys)) return target.submit(events, deadline);
    let missing = false;
    for (const e of events) {
      if (read.meters.has(e.event_name)) continue;
      missing = true;
      if (missingSince.has(e.event_name)) continue;
      if (missingSince.size >= MAX_MISSING_NAMES) missingSince.delete(missingSince.keys().next().value as string);
      missingSince.set(e.event_name, arrived);
    }
    if (missing) read = (await meters.afterMiss()) ?? read;
    const { meters: active, startedAt } = read;
    for (const name of missingSince.keys()) if (active.has(name)) missingSince.delete(name);
    return submitSome(target, events, deadline, (e) => {
      const meter = active.get(e.event_name);
      if (!meter) {
        // Missing from a list read after the name was first seen missing: it has no meter.
        return startedAt >= (missingSince.get(e.event_name) ?? Number.POSITIVE_INFINITY)
          ? {
              kind: "rejected",
              code: DeadLetterCode.meterNotFound,
              reason: `no active Stripe meter has event_name "${e.event_name}": create the meter (or activate it), then replay`,
            }
          : {
              kind: "retry",
              reason: `no active Stripe meter had event_name "${e.event_name}" when the meters were last read, ${Math.round((arrived - startedAt) / 1000)} s ago`,
            };
      }
      const ready = meter.defaultKeys ? e : withMeterKeys(e, meter);
      return typeof ready === "string"
        ? { kind: "rejected", code: DeadLetterCode.invalidPayload, reason: ready }
        : ready;
    });
  };
  return behindCheck(inner, submit);
}
