import * as z from "zod";
import { DeadLetterCode, InvalidEventError } from "./errors.js";
import { isoFromSeconds, secondsFromIso } from "./timestamps.js";

/** Property keys that would let a payload rewrite an object prototype once copied. */
const FORBIDDEN_KEYS = new Set(["__proto__", "constructor", "prototype"]);
const MAX_PROPERTIES = 50;
// Control characters make ids and names unreadable in the dashboard and in logs.
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;
/** Longest id and customer reference, and longest event name (Stripe's limit). */
export const MAX_ID_LENGTH = 255;
export const MAX_EVENT_NAME_LENGTH = 100;
/** Longest property name, and longest property text value (Stripe's payload limit). */
const MAX_PROPERTY_LENGTH = 100;
/** Not a prototype's name, and no brackets (property names become v1 form keys, payload[name]). */
const isPropertyName = (k: string) => !FORBIDDEN_KEYS.has(k) && !k.includes("[") && !k.includes("]");

/**
 * A lone surrogate (a JSON escape like "\\ud800") is valid JSON but no UTF-8 can carry it: a form
 * body cannot encode it, and a hash would see U+FFFD, so two ids would share an identifier.
 */
export const NOT_WELL_FORMED = "must be well-formed Unicode (it has a lone surrogate)";

/** Text of 1 to `max` characters, without control characters, well-formed. */
export const Text = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .refine((s) => !CONTROL_CHARS.test(s), "must not contain control characters")
    .refine((s) => s.isWellFormed(), NOT_WELL_FORMED);

const PropertyKeySchema = Text(MAX_PROPERTY_LENGTH).refine(
  isPropertyName,
  "property names must not be __proto__, constructor, prototype or contain brackets",
);

/** The canonical usage event an app sends to `POST /v1/events` or the ingest queue. */
export const UsageEventSchema = z.strictObject({
  id: Text(MAX_ID_LENGTH),
  event_name: Text(MAX_EVENT_NAME_LENGTH),
  customer: Text(MAX_ID_LENGTH),
  value: z.number().default(1),
  timestamp: z.union([z.string(), z.number()]).optional(),
  properties: z
    .record(
      PropertyKeySchema,
      z.union([
        z
          .string()
          .max(MAX_PROPERTY_LENGTH)
          .refine((s) => s.isWellFormed(), NOT_WELL_FORMED),
        z.number(),
      ]),
    )
    .refine((p) => Object.keys(p).length <= MAX_PROPERTIES, `at most ${MAX_PROPERTIES} properties`)
    .optional(),
});
export type UsageEventInput = z.input<typeof UsageEventSchema>;

/** A usage event after parsing: defaults applied, timestamp in Unix seconds. */
export interface UsageEvent {
  id: string;
  event_name: string;
  customer: string;
  value: number;
  timestamp: number;
  properties: Record<string, string | number>;
  /** Set by a mapping source: keeps apart the meter events one trigger makes (see meterEventIdentifier). */
  identifierPart?: string;
}

/** Shared by every event without properties (most of them), so none allocates a dictionary. */
const NO_PROPERTIES: Record<string, string | number> = Object.freeze(Object.create(null));

function toUnixSeconds(ts: string | number): number {
  if (typeof ts === "number") {
    if (!Number.isFinite(ts) || ts < 0) {
      throw new InvalidEventError(
        DeadLetterCode.invalidEvent,
        "timestamp must be a non-negative Unix time in seconds",
        "timestamp",
      );
    }
    return Math.floor(ts);
  }
  const seconds = secondsFromIso(ts);
  if (Number.isNaN(seconds)) {
    throw new InvalidEventError(
      DeadLetterCode.invalidEvent,
      "timestamp must be ISO-8601 with a time zone (2026-11-26T12:00:00Z) or Unix seconds as a number",
      "timestamp",
    );
  }
  return seconds;
}

export function describeIssue(issue: z.core.$ZodIssue): { path: string; message: string } {
  const path = issue.path.map(String).join(".");
  if (issue.code === "unrecognized_keys") {
    return { path, message: `unknown field(s): ${issue.keys.join(", ")}` };
  }
  const message =
    issue.code === "invalid_type" && /received undefined/.test(issue.message) ? "is required" : issue.message;
  return { path, message: path ? `${path}: ${message}` : message };
}

const isText = (x: unknown, max: number): x is string =>
  typeof x === "string" && x.length >= 1 && x.length <= max && !CONTROL_CHARS.test(x) && x.isWellFormed();

/**
 * The common shape (every field plainly valid, properties flat) checked without zod, which
 * allocated about 1 KiB per event on the queue consumer's hot path. Answers undefined for
 * anything else, which then goes through the schema; a test holds the two to the same answers.
 */
function parsePlainEvent(input: unknown, receivedAt: number): UsageEvent | undefined {
  if (typeof input !== "object" || input === null || Array.isArray(input)) return undefined;
  const o = input as Record<string, unknown>;
  for (const k in o) {
    if (
      k !== "id" &&
      k !== "event_name" &&
      k !== "customer" &&
      k !== "value" &&
      k !== "timestamp" &&
      k !== "properties"
    )
      return undefined;
  }
  const event = plainEvent(o.id, o.event_name, o.customer, o.value, o.timestamp, receivedAt, false);
  if (event === undefined || o.properties === undefined) return event;
  const properties = plainProperties(o.properties);
  if (properties === undefined) return undefined;
  event.properties = properties;
  return event;
}

/**
 * A null-prototype copy of properties the schema would take as they are (by the schema's own
 * rules: names isText and isPropertyName, values well-formed text of at most MAX_PROPERTY_LENGTH
 * or finite numbers, at most MAX_PROPERTIES), or undefined for the schema to judge.
 */
function plainProperties(p: unknown): Record<string, string | number> | undefined {
  if (typeof p !== "object" || p === null || Array.isArray(p)) return undefined;
  // A plain or null-prototype object (as JSON.parse and the mapping engine make): for-in then
  // sees its own keys only.
  const proto = Object.getPrototypeOf(p);
  if (proto !== Object.prototype && proto !== null) return undefined;
  const o = p as Record<string, unknown>;
  let out: Record<string, string | number> | undefined;
  let count = 0;
  for (const k in o) {
    if (++count > MAX_PROPERTIES) return undefined;
    if (!isText(k, MAX_PROPERTY_LENGTH) || !isPropertyName(k)) return undefined;
    const v = o[k];
    if (typeof v === "string") {
      if (v.length > MAX_PROPERTY_LENGTH || !v.isWellFormed()) return undefined;
    } else if (typeof v !== "number" || !Number.isFinite(v)) return undefined;
    out ??= Object.create(null) as Record<string, string | number>;
    out[k] = v;
  }
  return out ?? Object.create(null);
}

/**
 * The event from plainly valid fields, or undefined. With `quiet`, also undefined where the
 * schema path would throw (a malformed timestamp), so that path gives the error.
 */
function plainEvent(
  id: unknown,
  event_name: unknown,
  customer: unknown,
  value: unknown,
  timestamp: unknown,
  receivedAt: number,
  quiet: boolean,
): UsageEvent | undefined {
  if (!isText(id, MAX_ID_LENGTH) || !isText(event_name, MAX_EVENT_NAME_LENGTH) || !isText(customer, MAX_ID_LENGTH))
    return undefined;
  if (value !== undefined && !(typeof value === "number" && Number.isFinite(value))) return undefined;
  let seconds: number;
  if (timestamp === undefined) seconds = Math.floor(receivedAt);
  else if (typeof timestamp === "number" && Number.isFinite(timestamp)) {
    if (quiet && timestamp < 0) return undefined;
    seconds = toUnixSeconds(timestamp);
  } else if (typeof timestamp === "string") {
    seconds = quiet ? secondsFromIso(timestamp) : toUnixSeconds(timestamp);
    if (Number.isNaN(seconds)) return undefined;
  } else return undefined;
  return { id, event_name, customer, value: value ?? 1, timestamp: seconds, properties: NO_PROPERTIES };
}

// Character codes the reader below looks for.
const QUOTE = 0x22;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN = 0x7b;
const CLOSE = 0x7d;
const MINUS = 0x2d;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;

/** End of a JSON number without an exponent at `i` (-?(0|[1-9]\d*)(\.\d+)?), or -1. */
function numberEnd(text: string, i: number): number {
  if (text.charCodeAt(i) === MINUS) i++;
  const first = text.charCodeAt(i);
  if (first < ZERO || first > NINE) return -1;
  i++;
  if (first !== ZERO) while (isDigit(text.charCodeAt(i))) i++;
  if (text.charCodeAt(i) === DOT) {
    if (!isDigit(text.charCodeAt(++i))) return -1;
    while (isDigit(text.charCodeAt(i))) i++;
  }
  return i;
}
const isDigit = (c: number) => c >= ZERO && c <= NINE;

const FIELDS = ["id", "event_name", "customer", "value", "timestamp"];
const FIELD_BY_LENGTH: number[] = [];
FIELDS.forEach((name, f) => {
  FIELD_BY_LENGTH[name.length] = f;
});

/** The index in FIELDS of the key of `length` characters at `at`, or -1 (no key shares a length). */
function fieldAt(text: string, at: number, length: number): number {
  const f = FIELD_BY_LENGTH[length];
  if (f === undefined) return -1;
  const name = FIELDS[f] as string;
  for (let k = 0; k < length; k++) if (text.charCodeAt(at + k) !== name.charCodeAt(k)) return -1;
  return f;
}

/**
 * A canonical event read straight from its JSON text, as `JSON.parse` then parseUsageEvent
 * would read it, when the text is the plain shape the ingest API writes: an object of the five
 * canonical fields (a repeated one: the last counts, as in JSON.parse), strings without
 * escapes, numbers without exponents, no whitespace. Undefined for anything else (never
 * throws), which then takes the general path. On the queue consumer's hot path this replaces
 * `JSON.parse` and the copy into a UsageEvent (bench/HISTORY.md); a test holds it to the general
 * path's answer for every input.
 */
export function parsePlainEventJson(text: string, receivedAt: number): UsageEvent | undefined {
  const n = text.length;
  if (n < 2 || text.charCodeAt(0) !== OPEN || text.charCodeAt(n - 1) !== CLOSE) return undefined;
  if (text.indexOf("\\") !== -1) return undefined;
  const values: unknown[] = [undefined, undefined, undefined, undefined, undefined];
  let i = 1;
  for (;;) {
    if (text.charCodeAt(i) !== QUOTE) return undefined;
    const keyEnd = text.indexOf('"', i + 1);
    if (keyEnd < 0 || text.charCodeAt(keyEnd + 1) !== COLON) return undefined;
    const field = fieldAt(text, i + 1, keyEnd - i - 1);
    if (field < 0) return undefined;
    i = keyEnd + 2;
    if (text.charCodeAt(i) === QUOTE) {
      const end = text.indexOf('"', i + 1);
      if (end < 0) return undefined;
      values[field] = text.slice(i + 1, end);
      i = end + 1;
    } else {
      const end = numberEnd(text, i);
      if (end < 0) return undefined;
      values[field] = Number(text.slice(i, end));
      i = end;
    }
    const c = text.charCodeAt(i);
    if (c === CLOSE) {
      if (i !== n - 1) return undefined;
      break;
    }
    if (c !== COMMA) return undefined;
    i++;
  }
  return plainEvent(values[0], values[1], values[2], values[3], values[4], receivedAt, true);
}

/**
 * Parses untrusted JSON into a UsageEvent. `receivedAt` (Unix seconds) is the timestamp used
 * when the event carries none, so that it is fixed once, where the event enters.
 * Throws InvalidEventError with a dead-letter code.
 */
export function parseUsageEvent(input: unknown, receivedAt: number): UsageEvent {
  return parsePlainEvent(input, receivedAt) ?? parseUsageEventWithSchema(input, receivedAt);
}

/** parseUsageEvent through the zod schema alone: every input, and every error message. */
export function parseUsageEventWithSchema(input: unknown, receivedAt: number): UsageEvent {
  // zod drops a "__proto__" record key without a word; refuse it explicitly instead.
  const props = (input as { properties?: unknown } | null)?.properties;
  if (props && typeof props === "object" && Object.hasOwn(props, "__proto__")) {
    throw new InvalidEventError(DeadLetterCode.invalidEvent, "properties: __proto__ is not allowed", "properties");
  }
  const parsed = UsageEventSchema.safeParse(input);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    const { path, message } = first ? describeIssue(first) : { path: "", message: "invalid event" };
    const code = path === "value" ? DeadLetterCode.invalidValue : DeadLetterCode.invalidEvent;
    throw new InvalidEventError(code, message, path || undefined);
  }
  const e = parsed.data;
  // A null-prototype copy: keys from the wire never touch Object.prototype.
  let properties: Record<string, string | number> = NO_PROPERTIES;
  if (e.properties) {
    properties = Object.create(null);
    for (const [k, v] of Object.entries(e.properties)) properties[k] = v;
  }
  return {
    id: e.id,
    event_name: e.event_name,
    customer: e.customer,
    value: e.value,
    timestamp: e.timestamp === undefined ? Math.floor(receivedAt) : toUnixSeconds(e.timestamp),
    properties,
  };
}

/** The canonical JSON form put on the ingest queue: replaying it gives the same event. */
export function toCanonicalJson(e: UsageEvent): Record<string, unknown> {
  const out: Record<string, unknown> = {
    id: e.id,
    event_name: e.event_name,
    customer: e.customer,
    value: e.value,
    timestamp: isoFromSeconds(e.timestamp),
  };
  if (Object.keys(e.properties).length > 0) out.properties = { ...e.properties };
  return out;
}
