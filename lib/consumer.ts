import type { CustomerResolver } from "./customers.js";
import { type DeadLetter, sendDeadLetters } from "./dead-letter.js";
import { DeadLetterCode, MeterhookError } from "./errors.js";
import type { Logger } from "./logger.js";
import { type MeterEvent, toMeterEvent } from "./meter-event.js";
import { Metric, type Metrics, noMetrics } from "./metrics.js";
import type { QueueSender } from "./queue.js";
import type { MeterEventSubmitter, SubmitOutcome } from "./stripe/submitter.js";
import { parseUsageEvent } from "./usage-event.js";

/** One message from the ingest queue, as the consumer needs it (no Lambda types). */
export interface QueueMessage {
  messageId: string;
  body: string;
  /** How many times SQS has delivered it, this delivery included. */
  receiveCount: number;
  /** Epoch ms when it was first sent to the queue: the default event time. */
  sentAt: number;
  /** Epoch ms of the first delivery. */
  firstReceivedAt: number;
  /** Set when replaying a dead letter: its earlier failures carry on in the new one. */
  previousFailure?: { attempts: number; firstFailedAt: number };
}

export interface ConsumerDeps {
  resolver: CustomerResolver;
  submitter: MeterEventSubmitter;
  deadLetterQueue: QueueSender;
  logger: Logger;
  /** Deliveries after which a message that still fails transiently is dead-lettered. */
  maxAttempts: number;
  /** Below this much time left, no new work is started. */
  stopMarginMs: number;
  metrics?: Metrics;
  now?: () => number;
}

export interface BatchResult {
  /** Messages to leave on the queue for another try (Lambda's batchItemFailures). */
  failedMessageIds: string[];
  billed: number;
  duplicates: number;
  retried: number;
  deadLettered: Partial<Record<DeadLetterCode, number>>;
}

type Step =
  | { kind: "ready"; event: MeterEvent; eventId: string; input: unknown }
  | { kind: "dead"; letter: DeadLetter }
  | { kind: "retry"; reason: string; eventId?: string; input: unknown };

const PRINTABLE = /^[\x20-\x7e]{1,255}$/;

/**
 * The ingest-queue consumer: parse, resolve the customer, validate against Stripe's rules,
 * submit, and decide for each message: billed (deleted), retry (left on the queue), or dead
 * letter (sent to the DLQ with its reason, then deleted). A message is deleted only once its
 * event is billed or safely in the DLQ.
 */
export async function processBatch(
  messages: readonly QueueMessage[],
  deadline: number,
  deps: ConsumerDeps,
): Promise<BatchResult> {
  const now = deps.now ?? Date.now;
  const customers = new Map<string, Promise<string>>();
  const resolve = (c: string) => {
    let p = customers.get(c);
    if (!p) {
      p = deps.resolver.resolve(c);
      customers.set(c, p);
    }
    return p;
  };

  const dead = (
    m: QueueMessage,
    input: unknown,
    code: DeadLetterCode,
    message: string,
    eventId?: string,
  ): Extract<Step, { kind: "dead" }> => {
    const t = now();
    const prev = m.previousFailure;
    return {
      kind: "dead",
      letter: {
        key: m.messageId,
        event: input,
        code,
        message,
        attempts: prev ? prev.attempts + 1 : m.receiveCount,
        firstFailedAt: prev?.firstFailedAt ?? (code === DeadLetterCode.retriesExhausted ? m.firstReceivedAt : t),
        lastFailedAt: t,
        receivedAt: m.sentAt,
        eventId: eventId && PRINTABLE.test(eventId) ? eventId : undefined,
      },
    };
  };

  const prepare = async (m: QueueMessage): Promise<Step> => {
    let input: unknown;
    try {
      input = JSON.parse(m.body);
    } catch {
      return dead(m, m.body, DeadLetterCode.invalidMessage, "message body is not valid JSON");
    }
    const rawId = (input as { id?: unknown } | null)?.id;
    const eventId = typeof rawId === "string" ? rawId : undefined;
    if (deadline - now() < deps.stopMarginMs) {
      return { kind: "retry", reason: "not started: the invocation was about to time out", eventId, input };
    }
    try {
      const usage = parseUsageEvent(input, m.sentAt / 1000);
      const customer = await resolve(usage.customer);
      return { kind: "ready", event: toMeterEvent(usage, customer, now() / 1000), eventId: usage.id, input };
    } catch (err) {
      if (err instanceof MeterhookError && !err.retryable) {
        return dead(m, input, err.code as DeadLetterCode, err.message, eventId);
      }
      const reason = err instanceof Error ? err.message : String(err);
      return { kind: "retry", reason, eventId, input };
    }
  };

  const steps = await Promise.all(messages.map(prepare));

  // One submission per identifier: a duplicate delivery in the same batch shares the outcome.
  const unique = new Map<string, number>();
  const toSend: MeterEvent[] = [];
  steps.forEach((s) => {
    if (s.kind === "ready" && !unique.has(s.event.identifier)) {
      unique.set(s.event.identifier, toSend.length);
      toSend.push(s.event);
    }
  });
  const outcomes: SubmitOutcome[] = toSend.length > 0 ? await deps.submitter.submit(toSend, deadline) : [];

  const result: BatchResult = { failedMessageIds: [], billed: 0, duplicates: 0, retried: 0, deadLettered: {} };
  const letters: DeadLetter[] = [];
  messages.forEach((m, i) => {
    const prepared = steps[i] as Step;
    let step: Exclude<Step, { kind: "ready" }>;
    if (prepared.kind === "ready") {
      const outcome = outcomes[unique.get(prepared.event.identifier) as number] as SubmitOutcome;
      if (outcome.kind === "billed") {
        result.billed++;
        if (outcome.duplicate) result.duplicates++;
        return;
      }
      step =
        outcome.kind === "rejected"
          ? dead(m, prepared.input, outcome.code, outcome.reason, prepared.eventId)
          : { kind: "retry", reason: outcome.reason, eventId: prepared.eventId, input: prepared.input };
    } else {
      step = prepared;
    }
    if (step.kind === "retry" && m.receiveCount >= deps.maxAttempts) {
      step = dead(
        m,
        step.input,
        DeadLetterCode.retriesExhausted,
        `still failing after ${m.previousFailure ? m.previousFailure.attempts + 1 : m.receiveCount} attempts; last error: ${step.reason}`,
        step.eventId,
      );
    }
    if (step.kind === "dead") {
      letters.push(step.letter);
    } else {
      result.retried++;
      result.failedMessageIds.push(m.messageId);
      deps.logger.warn("event will be retried", { messageId: m.messageId, eventId: step.eventId, reason: step.reason });
    }
  });

  // A dead letter that could not be written keeps its message on the queue: nothing is lost.
  const unsent = await sendDeadLetters(deps.deadLetterQueue, letters);
  for (const d of letters) {
    if (unsent.has(d.key)) {
      result.failedMessageIds.push(d.key);
      deps.logger.error("dead-letter send failed; message left on the queue", { messageId: d.key, code: d.code });
    } else {
      result.deadLettered[d.code] = (result.deadLettered[d.code] ?? 0) + 1;
      deps.logger.warn("event dead-lettered", {
        messageId: d.key,
        eventId: d.eventId,
        code: d.code,
        reason: d.message,
      });
    }
  }
  const metrics = deps.metrics ?? noMetrics;
  metrics.count(Metric.eventsReceived, messages.length);
  metrics.count(Metric.eventsBilled, result.billed);
  metrics.count(Metric.eventsDuplicate, result.duplicates);
  metrics.count(Metric.eventsRetried, result.failedMessageIds.length);
  for (const [code, n] of Object.entries(result.deadLettered)) metrics.count(Metric.eventsDeadLettered, n, { code });
  return result;
}
