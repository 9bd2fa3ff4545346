import type { MeterEvent } from "../meter-event.js";
import { isoFromSeconds } from "../timestamps.js";
import type { BearerSource, StripeClient } from "./client.js";
import type { Verdict } from "./retry-policy.js";
import { type MeterEventSubmitter, NOT_SENT, runPool, type SubmitOutcome } from "./submitter.js";
import { toOutcome } from "./verdict-outcome.js";

export const MAX_STREAM_BATCH = 100;

/**
 * A v2 meter event session: one token shared by every request of a warm Lambda, created once
 * (concurrent callers share the request), renewed `refreshMarginMs` before it expires and at
 * once when Stripe answers `billing_meter_event_session_expired`.
 */
export class MeterEventSession implements BearerSource {
  private current: { token: string; expiresAt: number } | undefined;
  private pending: Promise<string | Verdict> | undefined;

  constructor(
    private readonly client: StripeClient,
    private readonly refreshMarginMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  token(deadline: number): Promise<string | Verdict> {
    if (this.current && this.current.expiresAt - this.now() > this.refreshMarginMs) {
      return Promise.resolve(this.current.token);
    }
    this.pending ??= this.create(deadline).finally(() => {
      this.pending = undefined;
    });
    return this.pending;
  }

  expired(token: string): void {
    if (this.current?.token === token) this.current = undefined;
  }

  private async create(deadline: number): Promise<string | Verdict> {
    const verdict = await this.client.call({
      base: "api",
      path: "/v2/billing/meter_event_session",
      body: "{}",
      contentType: "application/json",
      deadline,
    });
    if (verdict.kind !== "ok") return verdict;
    try {
      const body = JSON.parse(verdict.body) as { authentication_token?: unknown; expires_at?: unknown };
      const expiresAt = Date.parse(String(body.expires_at));
      if (typeof body.authentication_token !== "string" || Number.isNaN(expiresAt)) throw new Error();
      this.current = { token: body.authentication_token, expiresAt };
      return body.authentication_token;
    } catch {
      return { kind: "retry", reason: "Stripe returned a meter event session without a token" };
    }
  }
}

/** One event as the stream takes it: the same shape for every event keeps JSON.stringify on its fast path. */
export function toStreamEvent(e: MeterEvent): {
  event_name: string;
  identifier: string;
  timestamp: string;
  payload: Record<string, string>;
} {
  return {
    event_name: e.event_name,
    identifier: e.identifier,
    timestamp: isoFromSeconds(e.timestamp),
    payload: e.payload,
  };
}

/** The request body for a batch of events. */
export function streamBody(events: readonly MeterEvent[]): string {
  return JSON.stringify({ events: events.map(toStreamEvent) });
}

/**
 * The v2 high-throughput stream: batches of up to 100 events per request to the meter-events
 * host, several batches in flight. A batch succeeds or fails as a whole; Stripe validates each
 * event asynchronously, which is why events are validated here before they are sent.
 */
export function createV2StreamSubmitter(
  client: StripeClient,
  options: {
    batchSize: number;
    concurrency: number;
    stopMarginMs: number;
    now?: () => number;
    session?: MeterEventSession;
  },
): MeterEventSubmitter {
  const now = options.now ?? Date.now;
  const session = options.session ?? new MeterEventSession(client, 60_000, now);
  const size = Math.min(Math.max(1, options.batchSize), MAX_STREAM_BATCH);
  return {
    api: "v2",
    async submit(events, deadline) {
      const outcomes: SubmitOutcome[] = new Array(events.length);
      // Batches are ranges of `events`: [from, to).
      const batches: Array<[number, number]> = [];
      for (let i = 0; i < events.length; i += size) batches.push([i, Math.min(i + size, events.length)]);
      const send = async ([from, to]: [number, number]): Promise<void> => {
        let outcome: SubmitOutcome;
        if (deadline - now() < options.stopMarginMs) {
          outcome = NOT_SENT;
        } else {
          const body = streamBody(events.slice(from, to));
          outcome = toOutcome(
            await client.call({
              base: "meterEvents",
              path: "/v2/billing/meter_event_stream",
              body,
              contentType: "application/json",
              auth: session,
              deadline,
            }),
          );
        }
        if (outcome.kind === "rejected" && outcome.code === "stripe_rejected" && to - from > 1) {
          // Stripe refuses a whole batch for one bad event: halve it until the bad ones are
          // alone, so only they are dead-lettered. Resending is safe: identifiers do not change.
          const half = from + Math.ceil((to - from) / 2);
          await send([from, half]);
          await send([half, to]);
          return;
        }
        outcomes.fill(outcome, from, to);
      };
      await runPool(batches, options.concurrency, send);
      return outcomes;
    },
  };
}
