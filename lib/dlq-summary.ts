import { isDeadLetterBody } from "./dead-letter.js";
import type { QueueReader } from "./queue.js";
import { isTriggerMessage } from "./triggers.js";

/**
 * What the DLQ holds, read without changing it: the letters by code and by source, the oldest,
 * and a few of each code. `meterhook dlq` prints it, so that an operator sees what a fix would
 * replay (`replay --code`) before running one.
 */
export interface DlqSummary {
  examined: number;
  /** Letters by their error code; `no_envelope` for a raw message the redrive policy moved. */
  byCode: Record<string, number>;
  /** Letters by the mapping source of their trigger or message; `events` for canonical events. */
  bySource: Record<string, number>;
  /** The earliest `firstFailedAt` of the letters read. */
  oldestFirstFailedAt?: string;
  /**
   * When the oldest letter read was sent to the queue (SQS's SentTimestamp; for a raw message
   * the redrive policy moved, when it was sent to the ingest queue), and when the DLQ's
   * retention deletes it: a letter not replayed by then is lost.
   */
  oldestWrittenAt?: string;
  firstExpiresAt?: string;
  /** Up to SAMPLES letters of each code: their message id, event id and reason. */
  samples: Record<string, Array<{ messageId: string; eventId?: string; message: string }>>;
}

const SAMPLES = 3;
/** The DLQ's MessageRetentionPeriod in infra/queues.yml (14 days, SQS's most). */
export const DLQ_RETENTION_SECONDS = 1_209_600;
/** A raw message the redrive policy moved: no envelope, so no code. */
const NO_ENVELOPE = "no_envelope";

export async function summarizeDeadLetters(
  reader: QueueReader,
  options: { limit: number; visibilityTimeoutSeconds?: number },
): Promise<DlqSummary> {
  const summary: DlqSummary = { examined: 0, byCode: {}, bySource: {}, samples: {} };
  const held: string[] = [];
  let oldestSentAt = Number.POSITIVE_INFINITY;
  try {
    while (summary.examined < options.limit) {
      const received = await reader.receive(options.limit - summary.examined, options.visibilityTimeoutSeconds ?? 60);
      if (received.length === 0) break;
      for (const m of received) {
        held.push(m.receiptHandle);
        summary.examined++;
        oldestSentAt = Math.min(oldestSentAt, m.sentAt);
        let body: unknown;
        try {
          body = JSON.parse(m.body);
        } catch {
          body = undefined;
        }
        const letter = isDeadLetterBody(body) ? body : undefined;
        const code = letter?.error.code ?? m.attributes?.code ?? NO_ENVELOPE;
        summary.byCode[code] = (summary.byCode[code] ?? 0) + 1;
        const source = sourceOf(letter?.event ?? body, letter?.source ?? m.attributes?.meterhook_source);
        summary.bySource[source] = (summary.bySource[source] ?? 0) + 1;
        if (letter && (!summary.oldestFirstFailedAt || letter.firstFailedAt < summary.oldestFirstFailedAt))
          summary.oldestFirstFailedAt = letter.firstFailedAt;
        const samples = summary.samples[code] ?? [];
        summary.samples[code] = samples;
        if (samples.length < SAMPLES) {
          const eventId = m.attributes?.event_id;
          samples.push({
            messageId: m.messageId,
            ...(eventId ? { eventId } : {}),
            message: letter?.error.message ?? "moved by the ingest queue's redrive policy",
          });
        }
      }
    }
  } finally {
    // Visible again at once: reading them changed nothing.
    if (held.length > 0) await reader.release(held);
  }
  if (summary.examined > 0) {
    summary.oldestWrittenAt = new Date(oldestSentAt).toISOString();
    summary.firstExpiresAt = new Date(oldestSentAt + DLQ_RETENTION_SECONDS * 1000).toISOString();
  }
  return summary;
}

/** The source a letter's event was for: a trigger's, an app message's attribute, else the events API's. */
function sourceOf(event: unknown, attribute: string | undefined): string {
  if (isTriggerMessage(event)) return event.source ?? event.kind;
  return attribute ?? "events";
}
