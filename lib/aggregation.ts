import * as z from "zod";
import { DeadLetterCode, InvalidEventError } from "./errors.js";
import {
  CUSTOMER_KEY,
  MAX_SIGNIFICANT_DIGITS,
  type MeterEvent,
  meterEventIdentifier,
  VALUE_KEY,
  validateMeterEvent,
} from "./meter-event.js";

/**
 * Optional pre-aggregation (METERHOOK_AGGREGATE): the meter events of one batch that share a
 * meter, a customer, every other payload key and a time window become one meter event, so
 * Stripe gets one call (v1) or one stream entry (v2) instead of many.
 *
 * `sum`: the combined value is the exact decimal sum of the members' values. `count`: it is the
 * number of members, so the Stripe meter must use the `sum` formula (a `count` meter counts
 * meter events and would see one).
 */
export type AggregateFormula = "sum" | "count";

export interface AggregationRules {
  meters: ReadonlyMap<string, AggregateFormula>;
  /** Events whose timestamps fall in the same window of this many seconds (UTC-aligned) combine. */
  windowSeconds: number;
}

export interface AggregationPlan {
  /** What to submit: events left as they are, and one combined event per group of two or more. */
  submit: MeterEvent[];
  /** For each input event, the index in `submit` of the event that carries it. */
  carriedBy: number[];
  /** The combined events: index in `submit` to the indexes of their members in the input. */
  members: Map<number, number[]>;
}

/** Marks the identifier of a combined event apart from any single event's. */
const AGGREGATE_PART = "aggregate";

/**
 * Groups `events` (those with `fixed[i]` set are never combined). A combined event's identifier
 * is derived from its members' identifiers, in any order; its timestamp is its earliest member's.
 */
export function planAggregation(
  events: readonly MeterEvent[],
  fixed: readonly boolean[],
  rules: AggregationRules,
): AggregationPlan {
  const groups = new Map<string, number[]>();
  const alone: number[] = [];
  events.forEach((e, i) => {
    const formula = rules.meters.get(e.event_name);
    if (!formula || fixed[i]) {
      alone.push(i);
      return;
    }
    const key = groupKey(e, formula, rules.windowSeconds);
    const group = groups.get(key);
    if (group) group.push(i);
    else groups.set(key, [i]);
  });

  const submit: MeterEvent[] = [];
  const carriedBy: number[] = new Array(events.length);
  const members = new Map<number, number[]>();
  const keep = (i: number) => {
    carriedBy[i] = submit.length;
    submit.push(events[i] as MeterEvent);
  };
  for (const i of alone) keep(i);
  for (const group of groups.values()) {
    const combined =
      group.length > 1
        ? combine(
            group.map((i) => events[i] as MeterEvent),
            rules,
          )
        : undefined;
    if (!combined) {
      for (const i of group) keep(i);
      continue;
    }
    members.set(submit.length, group);
    for (const i of group) carriedBy[i] = submit.length;
    submit.push(combined);
  }
  return { submit, carriedBy, members };
}

function groupKey(e: MeterEvent, formula: AggregateFormula, windowSeconds: number): string {
  const dimensions = Object.keys(e.payload)
    .filter((k) => k !== VALUE_KEY)
    .sort()
    .map((k) => `${k}\u0001${e.payload[k]}`)
    .join("\u0002");
  return `${formula}\u0000${e.event_name}\u0000${Math.floor(e.timestamp / windowSeconds)}\u0000${dimensions}`;
}

/** One event for the group, or undefined when the sum cannot be sent exactly (then members go alone). */
function combine(group: MeterEvent[], rules: AggregationRules): MeterEvent | undefined {
  const first = group[0] as MeterEvent;
  const formula = rules.meters.get(first.event_name);
  const value = formula === "count" ? String(group.length) : sumDecimals(group.map((e) => e.payload[VALUE_KEY] ?? ""));
  if (value === undefined) return undefined;
  const ids = group.map((e) => e.identifier).sort();
  return {
    event_name: first.event_name,
    identifier: meterEventIdentifier(ids.join("\n"), first.event_name, AGGREGATE_PART),
    timestamp: Math.min(...group.map((e) => e.timestamp)),
    payload: { ...first.payload, [VALUE_KEY]: value },
  };
}

const DECIMAL = /^(-?)(\d+)(?:\.(\d+))?$/;

/**
 * Exact sum of decimal strings (binary floating point would turn 0.1 + 0.2 into 17 digits);
 * undefined when an input is not a plain decimal or the sum has more significant digits than
 * Stripe accepts.
 */
export function sumDecimals(values: readonly string[]): string | undefined {
  const parts: Array<{ negative: boolean; digits: string; scale: number }> = [];
  let scale = 0;
  for (const v of values) {
    const m = DECIMAL.exec(v);
    if (!m) return undefined;
    const frac = m[3] ?? "";
    parts.push({ negative: m[1] === "-", digits: (m[2] ?? "") + frac, scale: frac.length });
    scale = Math.max(scale, frac.length);
  }
  let total = 0n;
  for (const p of parts) {
    const n = BigInt(p.digits + "0".repeat(scale - p.scale));
    total += p.negative ? -n : n;
  }
  const negative = total < 0n;
  const abs = (negative ? -total : total).toString().padStart(scale + 1, "0");
  const int = abs.slice(0, abs.length - scale);
  const frac = abs.slice(abs.length - scale).replace(/0+$/, "");
  const text = `${negative ? "-" : ""}${int}${frac ? `.${frac}` : ""}`;
  const significant = (int + frac).replace(/^0+/, "").replace(/0+$/, "").length;
  return significant > MAX_SIGNIFICANT_DIGITS ? undefined : text;
}

/**
 * A combined event whose submission failed goes back on the ingest queue as itself, in this
 * message, instead of its members: their next delivery may group them differently, and a new
 * identifier would bill twice whatever the failed attempt did reach Stripe.
 */
export const AGGREGATE_FORMAT = "meterhook.aggregate/1";

const ContinuationSchema = z.object({
  meterhook: z.literal(AGGREGATE_FORMAT),
  event: z.strictObject({
    event_name: z.string().min(1),
    identifier: z.string().min(1),
    timestamp: z.number().int().nonnegative(),
    payload: z.record(z.string(), z.string()),
  }),
  /** The members' event ids, for whoever reads the queue or the DLQ. */
  members: z.array(z.string()),
});

export function continuationBody(event: MeterEvent, memberIds: readonly string[]): string {
  return JSON.stringify({ meterhook: AGGREGATE_FORMAT, event, members: memberIds });
}

export const isContinuation = (x: unknown): boolean =>
  !!x && typeof x === "object" && (x as { meterhook?: unknown }).meterhook === AGGREGATE_FORMAT;

/** The combined event a continuation carries, checked again against Stripe's rules. */
export function parseContinuation(input: unknown, nowSeconds: number): MeterEvent {
  const parsed = ContinuationSchema.safeParse(input);
  if (!parsed.success) {
    throw new InvalidEventError(DeadLetterCode.invalidMessage, `not a valid ${AGGREGATE_FORMAT} message`);
  }
  const event: MeterEvent = { ...parsed.data.event, payload: { ...parsed.data.event.payload } };
  if (!event.payload[CUSTOMER_KEY]) {
    throw new InvalidEventError(DeadLetterCode.invalidPayload, `payload has no ${CUSTOMER_KEY}`);
  }
  validateMeterEvent(event, nowSeconds);
  return event;
}
