import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  type AggregationRules,
  continuationBody,
  parseContinuation,
  planAggregation,
  sumDecimals,
} from "../../lib/aggregation.js";
import { InvalidEventError } from "../../lib/errors.js";
import { type MeterEvent, meterEventIdentifier } from "../../lib/meter-event.js";

const T = 1_795_000_020; // 20 s into a UTC minute
const rules: AggregationRules = {
  meters: new Map([
    ["api_requests", "sum"],
    ["messages", "count"],
  ]),
  windowSeconds: 60,
};

function ev(id: string, over: Partial<MeterEvent> & { value?: string; customer?: string } = {}): MeterEvent {
  const { value = "1", customer = "cus_A", ...rest } = over;
  return {
    event_name: "api_requests",
    identifier: meterEventIdentifier(id, rest.event_name ?? "api_requests"),
    timestamp: T,
    payload: { stripe_customer_id: customer, value },
    ...rest,
  };
}

describe("sumDecimals", () => {
  test("adds decimals exactly", () => {
    assert.equal(sumDecimals(["0.1", "0.2"]), "0.3");
    assert.equal(sumDecimals(["1", "2.50", "-0.5"]), "3");
    assert.equal(sumDecimals(["-1.25", "0.25"]), "-1");
    assert.equal(sumDecimals(["999999999999999", "1"]), "1000000000000000");
  });
  test("refuses what Stripe could not take exactly, or what is not a decimal", () => {
    assert.equal(sumDecimals(["123456789012345", "0.1"]), undefined);
    assert.equal(sumDecimals(["1e3"]), undefined);
    assert.equal(sumDecimals([""]), undefined);
  });
});

describe("planAggregation", () => {
  test("combines one customer's events of a meter in a window; the value is their exact sum", () => {
    const events = [ev("a", { value: "0.1" }), ev("b", { value: "0.2", timestamp: T + 30 }), ev("c", { value: "3" })];
    const plan = planAggregation(events, [false, false, false], rules);
    assert.equal(plan.submit.length, 1);
    const [combined] = plan.submit;
    assert.equal(combined?.payload.value, "3.3");
    assert.equal(combined?.payload.stripe_customer_id, "cus_A");
    assert.equal(combined?.timestamp, T, "the earliest member's time");
    assert.deepEqual(plan.carriedBy, [0, 0, 0]);
    assert.deepEqual(plan.members.get(0), [0, 1, 2]);
  });

  test("the combined identifier comes from the members, in any order, and differs from theirs", () => {
    const events = [ev("a"), ev("b"), ev("c")];
    const one = planAggregation(events, [false, false, false], rules).submit[0]?.identifier;
    const two = planAggregation([...events].reverse(), [false, false, false], rules).submit[0]?.identifier;
    const other = planAggregation([ev("a"), ev("b")], [false, false], rules).submit[0]?.identifier;
    assert.equal(one, two);
    assert.notEqual(one, other);
    assert.ok(!events.some((e) => e.identifier === one));
    assert.match(one ?? "", /^mh_[A-Za-z0-9_-]{40}$/);
  });

  test("keeps apart customers, meters, windows and other payload keys; leaves singles and unlisted meters alone", () => {
    const events = [
      ev("a"),
      ev("b", { customer: "cus_B" }),
      ev("c", { timestamp: T + 60 }),
      ev("d", { payload: { stripe_customer_id: "cus_A", value: "1", region: "eu" } }),
      ev("e", { event_name: "storage_gb" }),
      ev("f", { event_name: "storage_gb" }),
      ev("g"),
    ];
    const plan = planAggregation(
      events,
      events.map(() => false),
      rules,
    );
    // a+g combine; every other event is sent as it is, with its own identifier.
    assert.equal(plan.submit.length, 6);
    assert.equal(plan.members.size, 1);
    const [j, members] = [...plan.members][0] ?? [-1, []];
    assert.deepEqual(members, [0, 6]);
    assert.equal(plan.submit[j]?.payload.value, "2");
    for (const i of [1, 2, 3, 4, 5]) assert.equal(plan.submit[plan.carriedBy[i] as number], events[i]);
  });

  test("count sends the number of events, whatever their values", () => {
    const events = [ev("a", { event_name: "messages", value: "5" }), ev("b", { event_name: "messages", value: "7" })];
    assert.equal(planAggregation(events, [false, false], rules).submit[0]?.payload.value, "2");
  });

  test("a sum Stripe could not take exactly is not combined; fixed events never are", () => {
    const big = [ev("a", { value: "123456789012345" }), ev("b", { value: "0.5" })];
    assert.deepEqual(planAggregation(big, [false, false], rules).submit, big);
    const fixed = [ev("a"), ev("b")];
    assert.deepEqual(planAggregation(fixed, [true, false], rules).submit, fixed);
  });
});

describe("continuation messages", () => {
  test("carry the combined event unchanged, and are checked again when read", () => {
    const e = ev("a", { timestamp: T });
    const back = parseContinuation(JSON.parse(continuationBody(e, ["x", "y"])), T + 10);
    assert.deepEqual(back, e);
    assert.throws(() => parseContinuation({ meterhook: "meterhook.aggregate/1", event: {} }, T), InvalidEventError);
    const old = JSON.parse(continuationBody(ev("o", { timestamp: T - 40 * 86_400 }), []));
    assert.throws(() => parseContinuation(old, T), /older than Stripe accepts/);
  });
});
