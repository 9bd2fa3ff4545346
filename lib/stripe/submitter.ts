import type { DeadLetterCode } from "../errors.js";
import type { MeterEvent } from "../meter-event.js";

/** What became of one meter event after submission. */
export type SubmitOutcome =
  | { kind: "billed"; duplicate: boolean; requestId?: string }
  /** `unsent`: not sent to Stripe at all in this invocation (it ran out of time first). */
  | { kind: "retry"; reason: string; unsent?: true }
  | {
      kind: "rejected";
      /**
       * Stripe's refusal, the meter check's (lib/stripe/meters.ts: meter_not_found,
       * invalid_payload) or the customer check's (lib/stripe/customer-check.ts:
       * customer_not_in_stripe); cancel_rejected for a cancellation (lib/consumer.ts);
       * dedupe_window_passed for an event a replay sent too long ago, unanswered (lib/replay-ledger.ts).
       */
      code: Extract<
        DeadLetterCode,
        | "stripe_rejected"
        | "stripe_unauthorized"
        | "meter_not_found"
        | "customer_not_in_stripe"
        | "invalid_payload"
        | "cancel_rejected"
        | "dedupe_window_passed"
      >;
      reason: string;
      requestId?: string;
    };

/** What a call not started for lack of time answers: retried, and known not to have reached Stripe. */
export const NOT_SENT = {
  kind: "retry",
  reason: "not sent: the invocation was about to time out",
  unsent: true,
} as const satisfies SubmitOutcome;

/** Submits meter events to Stripe; answers one outcome per event, in order. Never throws. */
export interface MeterEventSubmitter {
  readonly api: "v1" | "v2";
  submit(events: readonly MeterEvent[], deadline: number): Promise<SubmitOutcome[]>;
  /**
   * The same submitter in a dry run (a replay's --dry-run): the checks it makes before sending
   * still answer, and what it would send counts as billed, unsent. Without it, every event does.
   */
  dryRun?(): MeterEventSubmitter;
}

/** A dry run's submitter: every event counts as billed, and nothing is sent. */
export const billEverything: MeterEventSubmitter = {
  api: "v2",
  submit: async (events) => events.map(() => ({ kind: "billed", duplicate: false })),
};

/**
 * A check in front of `inner` (lib/stripe/meters.ts, customer-check.ts): `submit` sends through
 * the submitter it is given, `inner` or, in a dry run, `inner`'s dry run, so that a replay's dry
 * run checks as the real one does (a check's reads change nothing in Stripe) and sends nothing.
 */
export function behindCheck(
  inner: MeterEventSubmitter,
  submit: (target: MeterEventSubmitter, events: readonly MeterEvent[], deadline: number) => Promise<SubmitOutcome[]>,
): MeterEventSubmitter {
  const dry = inner.dryRun?.() ?? billEverything;
  return {
    api: inner.api,
    submit: (events, deadline) => submit(inner, events, deadline),
    dryRun: () => ({ api: inner.api, submit: (events, deadline) => submit(dry, events, deadline) }),
  };
}

/**
 * Sends through `target` the events `decide` lets go (as it answers them: the event, or one
 * rewritten), and answers the others with the outcome `decide` gives: one outcome per event, in order.
 */
export async function submitSome(
  target: MeterEventSubmitter,
  events: readonly MeterEvent[],
  deadline: number,
  decide: (e: MeterEvent) => MeterEvent | Exclude<SubmitOutcome, { kind: "billed" }>,
): Promise<SubmitOutcome[]> {
  const outcomes: SubmitOutcome[] = new Array(events.length);
  const send: MeterEvent[] = [];
  const at: number[] = [];
  events.forEach((e, i) => {
    const d = decide(e);
    if ("kind" in d) {
      outcomes[i] = d;
      return;
    }
    send.push(d);
    at.push(i);
  });
  const sent = send.length > 0 ? await target.submit(send, deadline) : [];
  at.forEach((i, j) => {
    outcomes[i] = sent[j] as SubmitOutcome;
  });
  return outcomes;
}

/** Runs `work` over `items` with at most `limit` running at once. */
export async function runPool<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await work(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
