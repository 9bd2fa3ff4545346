import { type ConsumerDeps, processBatch, type QueueMessage } from "./consumer.js";
import type { DeadLetterBody } from "./dead-letter.js";
import type { OutgoingMessage, QueueReader, QueueSender } from "./queue.js";
import type { MeterEventSubmitter } from "./stripe/submitter.js";
import { SOURCE_ATTRIBUTE, TRIGGER_FORMAT, type TriggerMessage } from "./triggers.js";

export interface ReplayOptions {
  /** At most this many dead letters are taken off the queue. */
  limit: number;
  /** Parse, resolve and validate only: nothing is sent to Stripe, nothing deleted or re-queued. */
  dryRun: boolean;
  /** How long received messages stay hidden from other readers while being replayed. */
  visibilityTimeoutSeconds?: number;
  now?: () => number;
}

export interface ReplayReport {
  dryRun: boolean;
  examined: number;
  /** Billed now (or, in a dry run, would be submitted). */
  billed: number;
  /** Still not billable: back on the DLQ with the updated reason, by code. */
  deadLettered: Record<string, number>;
  /** Could not be settled (e.g. the DLQ write failed): left on the DLQ as they were. */
  leftUntouched: number;
}

function isEventBridgeEvent(x: unknown): boolean {
  const e = x as Record<string, unknown> | null;
  return (
    !!e &&
    typeof e === "object" &&
    typeof e.source === "string" &&
    typeof e["detail-type"] === "string" &&
    "detail" in e
  );
}

function isEnvelope(x: unknown): x is DeadLetterBody {
  const e = x as DeadLetterBody | null;
  return !!e && typeof e === "object" && "event" in e && typeof e.error?.code === "string";
}

/** A dead letter back in the shape of an ingest message, its history carried along. */
function toQueueMessage(
  m: { messageId: string; body: string; sentAt: number; receiveCount: number },
  maxAttempts: number,
): QueueMessage {
  let parsed: unknown;
  try {
    parsed = JSON.parse(m.body);
  } catch {
    parsed = undefined;
  }
  const base = { messageId: m.messageId, receiveCount: maxAttempts, firstReceivedAt: m.sentAt };
  if (isEnvelope(parsed)) {
    return {
      ...base,
      body: typeof parsed.event === "string" ? parsed.event : JSON.stringify(parsed.event),
      sentAt: parsed.receivedAt ? Date.parse(parsed.receivedAt) : m.sentAt,
      previousFailure: { attempts: parsed.attempts, firstFailedAt: Date.parse(parsed.firstFailedAt) },
      ...(parsed.source ? { attributes: { [SOURCE_ATTRIBUTE]: parsed.source } } : {}),
    };
  }
  const previousFailure = { attempts: m.receiveCount, firstFailedAt: m.sentAt };
  if (isEventBridgeEvent(parsed)) {
    // Put here by EventBridge after it failed to deliver: queue it as the eventBridge function would.
    const trigger: TriggerMessage = {
      meterhook: TRIGGER_FORMAT,
      kind: "eventbridge",
      receivedAt: new Date(m.sentAt).toISOString(),
      headers: {},
      body: m.body,
    };
    return { ...base, body: JSON.stringify(trigger), sentAt: m.sentAt, previousFailure };
  }
  // Moved by the redrive policy: the raw ingest message, no envelope.
  return { ...base, body: m.body, sentAt: m.sentAt, previousFailure };
}

const dryRunSubmitter: MeterEventSubmitter = {
  api: "v2",
  submit: async (events) => events.map(() => ({ kind: "billed", duplicate: false })),
};

/**
 * DLQ replay: takes dead letters off the DLQ, runs them through the current pipeline (mapping,
 * validation, Stripe), deletes those that are now billed, and replaces the rest with a dead
 * letter carrying the updated reason and attempt count. Identifiers are unchanged, so an event
 * that was in fact billed before is recognised by Stripe and not billed again.
 */
export async function replayDeadLetters(
  reader: QueueReader,
  deps: ConsumerDeps,
  options: ReplayOptions,
): Promise<ReplayReport> {
  const now = options.now ?? Date.now;
  const started = now();
  const report: ReplayReport = { dryRun: options.dryRun, examined: 0, billed: 0, deadLettered: {}, leftUntouched: 0 };
  const captured: OutgoingMessage[] = [];
  const capture: QueueSender = {
    send: async (messages) => {
      captured.push(...messages);
      return { failed: [] };
    },
  };
  const runDeps: ConsumerDeps = options.dryRun
    ? { ...deps, submitter: dryRunSubmitter, deadLetterQueue: capture }
    : deps;
  const held: string[] = [];

  while (report.examined < options.limit) {
    const received = await reader.receive(options.limit - report.examined, options.visibilityTimeoutSeconds ?? 120);
    if (received.length === 0) break;
    // Letters this replay wrote itself come round again on the same queue: leave them be.
    const mine = received.filter((m) => m.sentAt >= started);
    const todo = received.filter((m) => m.sentAt < started);
    await reader.release(mine.map((m) => m.receiptHandle));
    if (todo.length === 0) break;
    report.examined += todo.length;

    const result = await processBatch(
      todo.map((m) => toQueueMessage(m, deps.maxAttempts)),
      now() + 10 * 60_000,
      runDeps,
    );
    report.billed += result.billed;
    for (const [code, n] of Object.entries(result.deadLettered))
      report.deadLettered[code] = (report.deadLettered[code] ?? 0) + n;
    const keep = new Set(result.failedMessageIds);
    report.leftUntouched += keep.size;
    if (options.dryRun) held.push(...todo.map((m) => m.receiptHandle));
    else await reader.delete(todo.filter((m) => !keep.has(m.messageId)).map((m) => m.receiptHandle));
  }
  // A dry run changes nothing: what it looked at is visible again at once.
  if (held.length > 0) await reader.release(held);
  return report;
}
