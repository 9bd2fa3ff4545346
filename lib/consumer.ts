import {
  type AggregationRules,
  continuationBody,
  isContinuation,
  parseContinuation,
  planAggregation,
} from "./aggregation.js";
import type { CustomerResolver } from "./customers.js";
import { type DeadLetter, fromDeadLetter, pastDedupeWindow, redrivenLetter, sendDeadLetters } from "./dead-letter.js";
import { DeadLetterCode, MeterhookError } from "./errors.js";
import type { Logger } from "./logger.js";
import type { MapOutcome, Source, Trigger } from "./mapping/engine.js";
import { type MeterEvent, outsideDedupeWindow, toMeterEvent, type ValueRules } from "./meter-event.js";
import { Metric, type Metrics, noMetrics } from "./metrics.js";
import { deferrable, isMisshapenPack, PACK_FORMAT, PACK_START, retryBody, unpack } from "./pack.js";
import type { OutgoingMessage, QueueSender } from "./queue.js";
import type { MeterEventSubmitter, SubmitOutcome } from "./stripe/submitter.js";
import { CORRELATION_ATTRIBUTE, isTriggerMessage, SOURCE_ATTRIBUTE } from "./triggers.js";
import { parsePlainEventJson, parseUsageEvent, type UsageEvent } from "./usage-event.js";

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
  };
  /** A dead letter SQS's DLQ redrive put back on the ingest queue (see redrivenLetter), unwrapped. */
  redriven?: boolean;
  /** The message id of the pack (lib/pack.ts) this event came in. */
  pack?: string;
  /** Why this message, a pack, cannot be read (lib/pack.ts unpack). */
  unreadablePack?: string;
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
  deadLetterQueue: QueueSender;
  logger: Logger;
  /** Deliveries after which a message that still fails transiently is dead-lettered. */
  maxAttempts: number;
  /** Below this much time left, no new work is started. */
  stopMarginMs: number;
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
}

export interface BatchResult {
  /** Messages to leave on the queue for another try (Lambda's batchItemFailures). */
  failedMessageIds: string[];
  /** Messages whose every meter event is billed. */
  billed: number;
  /** Meter events Stripe already had. */
  duplicates: number;
  /** Triggers no rule matched, acknowledged (the source's `unmatched: ignore`). */
  ignored: number;
  /** Messages whose combined event failed and went back on the ingest queue as one message. */
  requeued: number;
  retried: number;
  deadLettered: Partial<Record<DeadLetterCode, number>>;
}

/** Ready to submit. The parsed message is not kept while Stripe answers (see inputOf). */
type Ready = {
  kind: "ready";
  events: MeterEvent[];
  eventId?: string;
  source?: string;
  /** A combined event back from the queue: sent as it is, never combined again. */
  fixed?: boolean;
};
type Dead = { kind: "dead"; letter: DeadLetter };
/** `unsent`: none of its events was sent to Stripe in this delivery (the invocation ran out of time). */
type Retry = { kind: "retry"; reason: string; eventId?: string; input: unknown; source?: string; unsent?: boolean };
type Step = Ready | Dead | Retry | { kind: "ignored" };
const IGNORED: Step = { kind: "ignored" };

/**
 * A submitted message's body as the dead letter carries it, parsed again: keeping every parsed
 * body alive while Stripe answers cost more in garbage collection than parsing the few that fail.
 */
function inputOf(m: QueueMessage): unknown {
  try {
    return JSON.parse(m.body);
  } catch {
    return m.body;
  }
}

const PRINTABLE = /^[\x20-\x7e]{1,255}$/;
const NOT_STARTED = "not started: the invocation was about to time out";
const looksCanonical = (x: unknown) =>
  !!x && typeof x === "object" && "id" in x && "event_name" in x && "customer" in x;

/**
 * The ingest-queue consumer: decode each message (canonical event, raw trigger, or an app
 * message for a source), map it to meter events, resolve customers, validate against Stripe's
 * rules, submit, and decide: billed (deleted), retry (left on the queue), or dead letter (sent to
 * the DLQ with its reason, then deleted). A message is deleted only once all its meter events are
 * billed or the message is safely in the DLQ. A trigger's events are checked together before any
 * is sent, so a bad mapping bills none of them.
 */
export async function processBatch(
  received: readonly QueueMessage[],
  deadline: number,
  deps: ConsumerDeps,
): Promise<BatchResult> {
  const messages: QueueMessage[] = [];
  let packed = false;
  for (const m of received) {
    // Dead letters put back by SQS's DLQ redrive go on as replay takes them, history included.
    const letter = redrivenLetter(m);
    const events = letter ? undefined : unpack(m);
    if (letter) messages.push({ ...fromDeadLetter(m, letter), redriven: true });
    else if (typeof events === "string") messages.push({ ...m, unreadablePack: events });
    else if (events) {
      packed = true;
      messages.push(...events);
    } else messages.push(m);
  }
  const now = deps.now ?? Date.now;
  const metrics = deps.metrics ?? noMetrics;
  const customers = new Map<string, Promise<string>>();
  const resolve = (resolver: CustomerResolver, scope: string, c: string) => {
    const key = `${scope}\u0000${c}`;
    let p = customers.get(key);
    if (!p) {
      p = resolver.resolve(c);
      customers.set(key, p);
    }
    return p;
  };

  const dead = (
    m: QueueMessage,
    input: unknown,
    code: DeadLetterCode,
    message: string,
    eventId?: string,
    source?: string,
    /** Some of the message's events got an answer from Stripe other than a refusal. */
    submitted = false,
  ): Dead => {
    const t = now();
    const prev = m.previousFailure;
    // A delivery before the last may have reached Stripe, whatever the last one's error.
    const mayHaveRecorded = submitted || code === DeadLetterCode.retriesExhausted || prev?.stripeMayHaveRecorded;
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
        source,
        ...(mayHaveRecorded ? { stripeMayHaveRecorded: true } : {}),
      },
    };
  };

  /** Turns a message into usage events: canonical, or mapped by a source. */
  const decode = (
    m: QueueMessage,
    input: unknown,
  ): { events: UsageEvent[]; source?: Source; resolver: CustomerResolver } | "ignored" | Dead => {
    const mapping = deps.mapping;
    let trigger: Trigger | undefined;
    let sourceName: string | undefined;
    if (isTriggerMessage(input)) {
      let body: unknown = input.body;
      try {
        body = JSON.parse(input.body);
      } catch {
        // not JSON: expressions see the text
      }
      sourceName = input.source;
      if (!sourceName && input.kind === "eventbridge" && mapping) sourceName = matchEventBridge(mapping, body);
      trigger = {
        source: sourceName ?? "",
        headers: input.headers,
        body,
        receivedAt: Date.parse(input.receivedAt) || m.sentAt,
      };
    } else {
      sourceName = m.attributes?.[SOURCE_ATTRIBUTE] ?? (looksCanonical(input) ? undefined : mapping?.defaultSqsSource);
      if (sourceName) trigger = { source: sourceName, headers: m.attributes ?? {}, body: input, receivedAt: m.sentAt };
    }
    if (!trigger) return { events: [parseUsageEvent(input, m.sentAt / 1000)], resolver: deps.resolver };
    const source = sourceName ? mapping?.sources.get(sourceName) : undefined;
    if (!source) {
      return dead(
        m,
        input,
        DeadLetterCode.unknownSource,
        sourceName ? `no source "${sourceName}" in the mapping config` : "no source matches this trigger",
      );
    }
    const outcome = (mapping as Mapping).map(source, trigger);
    if (outcome.kind === "unmatched") {
      return source.unmatched === "ignore"
        ? "ignored"
        : dead(
            m,
            input,
            DeadLetterCode.noMatchingRule,
            `no rule of source "${source.name}" matches`,
            undefined,
            source.name,
          );
    }
    return { events: outcome.events, source, resolver: mapping?.resolvers.get(source.name) ?? deps.resolver };
  };

  /** A message turned into usage events, waiting for their customers. */
  interface Decoded {
    m: QueueMessage;
    /** The parsed body; undefined when read without parsing (parsePlainEventJson), see inputOf. */
    input?: unknown;
    usage: UsageEvent[];
    resolver: CustomerResolver;
    scope: string;
    eventId?: string;
    source?: string;
  }

  /** Where a message goes when decoding, resolving or validating threw. */
  const failed = (
    m: QueueMessage,
    input: unknown,
    err: unknown,
    resolver: CustomerResolver,
    eventId?: string,
    source?: string,
  ): Dead | Retry => {
    if (
      err instanceof MeterhookError &&
      err.code === DeadLetterCode.customerNotFound &&
      m.receiveCount < resolver.notFoundAttempts
    ) {
      return {
        kind: "retry",
        reason: `${err.message} (yet: attempt ${m.receiveCount} of ${resolver.notFoundAttempts})`,
        eventId,
        input,
        source,
      };
    }
    if (err instanceof MeterhookError && !err.retryable)
      return dead(m, input, err.code as DeadLetterCode, err.message, eventId, source);
    const reason = err instanceof Error ? err.message : String(err);
    return { kind: "retry", reason, eventId, input, source };
  };

  /** A message that is not a plain canonical event (see preparePlain). */
  const decodeMessage = (m: QueueMessage): Decoded | Step => {
    let input: unknown;
    try {
      input = JSON.parse(m.body);
    } catch {
      // An app message for a named source may be plain text; anything else must be JSON.
      if (!m.attributes?.[SOURCE_ATTRIBUTE])
        return dead(m, m.body, DeadLetterCode.invalidMessage, "message body is not valid JSON");
      input = m.body;
    }
    if (isContinuation(input)) {
      // Queued after its combined event was sent without a clear answer, so no later than that.
      if (pastWindow(m, m.sentAt)) {
        const what = `a combined event sent ${hoursSince(m.sentAt)} h ago without a clear answer`;
        return lateRedelivery(m, input, what);
      }
      try {
        const event = parseContinuation(input, now() / 1000);
        return { kind: "ready", events: [event], eventId: event.identifier, fixed: true };
      } catch (err) {
        return failed(m, input, err, deps.resolver);
      }
    }
    // unpack knows a pack by how it starts, without parsing; one laid out otherwise ends here.
    if (isMisshapenPack(m, input)) {
      return dead(
        m,
        input,
        DeadLetterCode.invalidMessage,
        `a ${PACK_FORMAT} message must start exactly with ${PACK_START}`,
      );
    }
    const rawId = (input as { id?: unknown } | null)?.id;
    let eventId = typeof rawId === "string" ? rawId : undefined;
    const sourceHint = isTriggerMessage(input) ? input.source : m.attributes?.[SOURCE_ATTRIBUTE];
    if (deadline - now() < deps.stopMarginMs) {
      return {
        kind: "retry",
        reason: NOT_STARTED,
        eventId,
        input,
        source: sourceHint,
        unsent: true,
      };
    }
    try {
      const decoded = decode(m, input);
      if (decoded === "ignored") return IGNORED;
      if ("kind" in decoded) return decoded;
      if (decoded.events.length === 1) eventId = decoded.events[0]?.id;
      return {
        m,
        input,
        usage: decoded.events,
        resolver: decoded.resolver,
        scope: decoded.source?.name ?? "",
        eventId,
        source: decoded.source?.name ?? sourceHint,
      };
    } catch (err) {
      return failed(m, input, err, deps.resolver, eventId, sourceHint);
    }
  };

  /** Meter events from usage events, customers resolved from `from` on through lookups. */
  const resolveRest = async (d: Decoded, events: MeterEvent[], from: number): Promise<Step> => {
    try {
      for (let i = from; i < d.usage.length; i++) {
        const usage = d.usage[i] as UsageEvent;
        const customer = await resolve(d.resolver, d.scope, usage.customer);
        events.push(toMeterEvent(usage, customer, now() / 1000, deps.valueRules));
      }
      return { kind: "ready", events, eventId: d.eventId, source: d.source };
    } catch (err) {
      return failed(d.m, d.input ?? inputOf(d.m), err, d.resolver, d.eventId, d.source);
    }
  };

  /**
   * A canonical event in the plain shape (most messages), read without JSON.parse and, with a
   * customer known without I/O, made into its meter event without a Decoded record.
   */
  const preparePlain = (m: QueueMessage, plain: UsageEvent): Step | Promise<Step> => {
    if (deadline - startedAt < deps.stopMarginMs) {
      return { kind: "retry", reason: NOT_STARTED, eventId: plain.id, input: inputOf(m), unsent: true };
    }
    try {
      // known() throws for a customer it knows has no Stripe id.
      const customer = deps.resolver.known(plain.customer);
      if (customer === undefined) {
        return resolveRest({ m, usage: [plain], resolver: deps.resolver, scope: "", eventId: plain.id }, [], 0);
      }
      const event = toMeterEvent(plain, customer, startedAt / 1000, deps.valueRules);
      return { kind: "ready", events: [event], eventId: plain.id, source: undefined };
    } catch (err) {
      return failed(m, inputOf(m), err, deps.resolver, plain.id);
    }
  };

  /**
   * A message Stripe may have recorded more than DEDUPE_WINDOW_MS ago (delivered again that long
   * after its first delivery, a combined event requeued that long ago, a dead letter put back
   * by SQS's redrive): Stripe no longer drops the repeat, so it is dead-lettered rather than
   * sent, and replay holds it until an operator has checked Stripe.
   */
  const lateRedelivery = (m: QueueMessage, input: unknown, what: string): Dead => {
    const id = (input as { id?: unknown } | null)?.id;
    return dead(
      m,
      input,
      DeadLetterCode.dedupeWindowPassed,
      `${what}; Stripe may have recorded it and drops a repeated identifier for 24 h only: check Stripe before replaying it with --after-dedupe-window`,
      typeof id === "string" ? id : undefined,
      m.attributes?.[SOURCE_ATTRIBUTE],
      true,
    );
  };
  const hoursSince = (t: number) => Math.floor((startedAt - t) / 3_600_000);
  /** Past DEDUPE_WINDOW_MS since `t` (or `t` unknown); never for a replayed letter, whose replay decides. */
  const pastWindow = (m: QueueMessage, t: number) => !m.previousFailure && outsideDedupeWindow(t, startedAt);

  /**
   * Synchronous while customers are known without I/O (a table, a cache hit), which is the
   * common case: a promise per message was a tenth of the consumer's CPU.
   */
  const prepare = (m: QueueMessage): Step | Promise<Step> => {
    if (m.unreadablePack) return dead(m, inputOf(m), DeadLetterCode.invalidMessage, m.unreadablePack);
    if (m.redriven && pastDedupeWindow(m, startedAt)) {
      const what = `put back on the ingest queue by SQS's DLQ redrive ${hoursSince(m.sentAt)} h after meterhook first received it`;
      return lateRedelivery(m, inputOf(m), what);
    }
    if (m.receiveCount > 1 && pastWindow(m, m.firstReceivedAt)) {
      const what = `delivered again ${hoursSince(m.firstReceivedAt)} h after its first delivery`;
      return lateRedelivery(m, inputOf(m), what);
    }
    const plain = m.attributes?.[SOURCE_ATTRIBUTE] ? undefined : parsePlainEventJson(m.body, m.sentAt / 1000);
    if (plain) return preparePlain(m, plain);
    const d = decodeMessage(m);
    if ("kind" in d) return d;
    const events: MeterEvent[] = [];
    try {
      const nowSeconds = now() / 1000;
      for (let i = 0; i < d.usage.length; i++) {
        const usage = d.usage[i] as UsageEvent;
        const customer = d.resolver.known(usage.customer);
        if (customer === undefined) return resolveRest(d, events, i);
        events.push(toMeterEvent(usage, customer, nowSeconds, deps.valueRules));
      }
    } catch (err) {
      return failed(m, d.input ?? inputOf(m), err, d.resolver, d.eventId, d.source);
    }
    return { kind: "ready", events, eventId: d.eventId, source: d.source };
  };

  // Plain events read the clock once for the batch: preparing them is one synchronous pass.
  const startedAt = now();
  const pending = messages.map(prepare);
  const steps = pending.some((s) => s instanceof Promise) ? await Promise.all(pending) : (pending as Step[]);

  // One submission per identifier: duplicate deliveries in the same batch share the outcome.
  const unique = new Map<string, number>();
  const toSend: MeterEvent[] = [];
  // Only with pre-aggregation: its rules, and which events must be sent as they are.
  const aggregating = deps.aggregation ? { rules: deps.aggregation, fixed: [] as boolean[] } : undefined;
  steps.forEach((s, i) => {
    if (s.kind !== "ready") return;
    for (const e of s.events) {
      if (unique.get(e.identifier) === undefined) {
        unique.set(e.identifier, toSend.length);
        toSend.push(e);
        // Only a message's sole event may be combined: a message must not be half requeued
        // inside a combined event and half left on the queue (its redelivery would bill again).
        // For the same reason, never an event of a pack, which may go back whole (retryPacks).
        aggregating?.fixed.push(s.fixed === true || s.events.length > 1 || messages[i]?.pack !== undefined);
      }
    }
  });
  const outcomes = await submitAll(toSend, aggregating, deadline, deps);

  const result: BatchResult = {
    failedMessageIds: [],
    billed: 0,
    duplicates: 0,
    ignored: 0,
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
      for (const e of prepared.events) {
        const o = outcomes[unique.get(e.identifier) as number] as Outcome;
        if (!(o.kind === "retry" && o.unsent)) unsent = false;
        if (o.kind === "rejected") rejected ??= o;
        else {
          submitted = true;
          if (o.kind === "retry") retry ??= o;
          else if (o.kind === "requeued") requeued = true;
          else if (o.duplicate) duplicates++;
        }
      }
      if (!rejected && !retry) {
        if (requeued) result.requeued++;
        else result.billed++;
        result.duplicates += duplicates;
        return;
      }
      step = rejected
        ? dead(m, inputOf(m), rejected.code, rejected.reason, prepared.eventId, prepared.source, submitted)
        : {
            kind: "retry",
            reason: (retry as { reason: string }).reason,
            eventId: prepared.eventId,
            input: inputOf(m),
            source: prepared.source,
            unsent,
          };
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

  // A dead letter that could not be written keeps its message on the queue: nothing is lost.
  const unsent = await sendDeadLetters(deps.deadLetterQueue, letters);
  const correlation =
    letters.length > 0 ? new Map(messages.map((m) => [m.messageId, m.attributes?.[CORRELATION_ATTRIBUTE]])) : undefined;
  for (const d of letters) {
    if (unsent.has(d.key)) {
      result.failedMessageIds.push(d.key);
      deps.logger.error("dead-letter send failed; the event will be retried", { messageId: d.key, code: d.code });
    } else {
      result.deadLettered[d.code] = (result.deadLettered[d.code] ?? 0) + 1;
      deps.logger.warn("event dead-lettered", {
        messageId: d.key,
        correlationId: correlation?.get(d.key),
        eventId: d.eventId,
        code: d.code,
        reason: d.message,
      });
    }
  }
  // Events to retry are counted before packs turn them into their packs' ids.
  const retrying = result.failedMessageIds.length;
  if (packed && retrying > 0) {
    result.failedMessageIds = await retryPacks(messages, result.failedMessageIds, deferredIds, deps);
  }
  metrics.count(Metric.eventsReceived, messages.length);
  metrics.count(Metric.eventsBilled, result.billed);
  metrics.count(Metric.eventsDuplicate, result.duplicates);
  metrics.count(Metric.eventsIgnored, result.ignored);
  if (result.requeued > 0) metrics.count(Metric.eventsRequeued, result.requeued);
  metrics.count(Metric.eventsRetried, retrying);
  for (const [code, n] of Object.entries(result.deadLettered)) metrics.count(Metric.eventsDeadLettered, n, { code });
  return result;
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

/** The EventBridge source whose `match` takes this event (by `source` and `detail-type`). */
function matchEventBridge(mapping: Mapping, event: unknown): string | undefined {
  const e = event as { source?: unknown; "detail-type"?: unknown } | null;
  const has = (want: string | string[] | undefined, got: unknown) =>
    want === undefined || (typeof got === "string" && [want].flat().includes(got));
  for (const s of mapping.sources.values()) {
    if (
      s.type === "eventbridge" &&
      s.match &&
      has(s.match.source, e?.source) &&
      has(s.match.detailType, e?.["detail-type"])
    )
      return s.name;
  }
  return undefined;
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
): Promise<Outcome[]> {
  if (events.length === 0) return [];
  if (!aggregating) return deps.submitter.submit(events, deadline);
  const plan = planAggregation(events, aggregating.fixed, aggregating.rules);
  const sent = await deps.submitter.submit(plan.submit, deadline);
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
