/**
 * A trigger as it waits on the ingest queue: what a webhook or EventBridge entry point received,
 * kept raw so that the consumer maps it with the current config, and a fixed config can map a
 * dead-lettered trigger again on replay.
 */
export const TRIGGER_FORMAT = "trigger/1";

export interface TriggerMessage {
  meterhook: typeof TRIGGER_FORMAT;
  kind: "webhook" | "eventbridge";
  /** The source it is for; for EventBridge, chosen by the consumer from `source`/`detail-type`. */
  source?: string;
  receivedAt: string;
  headers: Record<string, string>;
  /** The body exactly as received (UTF-8 text). */
  body: string;
}

/** Headers never kept: credentials, and what only the transport cares about. */
const DROP = new Set([
  "authorization",
  "cookie",
  "x-api-key",
  "proxy-authorization",
  "connection",
  "content-length",
  "host",
]);
const MAX_HEADER_BYTES = 16 * 1024;

/** The headers a trigger keeps: all but credentials, and `secretHeader` (a source's token). */
export function keptHeaders(
  headers: Record<string, string | undefined>,
  secretHeader?: string,
): Record<string, string> {
  const out: Record<string, string> = {};
  const secret = secretHeader?.toLowerCase();
  let size = 0;
  for (const [k, v] of Object.entries(headers)) {
    const name = k.toLowerCase();
    if (v === undefined || DROP.has(name) || name === secret) continue;
    size += name.length + v.length;
    if (size > MAX_HEADER_BYTES) break;
    out[name] = v;
  }
  return out;
}

export function isTriggerMessage(x: unknown): x is TriggerMessage {
  const t = x as TriggerMessage | null;
  return !!t && typeof t === "object" && t.meterhook === TRIGGER_FORMAT && typeof t.body === "string";
}

/** The message attribute that names the source of an app's own SQS message. */
export const SOURCE_ATTRIBUTE = "meterhook_source";

/** The message attribute carrying the id of the request that queued a message (log correlation). */
export const CORRELATION_ATTRIBUTE = "correlation_id";
