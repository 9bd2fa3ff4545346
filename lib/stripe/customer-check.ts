/**
 * Whether Stripe has each customer of a customer table (`meterhook customers`). Stripe checks a
 * meter event's customer only after it has accepted the event (the v2 stream), so a mistyped or
 * deleted `cus_` id in a table loses its usage to Stripe's error reports; checked before a
 * deploy, it is found first.
 */
import type { StripeClient } from "./client.js";
import { runPool } from "./submitter.js";

export type CustomerState = "ok" | "missing" | "deleted";

/** Each id's state: `GET /v1/customers/{id}` (404: missing; `deleted: true`: deleted), a few at a time. */
export async function checkStripeCustomers(
  client: StripeClient,
  ids: readonly string[],
  deadline: number,
  concurrency = 4,
): Promise<Map<string, CustomerState>> {
  const states = new Map<string, CustomerState>();
  await runPool([...new Set(ids)], concurrency, async (id) => {
    const v = await client.call({
      base: "api",
      method: "GET",
      path: `/v1/customers/${encodeURIComponent(id)}`,
      deadline,
    });
    if (v.kind === "ok") {
      states.set(id, (JSON.parse(v.body) as { deleted?: unknown }).deleted === true ? "deleted" : "ok");
    } else if (v.kind === "permanent" && v.status === 404) {
      states.set(id, "missing");
    } else {
      throw new Error(`checking customer ${id} in Stripe failed: ${v.reason}`);
    }
  });
  return states;
}
