import { randomUUID } from "node:crypto";
import { type ConsumerDeps, processBatch, type QueueMessage } from "./consumer.js";
import { fromDeadLetter, isDeadLetterBody, pastDedupeWindow } from "./dead-letter.js";
import type { OutgoingMessage, QueueReader, QueueSender } from "./queue.js";
import { type ReplayLedger, readOnly } from "./replay-ledger.js";
import { billEverything } from "./stripe/submitter.js";
import { isEventBridgeEvent, TRIGGER_FORMAT, type TriggerMessage } from "./triggers.js";

export interface ReplayOptions {
  /** At most this many dead letters are taken off the queue. */
  limit: number;
  /** Parse, resolve and validate only: nothing is sent to Stripe, nothing deleted or re-queued. */
  dryRun: boolean;
  /**
   * Resend letters Stripe may have recorded even when first received more than DEDUPE_WINDOW_MS
   * ago, where Stripe would bill them again: only after checking in Stripe that it did not.
   */
  afterDedupeWindow?: boolean;
  /**
   * Replay only letters whose `code` attribute is one of these (after a customer mapping is
   * added, `customer_not_found`); the others taken are put back as they were. Unset: all.
   */
  codes?: readonly string[];
  /**
   * What earlier replays billed (lib/replay-ledger.ts), instead of the consumer's: their events
   * are not sent again, and those this one bills are recorded. Without either, only Stripe's
   * 24-hour duplicate check stands between two letters of one event and a second bill.
   */
  ledger?: ReplayLedger;
  /** How long received messages stay hidden from other readers while being replayed. */
  visibilityTimeoutSeconds?: number;
  /**
   * Epoch ms by which the replay must have returned (a Lambda's timeout): no letter is taken
   * within TAKE_MARGIN_MS of it, and each batch's work ends BATCH_MARGIN_MS before it.
   */
  deadline?: number;
  now?: () => number;
}

/** The message attribute naming the replay run that wrote a dead letter. */
export const REPLAY_ATTRIBUTE = "meterhook_replay";

/** Left for a last batch of letters: its checks, submission, new dead letters and deletes. */
const TAKE_MARGIN_MS = 30_000;
/** Left after a batch's Stripe work for writing its dead letters and deleting what it settled. */
const BATCH_MARGIN_MS = 10_000;
/** A batch's own budget when the replay has no deadline. */
const BATCH_BUDGET_MS = 10 * 60_000;

export interface ReplayReport {
  dryRun: boolean;
  examined: number;
  /** Billed now (or, in a dry run, would be submitted). */
  billed: number;
  /** Cancellations Stripe took now or said it had (or, in a dry run, would be sent): done. */
  cancelled: number;
  /** Still not billable: back on the DLQ with the updated reason, by code. */
  deadLettered: Record<string, number>;
  /** Could not be settled (e.g. the DLQ write failed): left on the DLQ as they were. */
  leftUntouched: number;
  /**
   * Left on the DLQ as they were: Stripe may have recorded them, and it was first received more
   * than DEDUPE_WINDOW_MS ago, so resending could bill twice (see afterDedupeWindow).
   */
  pastDedupeWindow: number;
  /** With `codes`: letters of other codes taken and put back as they were (they count to the limit). */
  notSelected?: number;
  /**
   * With a ledger: meter events not sent because an earlier replay billed them (their letters
   * count in billed, and are deleted).
   */
  billedBefore?: number;
  /** With a ledger: meter events billed now that it could not record (each logged as an error). */
  unrecorded?: number;
  /** Set when the replay stopped taking letters because its deadline was near: replay again for the rest. */
  stoppedForTime?: true;
}

/**
 * A message from the DLQ in the shape of an ingest message: a dead letter (fromDeadLetter), an
 * event EventBridge could not deliver, or a raw message the redrive policy moved.
 */
function toQueueMessage(
  m: { messageId: string; body: string; sentAt: number; receiveCount: number; attributes?: Record<string, string> },
  maxAttempts: number,
): QueueMessage {
  let parsed: unknown;
  try {
    parsed = JSON.parse(m.body);
  } catch {
    parsed = undefined;
  }
  const base = { messageId: m.messageId, receiveCount: maxAttempts, firstReceivedAt: m.sentAt };
  if (isDeadLetterBody(parsed)) return fromDeadLetter({ ...m, receiveCount: maxAttempts }, parsed);
  if (isEventBridgeEvent(parsed)) {
    // Put here by EventBridge after it failed to deliver: queue it as the eventBridge function
    // would. It never reached meterhook, so never Stripe.
    const trigger: TriggerMessage = {
      meterhook: TRIGGER_FORMAT,
      kind: "eventbridge",
      receivedAt: new Date(m.sentAt).toISOString(),
      headers: {},
      body: m.body,
    };
    const previousFailure = { attempts: m.receiveCount, firstFailedAt: m.sentAt };
    return { ...base, body: JSON.stringify(trigger), sentAt: m.sentAt, previousFailure };
  }
  // Moved by the redrive policy: the raw ingest message, no envelope, after deliveries that
  // each may have reached Stripe. A standard queue keeps a message's enqueue time when it moves
  // it to the DLQ (SQS Developer Guide, "dead-letter queue retention").
  // Its attributes moved with it: an app message's meterhook_source still names its source.
  const previousFailure = { attempts: m.receiveCount, firstFailedAt: m.sentAt, stripeMayHaveRecorded: true };
  return {
    ...base,
    body: m.body,
    sentAt: m.sentAt,
    previousFailure,
    ...(m.attributes ? { attributes: m.attributes } : {}),
  };
}

/**
 * DLQ replay: takes dead letters off the DLQ, runs them through the current pipeline (mapping,
 * validation, Stripe), deletes those that are now billed, and replaces the rest with a dead
 * letter carrying the updated reason and attempt count. Identifiers are unchanged, so an event
 * that was in fact billed before is recognised by Stripe and not billed again, for as long as
 * Stripe checks for repeats: letters Stripe may have recorded that are older than that are
 * left as they are (pastDedupeWindow) unless options.afterDedupeWindow.
 */
export async function replayDeadLetters(
  reader: QueueReader,
  deps: ConsumerDeps,
  options: ReplayOptions,
): Promise<ReplayReport> {
  const now = options.now ?? Date.now;
  const ledger = options.ledger ?? deps.replayLedger;
  const report: ReplayReport = {
    dryRun: options.dryRun,
    examined: 0,
    billed: 0,
    cancelled: 0,
    deadLettered: {},
    leftUntouched: 0,
    pastDedupeWindow: 0,
    ...(options.codes ? { notSelected: 0 } : {}),
    ...(ledger ? { billedBefore: 0, unrecorded: 0 } : {}),
  };
  const codes = options.codes ? new Set(options.codes) : undefined;
  /** Letters taken off the queue so far: those replayed, and those of other codes put back. */
  const taken = () => report.examined + (report.notSelected ?? 0);
  const captured: OutgoingMessage[] = [];
  const capture: QueueSender = {
    send: async (messages) => {
      captured.push(...messages);
      return { failed: [] };
    },
  };
  // The letters this run writes carry its id, so that it knows them when they come round on
  // the queue it reads (by the clock, SQS's and this machine's would have to agree).
  const run = randomUUID();
  const tagging: QueueSender = {
    send: (messages) =>
      deps.deadLetterQueue.send(
        messages.map((m) => ({ ...m, attributes: { ...m.attributes, [REPLAY_ATTRIBUTE]: run } })),
      ),
  };
  const runDeps: ConsumerDeps = {
    ...deps,
    submitter: options.dryRun ? (deps.submitter.dryRun?.() ?? billEverything) : deps.submitter,
    // A dry run reads the ledger and writes nothing; a replay stops where it cannot read it.
    ...(ledger
      ? {
          replayLedger: options.dryRun ? readOnly(ledger) : ledger,
          // The replay's clock, as for the letters it holds: the ledger's 23 hours are the same rule.
          ledgerPolicy: {
            unreadable: "stop" as const,
            ...(options.afterDedupeWindow ? { afterDedupeWindow: true } : {}),
            ...(options.now ? { now: options.now } : {}),
          },
        }
      : {}),
    ...(options.dryRun
      ? { canceller: deps.canceller?.dryRun(), deadLetterQueue: capture }
      : { deadLetterQueue: tagging }),
  };
  /** Received and left as they are: hidden until the replay ends, then visible again at once. */
  const held: string[] = [];

  const deadline = options.deadline ?? Number.POSITIVE_INFINITY;
  try {
    while (taken() < options.limit) {
      if (now() > deadline - TAKE_MARGIN_MS) {
        report.stoppedForTime = true;
        break;
      }
      const received = await reader.receive(options.limit - taken(), options.visibilityTimeoutSeconds ?? 120);
      if (received.length === 0) break;
      // Letters this run wrote come round on the same queue: left for the next replay, and kept
      // hidden meanwhile. Released at once, they came round again and again (SQS keeps no order),
      // and a receive of nothing else ended the replay with older letters not yet examined.
      const mine = received.filter((m) => m.attributes?.[REPLAY_ATTRIBUTE] === run);
      const others = received.filter((m) => m.attributes?.[REPLAY_ATTRIBUTE] !== run);
      held.push(...mine.map((m) => m.receiptHandle));
      // Letters of codes not asked for are put back as they were (a raw message the redrive
      // policy moved has no code); hidden until the replay ends, so they are not taken again.
      const todo = codes ? [] : others;
      if (codes) {
        for (const m of others) {
          if (codes.has(m.attributes?.code ?? "")) todo.push(m);
          else {
            report.notSelected = (report.notSelected ?? 0) + 1;
            held.push(m.receiptHandle);
          }
        }
      }
      if (todo.length === 0) continue;
      report.examined += todo.length;

      const messages: QueueMessage[] = [];
      const resend: typeof todo = [];
      for (const m of todo) {
        const message = toQueueMessage(m, deps.maxAttempts);
        if (options.afterDedupeWindow || !pastDedupeWindow(message, now())) {
          messages.push(message);
          resend.push(m);
          continue;
        }
        // Left as it is, hidden until the replay ends so that it is not taken again.
        report.pastDedupeWindow++;
        held.push(m.receiptHandle);
        deps.logger.warn("dead letter held: Stripe may have recorded it and no longer dedupes it", {
          messageId: m.messageId,
          firstReceivedAt: new Date(message.sentAt).toISOString(),
        });
      }
      if (messages.length === 0) continue;
      let result: Awaited<ReturnType<typeof processBatch>>;
      try {
        result = await processBatch(messages, Math.min(now() + BATCH_BUDGET_MS, deadline - BATCH_MARGIN_MS), runDeps);
      } catch (err) {
        // Nothing of the batch was settled (the ledger could not be read before anything was
        // sent): its letters go back as they were, and the replay stops with the error.
        held.push(...resend.map((m) => m.receiptHandle));
        throw err;
      }
      report.billed += result.billed;
      if (result.ledger) {
        report.billedBefore = (report.billedBefore ?? 0) + result.ledger.billedBefore;
        report.unrecorded = (report.unrecorded ?? 0) + result.ledger.unrecorded;
      }
      report.cancelled += result.cancelled + result.alreadyCancelled;
      for (const [code, n] of Object.entries(result.deadLettered))
        report.deadLettered[code] = (report.deadLettered[code] ?? 0) + n;
      const keep = new Set(result.failedMessageIds);
      report.leftUntouched += keep.size;
      if (options.dryRun) held.push(...resend.map((m) => m.receiptHandle));
      else await reader.delete(resend.filter((m) => !keep.has(m.messageId)).map((m) => m.receiptHandle));
    }
  } finally {
    // What was held (a dry run's letters: it changes nothing; those past the window; this run's
    // own; a batch the replay stopped on) is visible again at once. If that fails, it is when
    // their visibility timeout ends.
    if (held.length > 0) {
      await reader.release(held).catch((err: unknown) =>
        deps.logger.warn(
          "making held dead letters visible again failed; they will be once their visibility timeout ends",
          {
            reason: err instanceof Error ? err.message : String(err),
          },
        ),
      );
    }
  }
  // Also in the logs: an invocation nobody waits on (an asynchronous one) discards its answer.
  if (report.stoppedForTime)
    deps.logger.warn("replay stopped near its deadline; replay again for the rest", { ...report });
  else deps.logger.info("replay done", { ...report });
  return report;
}
