/**
 * Event destinations (shared/stripe/METER_API.md §4.2, §8, §10 "Event delivery"): each error
 * report is POSTed, as a thin notification (the event without `data`), to every destination that
 * takes its type, signed with the destination's secret in a `Stripe-Signature` header; a delivery
 * answered with anything but 2xx, or not at all, is tried again later with a fresh signature.
 * Stripe's own retry schedule is not confirmed; the emulator's is `retryDelaysMs`.
 */
import { createHmac } from "node:crypto";
import type { CoreEvent } from "./reports.js";

export interface EventDestination {
  /** Where notifications are POSTed. */
  url: string;
  /** The destination's signing secret (`whsec_...`). */
  secret: string;
  /** The event types it takes; every type when unset. */
  enabledEvents?: readonly string[];
}

/** One try at delivering one event to one destination. */
export interface Delivery {
  eventId: string;
  url: string;
  /** 1 for the first try. */
  attempt: number;
  /** The destination's HTTP status, or why there was none. */
  status: number | "no answer";
  at: string;
}

/** The emulator's schedule: a try, then one after each of these delays. */
export const DEFAULT_RETRY_DELAYS_MS = [1_000, 5_000, 30_000, 120_000, 600_000];
/** A destination that has not answered in this long has failed the try. */
const ANSWER_TIMEOUT_MS = 10_000;

/** The notification Stripe pushes: unversioned and minimal, without `data` (fetched by id). */
export function thinNotification(event: CoreEvent): Omit<CoreEvent, "data"> {
  const { data: _data, ...thin } = event;
  return thin;
}

/** `Stripe-Signature` for `body` at Unix time `t` (§8): `t=<t>,v1=<hex HMAC-SHA256 of "t.body">`. */
export function stripeSignature(secret: string, t: number, body: string): string {
  return `t=${t},v1=${createHmac("sha256", secret).update(`${t}.${body}`).digest("hex")}`;
}

export class EventDeliveries {
  /** Every try made, oldest first. */
  readonly log: Delivery[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly pending = new Set<Promise<void>>();
  private stopped = false;

  constructor(
    private readonly destinations: EventDestination[],
    private readonly retryDelaysMs: readonly number[],
    private readonly now: () => number,
  ) {}

  /** Another destination, for the reports made from now on. */
  add(destination: EventDestination): void {
    this.destinations.push(destination);
  }

  /** Sends `event` to every destination that takes its type. */
  deliver(event: CoreEvent): void {
    const body = JSON.stringify(thinNotification(event));
    for (const d of this.destinations) {
      if (d.enabledEvents && !d.enabledEvents.includes(event.type)) continue;
      this.attempt(d, event.id, body, 1);
    }
  }

  /** Settles the tries in flight, and makes no more. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await Promise.all([...this.pending]);
  }

  private attempt(d: EventDestination, eventId: string, body: string, attempt: number): void {
    if (this.stopped) return;
    const tried = this.post(d, body).then((status) => {
      this.log.push({ eventId, url: d.url, attempt, status, at: new Date(this.now()).toISOString() });
      const delay = this.retryDelaysMs[attempt - 1];
      if ((typeof status === "number" && status >= 200 && status < 300) || delay === undefined || this.stopped) return;
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        this.attempt(d, eventId, body, attempt + 1);
      }, delay);
      timer.unref();
      this.timers.add(timer);
    });
    this.pending.add(tried);
    void tried.finally(() => this.pending.delete(tried));
  }

  private async post(d: EventDestination, body: string): Promise<number | "no answer"> {
    try {
      const res = await fetch(d.url, {
        method: "POST",
        headers: {
          "content-type": "application/json; charset=utf-8",
          "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
          // Signed at each try, as a retry carries a new timestamp.
          "stripe-signature": stripeSignature(d.secret, Math.floor(this.now() / 1000), body),
        },
        body,
        signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS),
      });
      await res.arrayBuffer();
      return res.status;
    } catch {
      return "no answer";
    }
  }
}
