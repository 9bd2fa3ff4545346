import { type AggregationRules, continuationBody, planAggregation } from "./aggregation.js";
import type { CancelTarget } from "./cancellation.js";
import type { CustomerResolver } from "./customers.js";
import { type DeadLetter, fromDeadLetter, redrivenLetter, sendDeadLetters } from "./dead-letter.js";
import { DeadLetterCode } from "./errors.js";
import type { Logger } from "./logger.js";
import type { MapOutcome, Source, Trigger } from "./mapping/engine.js";
import { type MeterEvent, sameEntries, type ValueRules } from "./meter-event.js";
import { Metric, type Metrics, noMetrics } from "./metrics.js";
import { deferrable, retryBody, unpack } from "./pack.js";
import {
  createPreparer,
  type Dead,
  type DeadLetterFor,
  inputOf,
  type Ready,
  type Refusal,
  type Retry,
  type Step,
} from "./prepare.js";
import type { OutgoingMessage, QueueSender } from "./queue.js";
import { behindLedger, type LedgerCounts, type LedgerOptions, type ReplayLedger } from "./replay-ledger.js";
import { fromSnsNotification } from "./sns.js";
import type { Canceller } from "./stripe/meter-event-adjustments.js";
import type { MeterEventSubmitter, SubmitOutcome } from "./stripe/submitter.js";
import { CORRELATION_ATTRIBUTE } from "./triggers.js";

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
  /** SQS message attributes (string values). */
  attributes?: Record<string, string>;
  /** Set when replaying a dead letter: its earlier failures carry on in the new one. */
  previousFailure?: {
    attempts: number;
    firstFailedAt: number;
    /** Stripe may have recorded some of its events before (see DeadLetterBody.stripeMayHaveRecorded). */
    stripeMayHaveRecorded?: boolean;
    /** Identifiers of the only meter events of it still to bill (see DeadLetterBody.unbilled). */
    unbilled?: readonly string[];
  };
  /** A dead letter SQS's DLQ redrive put back on the ingest queue (see redrivenLetter), unwrapped. */
  redriven?: boolean;
  /** The message id of the pack (lib/pack.ts) this event came in. */
  pack?: string;
  /** Why this message cannot be read: a pack (lib/pack.ts unpack), an SNS message (lib/sns.ts). */
  unreadable?: string;
  /** An event of a pack: deliveries not counted in receiveCount (lib/pack.ts deferrable). */
  deferred?: number;
}

/** Mapping sources and their customer resolvers (from the mapping config or defineSource). */
export interface Mapping {
  sources: ReadonlyMap<string, Source>;
  resolvers: ReadonlyMap<string, CustomerResolver>;
  /** Source for app messages without the meterhook_source attribute that are not canonical events. */
  defaultSqsSource?: string;
  /** The mapping engine (lib/mapping/engine.ts mapTrigger), passed in so it loads only when used. */
  map: (source: Source, trigger: Trigger) => MapOutcome;
}

export interface ConsumerDeps {
  /** Resolves canonical events' customers. */
  resolver: CustomerResolver;
  mapping?: Mapping;
  submitter: MeterEventSubmitter;
  /** Sends cancellations (lib/cancellation.ts); without it they are dead-lettered `cancel_rejected`. */
  canceller?: Canceller;
  deadLetterQueue: QueueSender;
  logger: Logger;
  /** Deliveries after which a message that still fails transiently is dead-lettered. */
  maxAttempts: number;
  /**
   * Deliveries of a cancellation Stripe refuses before it is dead-lettered `cancel_rejected`
   * (METERHOOK_CANCEL_ATTEMPTS; at most maxAttempts, which it is when unset).
   */
  cancelAttempts?: number;
  /** Below this much time left, no new work is started. */
  stopMarginMs: number;
  /**
   * Customer lookups that need I/O (HTTP, Stripe search) in flight at once per batch
   * (METERHOOK_LOOKUP_CONCURRENCY): a batch of new customers must not flood the app's service or
   * Stripe's search.
   */
  lookupConcurrency: number;
  /** Per-meter value rules (e.g. values must be positive). */
  valueRules?: ValueRules;
  metrics?: Metrics;
  now?: () => number;
  /** Pre-aggregation rules; with them, `requeue` (the ingest queue) takes combined events that failed. */
  aggregation?: AggregationRules;
  /** The ingest queue: combined events that failed, and packs' events to retry (see retryPacks). */
  requeue?: QueueSender;
  /** SQS DelaySeconds of a pack's events to retry: the wait SQS's visibility timeout gives others. */
  packRetryDelaySeconds?: number;
  /**
   * What replays sent and billed (lib/replay-ledger.ts), for the events of former dead letters only (a
   * replay's, or letters SQS's DLQ redrive put back): those billed before are not sent again.
   */
  replayLedger?: ReplayLedger;
  /**
   * How the ledger is used (lib/replay-ledger.ts LedgerOptions); by default as the consumer does:
   * a ledger that cannot be read or marked retries the letters' events, and the clock is `now`.
   */
  ledgerPolicy?: Omit<LedgerOptions, "only">;
}

export interface BatchResult {
  /** Messages to leave on the queue for another try (Lambda's batchItemFailures). */
  failedMessageIds: string[];
  /** Messages whose every meter event is billed. */
  billed: number;
  /** Messages some of whose meter events are billed, dead-lettered with the rest (`unbilled`). */
  billedInPart?: number;
  /** Meter events Stripe already had. */
  duplicates: number;
  /** Triggers no rule matched, acknowledged (the source's `unmatched: ignore`). */
  ignored: number;
  /** The same, by source: a sender that changed its payload shows here, not in the DLQ. */
  ignoredBySource?: Record<string, number>;
  /** Cancellations Stripe took: their meter events no longer count. */
  cancelled: number;
  /** Cancellations Stripe said were made already (by an earlier delivery): done, counted apart. */
  alreadyCancelled: number;
  /** Messages whose combined event failed and went back on the ingest queue as one message. */
  requeued: number;
  retried: number;
  deadLettered: Partial<Record<DeadLetterCode, number>>;
  /** With a replay ledger and former dead letters: what it did (lib/replay-ledger.ts LedgerCounts). */
  ledger?: LedgerCounts;
}

/**
 * The ingest-queue consumer: decode each message (canonical event, raw trigger, or an app
 * message for a source), map it to meter events, resolve customers, validate against Stripe's
 * rules, submit, and decide: billed (deleted), retry (left on the queue), or dead letter (sent to
 * the DLQ with its reason, then deleted). A message is deleted only once all its meter events are
 * billed or the message is safely in the DLQ. A trigger's events are mapped together before any
 * is sent, so a bad mapping bills none of them; one event that cannot be billed does not hold up
 * the others, and its letter names it (`unbilled`) so that replay sends it alone.
 */
export async function processBatch(
  received: readonly QueueMessage[],
  deadline: number,
  deps: ConsumerDeps,
): Promise<BatchResult> {
  const { messages, packed } = unwrap(received);
  // Plain events read the clock once for the batch: preparing them is one synchronous pass.
  const { prepareAll, dead } = createPreparer(deps, deadline, (deps.now ?? Date.now)());
  const pending = prepareAll(messages);
  const steps = pending.some((s) => s instanceof Promise) ? await Promise.all(pending) : (pending as Step[]);

  // One submission per identifier: duplicate deliveries in the same batch share the outcome.
  const unique = new Map<string, number>();
  const toSend: MeterEvent[] = [];
  // Only with pre-aggregation: its rules, and which events must be sent as they are.
  const aggregating = deps.aggregation ? { rules: deps.aggregation, fixed: [] as boolean[] } : undefined;
  // Events not sent since an earlier one of the batch has their identifier (a duplicate
  // delivery, or an app reusing an id): Stripe records the first only, so they are repeats.
  let repeats: Set<MeterEvent> | undefined;
  // Identifiers of former dead letters' events, checked against the replay ledger (none without one).
  // Made only for a batch that holds one: the consumer's usual batches hold none.
  let ledgered: Set<string> | undefined;
  // Likewise one cancellation per identifier.
  const cancelIndex = new Map<string, number>();
  const toCancel: CancelTarget[] = [];
  steps.forEach((s, i) => {
    if (s.kind !== "ready") return;
    if (s.cancels) {
      for (const t of s.cancels) {
        if (cancelIndex.get(t.identifier) === undefined) {
          cancelIndex.set(t.identifier, toCancel.length);
          toCancel.push(t);
        }
      }
    }
    if (deps.replayLedger && messages[i]?.previousFailure) {
      ledgered ??= new Set();
      for (const e of s.events) ledgered.add(e.identifier);
    }
    for (const e of s.events) {
      const first = unique.get(e.identifier);
      if (first === undefined) {
        unique.set(e.identifier, toSend.length);
        toSend.push(e);
        // Only a message's sole event may be combined: a message must not be half requeued
        // inside a combined event and half left on the queue (its redelivery would bill again).
        // For the same reason, never an event of a pack, which may go back whole (retryPacks).
        aggregating?.fixed.push(s.fixed === true || s.events.length > 1 || messages[i]?.pack !== undefined);
      } else {
        repeats ??= new Set();
        repeats.add(e);
        warnIfChanged(toSend[first] as MeterEvent, e, messages[i] as QueueMessage, deps.logger);
      }
    }
  });
  // A former dead letter's event is sent as itself, never combined, where a ledger is kept: the
  // ledger knows events by their own identifiers, and a combined one's changes with its members.
  if (aggregating && ledgered) {
    const { fixed } = aggregating;
    const former = ledgered;
    toSend.forEach((e, j) => {
      if (former.has(e.identifier)) fixed[j] = true;
    });
  }
  // Former dead letters' events go through the replay ledger; the rest as they are.
  const ledger =
    ledgered && deps.replayLedger ? { billedBefore: 0, unrecorded: 0, unavailable: 0, heldSent: 0 } : undefined;
  const submitter =
    ledger && ledgered && deps.replayLedger
      ? behindLedger(deps.submitter, deps.replayLedger, ledger, deps.logger, {
          only: ledgered,
          unreadable: "retry",
          ...(deps.now ? { now: deps.now } : {}),
          ...deps.ledgerPolicy,
        })
      : deps.submitter;
  const outcomes = await submitAll(toSend, aggregating, deadline, deps, submitter);
  // After the batch's events: a cancellation and its event in one batch cancel what was just sent.
  const cancelled = await cancelAll(toCancel, deadline, deps);

  const { result, letters, deferredIds } = settle(
    messages,
    steps,
    (e) => {
      const o = outcomes[unique.get(e.identifier) as number] as Outcome;
      return o.kind === "billed" && repeats?.has(e) ? { ...o, duplicate: true } : o;
    },
    (t) => cancelled[cancelIndex.get(t.identifier) as number] as SubmitOutcome,
    deps,
    dead,
  );
  if (ledger) result.ledger = ledger;
  await writeDeadLetters(letters, messages, result, deps);
  // Events to retry are counted before packs turn them into their packs' ids.
  const retrying = result.failedMessageIds.length;
  if (packed && retrying > 0) {
    result.failedMessageIds = await retryPacks(messages, result.failedMessageIds, deferredIds, deps);
  }
  const metrics = deps.metrics ?? noMetrics;
  metrics.count(Metric.eventsReceived, messages.length);
  metrics.count(Metric.eventsBilled, result.billed);
  if (result.billedInPart) metrics.count(Metric.eventsBilledInPart, result.billedInPart);
  metrics.count(Metric.eventsDuplicate, result.duplicates);
  metrics.count(Metric.eventsIgnored, result.ignored);
  for (const [source, n] of Object.entries(result.ignoredBySource ?? {}))
    metrics.count(Metric.eventsIgnored, n, { source });
  if (result.cancelled > 0) metrics.count(Metric.eventsCancelled, result.cancelled);
  if (result.alreadyCancelled > 0) metrics.count(Metric.eventsAlreadyCancelled, result.alreadyCancelled);
  if (result.requeued > 0) metrics.count(Metric.eventsRequeued, result.requeued);
  metrics.count(Metric.eventsRetried, retrying);
  for (const [code, n] of Object.entries(result.deadLettered)) metrics.count(Metric.eventsDeadLettered, n, { code });
  if (ledger) {
    metrics.count(Metric.replayLedgerHits, ledger.billedBefore);
    metrics.count(Metric.replayLedgerUnrecorded, ledger.unrecorded);
    metrics.count(Metric.replayLedgerUnavailable, ledger.unavailable);
    metrics.count(Metric.replayLedgerHeld, ledger.heldSent);
  }
  return result;
}

/**
 * An event that repeats an earlier one's identifier with another value, customer or time: Stripe
 * will keep only the earlier, as it would a day later. Not dead-lettered (a replay would meet
 * the same identifier); logged, so the app's reuse of an id can be found.
 */
function warnIfChanged(sent: MeterEvent, repeat: MeterEvent, m: QueueMessage, logger: Logger): void {
  if (sent.timestamp === repeat.timestamp && sameEntries(sent.payload, repeat.payload)) return;
  logger.warn("event not sent: an earlier event of its batch has its identifier, with other contents", {
    messageId: m.messageId,
    identifier: repeat.identifier,
    eventName: repeat.event_name,
  });
}

/**
 * The batch's messages, with dead letters put back by SQS's DLQ redrive, SNS notifications and
 * packs unwrapped.
 */
function unwrap(received: readonly QueueMessage[]): { messages: QueueMessage[]; packed: boolean } {
  const messages: QueueMessage[] = [];
  let packed = false;
  for (const m of received) {
    // Dead letters put back by SQS's DLQ redrive go on as replay takes them, history included.
    const letter = redrivenLetter(m);
    const notified = letter ? undefined : fromSnsNotification(m);
    const events = letter || notified ? undefined : unpack(m);
    if (letter) messages.push({ ...fromDeadLetter(m, letter), redriven: true });
    else if (notified) messages.push(notified);
    else if (typeof events === "string") messages.push({ ...m, unreadable: events });
    else if (events) {
      packed = true;
      messages.push(...events);
    } else messages.push(m);
  }
  return { messages, packed };
}

/**
 * What becomes of each message once Stripe has answered: billed, dead-lettered (with the letter
 * to write), retried, or deferred (an event of a pack this delivery never sent).
 */
function settle(
  messages: readonly QueueMessage[],
  steps: readonly Step[],
  outcomeOf: (e: MeterEvent) => Outcome,
  cancelOutcomeOf: (t: CancelTarget) => SubmitOutcome,
  deps: ConsumerDeps,
  dead: DeadLetterFor,
): { result: BatchResult; letters: DeadLetter[]; deferredIds: Set<string> } {
  const result: BatchResult = {
    failedMessageIds: [],
    billed: 0,
    duplicates: 0,
    ignored: 0,
    cancelled: 0,
    alreadyCancelled: 0,
    requeued: 0,
    retried: 0,
    deadLettered: {},
  };
  const letters: DeadLetter[] = [];
  const deferredIds = new Set<string>();
  messages.forEach((m, i) => {
    const prepared = steps[i] as Step;
    if (prepared.kind === "ignored") {
      result.ignored++;
      result.ignoredBySource ??= {};
      result.ignoredBySource[prepared.source] = (result.ignoredBySource[prepared.source] ?? 0) + 1;
      deps.logger.debug("trigger ignored: no rule of its source matched", {
        messageId: m.messageId,
        source: prepared.source,
      });
      return;
    }
    let step: Dead | Retry;
    if (prepared.kind === "ready") {
      let rejected: Extract<SubmitOutcome, { kind: "rejected" }> | undefined;
      let retry: Extract<SubmitOutcome, { kind: "retry" }> | undefined;
      let duplicates = 0;
      let requeued = false;
      // Billed, a duplicate, requeued or an unknown answer: Stripe may hold one of its events
      // (an unsent one too, conservatively: an earlier delivery may have sent it).
      let submitted = false;
      // None of its events was sent in this delivery (see retryPacks).
      let unsent = true;
      // Identifiers of its events Stripe refused (no array for the many messages without one).
      let refusedByStripe: string[] | undefined;
      for (const e of prepared.events) {
        const o = outcomeOf(e);
        if (!(o.kind === "retry" && o.unsent)) unsent = false;
        if (o.kind === "rejected") {
          rejected ??= o;
          if (refusedByStripe) refusedByStripe.push(e.identifier);
          else refusedByStripe = [e.identifier];
        } else {
          submitted = true;
          if (o.kind === "retry") retry ??= o;
          else if (o.kind === "requeued") requeued = true;
          else if (o.duplicate) duplicates++;
        }
      }
      let cancelled = 0;
      let alreadyCancelled = 0;
      // Most messages cancel nothing: no loop (nor array) for them.
      if (prepared.cancels) {
        for (const t of prepared.cancels) {
          const o = cancelStep(m, t, cancelOutcomeOf(t), deps);
          if (!(o.kind === "retry" && o.unsent)) unsent = false;
          if (o.kind === "billed") {
            if (o.duplicate) alreadyCancelled++;
            else cancelled++;
          } else if (o.kind === "rejected") rejected ??= o;
          else retry ??= o;
        }
      }
      const setAside = prepared.refused;
      if (!rejected && !retry && !setAside) {
        if (requeued) result.requeued++;
        else if (prepared.events.length > 0) result.billed++;
        result.duplicates += duplicates;
        result.cancelled += cancelled;
        result.alreadyCancelled += alreadyCancelled;
        return;
      }
      const first = setAside?.[0] ?? (rejected && { code: rejected.code, message: rejected.reason });
      if (first && !retry && submitted && !prepared.cancels) {
        // Some billed, the rest refused: the letter names those not billed, for replay to send.
        const unbilled = [...(setAside ?? []).map((r) => r.identifier), ...(refusedByStripe ?? [])];
        step = billedInPart(m, prepared, first, unbilled, dead);
      } else if (rejected || !retry) {
        const why = rejected ? { code: rejected.code, message: rejected.reason } : (first as Refusal);
        step = dead(m, inputOf(m), why.code, why.message, prepared.eventId, prepared.source, { submitted });
      } else {
        step = {
          kind: "retry",
          reason: retry.reason,
          eventId: prepared.eventId,
          input: inputOf(m),
          source: prepared.source,
          unsent,
        };
      }
    } else {
      step = prepared;
    }
    // An event of a pack that this delivery never sent goes back without spending an attempt
    // (retryPacks), a bounded number of times: oversized batches must not exhaust its attempts.
    // Only through the ingest queue: a pack SQS redelivers counts the delivery whatever we do.
    const deferred =
      step.kind === "retry" &&
      step.unsent === true &&
      m.pack !== undefined &&
      deps.requeue !== undefined &&
      deferrable(m);
    if (deferred) deferredIds.add(m.messageId);
    else if (step.kind === "retry" && m.receiveCount >= deps.maxAttempts) {
      const attempts = m.previousFailure ? m.previousFailure.attempts + 1 : m.receiveCount;
      step = dead(
        m,
        step.input,
        DeadLetterCode.retriesExhausted,
        `still failing after ${attempts} attempts; last error: ${step.reason}`,
        step.eventId,
        step.source,
      );
    }
    if (step.kind === "dead") {
      letters.push(step.letter);
    } else {
      result.retried++;
      result.failedMessageIds.push(m.messageId);
      deps.logger.warn("event will be retried", {
        messageId: m.messageId,
        correlationId: m.attributes?.[CORRELATION_ATTRIBUTE],
        eventId: step.eventId,
        reason: step.reason,
      });
    }
  });

  return { result, letters, deferredIds };
}

/**
 * The dead letter of a trigger billed in part: it names the meter events not billed, which a
 * replay sends alone (its billed ones could be past Stripe's 24-hour duplicate check by then).
 */
function billedInPart(
  m: QueueMessage,
  prepared: Ready,
  first: Pick<Refusal, "code" | "message">,
  unbilled: string[],
  dead: DeadLetterFor,
): Dead {
  const total = prepared.events.length + (prepared.refused?.length ?? 0);
  const message = `${unbilled.length} of the trigger's ${total} meter events not billed (the others are): ${first.message}`;
  return dead(m, inputOf(m), first.code, message, prepared.eventId, prepared.source, {
    unbilled,
    billedInPart: true,
  });
}

/**
 * The batch's cancellations sent (one per identifier), outcomes in order. Without a canceller
 * (a consumer built without Stripe), each is refused.
 */
async function cancelAll(targets: CancelTarget[], deadline: number, deps: ConsumerDeps): Promise<SubmitOutcome[]> {
  if (targets.length === 0) return [];
  if (deps.canceller) return deps.canceller.cancel(targets, deadline);
  return targets.map(() => ({
    kind: "rejected",
    code: DeadLetterCode.stripeRejected,
    reason: "this consumer has no Stripe client to cancel with",
  }));
}

/**
 * What a cancellation's outcome means for its message. Stripe's refusal is retried while
 * deliveries are left, since a cancellation can reach Stripe before its event does; the last
 * one is dead-lettered `cancel_rejected`.
 */
function cancelStep(m: QueueMessage, t: CancelTarget, o: SubmitOutcome, deps: ConsumerDeps): SubmitOutcome {
  if (o.kind !== "rejected" || o.code !== DeadLetterCode.stripeRejected) return o;
  if (m.receiveCount >= Math.min(deps.cancelAttempts ?? deps.maxAttempts, deps.maxAttempts)) {
    return {
      kind: "rejected",
      code: DeadLetterCode.cancelRejected,
      reason: `Stripe would not cancel meter event ${t.identifier} (${t.event_name}): ${o.reason}`,
    };
  }
  return { kind: "retry", reason: `cancellation refused, perhaps before Stripe has the event: ${o.reason}` };
}

/** Writes the batch's dead letters; one that could not be written keeps its message on the queue. */
async function writeDeadLetters(
  letters: readonly DeadLetter[],
  messages: readonly QueueMessage[],
  result: BatchResult,
  deps: ConsumerDeps,
): Promise<void> {
  const unsent = await sendDeadLetters(deps.deadLetterQueue, letters);
  const correlation =
    letters.length > 0 ? new Map(messages.map((m) => [m.messageId, m.attributes?.[CORRELATION_ATTRIBUTE]])) : undefined;
  for (const d of letters) {
    if (unsent.has(d.key)) {
      result.failedMessageIds.push(d.key);
      deps.logger.error("dead-letter send failed; the event will be retried", { messageId: d.key, code: d.code });
    } else {
      result.deadLettered[d.code] = (result.deadLettered[d.code] ?? 0) + 1;
      if (d.billedInPart) result.billedInPart = (result.billedInPart ?? 0) + 1;
      deps.logger.warn("event dead-lettered", {
        messageId: d.key,
        correlationId: correlation?.get(d.key),
        eventId: d.eventId,
        code: d.code,
        reason: d.message,
      });
    }
  }
}

/**
 * The ids SQS must deliver again, for `failed` (messages and events of packs to retry). SQS
 * retries a pack, not its events: when some of a pack's events are done (billed, dead-lettered),
 * those to retry go back on the ingest queue as a smaller pack with the pack's history (retryBody)
 * and the pack is done, so billed events are not sent again and each delivery makes progress.
 * Events this delivery never sent (`deferred`) go back in a pack of their own that does not
 * count the delivery as an attempt. The pack goes back whole when all its events were tried and
 * are to retry, or when a write fails; then its billed events are sent again (Stripe drops
 * repeats) and its dead letters written again.
 */
async function retryPacks(
  messages: readonly QueueMessage[],
  failed: string[],
  deferred: ReadonlySet<string>,
  deps: ConsumerDeps,
): Promise<string[]> {
  const byId = new Map(messages.map((m) => [m.messageId, m]));
  const sizes = new Map<string, number>();
  for (const m of messages) if (m.pack) sizes.set(m.pack, (sizes.get(m.pack) ?? 0) + 1);
  const out = new Set<string>();
  const retry = new Map<string, QueueMessage[]>();
  for (const id of failed) {
    const m = byId.get(id);
    if (!m?.pack) out.add(id);
    else if (retry.has(m.pack)) retry.get(m.pack)?.push(m);
    else retry.set(m.pack, [m]);
  }
  const entries: OutgoingMessage[] = [];
  const owners: string[] = [];
  const queue = (pack: string, events: QueueMessage[], uncounted: boolean) => {
    if (events.length === 0) return;
    entries.push({
      key: String(entries.length),
      body: retryBody(events, uncounted),
      attributes: events[0]?.attributes,
      delaySeconds: deps.packRetryDelaySeconds,
    });
    owners.push(pack);
  };
  for (const [pack, events] of retry) {
    const later = events.filter((e) => deferred.has(e.messageId));
    // A replayed pack (previousFailure) stays on the DLQ whole: a smaller pack on the ingest
    // queue would lose what replay knows of it.
    if (events[0]?.previousFailure || (events.length === sizes.get(pack) && later.length === 0)) {
      out.add(pack);
      continue;
    }
    queue(
      pack,
      events.filter((e) => !deferred.has(e.messageId)),
      false,
    );
    queue(pack, later, true);
  }
  if (entries.length === 0) return [...out];
  const { failed: unsent } = deps.requeue ? await deps.requeue.send(entries) : { failed: entries.map((e) => e.key) };
  for (const key of unsent) {
    const pack = owners[Number(key)] as string;
    if (out.has(pack)) continue;
    out.add(pack);
    deps.logger.error("a pack's events to retry could not be queued; the whole pack stays on the queue", {
      messageId: pack,
    });
  }
  return [...out];
}

/** What became of one event: Stripe's answer, or handed back to the queue inside a combined event. */
type Outcome = SubmitOutcome | { kind: "requeued" };

/**
 * Submits the batch's events, combined first when pre-aggregation is on. A combined event that
 * must be retried goes back on the ingest queue as itself (see lib/aggregation.ts); only when
 * that write fails do its members stay on the queue to be retried one by one.
 */
async function submitAll(
  events: MeterEvent[],
  aggregating: { rules: AggregationRules; fixed: boolean[] } | undefined,
  deadline: number,
  deps: ConsumerDeps,
  submitter: MeterEventSubmitter,
): Promise<Outcome[]> {
  if (events.length === 0) return [];
  if (!aggregating) return submitter.submit(events, deadline);
  const plan = planAggregation(events, aggregating.fixed, aggregating.rules);
  const sent = await submitter.submit(plan.submit, deadline);
  const outcomes: Outcome[] = plan.carriedBy.map((j) => sent[j] as SubmitOutcome);
  const back = [...plan.members].filter(([j]) => sent[j]?.kind === "retry");
  if (back.length === 0) return outcomes;
  const { failed } = deps.requeue
    ? await deps.requeue.send(
        back.map(([j, members]) => ({
          key: String(j),
          body: continuationBody(
            plan.submit[j] as MeterEvent,
            members.map((i) => (events[i] as MeterEvent).identifier),
          ),
        })),
      )
    : { failed: back.map(([j]) => String(j)) };
  const unsent = new Set(failed);
  for (const [j, members] of back) {
    if (unsent.has(String(j))) {
      deps.logger.error("combined event could not be requeued; its members stay on the queue", {
        identifier: plan.submit[j]?.identifier,
        members: members.length,
      });
      continue;
    }
    for (const i of members) outcomes[i] = { kind: "requeued" };
  }
  return outcomes;
}
