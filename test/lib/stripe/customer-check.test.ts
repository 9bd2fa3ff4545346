import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { createLogger } from "../../../lib/logger.js";
import { MetricsRecorder } from "../../../lib/metrics.js";
import { type CustomerCheckOptions, checkingCustomers } from "../../../lib/stripe/customer-check.js";
import { RateLimiter } from "../../../lib/stripe/rate-limiter.js";
import { createV2StreamSubmitter } from "../../../lib/stripe/v2-meter-event-stream.js";
import type { StripeEmulator } from "../../../local/stripe-emulator/server.js";
import { clientFor, inAMinute, meterEvent, RESTRICTED_KEY_REFUSAL, startEmulator } from "../../helpers/stripe.js";

let emulator: StripeEmulator;
const closers: Array<() => Promise<void>> = [];
before(async () => {
  emulator = await startEmulator({ customers: ["cus_Kept", "cus_Leaving", "cus_Slow", "cus_Shared"] });
});
after(() => emulator.stop());
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
});

let clock = Date.parse("2026-11-28T10:00:00Z");
const lines: Array<Record<string, unknown>> = [];
const HOUR = 3_600_000;
/** The v2 stream submitter behind the customer check, on a clock the test moves (the rate's too). */
function checked(options: Partial<CustomerCheckOptions> = {}) {
  const { client, transport } = clientFor(emulator, { maxAttempts: 2 });
  closers.push(() => transport.close());
  const logger = createLogger({ write: (l) => lines.push(JSON.parse(l)) });
  const inner = createV2StreamSubmitter(client, { batchSize: 100, concurrency: 2, stopMarginMs: 100 });
  return checkingCustomers(inner, client, logger, {
    maxAgeMs: HOUR,
    limiter: new RateLimiter(100, 100, () => clock),
    now: () => clock,
    ...options,
  });
}
let n = 0;
const event = (customer: string) =>
  meterEvent(++n + 800_000, {
    identifier: `mh_customers_test_${process.pid}_${n}`,
    payload: { stripe_customer_id: customer, value: "1" },
  });
const reads = (customer: string) => emulator.requests.filter((r) => r.path === `/v1/customers/${customer}`).length;
const kinds = (outcomes: Array<{ kind: string; code?: string }>) => outcomes.map((o) => o.code ?? o.kind);

describe("the customer check", () => {
  test("an answer stands for maxAgeMs; then the customer is read again, and a customer deleted meanwhile is refused", async () => {
    const submitter = checked();
    assert.deepEqual(kinds(await submitter.submit([event("cus_Leaving")], inAMinute())), ["billed"]);
    emulator.deleteCustomer("cus_Leaving");
    clock += HOUR - 1;
    // Still the answer read an hour ago: sent, and refused by Stripe later.
    assert.deepEqual(kinds(await submitter.submit([event("cus_Leaving")], inAMinute())), ["billed"]);
    assert.equal(reads("cus_Leaving"), 1);
    clock += 1;
    const [late] = await submitter.submit([event("cus_Leaving")], inAMinute());
    assert.equal(reads("cus_Leaving"), 2);
    assert.deepEqual(kinds([late as { kind: string }]), ["customer_not_in_stripe"]);
    assert.match((late as { reason: string }).reason, /customer cus_Leaving was deleted in Stripe/);
  });

  test("a check that fails keeps the answer before it, or sends the event unchecked, counted; it is tried again by the next batch", async () => {
    const metrics = new MetricsRecorder();
    const submitter = checked({ metrics });
    const outage = { status: 503, body: { error: { type: "api_error", message: "down" } } };
    emulator.injectFaults({ path: "/v1/customers/cus_Slow", respond: outage, times: 2 });
    // Never answered: sent as without the check.
    assert.deepEqual(kinds(await submitter.submit([event("cus_Slow"), event("cus_Kept")], inAMinute())), [
      "billed",
      "billed",
    ]);
    assert.deepEqual(metrics.drain().find((p) => p.name === "EventsCustomerUnchecked")?.values, [1]);
    assert.ok(
      lines.some((l) => l.level === "warn" && String(l.message).startsWith("checking a customer in Stripe failed")),
    );
    // Not remembered as anything: the next batch reads it.
    assert.deepEqual(kinds(await submitter.submit([event("cus_Slow")], inAMinute())), ["billed"]);
    assert.equal(reads("cus_Slow"), 3);
    assert.equal(
      metrics.drain().find((p) => p.name === "EventsCustomerUnchecked"),
      undefined,
    );

    // Stale, and Stripe failing again: the answer before stands, and the event is not unchecked.
    emulator.deleteCustomer("cus_Kept");
    clock += HOUR;
    emulator.injectFaults({ path: "/v1/customers/cus_Kept", respond: outage, times: 2 });
    assert.deepEqual(kinds(await submitter.submit([event("cus_Kept")], inAMinute())), ["billed"]);
    assert.equal(
      metrics.drain().find((p) => p.name === "EventsCustomerUnchecked"),
      undefined,
    );
    assert.deepEqual(kinds(await submitter.submit([event("cus_Kept")], inAMinute())), ["customer_not_in_stripe"]);
  });

  test("batches at once share one read of a customer", async () => {
    const submitter = checked();
    emulator.injectFaults({ path: "/v1/customers/cus_Shared", delayMs: 100 });
    const before = reads("cus_Shared");
    const answers = await Promise.all([1, 2, 3].map(() => submitter.submit([event("cus_Shared")], inAMinute())));
    assert.deepEqual(answers.map(kinds), [["billed"], ["billed"], ["billed"]]);
    assert.equal(reads("cus_Shared") - before, 1);
  });

  test("only turns free at once are taken: a batch never waits for the rate", async () => {
    const metrics = new MetricsRecorder();
    const submitter = checked({ metrics, limiter: new RateLimiter(1, 2, () => clock) });
    const customers = ["cus_Rate1", "cus_Rate2", "cus_Rate3", "cus_Rate4"];
    const outcomes = await submitter.submit(
      customers.map((c) => event(c)),
      inAMinute(),
    );
    assert.deepEqual(kinds(outcomes), ["customer_not_in_stripe", "customer_not_in_stripe", "billed", "billed"]);
    assert.deepEqual(
      customers.map((c) => reads(c)),
      [1, 1, 0, 0],
    );
    assert.deepEqual(metrics.drain().find((p) => p.name === "EventsCustomerUnchecked")?.values, [2]);
    // Two seconds on, two turns more.
    clock += 2_000;
    const next = await submitter.submit(
      customers.map((c) => event(c)),
      inAMinute(),
    );
    assert.deepEqual(
      kinds(next),
      customers.map(() => "customer_not_in_stripe"),
    );
  });

  test("a key Stripe will not let read customers (a restricted key): the check is off for maxAgeMs, with an error, then tried again", async () => {
    const metrics = new MetricsRecorder();
    const submitter = checked({ metrics });
    emulator.injectFaults({ path: "/v1/customers/cus_Restricted", respond: RESTRICTED_KEY_REFUSAL });
    assert.deepEqual(kinds(await submitter.submit([event("cus_Restricted")], inAMinute())), ["billed"]);
    const off = lines.find((l) => String(l.message).startsWith("the customer check is off"));
    assert.equal(off?.level, "error");
    assert.match(String(off?.fix), /read access to Customers/);
    // Off: no read while it lasts.
    clock += 60_000;
    assert.deepEqual(kinds(await submitter.submit([event("cus_Restricted")], inAMinute())), ["billed"]);
    assert.equal(reads("cus_Restricted"), 1);
    const drained = metrics.drain();
    assert.deepEqual(drained.find((p) => p.name === "EventsCustomerUnchecked")?.values, [2]);
    // Counted apart too, for the alarm: a cold start's events waiting for a turn are not.
    assert.deepEqual(drained.find((p) => p.name === "EventsCustomerCheckOff")?.values, [2]);
    clock += HOUR;
    assert.deepEqual(kinds(await submitter.submit([event("cus_Restricted")], inAMinute())), ["customer_not_in_stripe"]);
    assert.equal(reads("cus_Restricted"), 2);
    assert.equal(
      metrics.drain().find((p) => p.name === "EventsCustomerCheckOff"),
      undefined,
    );
  });

  test("a replay with a key Stripe will not let read customers keeps the letters, saying why", async () => {
    const metrics = new MetricsRecorder();
    const submitter = checked({ metrics, waitForTurns: true });
    emulator.injectFaults({ path: "/v1/customers/cus_ReplayRestricted", respond: RESTRICTED_KEY_REFUSAL });
    const held = event("cus_ReplayRestricted");
    const [o] = await submitter.submit([held], inAMinute());
    assert.equal(o?.kind, "retry");
    assert.match(
      (o as { reason: string }).reason,
      /Stripe refuses to let this key read customers \(give it read access to Customers, or replay with METERHOOK_CUSTOMER_CHECK=off\)/,
    );
    assert.equal(emulator.ledger.receipts.has(held.identifier), false);
    const off = lines.findLast((l) => String(l.message).startsWith("the customer check is off"));
    assert.match(String(off?.message), /letters whose customer is not known stay in the DLQ/);
    // While off, no further read: the next letter is held with the same reason.
    const [next] = await submitter.submit([event("cus_ReplayRestricted")], inAMinute());
    assert.match((next as { reason: string }).reason, /refuses to let this key read customers/);
    assert.equal(reads("cus_ReplayRestricted"), 1);
    assert.equal(
      metrics.drain().find((p) => p.name === "EventsCustomerCheckOff"),
      undefined,
    );
  });

  test("a dry run checks customers and sends nothing", async () => {
    const submitter = checked().dryRun?.();
    const gone = event("cus_DryGone");
    const kept = event("cus_Shared");
    assert.deepEqual(kinds((await submitter?.submit([gone, kept], inAMinute())) ?? []), [
      "customer_not_in_stripe",
      "billed",
    ]);
    assert.equal(emulator.ledger.receipts.has(kept.identifier), false);
  });

  test("waiting for turns (a replay): an event whose customer gets no turn before the deadline is retried, not sent unchecked", async () => {
    const metrics = new MetricsRecorder();
    // One read a second on the real clock, and half a second to go: the second customer has no turn.
    const submitter = checked({ metrics, waitForTurns: true, limiter: new RateLimiter(1, 1), now: Date.now });
    const first = event("cus_Shared");
    const second = event("cus_WaitGone");
    const [a, b] = await submitter.submit([first, second], Date.now() + 500);
    assert.equal(a?.kind, "billed");
    assert.equal(b?.kind, "retry");
    assert.match((b as { reason: string }).reason, /customer cus_WaitGone could not be read from Stripe in time/);
    assert.equal(reads("cus_WaitGone"), 0);
    assert.equal(emulator.ledger.receipts.has(second.identifier), false);
    assert.equal(
      metrics.drain().find((p) => p.name === "EventsCustomerUnchecked"),
      undefined,
    );
  });
});
