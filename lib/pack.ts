import type { QueueMessage } from "./consumer.js";
import { SOURCE_ATTRIBUTE } from "./triggers.js";

/**
 * Several canonical events in one ingest-queue message (METERHOOK_EVENTS_PER_MESSAGE): SQS bills
 * per request and Lambda's runtime parses each record, so one message per event cost most of a
 * million events' price. Each event is kept as the JSON text a one-event message would carry, so
 * the consumer turns a pack back into such messages and handles them exactly as before.
 */
export const PACK_FORMAT = "pack/1";
/** How every pack starts: the consumer recognises one by this, without parsing other messages. */
export const PACK_START = `{"meterhook":"${PACK_FORMAT}","events":[`;

/**
 * A pack's body from its events already written as JSON strings (quoted and escaped, as
 * packBodies measures them), then its history's integers: the same text as JSON.stringify of
 * { meterhook, events, ...history }, without escaping each event a second time.
 */
function packJson(quotedEvents: readonly string[], history?: Record<string, number>): string {
  let tail = "";
  for (const key in history) tail += `,${JSON.stringify(key)}:${history[key]}`;
  return `${PACK_START}${quotedEvents.join(",")}]${tail}}`;
}

/**
 * SQS bills each 64 KiB of a request as one request: a pack stays inside one. (Lambda's event
 * source mapping fills a batch only up to the 6 MB invocation payload, so big packs make smaller
 * batches, never a failed one.)
 */
export const MAX_PACK_BYTES = 48 * 1024;

/**
 * Message bodies for `events` (each a canonical event's JSON text): packs of at most `perMessage`
 * events and MAX_PACK_BYTES, in order. An event alone, or too big to share, goes as itself.
 */
export function packBodies(events: readonly string[], perMessage: number): string[] {
  if (perMessage <= 1) return [...events];
  const out: string[] = [];
  // The events of the pack being filled, as themselves and as JSON strings inside it.
  let current: string[] = [];
  let quoted: string[] = [];
  let bytes = PACK_START.length + 2;
  const flush = () => {
    if (current.length === 1) out.push(current[0] as string);
    else if (current.length > 1) out.push(packJson(quoted));
    current = [];
    quoted = [];
    bytes = PACK_START.length + 2;
  };
  for (const e of events) {
    const q = JSON.stringify(e);
    // The event's size inside the pack: quotes, escapes and a comma included.
    const size = Buffer.byteLength(q) + 1;
    if (current.length === perMessage || (current.length > 0 && bytes + size > MAX_PACK_BYTES)) flush();
    current.push(e);
    quoted.push(q);
    bytes += size;
  }
  flush();
  return out;
}

/** The most events a pack may hold: a consumer batch of 100 packs is then at most 10,000 events. */
export const MAX_PACK_EVENTS = 100;

/**
 * A pack's delivery history, when it holds the events of an earlier pack that must be retried
 * (retryBody): deliveries before this message, and when that earlier pack was first delivered
 * and first queued. The consumer adds them to this message's own, so maxAttempts and the
 * dedupe-window rules count from the first delivery.
 */
interface Carried {
  attempts?: unknown;
  firstReceivedAt?: unknown;
  sentAt?: unknown;
  /** Deliveries not counted in attempts: none of these events was sent in them (see deferrable). */
  deferred?: unknown;
}

/**
 * How many deliveries that sent none of an event may go uncounted: an invocation that runs out
 * of time must not spend the attempts of events it never got to, but a misconfiguration that
 * never gets to any must still end, as retries_exhausted, instead of cycling forever.
 */
export const MAX_DEFERRED = 100;
export const deferrable = (m: QueueMessage) => (m.deferred ?? 0) < MAX_DEFERRED;
const isCount = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x) && x >= 0;

/**
 * The one-event messages a pack carries, each with the pack's delivery history, so that retry
 * counts and the dedupe-window rules hold for every event; undefined when `m` is not a pack,
 * the reason when it is one that cannot be read. Not a pack: a body that does not start as one,
 * and an app's message for a source (its own format).
 */
export function unpack(m: QueueMessage): QueueMessage[] | string | undefined {
  if (!m.body.startsWith(PACK_START) || m.attributes?.[SOURCE_ATTRIBUTE]) return undefined;
  const invalid = `not a valid ${PACK_FORMAT} message: events must be 1 to ${MAX_PACK_EVENTS} strings, each an event's JSON text`;
  let x: { events?: unknown } & Carried;
  try {
    x = JSON.parse(m.body);
  } catch {
    return `${PACK_FORMAT} message body is not valid JSON`;
  }
  const events = x.events;
  if (!Array.isArray(events) || events.length === 0 || events.length > MAX_PACK_EVENTS) return invalid;
  const carried = x.attempts !== undefined || x.firstReceivedAt !== undefined || x.sentAt !== undefined;
  if (
    (carried && !(isCount(x.attempts) && isCount(x.firstReceivedAt) && isCount(x.sentAt))) ||
    (x.deferred !== undefined && !isCount(x.deferred))
  ) {
    return `not a valid ${PACK_FORMAT} message: attempts, firstReceivedAt, sentAt and deferred must be non-negative integers`;
  }
  const deferred = x.deferred as number | undefined;
  const receiveCount = carried ? (x.attempts as number) + m.receiveCount : m.receiveCount;
  const firstReceivedAt = carried ? (x.firstReceivedAt as number) : m.firstReceivedAt;
  const sentAt = carried ? (x.sentAt as number) : m.sentAt;
  const out: QueueMessage[] = new Array(events.length);
  for (let i = 0; i < events.length; i++) {
    const body: unknown = events[i];
    if (typeof body !== "string") return invalid;
    // Written out, not spread: a spread copy of the pack per event was most of unpack's time.
    out[i] = {
      messageId: `${m.messageId}#${i}`,
      body,
      receiveCount,
      sentAt,
      firstReceivedAt,
      attributes: m.attributes,
      previousFailure: m.previousFailure,
      pack: m.messageId,
      deferred,
    };
  }
  return out;
}

/** A parsed message that is a pack by its content but not by its start (other key order, spaces). */
export const isMisshapenPack = (m: QueueMessage, parsed: unknown) =>
  !m.attributes?.[SOURCE_ATTRIBUTE] && (parsed as { meterhook?: unknown } | null)?.meterhook === PACK_FORMAT;

/**
 * A pack of the events of one pack that must be retried (unpack's messages), carrying its
 * history: only those go back to the queue, so that its billed events are not sent again and
 * each delivery makes progress, as it does for one-event messages.
 */
export function retryBody(events: readonly QueueMessage[], uncounted = false): string {
  const first = events[0] as QueueMessage;
  const deferred = (first.deferred ?? 0) + (uncounted ? 1 : 0);
  return packJson(
    events.map((e) => JSON.stringify(e.body)),
    {
      // This delivery is an attempt unless none of these events was sent in it.
      attempts: first.receiveCount - (uncounted ? 1 : 0),
      firstReceivedAt: first.firstReceivedAt,
      sentAt: first.sentAt,
      ...(deferred > 0 ? { deferred } : {}),
    },
  );
}
