import { isCancelMessage } from "./cancellation.js";
import type { QueueMessage } from "./consumer.js";
import { DeadLetterCode } from "./errors.js";
import { outsideDedupeWindow } from "./meter-event.js";
import type { QueueSender } from "./queue.js";
import { redact } from "./redact.js";
import { CORRELATION_ATTRIBUTE, isCredential, SOURCE_ATTRIBUTE } from "./triggers.js";

/** The JSON body of every dead-letter message (a documented contract; see README). */
export interface DeadLetterBody {
  /** The event as it arrived: parsed JSON, or the raw text when it was not JSON. */
  event: unknown;
  error: { code: DeadLetterCode; message: string };
  attempts: number;
  firstFailedAt: string;
  lastFailedAt: string;
  /** When meterhook first received the event: its time when the event carries none (used by replay). */
  receivedAt?: string;
  /** The mapping source an app's own SQS message was for (its meterhook_source attribute). */
  source?: string;
  /**
   * An app's own SQS message's message attributes (string ones, less credentials): its rules may
   * read them as `headers`, so replay gives them back.
   */
  messageAttributes?: Record<string, string>;
  /**
   * Stripe may have recorded some of its meter events: one of them was billed, or an attempt
   * got no clear answer (always so for retries_exhausted). Stripe drops a repeated identifier
   * for 24 hours only, so replay holds such a letter once that has passed (lib/replay.ts).
   */
  stripeMayHaveRecorded?: true;
  /**
   * A trigger billed in part: the identifiers of its meter events not billed (their customer not
   * found, a value Stripe refused). Its other events are billed: replay sends only these.
   */
  unbilled?: string[];
}

export interface DeadLetter {
  key: string;
  event: unknown;
  code: DeadLetterCode;
  message: string;
  attempts: number;
  firstFailedAt: number;
  lastFailedAt: number;
  receivedAt?: number;
  source?: string;
  attributes?: Record<string, string>;
  /** The app's event id, when known: also set as a message attribute for filtering. */
  eventId?: string;
  stripeMayHaveRecorded?: true;
  unbilled?: readonly string[];
  /** Some of its trigger's meter events were billed in this delivery (counted, not written). */
  billedInPart?: true;
}

export function deadLetterBody(d: DeadLetter): DeadLetterBody {
  return {
    event: d.event,
    error: { code: d.code, message: redact(d.message) },
    attempts: d.attempts,
    firstFailedAt: new Date(d.firstFailedAt).toISOString(),
    lastFailedAt: new Date(d.lastFailedAt).toISOString(),
    ...(d.receivedAt !== undefined ? { receivedAt: new Date(d.receivedAt).toISOString() } : {}),
    ...(d.source !== undefined ? { source: d.source } : {}),
    ...(d.attributes !== undefined ? { messageAttributes: d.attributes } : {}),
    ...(d.stripeMayHaveRecorded ? { stripeMayHaveRecorded: true as const } : {}),
    ...(d.unbilled ? { unbilled: [...d.unbilled] } : {}),
  };
}

/** Sends dead letters; answers the keys that could not be sent (their messages must be retried). */
export async function sendDeadLetters(queue: QueueSender, letters: readonly DeadLetter[]): Promise<Set<string>> {
  if (letters.length === 0) return new Set();
  const { failed } = await queue.send(
    letters.map((d) => ({
      key: d.key,
      body: JSON.stringify(deadLetterBody(d)),
      attributes: { code: d.code, ...(d.eventId ? { event_id: d.eventId.slice(0, 255) } : {}) },
    })),
  );
  return new Set(failed);
}

/** The body of a dead letter, wherever it turns up again (replay, or put back by SQS's DLQ redrive). */
export function isDeadLetterBody(x: unknown): x is DeadLetterBody {
  const e = x as DeadLetterBody | null;
  return !!e && typeof e === "object" && "event" in e && typeof e.error?.code === "string";
}

const CODES = new Set<string>(Object.values(DeadLetterCode));
/** Start of every dead letter's body as deadLetterBody writes it. */
const LETTER_START = '{"event":';

/**
 * The message attributes a dead letter keeps: an app message's own, for its rules (`headers`),
 * less credentials, meterhook's correlation id and the source (a field of its own); undefined
 * when none is left.
 */
export function letterAttributes(attributes: Record<string, string> | undefined): Record<string, string> | undefined {
  if (!attributes) return undefined;
  // Names as SQS gave them: they are case-sensitive, and rules read them so (headers.Kind).
  const kept = Object.entries(attributes).filter(
    ([name]) => name !== CORRELATION_ATTRIBUTE && name !== SOURCE_ATTRIBUTE && !isCredential(name),
  );
  return kept.length > 0 ? Object.fromEntries(kept) : undefined;
}

/**
 * A message on the ingest queue that is one of meterhook's dead letters, put back by SQS's DLQ
 * redrive (the console's "Start DLQ redrive") instead of `npm run replay`: the strict shape,
 * so that an app's own message is not taken for one.
 */
export function redrivenLetter(m: QueueMessage): DeadLetterBody | undefined {
  if (m.previousFailure || m.attributes?.[SOURCE_ATTRIBUTE] || !m.body.startsWith(LETTER_START)) return undefined;
  let x: unknown;
  try {
    x = JSON.parse(m.body);
  } catch {
    return undefined;
  }
  if (!isDeadLetterBody(x)) return undefined;
  return CODES.has(x.error.code) &&
    typeof x.attempts === "number" &&
    typeof x.firstFailedAt === "string" &&
    typeof x.lastFailedAt === "string"
    ? x
    : undefined;
}

/**
 * A dead letter back in the shape of an ingest message, its history carried along. Its sentAt
 * is when meterhook first received the event, so no attempt to bill it can be older.
 */
export function fromDeadLetter(
  m: { messageId: string; sentAt: number; receiveCount: number },
  letter: DeadLetterBody,
): QueueMessage {
  const firstFailedAt = Date.parse(letter.firstFailedAt);
  // The app message's attributes as it had them: its own, and its source.
  const attributes = {
    ...(isAttributes(letter.messageAttributes) ? letter.messageAttributes : {}),
    ...(letter.source ? { [SOURCE_ATTRIBUTE]: letter.source } : {}),
  };
  return {
    messageId: m.messageId,
    receiveCount: m.receiveCount,
    firstReceivedAt: m.sentAt,
    body: typeof letter.event === "string" ? letter.event : JSON.stringify(letter.event),
    // Letters written before receivedAt existed: their first failure, when that is earlier.
    sentAt: letter.receivedAt
      ? Date.parse(letter.receivedAt)
      : Number.isNaN(firstFailedAt)
        ? m.sentAt
        : Math.min(m.sentAt, firstFailedAt),
    previousFailure: {
      attempts: letter.attempts,
      firstFailedAt,
      // Letters written before the flag existed: retries_exhausted is the code that implies it.
      // One whose `unbilled` is out of shape (edited by hand) no longer says which of its events
      // were billed: sent whole, some could be billed again.
      // A cancellation never bills: Stripe's duplicate window does not concern it.
      stripeMayHaveRecorded:
        !isCancelMessage(letter.event) &&
        (letter.stripeMayHaveRecorded === true ||
          letter.error.code === DeadLetterCode.retriesExhausted ||
          (letter.unbilled !== undefined && !isUnbilled(letter.unbilled))),
      ...(isUnbilled(letter.unbilled) ? { unbilled: letter.unbilled } : {}),
    },
    ...(Object.keys(attributes).length > 0 ? { attributes } : {}),
  };
}

const isAttributes = (x: unknown): x is Record<string, string> =>
  !!x && typeof x === "object" && !Array.isArray(x) && Object.values(x).every((v) => typeof v === "string");

const isUnbilled = (x: unknown): x is string[] =>
  Array.isArray(x) && x.length > 0 && x.every((i) => typeof i === "string");

/**
 * The reason of a `dedupe_window_passed` letter: `what` happened too long ago for Stripe to drop
 * a resend, and what the operator does about it.
 */
export const pastDedupeWindowReason = (what: string) =>
  `${what}; Stripe may have recorded it and drops a repeated identifier for 24 h only: check Stripe before replaying it with --after-dedupe-window`;

/**
 * Stripe may hold some of a former dead letter's events, and it was first received more than
 * DEDUPE_WINDOW_MS before `now`: Stripe would no longer see a resend as a repeat.
 */
export const pastDedupeWindow = (m: QueueMessage, now: number) =>
  m.previousFailure?.stripeMayHaveRecorded === true && outsideDedupeWindow(m.sentAt, now);
