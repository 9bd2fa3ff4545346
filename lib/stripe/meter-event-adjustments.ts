/**
 * Cancelling meter events Stripe already has: `POST /v1/billing/meter_event_adjustments` with
 * `type=cancel` (shared/stripe/METER_API.md §2). The v1 endpoint serves both APIs' events (one
 * identifier space per account) and takes restricted keys, which the v2 one does not.
 */
import type { CancelTarget } from "../cancellation.js";
import type { StripeClient } from "./client.js";
import { runPool } from "./submitter.js";
import { enc, NOT_SENT, postForm } from "./v1-meter-events.js";

export type { CancelTarget };

export type CancelOutcome =
  /** `already`: Stripe said it was cancelled before (this cancellation delivered again, or an answer lost). */
  | { kind: "cancelled"; already?: true; requestId?: string }
  /**
   * Stripe refused: it has no such event (yet: a stream event is processed asynchronously, and a
   * cancellation can overtake its event), more than 24 h passed, or it was cancelled already.
   * Stripe's answers for these are not documented apart (METER_API.md §12, item 11).
   */
  | { kind: "refused"; reason: string; requestId?: string }
  | { kind: "unauthorized"; reason: string }
  | { kind: "retry"; reason: string; unsent?: true };

export interface Canceller {
  /** One outcome per target, in order. Never throws. */
  cancel(targets: readonly CancelTarget[], deadline: number): Promise<CancelOutcome[]>;
  /** The same canceller in a dry run (a replay's --dry-run): every target counts as cancelled, none is sent. */
  dryRun(): Canceller;
}

export function encodeCancelForm(t: CancelTarget): string {
  return `event_name=${enc(t.event_name)}&type=cancel&cancel[identifier]=${enc(t.identifier)}`;
}

/**
 * Stripe's refusal of a cancellation already made. Stripe documents no code for it (METER_API.md
 * §12, item 11); this is the emulator's wording. Another wording is a refusal, which ends in a
 * `cancel_rejected` letter quoting it: visible, never a silent loss.
 */
const ALREADY_CANCELLED = /\balready been cancel/i;

const dryRunCanceller: Canceller = {
  cancel: async (targets) => targets.map(() => ({ kind: "cancelled" })),
  dryRun: () => dryRunCanceller,
};

export function createCanceller(
  client: StripeClient,
  options: { concurrency: number; stopMarginMs: number; now?: () => number },
): Canceller {
  const now = options.now ?? Date.now;
  return {
    async cancel(targets, deadline) {
      const outcomes: CancelOutcome[] = new Array(targets.length);
      await runPool(
        targets.map((_, i) => i),
        options.concurrency,
        async (i) => {
          if (deadline - now() < options.stopMarginMs) {
            outcomes[i] = NOT_SENT;
            return;
          }
          const body = encodeCancelForm(targets[i] as CancelTarget);
          const v = await postForm(client, "/v1/billing/meter_event_adjustments", body, deadline);
          outcomes[i] =
            v.kind === "ok"
              ? { kind: "cancelled", requestId: v.requestId }
              : v.kind === "retry"
                ? { kind: "retry", reason: v.reason }
                : v.code === "stripe_unauthorized"
                  ? { kind: "unauthorized", reason: v.reason }
                  : ALREADY_CANCELLED.test(v.reason)
                    ? { kind: "cancelled", already: true, requestId: v.requestId }
                    : { kind: "refused", reason: v.reason, requestId: v.requestId };
        },
      );
      return outcomes;
    },
    dryRun: () => dryRunCanceller,
  };
}
