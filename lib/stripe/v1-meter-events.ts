import { CUSTOMER_KEY, type MeterEvent } from "../meter-event.js";
import type { StripeClient } from "./client.js";
import { type MeterEventSubmitter, NOT_SENT, runPool, type SubmitOutcome } from "./submitter.js";
import { enc, postForm } from "./v1-form.js";
import { toOutcome } from "./verdict-outcome.js";

/** `payload[stripe_customer_id]=cus_1&...`; brackets left raw, as Stripe's SDKs send them. */
export function encodeV1Form(e: MeterEvent): string {
  let form = `event_name=${enc(e.event_name)}&identifier=${enc(e.identifier)}&timestamp=${e.timestamp}`;
  for (const k in e.payload) form += `&payload[${enc(k)}]=${enc(e.payload[k] as string)}`;
  return form;
}

/**
 * v1 `POST /v1/billing/meter_events`, one event per call. Stripe allows one concurrent call per
 * customer and meter, so events of the same pair are sent one after another; pairs in parallel.
 */
export function createV1Submitter(
  client: StripeClient,
  options: { concurrency: number; stopMarginMs: number; now?: () => number },
): MeterEventSubmitter {
  const now = options.now ?? Date.now;
  return {
    api: "v1",
    async submit(events, deadline) {
      const outcomes: SubmitOutcome[] = new Array(events.length);
      const lanes = new Map<string, number[]>();
      events.forEach((e, i) => {
        const key = `${e.event_name}\u0000${e.payload[CUSTOMER_KEY]}`;
        const lane = lanes.get(key);
        if (lane) lane.push(i);
        else lanes.set(key, [i]);
      });
      await runPool([...lanes.values()], options.concurrency, async (lane) => {
        for (const i of lane) {
          const e = events[i] as MeterEvent;
          if (deadline - now() < options.stopMarginMs) {
            outcomes[i] = NOT_SENT;
            continue;
          }
          outcomes[i] = toOutcome(await postForm(client, "/v1/billing/meter_events", encodeV1Form(e), deadline));
        }
      });
      return outcomes;
    },
  };
}
