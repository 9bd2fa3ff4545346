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
  /** A webhook's query string as it arrived, without `?`; absent when it had none. */
  query?: string;
  /** The body exactly as received (UTF-8 text). */
  body: string;
}

/** Names of credentials, never kept with a trigger or a dead letter (lower case). */
const CREDENTIALS = new Set(["authorization", "cookie", "x-api-key", "proxy-authorization"]);
/** Headers never kept: credentials, and what only the transport cares about. */
const DROP = new Set([...CREDENTIALS, "connection", "content-length", "host"]);

/** A header or message attribute that carries a credential, whatever its case. */
export const isCredential = (name: string): boolean => CREDENTIALS.has(name.toLowerCase());
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

/**
 * A webhook as the HTTP side queues it: the raw body, the query as it arrived, and the headers
 * less credentials and `secretHeader` (a `token` source's secret). `meterhook map` builds the
 * same, so a preview maps what the consumer would be given.
 */
export function webhookTrigger(
  source: string,
  receivedAt: number,
  request: { headers: Record<string, string | undefined>; query?: string; body: string },
  secretHeader?: string,
): TriggerMessage {
  return {
    meterhook: TRIGGER_FORMAT,
    kind: "webhook",
    source,
    receivedAt: new Date(receivedAt).toISOString(),
    headers: keptHeaders(request.headers, secretHeader),
    ...(request.query ? { query: request.query } : {}),
    body: request.body,
  };
}

export function isTriggerMessage(x: unknown): x is TriggerMessage {
  const t = x as TriggerMessage | null;
  return !!t && typeof t === "object" && t.meterhook === TRIGGER_FORMAT && typeof t.body === "string";
}

/** An EventBridge event as EventBridge delivers it (to a function, or as an SQS message's body). */
export function isEventBridgeEvent(x: unknown): boolean {
  const e = x as Record<string, unknown> | null;
  return (
    !!e &&
    typeof e === "object" &&
    typeof e.source === "string" &&
    typeof e["detail-type"] === "string" &&
    "detail" in e
  );
}

/** The message attribute that names the source of an app's own SQS message. */
export const SOURCE_ATTRIBUTE = "meterhook_source";

/** The message attribute carrying the id of the request that queued a message (log correlation). */
export const CORRELATION_ATTRIBUTE = "correlation_id";

const FORM_TYPE = /^\s*application\/x-www-form-urlencoded\s*(;|$)/i;

/**
 * A trigger's body as expressions see it: its JSON, parsed; else, for a webhook sent as
 * `application/x-www-form-urlencoded` (as Slack and Twilio send them), its fields as an object of
 * strings, a repeated field as a list; else its text. JSON comes first because `curl -d` labels
 * JSON a form. A byte order mark before JSON is ignored, as RFC 8259 allows: some senders write one.
 */
export function triggerBody(t: Pick<TriggerMessage, "headers" | "body">): unknown {
  try {
    return JSON.parse(withoutBom(t.body));
  } catch {
    return FORM_TYPE.test(t.headers["content-type"] ?? "") ? formFields(t.body) : t.body;
  }
}

/** The text without a leading byte order mark. */
export const withoutBom = (text: string): string => (text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);

/** A webhook's query string as expressions see it: its fields, as a form's are. */
export const queryFields = (t: Pick<TriggerMessage, "query">): Record<string, string | string[]> =>
  formFields(t.query ?? "");

/** A form's fields (`a=1&b=2`): each a string, a repeated one a list of its values in order. */
export function formFields(text: string): Record<string, string | string[]> {
  const fields = new Map<string, string | string[]>();
  for (const [k, v] of new URLSearchParams(text)) {
    const had = fields.get(k);
    fields.set(k, had === undefined ? v : [had, v].flat());
  }
  // fromEntries defines own properties, so a field named __proto__ stays a field.
  return Object.fromEntries(fields);
}
