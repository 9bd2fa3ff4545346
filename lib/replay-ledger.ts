import type { Logger } from "./logger.js";
import { MAX_PAST_SECONDS, type MeterEvent } from "./meter-event.js";
import type { MeterEventSubmitter, SubmitOutcome } from "./stripe/submitter.js";

/**
 * What replays have billed, by meter event identifier. Stripe drops a repeated identifier for
 * 24 hours only, so two dead letters of one event replayed further apart than that would both
 * bill; the ledger remembers for as long as Stripe would take the event at all.
 */
export interface ReplayLedger {
  /** Which of these identifiers a replay billed before. Throws when the ledger cannot be read. */
  billed(identifiers: readonly string[]): Promise<Set<string>>;
  /** Records these as billed. Throws when some could not be recorded. */
  record(entries: readonly LedgerEntry[]): Promise<void>;
}

export interface LedgerEntry {
  identifier: string;
  eventName: string;
  /** Unix seconds after which the entry may go: Stripe refuses the event by then anyway. */
  expiresAt: number;
  billedAt: string;
}

/** A day past Stripe's 35 days, for the clocks' skew: no replay can bill the event after that. */
const KEEP_PAST_EVENT_SECONDS = MAX_PAST_SECONDS + 86_400;

/** What the ledger did in a batch. */
export interface LedgerCounts {
  /** Meter events not sent because an earlier replay billed them. */
  billedBefore: number;
  /** Meter events billed now that the ledger could not record (logged as errors). */
  unrecorded: number;
  /** Meter events answered `retry`, unsent, because the ledger could not be read (the consumer's). */
  unreadable: number;
}

/**
 * `inner` behind the ledger, for the events whose identifiers are in `only` (those of former
 * dead letters): those an earlier replay billed are answered billed (a
 * duplicate) without being sent, and those `inner` bills are recorded. A ledger that cannot be
 * read answers its events `retry`, unsent, or with `unreadable: "stop"` (a replay) throws before
 * anything is sent, so that the replay stops and leaves its letters as they were. One that
 * cannot record after Stripe billed logs an error and counts it: the events are billed, and only
 * a copy replayed more than 24 h later could bill again.
 */
export function behindLedger(
  inner: MeterEventSubmitter,
  ledger: ReplayLedger,
  counts: LedgerCounts,
  logger: Logger,
  options: { only: ReadonlySet<string>; unreadable: "retry" | "stop"; now?: () => number },
): MeterEventSubmitter {
  const now = options.now ?? Date.now;
  const { only } = options;
  const kept = (e: MeterEvent) => only.has(e.identifier);
  return {
    api: inner.api,
    async submit(events, deadline) {
      const checked = events.filter(kept);
      if (checked.length === 0) return inner.submit(events, deadline);
      let before: Set<string> | undefined;
      let unreadable: SubmitOutcome | undefined;
      try {
        before = await ledger.billed(checked.map((e) => e.identifier));
      } catch (err) {
        if (options.unreadable === "stop")
          throw new Error(`the replay ledger could not be read, so nothing was sent: ${reasonOf(err)}`);
        const reason = `the replay ledger could not be read: ${reasonOf(err)}`;
        logger.warn("former dead letters will be retried: the replay ledger could not be read", {
          events: checked.length,
          reason: reasonOf(err),
        });
        unreadable = { kind: "retry", reason, unsent: true };
        counts.unreadable += checked.length;
      }
      const send: MeterEvent[] = [];
      const at: number[] = [];
      const outcomes: SubmitOutcome[] = events.map((e, i) => {
        if (kept(e)) {
          if (unreadable) return unreadable;
          if (before?.has(e.identifier)) return { kind: "billed", duplicate: true };
        }
        send.push(e);
        at.push(i);
        return { kind: "billed", duplicate: false };
      });
      if (before) counts.billedBefore += checked.filter((e) => before.has(e.identifier)).length;
      if (send.length === 0) return outcomes;
      const sent = await inner.submit(send, deadline);
      const billed: MeterEvent[] = [];
      at.forEach((i, j) => {
        const o = sent[j] as SubmitOutcome;
        outcomes[i] = o;
        const e = send[j] as MeterEvent;
        if (o.kind === "billed" && kept(e)) billed.push(e);
      });
      if (billed.length > 0) {
        const billedAt = new Date(now()).toISOString();
        try {
          await ledger.record(
            billed.map((e) => ({
              identifier: e.identifier,
              eventName: e.event_name,
              expiresAt: e.timestamp + KEEP_PAST_EVENT_SECONDS,
              billedAt,
            })),
          );
        } catch (err) {
          counts.unrecorded += billed.length;
          logger.error(
            "the replay ledger could not record meter events Stripe billed; a copy of one replayed more than 24 h from now would bill again",
            { identifiers: billed.map((e) => e.identifier), reason: reasonOf(err) },
          );
        }
      }
      return outcomes;
    },
  };
}

/** The ledger for a dry run: read as it is, never written. */
export const readOnly = (ledger: ReplayLedger): ReplayLedger => ({
  billed: (identifiers) => ledger.billed(identifiers),
  record: async () => {},
});

const reasonOf = (err: unknown) => (err instanceof Error ? err.message : String(err));
