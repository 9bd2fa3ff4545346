import { pastDedupeWindowReason } from "./dead-letter.js";
import { DeadLetterCode } from "./errors.js";
import type { Logger } from "./logger.js";
import { MAX_PAST_SECONDS, type MeterEvent, outsideDedupeWindow } from "./meter-event.js";
import type { MeterEventSubmitter, SubmitOutcome } from "./stripe/submitter.js";

/**
 * What replays have sent and billed, by meter event identifier. Stripe drops a repeated
 * identifier for 24 hours only, so two dead letters of one event replayed further apart than
 * that would both bill; the ledger remembers for as long as Stripe would take the event at all.
 * An event is marked `sending` before it is sent and `billed` once Stripe bills it, so that one
 * whose answer never came (a timeout, a replay killed mid-batch) is still known to be sent.
 */
export interface ReplayLedger {
  /** What the ledger holds of these identifiers (none: absent). Throws when it cannot be read. */
  marks(identifiers: readonly string[]): Promise<Map<string, LedgerMark>>;
  /**
   * Marks these events `sending`, each only if the ledger holds nothing of it, and answers those
   * it marked: another replay may have marked one since it was read. Throws when some could not
   * be written.
   */
  claim(entries: readonly LedgerEntry[]): Promise<Set<string>>;
  /** Records these marks, each replacing the identifier's last. Throws when some could not be recorded. */
  record(entries: readonly LedgerEntry[]): Promise<void>;
  /**
   * Removes these `sending` marks, each only while it is the one written `at` that time: another
   * replay's mark, or a billing recorded since, stays. Throws when some could not be removed.
   */
  forget(marks: readonly MarkWritten[]): Promise<void>;
}

/** A `sending` mark as `claim` wrote it. */
export type MarkWritten = Pick<LedgerEntry, "identifier" | "at">;

/** Billed by a replay; or sent at `since` (epoch ms) with no billed answer recorded since. */
export type LedgerMark = { state: "billed" } | { state: "sending"; since: number };

export interface LedgerEntry {
  identifier: string;
  eventName: string;
  state: LedgerMark["state"];
  /** When it was sent (`sending`) or billed (`billed`), ISO 8601. */
  at: string;
  /** Unix seconds after which the entry may go: Stripe refuses the event by then anyway. */
  expiresAt: number;
}

/** A day past Stripe's 35 days, for the clocks' skew: no replay can bill the event after that. */
const KEEP_PAST_EVENT_SECONDS = MAX_PAST_SECONDS + 86_400;

/** What the ledger did in a batch. */
export interface LedgerCounts {
  /** Meter events not sent because an earlier replay billed them. */
  billedBefore: number;
  /**
   * Meter events billed now whose billing the ledger could not record (logged as errors): they
   * stay marked sent, so a copy replayed more than 23 h later is held rather than sent.
   */
  unrecorded: number;
  /** Meter events answered `retry`, unsent, because the ledger could not be read or marked (the consumer's). */
  unavailable: number;
  /**
   * Meter events an earlier replay sent more than 23 h ago without learning whether Stripe billed
   * them: dead-lettered dedupe_window_passed rather than sent (unless `afterDedupeWindow`).
   */
  heldSent: number;
}

export interface LedgerOptions {
  /** Identifiers of the events the ledger covers (those of former dead letters). */
  only: ReadonlySet<string>;
  /** A ledger that cannot be read or marked: its events are retried, unsent, or (a replay) the call throws. */
  unreadable: "retry" | "stop";
  /** Send events marked sent more than 23 h ago too: the operator checked Stripe (--after-dedupe-window). */
  afterDedupeWindow?: boolean;
  now?: () => number;
}

/**
 * `inner` behind the ledger, for the events whose identifiers are in `only` (those of former
 * dead letters). One an earlier replay billed is answered billed (a duplicate) without being
 * sent. One an earlier replay sent without a billed answer is sent again within Stripe's
 * duplicate window (Stripe drops it if the first got there), and past it is refused
 * dedupe_window_passed, for an operator to check Stripe. The rest are marked `sending` before
 * `inner` sends them (unless another replay marked one since the read: its mark stands, and the
 * event is resent within the duplicate window), `billed` once it bills them, and unmarked when it
 * answers they were not billed (only the mark this call wrote); one with no clear answer stays
 * marked. A ledger that cannot be read or marked answers its events `retry`, unsent, or with
 * `unreadable: "stop"` (a replay) throws before anything is sent, so that the replay stops and
 * leaves its letters as they were. One that cannot record a
 * billing logs an error and counts it: the event stays marked sent.
 */
export function behindLedger(
  inner: MeterEventSubmitter,
  ledger: ReplayLedger,
  counts: LedgerCounts,
  logger: Logger,
  options: LedgerOptions,
): MeterEventSubmitter {
  const now = options.now ?? Date.now;
  const { only } = options;
  const kept = (e: MeterEvent) => only.has(e.identifier);
  const entry = (e: MeterEvent, state: LedgerMark["state"], at: string): LedgerEntry => ({
    identifier: e.identifier,
    eventName: e.event_name,
    state,
    at,
    expiresAt: e.timestamp + KEEP_PAST_EVENT_SECONDS,
  });
  return {
    api: inner.api,
    async submit(events, deadline) {
      const checked = events.filter(kept);
      if (checked.length === 0) return inner.submit(events, deadline);
      const t = now();
      const markedAt = new Date(t).toISOString();
      const written = (e: MeterEvent): MarkWritten => ({ identifier: e.identifier, at: markedAt });
      let marks: Map<string, LedgerMark>;
      // Marked by this call: sent by no earlier replay. Unmarked again if Stripe answers they were not billed.
      let marking: MeterEvent[] = [];
      try {
        marks = await ledger.marks(checked.map((e) => e.identifier));
        marking = checked.filter((e) => !marks.has(e.identifier));
        if (marking.length > 0) {
          const claimed = await ledger.claim(marking.map((e) => entry(e, "sending", markedAt)));
          // Marked by another replay since the read (a copy of the same event): its mark stands,
          // and this send is a resend within Stripe's duplicate window.
          const raced = marking.filter((e) => !claimed.has(e.identifier)).map((e) => e.identifier);
          for (const id of raced) marks.set(id, { state: "sending", since: t });
          if (raced.length > 0)
            logger.info("another replay marked these events since they were read: sent again for Stripe to drop", {
              identifiers: raced,
            });
          marking = marking.filter((e) => claimed.has(e.identifier));
        }
      } catch (err) {
        // Some marks may have been written: unmarked again if the ledger lets us, since nothing
        // is sent (left, a copy replayed a day later would be held for an operator, no more).
        if (marking.length > 0) await ledger.forget(marking.map(written)).catch(() => {});
        return unavailable(events, checked, err, deadline);
      }
      const send: MeterEvent[] = [];
      const at: number[] = [];
      const held: string[] = [];
      const outcomes: SubmitOutcome[] = events.map((e, i) => {
        const mark = kept(e) ? marks.get(e.identifier) : undefined;
        if (mark?.state === "billed") {
          counts.billedBefore++;
          return { kind: "billed", duplicate: true };
        }
        if (mark?.state === "sending" && !options.afterDedupeWindow && outsideDedupeWindow(mark.since, t)) {
          counts.heldSent++;
          held.push(e.identifier);
          return {
            kind: "rejected",
            code: DeadLetterCode.dedupeWindowPassed,
            reason: pastDedupeWindowReason(
              `a replay sent it ${Math.floor((t - mark.since) / 3_600_000)} h ago and never learned whether Stripe billed it`,
            ),
          };
        }
        send.push(e);
        at.push(i);
        return { kind: "billed", duplicate: false };
      });
      if (held.length > 0)
        logger.warn("former dead letters held: a replay sent them more than 23 h ago with no answer", {
          identifiers: held,
        });
      if (send.length === 0) return outcomes;
      const sent = await inner.submit(send, deadline);
      const billed: MeterEvent[] = [];
      const unbilled = new Set<string>();
      at.forEach((i, j) => {
        const o = sent[j] as SubmitOutcome;
        outcomes[i] = o;
        const e = send[j] as MeterEvent;
        if (!kept(e)) return;
        if (o.kind === "billed") billed.push(e);
        // Known not billed: refused, or never sent. A retry after sending may have reached Stripe.
        else if (o.kind === "rejected" || o.unsent) unbilled.add(e.identifier);
      });
      await settleMarks(billed, marking.filter((e) => unbilled.has(e.identifier)).map(written));
      return outcomes;
    },
  };

  /** The ledger's events answered retry, unsent (or, a replay's, thrown); the others sent as they are. */
  async function unavailable(
    events: readonly MeterEvent[],
    checked: readonly MeterEvent[],
    err: unknown,
    deadline: number,
  ) {
    if (options.unreadable === "stop")
      throw new Error(`the replay ledger could not be read or marked, so nothing was sent: ${reasonOf(err)}`);
    logger.warn("former dead letters will be retried: the replay ledger could not be read or marked", {
      events: checked.length,
      reason: reasonOf(err),
    });
    counts.unavailable += checked.length;
    const retry: SubmitOutcome = {
      kind: "retry",
      reason: `the replay ledger could not be read or marked: ${reasonOf(err)}`,
      unsent: true,
    };
    const others = events.filter((e) => !kept(e));
    const sent = others.length > 0 ? await inner.submit(others, deadline) : [];
    let j = 0;
    return events.map((e) => (kept(e) ? retry : (sent[j++] as SubmitOutcome)));
  }

  /** Records what Stripe billed, and forgets the marks of events it did not. */
  async function settleMarks(billed: readonly MeterEvent[], notBilled: readonly MarkWritten[]) {
    if (billed.length > 0) {
      const at = new Date(now()).toISOString();
      try {
        await ledger.record(billed.map((e) => entry(e, "billed", at)));
      } catch (err) {
        counts.unrecorded += billed.length;
        logger.error(
          "the replay ledger could not record meter events Stripe billed; they stay marked sent, so a copy of one replayed more than 23 h from now will be held (dedupe_window_passed)",
          { identifiers: billed.map((e) => e.identifier), reason: reasonOf(err) },
        );
      }
    }
    if (notBilled.length > 0) {
      // Left marked, a copy replayed a day later would be held for an operator, no more.
      await ledger.forget(notBilled).catch((err: unknown) =>
        logger.warn("the replay ledger could not unmark meter events Stripe did not bill", {
          identifiers: notBilled.map((e) => e.identifier),
          reason: reasonOf(err),
        }),
      );
    }
  }
}

/** The ledger for a dry run: read as it is, never written. */
export const readOnly = (ledger: ReplayLedger): ReplayLedger => ({
  marks: (identifiers) => ledger.marks(identifiers),
  claim: async (entries) => new Set(entries.map((e) => e.identifier)),
  record: async () => {},
  forget: async () => {},
});

const reasonOf = (err: unknown) => (err instanceof Error ? err.message : String(err));
