import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { createLogger } from "../../../lib/logger.js";
import { MetricsRecorder } from "../../../lib/metrics.js";
import { checkingMeters, type MeterCheckOptions, readActiveMeters } from "../../../lib/stripe/meters.js";
import { createV2StreamSubmitter } from "../../../lib/stripe/v2-meter-event-stream.js";
import type { StripeEmulator } from "../../../local/stripe-emulator/server.js";
import { clientFor, inAMinute, meterEvent, RESTRICTED_KEY_REFUSAL, startEmulator } from "../../helpers/stripe.js";

const METERS = "/v1/billing/meters";
let emulator: StripeEmulator;
const closers: Array<() => Promise<void>> = [];
before(async () => {
  emulator = await startEmulator({
    customers: "any",
    meters: [
      { event_name: "api_requests" },
      { event_name: "retired", status: "inactive" },
      { event_name: "tokens", customerKey: "customer_ref", valueKey: "tokens_used" },
    ],
  });
});
after(() => emulator.stop());
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
});

let clock = Date.parse("2026-11-28T10:00:00Z");
const lines: Array<Record<string, unknown>> = [];
/** The v2 stream submitter behind the meter check, on a clock the test moves. */
function checked(options: Partial<MeterCheckOptions> = {}, clientOptions: Parameters<typeof clientFor>[1] = {}) {
  const { client, transport } = clientFor(emulator, { maxAttempts: 2, ...clientOptions });
  closers.push(() => transport.close());
  const logger = createLogger({ write: (l) => lines.push(JSON.parse(l)) });
  const inner = createV2StreamSubmitter(client, { batchSize: 100, concurrency: 2, stopMarginMs: 100 });
  return checkingMeters(inner, client, logger, { maxAgeMs: 300_000, now: () => clock, ...options });
}
let n = 0;
const event = (eventName: string, payload: Record<string, string> = {}) =>
  meterEvent(++n + 900_000, {
    event_name: eventName,
    identifier: `mh_meters_test_${process.pid}_${n}`,
    payload: { stripe_customer_id: "cus_M", value: "4", ...payload },
  });
const lists = () => emulator.requests.filter((r) => r.path === METERS).length;
const received = (identifier: string) => emulator.ledger.events.find((e) => e.identifier === identifier);

describe("Stripe's active meters", () => {
  test("every page is read; inactive meters are left out; each meter's payload keys are kept", async () => {
    const own = await startEmulator({
      meters: Array.from({ length: 250 }, (_, i) => ({
        event_name: `meter_${i}`,
        status: i % 50 === 7 ? ("inactive" as const) : ("active" as const),
        ...(i === 3 ? { customerKey: "account", valueKey: "units" } : {}),
      })),
    });
    const { client, transport } = clientFor(own);
    try {
      const meters = await readActiveMeters(client, inAMinute());
      assert.equal(meters.size, 245);
      assert.equal(meters.has("meter_7"), false);
      assert.equal(meters.has("meter_249"), true);
      assert.deepEqual(meters.get("meter_3"), {
        id: own.ledger.meters.get("meter_3")?.id,
        eventName: "meter_3",
        customerKey: "account",
        valueKey: "units",
        defaultKeys: false,
      });
      assert.equal(meters.get("meter_0")?.customerKey, "stripe_customer_id");
      // 250 meters at 100 a page, the inactive ones filtered by Stripe.
      assert.equal(own.requests.filter((r) => r.path === METERS).length, 3);
    } finally {
      await transport.close();
      await own.stop();
    }
  });

  test("an event_name with no active meter is refused meter_not_found and never sent; the others are billed", async () => {
    const submitter = checked();
    const ok = event("api_requests");
    const [none, retired] = [event("no_such_meter"), event("retired")];
    const outcomes = await submitter.submit([none, ok, retired], inAMinute());
    assert.deepEqual(
      outcomes.map((o) => [o.kind, "code" in o ? o.code : undefined]),
      [
        ["rejected", "meter_not_found"],
        ["billed", undefined],
        ["rejected", "meter_not_found"],
      ],
    );
    assert.match((outcomes[0] as { reason: string }).reason, /no active Stripe meter has event_name "no_such_meter"/);
    assert.ok(received(ok.identifier));
    assert.equal(received(none.identifier), undefined);
    assert.equal(received(retired.identifier), undefined);
  });

  test("events go out with their meter's payload keys; a property named like one of them is refused", async () => {
    const submitter = checked();
    const tokens = event("tokens", { model: "large" });
    const clash = event("tokens", { customer_ref: "mine" });
    const outcomes = await submitter.submit([tokens, clash], inAMinute());
    assert.deepEqual(
      outcomes.map((o) => o.kind),
      ["billed", "rejected"],
    );
    assert.equal((outcomes[1] as { code: string }).code, "invalid_payload");
    assert.match((outcomes[1] as { reason: string }).reason, /property "customer_ref" is the payload key meter mtr_/);
    assert.deepEqual(received(tokens.identifier)?.payload, { model: "large", customer_ref: "cus_M", tokens_used: "4" });
    // The event handed in is not changed (a combined event may be queued again as it is).
    assert.deepEqual(tokens.payload, { stripe_customer_id: "cus_M", value: "4", model: "large" });
    emulator.errorReports.flush();
    assert.equal(
      emulator.ledger.errors.some((e) => e.identifier === tokens.identifier),
      false,
    );
  });

  test("a meter made after the last read: retried until a read made for the miss finds it, at most one read per interval", async () => {
    const submitter = checked({ missIntervalMs: 10_000 });
    await submitter.submit([event("api_requests")], inAMinute());
    const read = lists();
    emulator.defineMeter({ event_name: "late_meter" });

    clock += 1_000;
    const early = event("late_meter");
    // The meters were read a second ago, before the meter existed, and may not be read again yet.
    const [first] = await submitter.submit([early], inAMinute());
    assert.equal(first?.kind, "retry");
    assert.match((first as { reason: string }).reason, /when the meters were last read, 1 s ago/);
    assert.equal(lists(), read);
    assert.equal(received(early.identifier), undefined);

    clock += 10_000;
    const [again] = await submitter.submit([early], inAMinute());
    assert.equal(again?.kind, "billed");
    assert.equal(lists(), read + 1);

    // An event_name no meter will have: refused once a read made after it was first seen lacks it.
    clock += 1_000;
    const [soon] = await submitter.submit([event("never_made")], inAMinute());
    assert.equal(soon?.kind, "retry");
    clock += 10_000;
    const [later] = await submitter.submit([event("never_made")], inAMinute());
    assert.equal(later?.kind, "rejected");
    assert.equal(lists(), read + 2);
    // From then on its events are refused at once, without waiting for another read: a busy
    // function does not retry them until they run out of attempts.
    clock += 1_000;
    const [next] = await submitter.submit([event("never_made")], inAMinute());
    assert.equal((next as { code?: string }).code, "meter_not_found");
    assert.equal(lists(), read + 2);

    // Known names read nothing more until the meters are maxAgeMs old.
    clock += 60_000;
    await submitter.submit([event("api_requests")], inAMinute());
    assert.equal(lists(), read + 2);
    clock += 300_000;
    await submitter.submit([event("api_requests")], inAMinute());
    assert.equal(lists(), read + 3);
  });

  test("while the meters cannot be read, events are retried and none is sent; the first read that works lets them go", async () => {
    const submitter = checked();
    emulator.injectFaults({ path: METERS, respond: { status: 503 }, times: 2 });
    const e = event("api_requests");
    const outcomes = await submitter.submit([e], inAMinute());
    assert.equal(outcomes[0]?.kind, "retry");
    assert.match((outcomes[0] as { reason: string }).reason, /listing Stripe's meters failed/);
    assert.equal(received(e.identifier), undefined);
    // The next batch reads again (no meters yet, whatever the interval) and sends.
    assert.equal((await submitter.submit([e], inAMinute()))[0]?.kind, "billed");
  });

  test("a failed read once meters are known keeps them in use", async () => {
    const submitter = checked();
    await submitter.submit([event("api_requests")], inAMinute());
    clock += 300_000;
    emulator.injectFaults({ path: METERS, respond: { status: 503 }, times: 2 });
    const e = event("api_requests");
    assert.equal((await submitter.submit([e], inAMinute()))[0]?.kind, "billed");
    assert.ok(lines.some((l) => l.level === "warn" && String(l.message).startsWith("reading Stripe's meters failed")));
  });

  test("a key Stripe will not let list the meters (a restricted key): events go unchecked, the list is tried again after maxAgeMs", async () => {
    const metrics = new MetricsRecorder();
    const submitter = checked({ metrics });
    emulator.injectFaults({ path: METERS, respond: RESTRICTED_KEY_REFUSAL });
    const before = lists();
    const first = [event("api_requests"), event("no_such_meter")];
    assert.deepEqual(
      (await submitter.submit(first, inAMinute())).map((o) => o.kind),
      ["billed", "billed"],
    );
    // Sent as it came, unchecked: Stripe took it, then refused it for want of a meter.
    assert.equal(emulator.ledger.errors.find((e) => e.identifier === first[1]?.identifier)?.code, "no_meter");
    const off = lines.find((l) => String(l.message).startsWith("the meter check is off"));
    assert.equal(off?.level, "error");
    assert.match(String(off?.fix), /Billing meters/);
    // Counted, for the meter-check-off alarm.
    assert.deepEqual(metrics.drain().find((p) => p.name === "EventsUnchecked")?.values, [2]);
    // Not read again per batch while it is off...
    clock += 60_000;
    await submitter.submit([event("api_requests")], inAMinute());
    assert.equal(lists(), before + 1);
    // ...but once maxAgeMs has passed: the key can now, and the check is on again.
    clock += 300_000;
    const [later] = await submitter.submit([event("no_such_meter")], inAMinute());
    assert.equal(lists(), before + 2);
    assert.equal((later as { code?: string }).code, "meter_not_found");
  });
});
