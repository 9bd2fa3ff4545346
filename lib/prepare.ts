/**
 * One queue message made ready to send, or turned into its dead letter or a retry: decoding
 * (lib/decode.ts: canonical event, queued trigger, an app's own message, mapped), customer
 * resolution and validation against Stripe's rules. lib/consumer.ts submits what is ready and
 * settles the rest.
 */

import pLimit, { type LimitFunction } from "p-limit";
import { isContinuation, parseContinuation } from "./aggregation.js";
import { type CancelTarget, cancelTarget, isCancelMessage, parseCancellation } from "./cancellation.js";
import type { ConsumerDeps, QueueMessage } from "./consumer.js";
import type { CustomerResolver } from "./customers.js";
import { type DeadLetter, letterAttributes, pastDedupeWindow, pastDedupeWindowReason } from "./dead-letter.js";
import { decodeUsage } from "./decode.js";
import { DeadLetterCode, MeterhookError, TransientError } from "./errors.js";
import { type MeterEvent, meterEventIdentifier, outsideDedupeWindow, toMeterEvent } from "./meter-event.js";
import { isMisshapenPack, PACK_FORMAT, PACK_START } from "./pack.js";
import { isTriggerMessage, SOURCE_ATTRIBUTE, withoutBom } from "./triggers.js";
import { parsePlainEventJson, type UsageEvent } from "./usage-event.js";

/** Ready to submit. The parsed message is not kept while Stripe answers (see inputOf). */
export type Ready = {
  kind: "ready";
  events: MeterEvent[];
  eventId?: string;
  source?: string;
  /** A combined event back from the queue: sent as it is, never combined again. */
  fixed?: boolean;
  /** Meter events to cancel (lib/cancellation.ts), after the batch's events are sent. */
  cancels?: CancelTarget[];
  /** Meter events of the trigger that cannot be billed, set aside: the rest are sent. */
  refused?: Refusal[];
};
/** A meter event of a trigger that makes several, which cannot be billed: why, for its dead letter. */
export type Refusal = { identifier: string; code: DeadLetterCode; message: string };
export type Dead = { kind: "dead"; letter: DeadLetter };
/** `unsent`: none of its events was sent to Stripe in this delivery (the invocation ran out of time). */
export type Retry = {
  kind: "retry";
  reason: string;
  eventId?: string;
  input: unknown;
  source?: string;
  unsent?: boolean;
};
/** What becomes of a message before Stripe is called (ignored: a trigger no rule of `source` matched, acknowledged). */
export type Step = Ready | Dead | Retry | { kind: "ignored"; source: string };

/**
 * A submitted message's body as the dead letter carries it, parsed again: keeping every parsed
 * body alive while Stripe answers cost more in garbage collection than parsing the few that fail.
 */
export function inputOf(m: QueueMessage): unknown {
  try {
    return JSON.parse(withoutBom(m.body));
  } catch {
    return m.body;
  }
}

const PRINTABLE = /^[\x20-\x7e]{1,255}$/;
const NOT_STARTED = "not started: the invocation was about to time out";
const LOOKUP_NOT_STARTED = "customer lookup not started: the invocation was about to time out";

/** A message's dead letter, with what the consumer knows of it (see Preparer.dead). */
export type DeadLetterFor = (
  m: QueueMessage,
  input: unknown,
  code: DeadLetterCode,
  message: string,
  eventId?: string,
  source?: string,
  options?: {
    /** Some of the message's events got an answer from Stripe other than a refusal. */
    submitted?: boolean;
    /** A trigger billed in part: its meter events not billed (else those of an earlier letter). */
    unbilled?: readonly string[];
    /** Some of its meter events were billed in this delivery (counted in EventsBilledInPart). */
    billedInPart?: true;
  },
) => Dead;

/** Prepares one batch's messages; made per batch, as it shares the batch's customer lookups. */
export interface Preparer {
  /**
   * Each message's step, in order. Synchronous while customers are known without I/O (a table,
   * a cache hit), which is the common case: a promise per message was a tenth of the consumer's CPU.
   */
  prepareAll: (messages: readonly QueueMessage[]) => Array<Step | Promise<Step>>;
  dead: DeadLetterFor;
}

/**
 * The preparer for a batch. `startedAt` is the batch's clock: plain events read it once, so
 * preparing them is one synchronous pass.
 */
export function createPreparer(deps: ConsumerDeps, deadline: number, startedAt: number): Preparer {
  const now = deps.now ?? Date.now;
  const customers = new Map<string, Promise<string>>();
  // Lookups wait their turn; one whose turn comes too late is not started and its message is
  // retried. Made at the first lookup: most batches' customers are known without I/O.
  let lookups: LimitFunction | undefined;
  const lookUp = (resolver: CustomerResolver, c: string) => {
    if (deadline - now() < deps.stopMarginMs) throw new TransientError("customer_lookup_failed", LOOKUP_NOT_STARTED);
    return resolver.resolve(c, deadline - deps.stopMarginMs);
  };
  const resolve = (resolver: CustomerResolver, scope: string, c: string) => {
    const key = `${scope}\u0000${c}`;
    let p = customers.get(key);
    if (!p) {
      lookups ??= pLimit(deps.lookupConcurrency);
      p = lookups(lookUp, resolver, c);
      customers.set(key, p);
    }
    return p;
  };

  const dead: DeadLetterFor = (
    m,
    input,
    code,
    message,
    eventId,
    source,
    { submitted = false, unbilled, billedInPart } = {},
  ) => {
    const t = now();
    const prev = m.previousFailure;
    // A delivery before the last may have reached Stripe, whatever the last one's error. Not so
    // for a cancellation: it never bills, so Stripe's duplicate window does not concern it.
    const mayHaveRecorded =
      (submitted ||
        code === DeadLetterCode.retriesExhausted ||
        code === DeadLetterCode.dedupeWindowPassed ||
        prev?.stripeMayHaveRecorded) &&
      !isCancelMessage(input);
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
        attributes: letterAttributes(m.attributes),
        ...(mayHaveRecorded ? { stripeMayHaveRecorded: true } : {}),
        // A letter of a trigger billed in part stays so, however often it fails again.
        ...((unbilled ?? prev?.unbilled) ? { unbilled: unbilled ?? prev?.unbilled } : {}),
        ...(billedInPart ? { billedInPart } : {}),
      },
    };
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
    /** Identifiers already made for `usage` (prepareAll's hash pass), index for index. */
    identifiers?: readonly (string | undefined)[];
    /** Meter events the trigger cancels. */
    cancels?: CancelTarget[];
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
      input = JSON.parse(withoutBom(m.body));
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
    if (isCancelMessage(input)) return prepareCancel(m, input);
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
      const decoded = decodeUsage(m, input, deps);
      if (decoded.kind === "ignored") return decoded;
      if (decoded.kind === "refused") return dead(m, input, decoded.code, decoded.message, undefined, decoded.source);
      const source = decoded.source?.name ?? sourceHint;
      const usage = stillUnbilled(m, decoded.events);
      if (usage.length === 0 && decoded.events.length > 0) {
        return dead(
          m,
          input,
          DeadLetterCode.mappingFailed,
          "the trigger no longer makes the meter events its letter holds unbilled (a rule renamed, or its id changed?); sent whole, it would bill again those billed before",
          eventId,
          source,
        );
      }
      if (usage.length === 1) eventId = usage[0]?.id;
      const combined = decoded.cancels && combinedCancel(m, input, decoded.cancels, eventId, source);
      if (combined) return combined;
      return {
        m,
        input,
        cancels: decoded.cancels,
        usage,
        resolver: decoded.resolver,
        scope: decoded.source?.name ?? "",
        eventId,
        source,
      };
    } catch (err) {
      return failed(m, input, err, deps.resolver, eventId, sourceHint);
    }
  };

  /** A cancellation message (lib/cancellation.ts). */
  const prepareCancel = (m: QueueMessage, input: unknown): Step => {
    const { meterhook: _, ...fields } = input as Record<string, unknown>;
    let c: ReturnType<typeof parseCancellation>;
    try {
      c = parseCancellation(fields);
    } catch (err) {
      return failed(m, input, err, deps.resolver);
    }
    const cancels = [cancelTarget(c)];
    return combinedCancel(m, input, cancels, c.id) ?? { kind: "ready", events: [], cancels, eventId: c.id };
  };

  /**
   * The dead letter of a message that cancels an event of a pre-aggregated meter: its events may
   * have been combined, so the identifier may name nothing. Refused here rather than at Stripe.
   */
  const combinedCancel = (
    m: QueueMessage,
    input: unknown,
    cancels: readonly CancelTarget[],
    eventId?: string,
    source?: string,
  ): Dead | undefined => {
    const name = cancels.find((t) => deps.aggregation?.meters.has(t.event_name))?.event_name;
    if (name === undefined) return undefined;
    return dead(
      m,
      input,
      DeadLetterCode.cancelRejected,
      `"${name}" is pre-aggregated (METERHOOK_AGGREGATE): its events may be combined, so one cannot be cancelled alone; send a negative event instead`,
      eventId,
      source,
    );
  };

  /**
   * Where a meter event that could not be made leaves its message. One of a trigger that makes
   * several and cannot be billed (its customer not found, a value Stripe would refuse) is set
   * aside in `refused`, and the others go on: one record of a batch must not hold up the rest.
   * One to retry (a lookup that failed) holds up the message, so nothing is sent until all can be.
   */
  const setAside = (d: Decoded, usage: UsageEvent, err: unknown, refused: Refusal[]): Dead | Retry | undefined => {
    const step = failed(d.m, d.input ?? inputOf(d.m), err, d.resolver, d.eventId, d.source);
    if (step.kind === "retry" || d.usage.length === 1) return step;
    const identifier = meterEventIdentifier(usage.id, usage.event_name, usage.identifierPart);
    refused.push({ identifier, code: step.letter.code, message: step.letter.message });
    return undefined;
  };

  /** A decoded message's step once each of its meter events is made or set aside. */
  const readyOf = (d: Decoded, events: MeterEvent[], refused: Refusal[]): Step => {
    const first = refused[0];
    if (!first) return { kind: "ready", events, eventId: d.eventId, source: d.source, cancels: d.cancels };
    // None to send, or cancellations too (kept whole): the message is dead-lettered whole.
    if (events.length === 0 || d.cancels)
      return dead(d.m, d.input ?? inputOf(d.m), first.code, first.message, d.eventId, d.source);
    return { kind: "ready", events, eventId: d.eventId, source: d.source, refused };
  };

  /** Meter events from usage events, customers resolved from `from` on through lookups. */
  const resolveRest = async (
    d: Decoded,
    events: MeterEvent[],
    from: number,
    refused: Refusal[] = [],
  ): Promise<Step> => {
    for (let i = from; i < d.usage.length; i++) {
      const usage = d.usage[i] as UsageEvent;
      try {
        const customer = await resolve(d.resolver, d.scope, usage.customer);
        events.push(toMeterEvent(usage, customer, now() / 1000, deps.valueRules, d.identifiers?.[i]));
      } catch (err) {
        const stop = setAside(d, usage, err, refused);
        if (stop) return stop;
      }
    }
    return readyOf(d, events, refused);
  };

  /** A former letter's unbilled events only, when it names them (DeadLetterBody.unbilled). */
  const stillUnbilled = (m: QueueMessage, usage: UsageEvent[]): UsageEvent[] => {
    const unbilled = m.previousFailure?.unbilled;
    if (!unbilled) return usage;
    const wanted = new Set(unbilled);
    return usage.filter((u) => wanted.has(meterEventIdentifier(u.id, u.event_name, u.identifierPart)));
  };

  /**
   * A canonical event in the plain shape (most messages), read without JSON.parse and, with a
   * customer known without I/O, made into its meter event without a Decoded record.
   */
  const preparePlain = (m: QueueMessage, plain: UsageEvent, identifier?: string): Step | Promise<Step> => {
    if (deadline - startedAt < deps.stopMarginMs) {
      return { kind: "retry", reason: NOT_STARTED, eventId: plain.id, input: inputOf(m), unsent: true };
    }
    try {
      // known() throws for a customer it knows has no Stripe id.
      const customer = deps.resolver.known(plain.customer);
      if (customer === undefined) {
        const d = {
          m,
          usage: [plain],
          resolver: deps.resolver,
          scope: "",
          eventId: plain.id,
          identifiers: [identifier],
        };
        return resolveRest(d, [], 0);
      }
      const event = toMeterEvent(plain, customer, startedAt / 1000, deps.valueRules, identifier);
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
      pastDedupeWindowReason(what),
      typeof id === "string" ? id : undefined,
      m.attributes?.[SOURCE_ATTRIBUTE],
      { submitted: true },
    );
  };
  const hoursSince = (t: number) => Math.floor((startedAt - t) / 3_600_000);
  /** Past DEDUPE_WINDOW_MS since `t` (or `t` unknown); never for a replayed letter, whose replay decides. */
  const pastWindow = (m: QueueMessage, t: number) => !m.previousFailure && outsideDedupeWindow(t, startedAt);

  /** One message; `plain` and `identifier` when its body is a plain canonical event (see prepareAll). */
  const prepare = (m: QueueMessage, plain?: UsageEvent, identifier?: string): Step | Promise<Step> => {
    if (m.unreadable) return dead(m, inputOf(m), DeadLetterCode.invalidMessage, m.unreadable);
    if (m.redriven && pastDedupeWindow(m, startedAt)) {
      const what = `put back on the ingest queue by SQS's DLQ redrive ${hoursSince(m.sentAt)} h after meterhook first received it`;
      return lateRedelivery(m, inputOf(m), what);
    }
    if (m.receiveCount > 1 && pastWindow(m, m.firstReceivedAt) && !isCancelMessage(inputOf(m))) {
      const what = `delivered again ${hoursSince(m.firstReceivedAt)} h after its first delivery`;
      return lateRedelivery(m, inputOf(m), what);
    }
    if (plain) return preparePlain(m, plain, identifier);
    const d = decodeMessage(m);
    if ("kind" in d) return d;
    const events: MeterEvent[] = [];
    const refused: Refusal[] = [];
    const nowSeconds = now() / 1000;
    for (let i = 0; i < d.usage.length; i++) {
      const usage = d.usage[i] as UsageEvent;
      try {
        // known() throws for a customer it knows has no Stripe id.
        const customer = d.resolver.known(usage.customer);
        if (customer === undefined) return resolveRest(d, events, i, refused);
        events.push(toMeterEvent(usage, customer, nowSeconds, deps.valueRules));
      } catch (err) {
        const stop = setAside(d, usage, err, refused);
        if (stop) return stop;
      }
    }
    return readyOf(d, events, refused);
  };

  /**
   * The batch in three passes rather than one per message: plain canonical events read, then
   * their identifiers hashed, then each message prepared. A pass of its own for the hash (a call
   * into OpenSSL) cost about 0.6 µs less per event than hashing between reading and validating
   * each one (bench/HISTORY.md, 2026-11-28).
   */
  const prepareAll = (messages: readonly QueueMessage[]): Array<Step | Promise<Step>> => {
    const plains = messages.map((m) =>
      m.attributes?.[SOURCE_ATTRIBUTE] ? undefined : parsePlainEventJson(m.body, m.sentAt / 1000),
    );
    const identifiers = plains.map((p) => p && meterEventIdentifier(p.id, p.event_name, p.identifierPart));
    return messages.map((m, i) => prepare(m, plains[i], identifiers[i]));
  };

  return { prepareAll, dead };
}
