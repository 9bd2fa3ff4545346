import { type CancelTarget, cancelTarget, parseCancellation } from "../cancellation.js";
import { DeadLetterCode, MeterhookError } from "../errors.js";
import { MAX_SIGNIFICANT_DIGITS, sameUsage } from "../meter-event.js";
import { parseUsageEvent, type UsageEvent } from "../usage-event.js";
import type { Auth, CustomerLookupConfig, Rule, SourceConfig } from "./config-schema.js";
import { evaluate, lostDigits } from "./expressions.js";

/** A trigger as the mapping sees it: expressions are evaluated over this object. */
export interface Trigger {
  source: string;
  /** Lower-case header names (webhooks) or message attributes (SQS). */
  headers: Record<string, string>;
  /** A webhook's query string's fields (a repeated one as a list); empty for other triggers. */
  query?: Record<string, string | string[]>;
  /** Parsed JSON, or the raw text when the body is not JSON. */
  body: unknown;
  /** Epoch ms when meterhook received it: the default event time. */
  receivedAt: number;
}

/** One meter event a source wants, before validation. Values may be anything the mapping produced. */
export interface Emitted {
  event_name: string;
  value: unknown;
  id: unknown;
  customer: unknown;
  timestamp?: unknown;
  properties?: Record<string, unknown>;
  /** Tells apart the events one trigger makes (rule name for declarative sources). */
  key: string;
  /** For error messages: the position of the element of the rule's `each` that made it. */
  item?: number;
  /** For error messages: which expression gave which field. */
  expressions?: Partial<Record<string, string>>;
}

/** One meter event a source wants cancelled (lib/cancellation.ts). */
export interface CancelWanted {
  cancel: true;
  event_name: string;
  /** The id the event was made with. */
  id: unknown;
  /**
   * The rule that made the event, and its source when not this one; neither for an event sent
   * as a canonical event.
   */
  rule?: string;
  source?: string;
  /** The rule that wants it cancelled, for error messages. */
  key: string;
}

/** What every source is, declarative or code: the engine needs nothing else. */
export interface Source {
  name: string;
  type: SourceConfig["type"];
  auth: Auth;
  match?: SourceConfig["match"];
  customer: CustomerLookupConfig;
  unmatched: SourceConfig["unmatched"];
  /**
   * The events a trigger produces, and the events it cancels; an empty list when no rule
   * matches. Throws MappingError.
   */
  produce(trigger: Trigger): Array<Emitted | CancelWanted>;
}

export class MappingError extends MeterhookError {
  override name = "MappingError";
  constructor(message: string) {
    super(DeadLetterCode.mappingFailed, message);
  }
}

export type MapOutcome = { kind: "events"; events: UsageEvent[]; cancels: CancelTarget[] } | { kind: "unmatched" };

function view(t: Trigger) {
  return {
    headers: t.headers,
    query: t.query ?? {},
    body: t.body,
    source: t.source,
    receivedAt: new Date(t.receivedAt).toISOString(),
  };
}

function run(expression: string, data: unknown, where: string): unknown {
  try {
    return evaluate(expression, data);
  } catch (err) {
    throw new MappingError(`${where}: expression \`${expression}\` failed: ${(err as Error).message}`);
  }
}

/** Compiles a declarative source from the mapping config. */
export function compileSource(name: string, config: SourceConfig): Source {
  return {
    name,
    type: config.type,
    auth: config.auth,
    match: config.match,
    customer: config.customer,
    unmatched: config.unmatched,
    produce(trigger) {
      const data = view(trigger);
      const out: Array<Emitted | CancelWanted> = [];
      for (const rule of config.rules) {
        if (rule.each === undefined) {
          applyRule(rule, data, undefined, out);
          continue;
        }
        eachItem(rule.name, rule.each, data).forEach((item, index) => {
          applyRule(rule, { ...data, item, index }, index, out);
        });
      }
      return out;
    },
  };
}

/** Most elements one `each` may give: as many events as one API request may carry. */
export const MAX_EACH_ITEMS = 500;

function eachItem(ruleName: string, expression: string, data: unknown): unknown[] {
  const where = `rule ${ruleName}`;
  const items = run(expression, data, `${where}: each`);
  if (!Array.isArray(items)) throw wrongField(where, "each", expression, items, "an array");
  if (items.length > MAX_EACH_ITEMS)
    throw new MappingError(
      `${where}: each (expression \`${expression}\`) gave ${items.length} items; at most ${MAX_EACH_ITEMS}`,
    );
  return items;
}

/** One rule over one scope (the trigger, or one `each` item of it), adding what it wants to `out`. */
function applyRule(rule: Rule, data: unknown, index: number | undefined, out: Array<Emitted | CancelWanted>): void {
  const item = itemLabel(index);
  if (rule.when && !truthy(run(rule.when, data, `rule ${rule.name}${item}: when`))) return;
  for (const c of rule.cancel ?? []) {
    const id = c.id ?? rule.id;
    out.push({
      cancel: true,
      event_name: c.event_name,
      id: id ? run(id, data, `rule ${rule.name}${item}, cancel ${c.event_name}: id`) : undefined,
      rule: c.rule,
      source: c.source,
      key: rule.name,
    });
  }
  for (const emit of rule.emit ?? []) {
    const where = `rule ${rule.name}${item}, ${emit.event_name}`;
    const expressions = {
      value: emit.value,
      id: emit.id ?? rule.id,
      customer: emit.customer ?? rule.customer,
      timestamp: emit.timestamp ?? rule.timestamp,
    };
    const properties: Record<string, unknown> = {};
    for (const [k, e] of Object.entries(emit.properties ?? {})) {
      properties[k] = run(e, data, `${where}: properties.${k}`);
      expressions[`properties.${k}` as "value"] = e;
    }
    out.push({
      event_name: emit.event_name,
      value: run(expressions.value, data, `${where}: value`),
      id: expressions.id ? run(expressions.id, data, `${where}: id`) : undefined,
      customer: expressions.customer ? run(expressions.customer, data, `${where}: customer`) : undefined,
      timestamp: expressions.timestamp ? run(expressions.timestamp, data, `${where}: timestamp`) : undefined,
      properties,
      key: rule.name,
      ...(index === undefined ? {} : { item: index }),
      expressions,
    });
  }
}

const itemLabel = (index: number | undefined) => (index === undefined ? "" : ` item ${index}`);

/** JMESPath truthiness: false, null, "", [] and {} are false. */
function truthy(v: unknown): boolean {
  if (v === null || v === undefined || v === false || v === "") return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === "object") return Object.keys(v as object).length > 0;
  return true;
}

function fieldError(e: Emitted, field: string, got: unknown, want: string): MappingError {
  return wrongField(`${e.key}${itemLabel(e.item)}, ${e.event_name}`, field, e.expressions?.[field], got, want);
}

/** A field a rule produced that is not what it must be, at `where`, with the expression that gave it. */
function wrongField(where: string, field: string, expr: string | undefined, got: unknown, want: string): MappingError {
  const shown = got === undefined || got === null ? "nothing (missing field?)" : JSON.stringify(got).slice(0, 80);
  return new MappingError(
    `${where}: ${field}${expr ? ` (expression \`${expr}\`)` : ""} gave ${shown}; expected ${want}${numberAsText(got, expr, want)}`,
  );
}

/** A number written as text (message attributes and headers are always text): say how to read it. */
function numberAsText(got: unknown, expr: string | undefined, want: string): string {
  const numeric = typeof got === "string" && got.trim() !== "" && Number.isFinite(Number(got));
  return numeric && want === "a number" && expr ? ` (text: \`to_number(${expr})\` reads it as a number)` : "";
}

/**
 * The one engine both kinds of sources go through: runs the source, checks every field of every
 * event it produced, and gives canonical usage events whose identifiers are derived from the
 * source, rule and id, so a redelivered trigger makes the same meter events.
 */
export function mapTrigger(source: Source, trigger: Trigger): MapOutcome {
  const produced = source.produce(trigger);
  if (produced.length === 0) return { kind: "unmatched" };
  const emitted: Emitted[] = [];
  const cancels: CancelTarget[] = [];
  for (const p of produced) {
    if ("cancel" in p) cancels.push(toCancelTarget(p, source.name));
    else emitted.push(p);
  }
  const receivedAt = trigger.receivedAt / 1000;
  const events = emitted.map((e) => {
    if (typeof e.value !== "number" || !Number.isFinite(e.value)) throw fieldError(e, "value", e.value, "a number");
    if (!usableId(e.id)) throw fieldError(e, "id", e.id, ID_WANTED);
    // Apps' account ids are often numbers; a lookup's table keys and URLs take them as text.
    if (!((typeof e.customer === "string" && e.customer !== "") || Number.isSafeInteger(e.customer)))
      throw fieldError(e, "customer", e.customer, "a string or whole number");
    if (
      e.timestamp !== undefined &&
      e.timestamp !== null &&
      typeof e.timestamp !== "string" &&
      typeof e.timestamp !== "number"
    ) {
      throw fieldError(e, "timestamp", e.timestamp, "ISO-8601 or Unix seconds");
    }
    for (const [k, v] of Object.entries(e.properties ?? {})) {
      if (typeof v !== "string" && typeof v !== "number")
        throw fieldError(e, `properties.${k}`, v, "a string or number");
    }
    const event = parseUsageEvent(
      {
        id: String(e.id),
        event_name: e.event_name,
        customer: String(e.customer),
        value: stripePrecision(e.value),
        ...(e.timestamp !== undefined && e.timestamp !== null ? { timestamp: unixSecondsText(e.timestamp) } : {}),
        ...(e.properties && Object.keys(e.properties).length > 0 ? { properties: e.properties } : {}),
      },
      receivedAt,
    );
    return { ...event, identifierPart: `${source.name}/${e.key}` };
  });
  return { kind: "events", events: withoutRepeats(events, emitted), cancels };
}

/**
 * Two events of one trigger with one identifier (an `each` whose id does not tell items apart, a
 * code source's repeated id) would be one meter event to Stripe, which keeps the first and drops
 * the other. An exact repeat is sent once; one with other contents fails the trigger instead.
 */
function withoutRepeats(events: UsageEvent[], emitted: Emitted[]): UsageEvent[] {
  if (events.length < 2) return events;
  const seen = new Map<string, number>();
  const kept: UsageEvent[] = [];
  events.forEach((e, i) => {
    const key = `${e.identifierPart}\n${e.event_name}\n${e.id}`;
    const first = seen.get(key);
    if (first === undefined) {
      seen.set(key, i);
      kept.push(e);
      return;
    }
    if (sameUsage(events[first] as UsageEvent, e)) return;
    const at = (n: number) => {
      const m = emitted[n] as Emitted;
      return `${m.key}${itemLabel(m.item)}`;
    };
    throw new MappingError(
      `${at(i)}, ${e.event_name}: id ${JSON.stringify(e.id)} repeats ${at(first)}'s with other contents; Stripe would keep one of them: each event needs its own id`,
    );
  });
  return kept;
}

/**
 * An id is text, or a number JSON can carry exactly. Past 2^53 a parsed number has lost digits,
 * so neighbouring ids (64-bit snowflakes) would become one identifier and Stripe would drop all
 * but the first as repeats.
 */
function usableId(id: unknown): id is string | number {
  if (typeof id === "string") return id !== "";
  return typeof id === "number" && Number.isFinite(id) && !lostDigits(id);
}
const ID_WANTED = "a string, or a number below 2^53 (larger ones lose digits in JSON: use the id's string form)";

/** Unix seconds written as text, as a header or message attribute must carry them: "1795942441". */
const UNIX_SECONDS_TEXT = /^\d{1,13}(\.\d{1,9})?$/;
function unixSecondsText(timestamp: string | number): string | number {
  return typeof timestamp === "string" && UNIX_SECONDS_TEXT.test(timestamp) ? Number(timestamp) : timestamp;
}

/**
 * A fraction rounded to the significant digits Stripe keeps. Arithmetic on doubles leaves noise in
 * the 16th and 17th digits (`divide(100, 60)` is 1.6666666666666667, 0.1 + 0.2 is
 * 0.30000000000000004) that Stripe would refuse; those digits are not usage. Integers are left as
 * they are: their digits are counts, and one too long is refused rather than changed.
 */
function stripePrecision(value: number): number {
  return Number.isInteger(value) ? value : Number(value.toPrecision(MAX_SIGNIFICANT_DIGITS));
}

/**
 * The meter event a rule wants cancelled, its fields checked as a cancellation's are; made by a
 * rule of `sourceName` unless it names another source.
 */
function toCancelTarget(c: CancelWanted, sourceName: string): CancelTarget {
  const where = `${c.key}, cancel ${c.event_name}`;
  if (!usableId(c.id)) throw wrongField(where, "id", undefined, c.id, ID_WANTED);
  try {
    return cancelTarget(
      parseCancellation({
        id: String(c.id),
        event_name: c.event_name,
        ...(c.rule === undefined ? {} : { rule: c.rule, source: c.source ?? sourceName }),
      }),
    );
  } catch (err) {
    throw new MappingError(`${where}: ${(err as Error).message}`);
  }
}
