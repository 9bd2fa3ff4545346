import { z } from "zod";
import { DeadLetterCode, InvalidEventError } from "./errors.js";

/** Property keys that would let a payload rewrite an object prototype once copied. */
const FORBIDDEN_KEYS = new Set(["__proto__", "constructor", "prototype"]);
const MAX_PROPERTIES = 50;
// Control characters make ids and names unreadable in the dashboard and in logs.
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

const Text = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .refine((s) => !CONTROL_CHARS.test(s), "must not contain control characters");

const PropertyKeySchema = Text(100).refine(
  (k) => !FORBIDDEN_KEYS.has(k) && !/[[\]]/.test(k),
  "property names must not be __proto__, constructor, prototype or contain brackets",
);

/** The canonical usage event an app sends to `POST /v1/events` or the ingest queue. */
export const UsageEventSchema = z.strictObject({
  id: Text(255),
  event_name: Text(100),
  customer: Text(255),
  value: z.number().default(1),
  timestamp: z.union([z.string(), z.number()]).optional(),
  properties: z
    .record(PropertyKeySchema, z.union([z.string().max(100), z.number()]))
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

const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i;

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
  const ms = ISO_8601.test(ts) ? Date.parse(ts) : Number.NaN;
  if (Number.isNaN(ms)) {
    throw new InvalidEventError(
      DeadLetterCode.invalidEvent,
      "timestamp must be ISO-8601 with a time zone (2026-11-26T12:00:00Z) or Unix seconds",
      "timestamp",
    );
  }
  return Math.floor(ms / 1000);
}

function describeIssue(issue: z.core.$ZodIssue): { path: string; message: string } {
  const path = issue.path.map(String).join(".");
  if (issue.code === "unrecognized_keys") {
    return { path, message: `unknown field(s): ${issue.keys.join(", ")}` };
  }
  const message =
    issue.code === "invalid_type" && /received undefined/.test(issue.message) ? "is required" : issue.message;
  return { path, message: path ? `${path}: ${message}` : message };
}

/**
 * Parses untrusted JSON into a UsageEvent. `receivedAt` (Unix seconds) is the timestamp used
 * when the event carries none, so that it is fixed once, where the event enters.
 * Throws InvalidEventError with a dead-letter code.
 */
export function parseUsageEvent(input: unknown, receivedAt: number): UsageEvent {
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
  const properties: Record<string, string | number> = Object.create(null);
  for (const [k, v] of Object.entries(e.properties ?? {})) properties[k] = v;
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
    timestamp: new Date(e.timestamp * 1000).toISOString(),
  };
  if (Object.keys(e.properties).length > 0) out.properties = { ...e.properties };
  return out;
}
