import type { DeadLetterCode } from "./errors.js";
import type { QueueSender } from "./queue.js";
import { redact } from "./redact.js";

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
   * Stripe may have recorded some of its meter events: one of them was billed, or an attempt
   * got no clear answer (always so for retries_exhausted). Stripe drops a repeated identifier
   * for 24 hours only, so replay holds such a letter once that has passed (lib/replay.ts).
   */
  stripeMayHaveRecorded?: true;
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
  /** The app's event id, when known: also set as a message attribute for filtering. */
  eventId?: string;
  stripeMayHaveRecorded?: true;
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
    ...(d.stripeMayHaveRecorded ? { stripeMayHaveRecorded: true as const } : {}),
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
