import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { InvalidEventError } from "../../lib/errors.js";
import {
  formatDecimal,
  meterEventIdentifier,
  significantDigits,
  toMeterEvent,
  validateUsageEvent,
} from "../../lib/meter-event.js";
import { parseUsageEvent } from "../../lib/usage-event.js";

const NOW = 1_795_000_000;
const usage = (o: Record<string, unknown> = {}) =>
  parseUsageEvent({ id: "req_1", event_name: "api_requests", customer: "acct_1", value: 3, timestamp: NOW, ...o }, NOW);

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof InvalidEventError);
    return err.code;
  }
  return "accepted";
}

describe("meterEventIdentifier", () => {
  test("is deterministic, distinct per event name and part, and at most 100 characters", () => {
    const a = meterEventIdentifier("req_1", "api_requests");
    assert.equal(a, meterEventIdentifier("req_1", "api_requests"));
    assert.notEqual(a, meterEventIdentifier("req_1", "tokens"));
    assert.notEqual(a, meterEventIdentifier("req_2", "api_requests"));
    assert.notEqual(a, meterEventIdentifier("req_1", "api_requests", "0"));
    assert.ok(meterEventIdentifier("x".repeat(255), "e".repeat(100)).length <= 100);
    assert.match(a, /^mh_[A-Za-z0-9_-]{40}$/);
  });
});

describe("identifier stability", () => {
  test("identifiers never change between releases: Stripe deduplicates on them", () => {
    // Pinned values: a change here would bill again every event replayed after an upgrade.
    assert.equal(meterEventIdentifier("req_8f2c", "api_requests"), "mh_pdD6kzbX0_ApqHGJ64qRN5RmVlvyOdzRPotIw2ZH");
    assert.equal(
      meterEventIdentifier("req_1", "llm_input_tokens", "llm/completion"),
      "mh_s6j97KRmLs3V1V9g2qVgzuPBr_iJlVbA-AYik7rn",
    );
  });
});

describe("formatDecimal and significantDigits", () => {
  test("never uses exponent notation", () => {
    assert.equal(formatDecimal(1e21), "1000000000000000000000");
    assert.equal(formatDecimal(1.5e-7), "0.00000015");
    assert.equal(formatDecimal(-2.5e-7), "-0.00000025");
    assert.equal(formatDecimal(3), "3");
    assert.equal(formatDecimal(0.25), "0.25");
  });
  test("integers on both sides of 10^21, negative ones and -0", () => {
    assert.equal(formatDecimal(999999999999999900000), "999999999999999900000");
    assert.equal(formatDecimal(-1e21), "-1000000000000000000000");
    assert.equal(formatDecimal(-42), "-42");
    assert.equal(formatDecimal(-0), "0");
  });
  test("counts significant digits", () => {
    assert.equal(significantDigits(100), 1);
    assert.equal(significantDigits(0.0012), 2);
    assert.equal(significantDigits(123456789012345), 15);
    assert.equal(significantDigits(0.1 + 0.2), 17);
  });
});

describe("toMeterEvent", () => {
  test("builds the payload with the customer, value as a string and properties", () => {
    const e = toMeterEvent(usage({ properties: { region: "eu", size: 1.5 } }), "cus_9", NOW);
    assert.deepEqual({ ...e.payload }, { region: "eu", size: "1.5", stripe_customer_id: "cus_9", value: "3" });
    assert.equal(e.timestamp, NOW);
    assert.equal(e.identifier, meterEventIdentifier("req_1", "api_requests"));
  });

  test("enforces Stripe's timestamp window: 35 days back (with a safety margin), 5 minutes ahead", () => {
    assert.equal(
      code(() => toMeterEvent(usage({ timestamp: NOW - 34 * 86_400 }), "cus_9", NOW)),
      "accepted",
    );
    assert.equal(
      code(() => toMeterEvent(usage({ timestamp: NOW - 35 * 86_400 }), "cus_9", NOW)),
      "timestamp_out_of_range",
    );
    assert.equal(
      code(() => toMeterEvent(usage({ timestamp: NOW + 299 }), "cus_9", NOW)),
      "accepted",
    );
    assert.equal(
      code(() => toMeterEvent(usage({ timestamp: NOW + 301 }), "cus_9", NOW)),
      "timestamp_out_of_range",
    );
  });

  test("hints when a timestamp is in milliseconds", () => {
    assert.throws(() => toMeterEvent(usage({ timestamp: NOW * 1000 }), "cus_9", NOW), /milliseconds/);
  });

  test("refuses values Stripe would reject: more than 15 significant digits", () => {
    assert.equal(
      code(() => toMeterEvent(usage({ value: 123456789012345 }), "cus_9", NOW)),
      "accepted",
    );
    assert.equal(
      code(() => toMeterEvent(usage({ value: 1234567890123456 }), "cus_9", NOW)),
      "invalid_value",
    );
    assert.equal(
      code(() => toMeterEvent(usage({ value: 0.1 + 0.2 }), "cus_9", NOW)),
      "invalid_value",
    );
    assert.equal(
      code(() => toMeterEvent(usage({ value: -4 }), "cus_9", NOW)),
      "accepted",
    );
    assert.equal(
      code(() => toMeterEvent(usage({ value: 1e20 }), "cus_9", NOW)),
      "invalid_value",
    );
  });

  test("refuses properties that would overwrite the customer or value", () => {
    assert.equal(
      code(() => toMeterEvent(usage({ properties: { value: 100 } }), "cus_9", NOW)),
      "invalid_payload",
    );
    assert.equal(
      code(() => toMeterEvent(usage({ properties: { stripe_customer_id: "cus_evil" } }), "cus_9", NOW)),
      "invalid_payload",
    );
  });

  test("refuses text with a lone surrogate wherever it reaches the meter event", () => {
    // A customer id from an HTTP lookup, a property that skipped parsing, an event back from the queue.
    assert.equal(
      code(() => toMeterEvent(usage(), "cus_\ud800", NOW)),
      "invalid_payload",
    );
    const parsed = usage();
    const props = { ...parsed, properties: { region: "\udc00eu" } };
    assert.equal(
      code(() => toMeterEvent(props, "cus_9", NOW)),
      "invalid_payload",
    );
    assert.equal(
      code(() => toMeterEvent({ ...parsed, event_name: "api\ud800" }, "cus_9", NOW)),
      "invalid_event",
    );
    // The schema refuses them first, where an event enters.
    assert.equal(
      code(() => usage({ properties: { region: "\udc00eu" } })),
      "invalid_event",
    );
    assert.equal(
      code(() => toMeterEvent(usage({ properties: { region: "eu \ud83d\ude80" } }), "cus_9", NOW)),
      "accepted",
    );
  });

  test("per-meter value rules: positive, non-negative", () => {
    const rules = new Map([
      ["api_requests", "positive" as const],
      ["credits", "non-negative" as const],
    ]);
    assert.equal(
      code(() => toMeterEvent(usage({ value: 0 }), "cus_9", NOW, rules)),
      "invalid_value",
    );
    assert.equal(
      code(() => toMeterEvent(usage({ value: -2 }), "cus_9", NOW, rules)),
      "invalid_value",
    );
    assert.equal(
      code(() => toMeterEvent(usage({ value: 0, event_name: "credits" }), "cus_9", NOW, rules)),
      "accepted",
    );
    assert.equal(
      code(() => toMeterEvent(usage({ value: -1, event_name: "credits" }), "cus_9", NOW, rules)),
      "invalid_value",
    );
    assert.equal(
      code(() => toMeterEvent(usage({ value: -1, event_name: "other" }), "cus_9", NOW, rules)),
      "accepted",
    );
  });

  test("validateUsageEvent checks all but the customer mapping", () => {
    assert.doesNotThrow(() => validateUsageEvent(usage({ customer: "acct_unknown" }), NOW));
    assert.throws(() => validateUsageEvent(usage({ timestamp: NOW + 3600 }), NOW), /future/);
  });

  test("a __proto__ property that reached it some other way is refused, not dropped", () => {
    const properties = JSON.parse('{"region":"eu","__proto__":"x"}') as Record<string, string>;
    const e = { ...usage(), properties };
    assert.equal(
      code(() => toMeterEvent(e, "cus_1", NOW)),
      "invalid_payload",
    );
    // Other properties still reach the payload.
    assert.deepEqual(toMeterEvent({ ...usage(), properties: { region: "eu" } }, "cus_1", NOW).payload, {
      region: "eu",
      stripe_customer_id: "cus_1",
      value: "3",
    });
  });

  test("validateUsageEvent (which skips the identifier's hash) answers as toMeterEvent does", () => {
    const answer = (fn: () => unknown) => {
      try {
        fn();
        return "accepted";
      } catch (err) {
        assert.ok(err instanceof InvalidEventError);
        return `${err.code}: ${err.message}`;
      }
    };
    const events = [
      usage(),
      usage({ id: "x".repeat(255), event_name: "e".repeat(100) }),
      { ...usage(), event_name: "e".repeat(101) },
      usage({ timestamp: NOW - 40 * 86_400 }),
      usage({ timestamp: NOW + 3600 }),
      usage({ value: 1234567890123456 }),
      usage({ properties: { region: "eu", weight: 2.5 } }),
      { ...usage(), properties: { value: "reserved" } },
      { ...usage(), properties: { ["k".repeat(101)]: "long key" } },
      { ...usage(), properties: { note: "v".repeat(101) } },
      { ...usage(), id: "lone \ud800 surrogate" },
      { ...usage(), identifierPart: "1" },
    ];
    for (const e of events) {
      assert.equal(
        answer(() => validateUsageEvent(e, NOW)),
        answer(() => toMeterEvent(e, "cus_1", NOW)),
        JSON.stringify(e),
      );
    }
  });
});
