/**
 * Cancelling meter events Stripe already has: `POST /v1/billing/meter_event_adjustments` with
 * `type=cancel` (shared/stripe/METER_API.md §2). The v1 endpoint serves both APIs' events (one
 * identifier space per account) and takes restricted keys, which the v2 one does not.
 */
import type { CancelTarget } from "../cancellation.js";
import type { StripeClient } from "./client.js";
import { NOT_SENT, runPool, type SubmitOutcome } from "./submitter.js";
import { enc, postForm } from "./v1-form.js";
import { toOutcome } from "./verdict-outcome.js";

export type { CancelTarget };

/**
 * Sends cancellations. Its outcomes are a submitter's: `billed` is cancelled (`duplicate`: Stripe
 * says it was cancelled before), `retry` is transient, `rejected` is Stripe's refusal, which the
 * consumer retries for a while (a cancellation can overtake its event: lib/consumer.ts).
 */
export interface Canceller {
  /** One outcome per target, in order. Never throws. */
  cancel(targets: readonly CancelTarget[], deadline: number): Promise<SubmitOutcome[]>;
  /** The same canceller in a dry run (a replay's --dry-run): every target counts as cancelled, none is sent. */
  dryRun(): Canceller;
}

export function encodeCancelForm(t: CancelTarget): string {
  return `event_name=${enc(t.event_name)}&type=cancel&cancel[identifier]=${enc(t.identifier)}`;
}

/**
 * Stripe's refusal of a cancellation already made. Stripe documents its refusals (no such event,
 * more than 24 h, already cancelled) neither by code nor apart (METER_API.md §12, item 11); this
 * is the emulator's wording. Another wording is a refusal, which ends in a `cancel_rejected`
 * letter quoting it: visible, never a silent loss.
 */
const ALREADY_CANCELLED = /\balready been cancel/i;

const dryRunCanceller: Canceller = {
  cancel: async (targets) => targets.map(() => ({ kind: "billed", duplicate: false })),
  dryRun: () => dryRunCanceller,
};

export function createCanceller(
  client: StripeClient,
  options: { concurrency: number; stopMarginMs: number; now?: () => number },
): Canceller {
  const now = options.now ?? Date.now;
  return {
    async cancel(targets, deadline) {
      const outcomes: SubmitOutcome[] = new Array(targets.length);
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
            v.kind === "permanent" && v.code === "stripe_rejected" && ALREADY_CANCELLED.test(v.reason)
              ? { kind: "billed", duplicate: true, requestId: v.requestId }
              : toOutcome(v);
        },
      );
      return outcomes;
    },
    dryRun: () => dryRunCanceller,
  };
}
