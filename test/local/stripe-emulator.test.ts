import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { STRIPE_SIGNATURE } from "../../lib/stripe/event-notifications.js";
import { verifySignature } from "../../lib/webhooks/signatures.js";
import { EMULATOR_DEFAULT_KEY, type StripeEmulator } from "../../local/stripe-emulator/server.js";
import { startEmulator } from "../helpers/stripe.js";
import { waitFor } from "../helpers/wait.js";

const KEY = "sk_test_emulatorkey1";
let emu: StripeEmulator;
let clock = Date.now();

before(async () => {
  emu = await startEmulator({
    apiKeys: [KEY],
    meters: [
      { event_name: "api_requests" },
      { event_name: "seats", formula: "last" },
      { event_name: "old_meter", status: "inactive" },
    ],
    customers: ["cus_A", "cus_B"],
    now: () => clock,
  });
});
after(() => emu.stop());

async function call(
  path: string,
  init: { body?: string; form?: boolean; auth?: string | null; headers?: Record<string, string> } = {},
) {
  const headers: Record<string, string> = {
    "content-type": init.form === false ? "application/json" : "application/x-www-form-urlencoded",
    ...init.headers,
  };
  if (init.auth !== null) headers.authorization = init.auth ?? `Bearer ${KEY}`;
  const res = await fetch(`${emu.url}${path}`, {
    method: init.body === undefined ? "GET" : "POST",
    headers,
    body: init.body,
  });
  return {
    status: res.status,
    headers: res.headers, // biome-ignore lint/suspicious/noExplicitAny: Stripe-shaped JSON, asserted field by field
    body: (await res.json()) as Record<string, any>,
  };
}
const v1 = (body: string, extra: Parameters<typeof call>[1] = {}) =>
  call("/v1/billing/meter_events", { body, ...extra });
const v2json = (path: string, body: unknown, extra: Parameters<typeof call>[1] = {}) =>
  call(path, { body: JSON.stringify(body), form: false, ...extra });
let n = 0;
const id = () => `ident_${++n}`;

describe("v1 meter events", () => {
  test("accepts a form body with raw or percent-encoded brackets and echoes string payload values", async () => {
    const a = await v1(`event_name=api_requests&identifier=${id()}&payload[stripe_customer_id]=cus_A&payload[value]=5`);
    const b = await v1(
      `event_name=api_requests&identifier=${id()}&payload%5Bstripe_customer_id%5D=cus_A&payload%5Bvalue%5D=2.5`,
    );
    assert.equal(a.status, 200);
    assert.equal(a.body.object, "billing.meter_event");
    assert.deepEqual(b.body.payload, { stripe_customer_id: "cus_A", value: "2.5" });
    assert.equal(a.body.livemode, false);
    assert.match(a.headers.get("request-id") ?? "", /^req_/);
  });

  test("401 without a key, with an unknown key; Basic auth with the key as user name works", async () => {
    assert.equal((await v1("event_name=api_requests", { auth: null })).status, 401);
    const wrong = await v1("event_name=api_requests", { auth: "Bearer sk_test_nope1234" });
    assert.equal(wrong.status, 401);
    assert.doesNotMatch(JSON.stringify(wrong.body), /sk_test_nope1234/);
    const basic = `Basic ${Buffer.from(`${KEY}:`).toString("base64")}`;
    const ok = await v1(
      `event_name=api_requests&identifier=${id()}&payload[stripe_customer_id]=cus_A&payload[value]=1`,
      { auth: basic },
    );
    assert.equal(ok.status, 200);
  });

  test("synchronous 400s: missing and unknown params, long strings, bad timestamp, too many digits", async () => {
    const cases: Array<[string, string | undefined]> = [
      ["payload[value]=1", "parameter_missing"],
      ["event_name=api_requests", "parameter_missing"],
      ["event_name=api_requests&payload[value]=1&colour=red", "parameter_unknown"],
      [`event_name=${"x".repeat(101)}&payload[value]=1`, "string_length"],
      [`event_name=api_requests&identifier=${"i".repeat(101)}&payload[value]=1`, "string_length"],
      ["event_name=api_requests&payload[value]=1&timestamp=soon", "invalid_integer"],
      ["event_name=api_requests&payload[stripe_customer_id]=cus_A&payload[value]=1234567890123456", undefined],
    ];
    for (const [body, code] of cases) {
      const res = await v1(body);
      assert.equal(res.status, 400, body);
      assert.equal(res.body.error.type, "invalid_request_error");
      assert.equal(res.body.error.code, code, body);
    }
  });

  test("a duplicate identifier is a 400 with Stripe-Should-Retry: false, and counts once", async () => {
    const ident = id();
    const body = `event_name=api_requests&identifier=${ident}&payload[stripe_customer_id]=cus_B&payload[value]=3`;
    assert.equal((await v1(body)).status, 200);
    const dup = await v1(body);
    assert.equal(dup.status, 400);
    assert.equal(dup.body.error.message, `An event already exists with identifier ${ident}.`);
    assert.equal(dup.headers.get("stripe-should-retry"), "false");
    assert.equal(emu.ledger.events.filter((e) => e.identifier === ident).length, 1);
  });

  test("idempotency: same key replays the first answer; different params are an idempotency_error", async () => {
    const ident = id();
    const body = `event_name=api_requests&identifier=${ident}&payload[stripe_customer_id]=cus_A&payload[value]=1`;
    const headers = { "idempotency-key": `key_${ident}` };
    const first = await v1(body, { headers });
    const replay = await v1(body, { headers });
    assert.equal(replay.status, 200);
    assert.deepEqual(replay.body, first.body);
    const other = await v1(`${body}0`, { headers });
    assert.equal(other.status, 400);
    assert.equal(other.body.error.type, "idempotency_error");
  });

  test("idempotency: a request refused for its parameters is not saved under its key, and keys are per account", async () => {
    const ident = id();
    const headers = { "idempotency-key": `key_${ident}` };
    const good = `event_name=api_requests&identifier=${ident}&payload[stripe_customer_id]=cus_A&payload[value]=1`;
    const refused = await v1(`${good}&colour=blue`, { headers });
    assert.deepEqual([refused.status, refused.body.error.code], [400, "parameter_unknown"]);
    // Not saved: the same key with the parameters fixed is executed, not refused idempotency_error.
    const fixed = await v1(good, { headers });
    assert.deepEqual([fixed.status, fixed.headers.get("idempotent-replayed")], [200, null]);
    // A key of the same name from another account is another key.
    const accounts = await startEmulator({ apiKeys: ["sk_test_account_one", "sk_test_account_two"] });
    try {
      const post = (key: string, body: string) =>
        fetch(`${accounts.url}/v1/billing/meter_events`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${key}`,
            "content-type": "application/x-www-form-urlencoded",
            "idempotency-key": "shared_key",
          },
          body,
        });
      const one = await post("sk_test_account_one", good);
      const two = await post("sk_test_account_two", good.replace(ident, `${ident}_two`));
      assert.deepEqual([one.status, two.status, two.headers.get("idempotent-replayed")], [200, 200, null]);
    } finally {
      await accounts.stop();
    }
  });

  test("v1RefusesAtOnce: no meter and a timestamp out of range answered 400 at once, nothing recorded; a retry under the key after the meter is made is taken", async () => {
    const strict = await startEmulator({
      meters: [{ event_name: "api_requests" }],
      v1RefusesAtOnce: ["no_meter", "timestamp"],
    });
    try {
      const post = (body: string, key?: string) =>
        fetch(`${strict.url}/v1/billing/meter_events`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${EMULATOR_DEFAULT_KEY}`,
            "content-type": "application/x-www-form-urlencoded",
            ...(key ? { "idempotency-key": key } : {}),
          },
          body,
        });
      const event = (name: string, extra = "") =>
        `event_name=${name}&identifier=${id()}&payload[stripe_customer_id]=cus_A&payload[value]=1${extra}`;
      const noMeter = event("signups");
      const first = await post(noMeter, "k_signups");
      const old = await post(event("api_requests", `&timestamp=${Math.floor(Date.now() / 1000) - 40 * 86_400}`));
      const answers = [await first.json(), await old.json()] as Array<{ error: { type: string; message: string } }>;
      assert.deepEqual([first.status, old.status], [400, 400]);
      assert.match(answers[0]?.error.message ?? "", /^No active meter found for event_name signups\.$/);
      assert.match(answers[1]?.error.message ?? "", /35 days in the past/);
      assert.deepEqual([strict.ledger.events.length, strict.ledger.errors.length], [0, 0]);
      strict.defineMeter({ event_name: "signups" });
      assert.equal((await post(noMeter, "k_signups")).status, 200);
      assert.equal(strict.ledger.events.length, 1);
    } finally {
      await strict.stop();
    }
  });

  test("asynchronous failures are reported as errors, not counted", async () => {
    const unknownCustomer = id();
    const tooOld = id();
    const noMeter = id();
    const inactive = id();
    const old = Math.floor(clock / 1000) - 36 * 86_400;
    await v1(
      `event_name=api_requests&identifier=${unknownCustomer}&payload[stripe_customer_id]=cus_Z&payload[value]=1`,
    );
    await v1(
      `event_name=api_requests&identifier=${tooOld}&timestamp=${old}&payload[stripe_customer_id]=cus_A&payload[value]=1`,
    );
    await v1(`event_name=nope&identifier=${noMeter}&payload[stripe_customer_id]=cus_A&payload[value]=1`);
    await v1(`event_name=old_meter&identifier=${inactive}&payload[stripe_customer_id]=cus_A&payload[value]=1`);
    const codes = Object.fromEntries(emu.ledger.errors.map((e) => [e.identifier, e.code]));
    assert.equal(codes[unknownCustomer], "meter_event_customer_not_found");
    assert.equal(codes[tooOld], "timestamp_too_far_in_past");
    assert.equal(codes[noMeter], "no_meter");
    assert.equal(codes[inactive], "archived_meter");
  });
});

describe("v2", () => {
  test("livemode follows the key's kind on v2 answers, as on v1", async () => {
    const live = await startEmulator({ apiKeys: ["sk_live_emulated"] });
    try {
      const post = async (path: string, body: unknown) =>
        (await (
          await fetch(`${live.url}${path}`, {
            method: "POST",
            headers: { authorization: "Bearer sk_live_emulated", "content-type": "application/json" },
            body: JSON.stringify(body),
          })
        ).json()) as { livemode?: boolean };
      const event = { event_name: "api_requests", payload: { stripe_customer_id: "cus_A", value: "1" } };
      assert.equal((await post("/v2/billing/meter_events", event)).livemode, true);
      assert.equal((await post("/v2/billing/meter_event_session", {})).livemode, true);
      assert.equal((await v2json("/v2/billing/meter_event_session", {})).body.livemode, false);
    } finally {
      await live.stop();
    }
  });

  test("idempotency (30 days): work that succeeded is answered again, not done again; failed work is done again; other parameters are an idempotency_error", async () => {
    const path = "/v2/billing/meter_events";
    const ident = id();
    const event = {
      event_name: "api_requests",
      identifier: ident,
      payload: { stripe_customer_id: "cus_A", value: "1" },
    };
    const headers = { "idempotency-key": `v2_${ident}` };
    const first = await v2json(path, event, { headers });
    clock += 29 * 86_400_000;
    const again = await v2json(path, event, { headers });
    clock -= 29 * 86_400_000;
    assert.deepEqual([first.status, again.status], [200, 200]);
    assert.deepEqual(again.body, first.body);
    assert.equal(emu.ledger.events.filter((e) => e.identifier === ident).length, 1);
    const other = await v2json(path, { ...event, payload: { ...event.payload, value: "2" } }, { headers });
    assert.deepEqual(
      [other.status, other.body.error.code, other.body.error.type],
      [400, "idempotency_error", "idempotency_error"],
    );
    // Without the key, the same event is the duplicate it is.
    assert.equal((await v2json(path, event)).body.error.code, "duplicate_meter_event");

    // A meter created after the first try: the same key's retry is done again, and succeeds.
    const late = { event_name: `late_meter_${ident}`, payload: { stripe_customer_id: "cus_A", value: "1" } };
    const lateKey = { "idempotency-key": `v2_late_${ident}` };
    assert.equal((await v2json(path, late, { headers: lateKey })).body.error.code, "no_meter");
    emu.defineMeter({ event_name: late.event_name });
    assert.equal((await v2json(path, late, { headers: lateKey })).status, 200);

    // A session under one key is the same session when asked again.
    const sessionKey = { "idempotency-key": `v2_session_${ident}` };
    const s1 = await v2json("/v2/billing/meter_event_session", {}, { headers: sessionKey });
    const s2 = await v2json("/v2/billing/meter_event_session", {}, { headers: sessionKey });
    assert.equal(s2.body.authentication_token, s1.body.authentication_token);
  });

  test("sync meter events: no_meter, payload_no_value_defined, payload_invalid_value, duplicate_meter_event", async () => {
    const path = "/v2/billing/meter_events";
    const ident = id();
    const ok = await v2json(path, {
      event_name: "api_requests",
      identifier: ident,
      payload: { stripe_customer_id: "cus_A", value: "1" },
    });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.object, "v2.billing.meter_event");
    const codes = [
      await v2json(path, { event_name: "nope", payload: { stripe_customer_id: "cus_A", value: "1" } }),
      await v2json(path, { event_name: "api_requests", payload: { stripe_customer_id: "cus_A" } }),
      await v2json(path, { event_name: "api_requests", payload: { stripe_customer_id: "cus_A", value: "abc" } }),
      await v2json(path, {
        event_name: "api_requests",
        identifier: ident,
        payload: { stripe_customer_id: "cus_A", value: "1" },
      }),
    ].map((r) => [r.status, r.body.error.code]);
    assert.deepEqual(codes, [
      [400, "no_meter"],
      [400, "payload_no_value_defined"],
      [400, "payload_invalid_value"],
      [400, "duplicate_meter_event"],
    ]);
  });

  test("sessions last 15 minutes; an expired token gets 401 billing_meter_event_session_expired", async () => {
    const s = await v2json("/v2/billing/meter_event_session", {});
    assert.equal(s.status, 200);
    assert.equal(s.body.object, "v2.billing.meter_event_session");
    assert.equal(Date.parse(s.body.expires_at) - Date.parse(s.body.created), 15 * 60_000);
    const auth = `Bearer ${s.body.authentication_token}`;
    const event = {
      event_name: "api_requests",
      identifier: id(),
      payload: { stripe_customer_id: "cus_A", value: "1" },
    };
    const ok = await v2json("/v2/billing/meter_event_stream", { events: [event] }, { auth });
    assert.deepEqual([ok.status, ok.body], [200, {}]);
    clock += 15 * 60_000 + 1;
    const expired = await v2json("/v2/billing/meter_event_stream", { events: [event] }, { auth });
    assert.equal(expired.status, 401);
    assert.deepEqual(
      [expired.body.error.type, expired.body.error.code],
      ["temporary_session_expired", "billing_meter_event_session_expired"],
    );
    assert.ok(expired.body.error.doc_url);
  });

  test("the stream takes session tokens only, and 1 to 100 events", async () => {
    const withKey = await v2json("/v2/billing/meter_event_stream", { events: [] });
    assert.equal(withKey.status, 401);
    const s = await v2json("/v2/billing/meter_event_session", {});
    const auth = `Bearer ${s.body.authentication_token}`;
    const ev = (i: number) => ({
      event_name: "api_requests",
      identifier: `many_${n}_${i}`,
      payload: { stripe_customer_id: "cus_A", value: "1" },
    });
    assert.equal((await v2json("/v2/billing/meter_event_stream", { events: [] }, { auth })).status, 400);
    assert.equal(
      (
        await v2json(
          "/v2/billing/meter_event_stream",
          { events: Array.from({ length: 101 }, (_, i) => ev(i)) },
          { auth },
        )
      ).status,
      400,
    );
    assert.equal(
      (
        await v2json(
          "/v2/billing/meter_event_stream",
          { events: Array.from({ length: 100 }, (_, i) => ev(i)) },
          { auth },
        )
      ).status,
      200,
    );
  });
});

describe("totals", () => {
  test("summaries per meter and customer, using the meter's formula", async () => {
    const seat = (v: number) =>
      v1(`event_name=seats&identifier=${id()}&payload[stripe_customer_id]=cus_B&payload[value]=${v}`);
    await seat(5);
    await seat(3);
    const all = await call("/v1/billing/meters/summaries");
    const seats = all.body.data.find((s: { event_name: string }) => s.event_name === "seats");
    assert.deepEqual([seats.aggregated_value, seats.event_count], [3, 2]);
    const meters = await call("/v1/billing/meters");
    const meterId = meters.body.data.find((m: { event_name: string }) => m.event_name === "seats").id;
    const one = await call(`/v1/billing/meters/${meterId}/event_summaries?customer=cus_B`);
    assert.equal(one.body.data[0].aggregated_value, 3);
  });
});

describe("sums", () => {
  test("a sum meter adds decimals exactly, as Stripe does, not to 12 places nor in binary", async () => {
    emu.ledger.defineMeter({ event_name: "gb_hours" });
    for (const c of ["cus_Dec1", "cus_Dec2", "cus_Dec3"]) emu.ledger.customers.set(c, {});
    const add = (customer: string, v: string) =>
      v1(`event_name=gb_hours&identifier=${id()}&payload[stripe_customer_id]=${customer}&payload[value]=${v}`);
    await add("cus_Dec1", "1.66666666666667");
    for (const v of ["0.1", "0.2"]) await add("cus_Dec2", v);
    for (const v of ["2.5", "-0.00000000000001", "10"]) await add("cus_Dec3", v);
    const sum = (customer: string) =>
      emu.ledger.summaries().find((s) => s.event_name === "gb_hours" && s.customer === customer)?.aggregated_value;
    assert.equal(sum("cus_Dec1"), 1.66666666666667);
    assert.equal(sum("cus_Dec2"), 0.3, "0.1 + 0.2 is 0.3 in decimal");
    assert.equal(sum("cus_Dec3"), 12.49999999999999, "14 decimals, past the 12 it kept");
  });
});

describe("meter event adjustments (cancel)", () => {
  const cancelForm = (identifier: string, eventName = "api_requests") =>
    `event_name=${eventName}&type=cancel&cancel[identifier]=${identifier}`;
  const total = (eventName: string, customer: string) =>
    emu.ledger.summaries().find((s) => s.event_name === eventName && s.customer === customer);

  test("v1: a cancelled event leaves the totals, sum and last; pending, then refused a second time", async () => {
    const [a, b] = [id(), id()];
    await v1(`event_name=api_requests&identifier=${a}&payload[stripe_customer_id]=cus_B&payload[value]=4`);
    await v1(`event_name=api_requests&identifier=${b}&payload[stripe_customer_id]=cus_B&payload[value]=6`);
    const before = total("api_requests", "cus_B")?.aggregated_value as number;

    const res = await call("/v1/billing/meter_event_adjustments", { body: cancelForm(b) });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, {
      object: "billing.meter_event_adjustment",
      cancel: { identifier: b },
      event_name: "api_requests",
      livemode: false,
      status: "pending",
      type: "cancel",
    });
    assert.equal(total("api_requests", "cus_B")?.aggregated_value, before - 6);

    const again = await call("/v1/billing/meter_event_adjustments", { body: cancelForm(b) });
    assert.equal(again.status, 400);
    assert.match(again.body.error.message, /already been cancelled/);

    const [s1, s2] = [id(), id()];
    await v1(`event_name=seats&identifier=${s1}&payload[stripe_customer_id]=cus_B&payload[value]=3`);
    await v1(`event_name=seats&identifier=${s2}&payload[stripe_customer_id]=cus_B&payload[value]=9`);
    assert.equal(total("seats", "cus_B")?.aggregated_value, 9);
    await call("/v1/billing/meter_event_adjustments", { body: cancelForm(s2, "seats") });
    assert.equal(total("seats", "cus_B")?.aggregated_value, 3, "last: the latest event left");
  });

  test("v1: 400 for an unknown identifier or event_name, past 24 h, missing params; the key needed; idempotent", async () => {
    const unknown = await call("/v1/billing/meter_event_adjustments", { body: cancelForm("nope") });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.body.error.code, "resource_missing");

    const old = id();
    await v1(`event_name=api_requests&identifier=${old}&payload[stripe_customer_id]=cus_A&payload[value]=1`);
    const other = await call("/v1/billing/meter_event_adjustments", { body: cancelForm(old, "seats") });
    assert.equal(other.body.error.code, "resource_missing", "the identifier under another event_name");
    clock += 24 * 3600 * 1000;
    const late = await call("/v1/billing/meter_event_adjustments", { body: cancelForm(old) });
    assert.equal(late.status, 400);
    assert.match(late.body.error.message, /within 24 hours/);

    for (const [body, param] of [
      ["event_name=api_requests&type=cancel", "cancel[identifier]"],
      [`type=cancel&cancel[identifier]=${old}`, "event_name"],
    ] as const) {
      const r = await call("/v1/billing/meter_event_adjustments", { body });
      assert.equal(r.status, 400);
      assert.deepEqual([r.body.error.code, r.body.error.param], ["parameter_missing", param]);
    }
    const wrongType = await call("/v1/billing/meter_event_adjustments", {
      body: `event_name=api_requests&type=void&cancel[identifier]=${old}`,
    });
    assert.equal(wrongType.body.error.param, "type");
    const noKey = await call("/v1/billing/meter_event_adjustments", { body: cancelForm(old), auth: null });
    assert.equal(noKey.status, 401);

    const fresh = id();
    await v1(`event_name=api_requests&identifier=${fresh}&payload[stripe_customer_id]=cus_A&payload[value]=1`);
    const headers = { "idempotency-key": `adj_${fresh}` };
    const first = await call("/v1/billing/meter_event_adjustments", { body: cancelForm(fresh), headers });
    const replayed = await call("/v1/billing/meter_event_adjustments", { body: cancelForm(fresh), headers });
    assert.equal(first.status, 200);
    assert.equal(replayed.status, 200, "the same key answers as the first time, not 'already cancelled'");
    assert.equal(replayed.headers.get("idempotent-replayed"), "true");
  });

  test("v2: JSON with the secret key; id and created; invalid_cancel_configuration without cancel.identifier", async () => {
    const ident = id();
    await v1(`event_name=api_requests&identifier=${ident}&payload[stripe_customer_id]=cus_A&payload[value]=2`);
    const res = await v2json("/v2/billing/meter_event_adjustments", {
      event_name: "api_requests",
      type: "cancel",
      cancel: { identifier: ident },
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.object, "v2.billing.meter_event_adjustment");
    assert.match(res.body.id, /^mtr_event_adj_/);
    assert.equal(res.body.created, new Date(clock).toISOString());
    assert.deepEqual([res.body.status, res.body.cancel], ["pending", { identifier: ident }]);
    assert.ok(emu.ledger.cancelled.has(ident));

    const bad = await v2json("/v2/billing/meter_event_adjustments", { event_name: "api_requests", type: "cancel" });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.code, "invalid_cancel_configuration");
  });
});

describe("GET /v1/billing/meters", () => {
  test("lists newest first with Stripe's paging and status filter, and needs the key", async () => {
    const own = await startEmulator({
      apiKeys: [KEY],
      meters: [
        { event_name: "m1" },
        { event_name: "m2", status: "inactive" },
        { event_name: "m3", customerKey: "account", valueKey: "units" },
        { event_name: "m4" },
      ],
    });
    try {
      const get = async (query: string, auth = `Bearer ${KEY}`) => {
        const res = await fetch(`${own.url}/v1/billing/meters${query}`, { headers: { authorization: auth } });
        // biome-ignore lint/suspicious/noExplicitAny: Stripe-shaped JSON, asserted field by field
        return { status: res.status, body: (await res.json()) as Record<string, any> };
      };
      const names = (b: Record<string, unknown>) => (b.data as Array<{ event_name: string }>).map((m) => m.event_name);
      const first = await get("?status=active&limit=2");
      assert.deepEqual([names(first.body), first.body.has_more, first.body.object], [["m4", "m3"], true, "list"]);
      const m3 = first.body.data[1];
      assert.deepEqual(
        [m3.object, m3.status, m3.customer_mapping, m3.value_settings],
        ["billing.meter", "active", { type: "by_id", event_payload_key: "account" }, { event_payload_key: "units" }],
      );
      const next = await get(`?status=active&limit=2&starting_after=${m3.id}`);
      assert.deepEqual([names(next.body), next.body.has_more], [["m1"], false]);
      assert.deepEqual(names((await get("?status=inactive")).body), ["m2"]);
      assert.deepEqual(names((await get("")).body), ["m4", "m3", "m2", "m1"]);
      assert.equal((await get("?limit=101")).status, 400);
      assert.equal((await get("?status=archived")).status, 400);
      assert.equal((await get("", "Bearer sk_test_wrong")).status, 401);
    } finally {
      await own.stop();
    }
  });
});

describe("forgetHistory (the benchmarks' reset between runs)", () => {
  test("forgets events, totals, receipts and requests; keeps meters, customers and session tokens", async () => {
    const own = await startEmulator({ apiKeys: [KEY], customers: ["cus_A"] });
    try {
      const post = (path: string, body: unknown, auth = `Bearer ${KEY}`) =>
        fetch(`${own.url}${path}`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: auth },
          body: JSON.stringify(body),
        });
      const session = (await (await post("/v2/billing/meter_event_session", {})).json()) as {
        authentication_token: string;
      };
      const auth = `Bearer ${session.authentication_token}`;
      const events = [
        { event_name: "api_requests", identifier: "forget_1", payload: { stripe_customer_id: "cus_A", value: "4" } },
      ];
      assert.equal((await post("/v2/billing/meter_event_stream", { events }, auth)).status, 200);
      assert.equal(own.ledger.summaries()[0]?.aggregated_value, 4);

      own.forgetHistory();
      assert.deepEqual(
        [own.ledger.events.length, own.ledger.receipts.size, own.ledger.summaries().length, own.requests.length],
        [0, 0, 0, 0],
      );
      assert.ok(own.ledger.meters.has("api_requests"), "meters stay");
      // The same identifier counts again (forgotten), and the session token is still good.
      assert.equal((await post("/v2/billing/meter_event_stream", { events }, auth)).status, 200);
      assert.deepEqual([own.ledger.summaries()[0]?.aggregated_value, own.ledger.errors.length], [4, 0]);
    } finally {
      await own.stop();
    }
  });
});

describe("GET /v1/customers/{id}", () => {
  test("a customer; deleted: true once deleted; 404 resource_missing for an unknown one; the key needed", async () => {
    const own = await startEmulator({
      apiKeys: [KEY],
      customers: [{ id: "cus_Here", metadata: { account_id: "a1" } }],
    });
    try {
      const get = async (id: string, auth = `Bearer ${KEY}`) => {
        const res = await fetch(`${own.url}/v1/customers/${id}`, { headers: { authorization: auth } });
        return { status: res.status, body: (await res.json()) as Record<string, unknown> };
      };
      assert.deepEqual(await get("cus_Here"), {
        status: 200,
        body: { id: "cus_Here", object: "customer", metadata: { account_id: "a1" } },
      });
      const missing = await get("cus_Nope");
      assert.equal(missing.status, 404);
      assert.equal((missing.body.error as { code: string }).code, "resource_missing");
      assert.equal((await get("cus_Here", "Bearer sk_test_wrong")).status, 401);
      own.deleteCustomer("cus_Here");
      assert.deepEqual(await get("cus_Here"), {
        status: 200,
        body: { id: "cus_Here", object: "customer", deleted: true },
      });
    } finally {
      await own.stop();
    }
  });
});

describe("customer search", () => {
  test("answers 20 searches per key in a second, as Stripe does, then 429 until the next second", async () => {
    emu.addCustomer("cus_srch", { account_id: "acct_srch" });
    const search = () => call(`/v1/customers/search?query=${encodeURIComponent("metadata['account_id']:'acct_srch'")}`);
    clock = Math.ceil(clock / 1000) * 1000;
    const first = await Promise.all(Array.from({ length: 21 }, search));
    // They may arrive in any order: whichever comes 21st is refused.
    const ok = first.filter((r) => r.status === 200);
    const refused = first.filter((r) => r.status === 429);
    assert.equal(ok.length, 20);
    assert.equal(ok[0]?.body.data[0].id, "cus_srch");
    assert.deepEqual(
      refused.map((r) => r.body.error.code),
      ["rate_limit"],
    );
    clock += 1000;
    assert.equal((await search()).status, 200);
  });
});

describe("asynchronous error reports", () => {
  test("refused events become one report per meter and window, listed and fetched with the secret key", async () => {
    // Reports of the errors earlier tests left are made first, and fall before this window.
    emu.errorReports.flush();
    clock += 1000;
    const created = new Date(clock).toISOString();
    const form = (customer: string, n: number) =>
      `event_name=api_requests&payload[stripe_customer_id]=${customer}&payload[value]=1&identifier=rep_${customer}_${n}`;
    assert.equal((await call("/v1/billing/meter_events", { body: form("cus_A", 1) })).status, 200);
    for (let n = 0; n < 7; n++) await call("/v1/billing/meter_events", { body: form("cus_Nobody", n) });
    emu.errorReports.flush();

    const query = `types=v1.billing.meter.error_report_triggered&created[gte]=${encodeURIComponent(created)}`;
    assert.equal((await call(`/v2/core/events?${query}`, { auth: null })).status, 401);
    const list = await call(`/v2/core/events?${query}`);
    assert.equal(list.status, 200);
    assert.equal(list.body.data.length, 1);
    const report = list.body.data[0];
    assert.equal(report.related_object.id, emu.ledger.meters.get("api_requests")?.id);
    assert.equal(report.data.reason.error_count, 7);
    const [only] = report.data.reason.error_types;
    assert.deepEqual(
      [only.code, only.error_count, only.sample_errors.length],
      ["meter_event_customer_not_found", 7, 5],
    );
    assert.equal(only.sample_errors[0].request.identifier, "rep_cus_Nobody_0");

    assert.deepEqual((await call(`/v2/core/events/${report.id}`)).body, report);
    assert.equal((await call("/v2/core/events/evt_nope")).status, 404);
    const later = encodeURIComponent(new Date(clock + 1000).toISOString());
    assert.equal((await call(`/v2/core/events?created[gt]=${later}`)).body.data.length, 0);
    assert.equal(
      (await call(`/v2/core/events?types=v1.billing.meter.no_meter_found&created[gte]=${encodeURIComponent(created)}`))
        .body.data.length,
      0,
    );
  });
});

describe("event destinations", () => {
  test("each report is pushed thin (no data) and signed per §8 to the destinations taking its type; a delivery not answered 2xx is tried again, signed again", async () => {
    const SECRET = "whsec_emulator_destination";
    const received: Array<{ body: string; signature: string; verified: boolean }> = [];
    let refuse = 2;
    const receiver = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const body = Buffer.concat(chunks);
      const signature = String(req.headers["stripe-signature"]);
      // Checked with meterhook's own verifier of Stripe-Signature, which follows §8.
      const check = verifySignature(
        STRIPE_SIGNATURE,
        [SECRET],
        { "stripe-signature": signature },
        body,
        Math.floor(Date.now() / 1000),
      );
      received.push({ body: body.toString(), signature, verified: check.ok });
      res.writeHead(refuse-- > 0 ? 500 : 200).end();
    });
    await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/stripe-events`;
    const pushing = await startEmulator({
      customers: ["cus_A"],
      eventDestinations: [
        { url, secret: SECRET, enabledEvents: ["v1.billing.meter.error_report_triggered"] },
        // Takes only the other type: gets nothing here.
        { url: `${url}?other`, secret: "whsec_other", enabledEvents: ["v1.billing.meter.no_meter_found"] },
      ],
      eventRetryDelaysMs: [50, 50, 50],
    });
    try {
      const form = `event_name=api_requests&payload[stripe_customer_id]=cus_Nobody&payload[value]=1&identifier=push_1`;
      const res = await fetch(`${pushing.url}/v1/billing/meter_events`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${EMULATOR_DEFAULT_KEY}`,
          "content-type": "application/x-www-form-urlencoded",
        },
        body: form,
      });
      assert.equal(res.status, 200);
      pushing.errorReports.flush();
      await waitFor(() => (received.length >= 3 ? true : undefined), "the third try");
      await new Promise((r) => setTimeout(r, 200)); // no fourth try after the 2xx
      const [report] = pushing.errorReports.events;
      assert.equal(received.length, 3);
      assert.ok(received.every((r) => r.verified));
      // Signed at each try, with the time of that try.
      const now = Math.floor(Date.now() / 1000);
      for (const r of received)
        assert.ok(Math.abs(Number(/^t=(\d+),v1=[0-9a-f]{64}$/.exec(r.signature)?.[1]) - now) <= 5);
      const notification = JSON.parse(received[0]?.body ?? "{}");
      assert.deepEqual(notification, {
        id: report?.id,
        object: "v2.core.event",
        type: "v1.billing.meter.error_report_triggered",
        created: report?.created,
        livemode: false,
        context: null,
        reason: null,
        related_object: report?.related_object,
      });
      assert.deepEqual(
        pushing.eventDeliveries.log.map((d) => [d.url, d.attempt, d.status]),
        [
          [url, 1, 500],
          [url, 2, 500],
          [url, 3, 200],
        ],
      );
      const listed = (await (await fetch(`${pushing.url}/_emulator/deliveries`)).json()) as { deliveries: unknown[] };
      assert.deepEqual(listed.deliveries, pushing.eventDeliveries.log);
      // A signature with another secret does not verify.
      const forged = verifySignature(
        STRIPE_SIGNATURE,
        ["whsec_other"],
        { "stripe-signature": received[0]?.signature },
        Buffer.from(received[0]?.body ?? ""),
        Math.floor(Date.now() / 1000),
      );
      assert.equal(forged.ok, false);
    } finally {
      await pushing.stop();
      receiver.close();
    }
  });

  test("a destination that never answers 2xx is tried once per delay, then given up", async () => {
    const tries: number[] = [];
    const receiver = createServer((_req, res) => {
      tries.push(Date.now());
      res.writeHead(503).end();
    });
    await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/`;
    const pushing = await startEmulator({
      meters: [{ event_name: "api_requests" }],
      eventDestinations: [{ url, secret: "whsec_x" }],
      eventRetryDelaysMs: [20, 20],
    });
    try {
      await fetch(`${pushing.url}/v1/billing/meter_events`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${EMULATOR_DEFAULT_KEY}`,
          "content-type": "application/x-www-form-urlencoded",
        },
        body: "event_name=no_such_meter&payload[stripe_customer_id]=cus_A&payload[value]=1&identifier=push_2",
      });
      pushing.errorReports.flush();
      await waitFor(() => (tries.length >= 3 ? true : undefined), "three tries");
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(tries.length, 3);
      assert.deepEqual(
        pushing.eventDeliveries.log.map((d) => d.status),
        [503, 503, 503],
      );
    } finally {
      await pushing.stop();
      receiver.close();
    }
  });
});
