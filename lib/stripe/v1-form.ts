/**
 * Stripe's v1 API takes form-encoded POSTs: meter events (v1-meter-events.ts) and meter event
 * adjustments (meter-event-adjustments.ts) are both sent this way.
 */
import type { StripeClient } from "./client.js";
import type { Verdict } from "./retry-policy.js";

/** Characters a form value may carry as they are; most names, ids and numbers are only these. */
const FORM_SAFE = /^[A-Za-z0-9_.~-]*$/;
/** A form value, percent-encoded only when it must be. */
export const enc = (s: string) => (FORM_SAFE.test(s) ? s : encodeURIComponent(s));

/** A v1 form POST to Stripe's API, with the client's retries. */
export function postForm(client: StripeClient, path: string, body: string, deadline: number): Promise<Verdict> {
  return client.call({ base: "api", path, body, contentType: "application/x-www-form-urlencoded", deadline });
}
