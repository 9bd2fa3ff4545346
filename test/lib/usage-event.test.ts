import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { InvalidEventError } from "../../lib/errors.js";
import { parseUsageEvent, toCanonicalJson } from "../../lib/usage-event.js";

const NOW = 1_795_000_000;
const base = { id: "req_8f2c", event_name: "api_requests", customer: "cus_NciAYcXfLnqBoz" };

function rejects(input: unknown, code: string, pathPart?: string) {
  assert.throws(
    () => parseUsageEvent(input, NOW),
    (err: unknown) => {
      assert.ok(err instanceof InvalidEventError, `expected InvalidEventError, got ${String(err)}`);
      assert.equal(err.code, code);
      if (pathPart) assert.match(err.message, new RegExp(pathPart));
      return true;
    },
  );
}

describe("parseUsageEvent", () => {
  test("applies defaults: value 1 and the time received", () => {
    const e = parseUsageEvent(base, NOW + 0.7);
    assert.equal(e.value, 1);
    assert.equal(e.timestamp, NOW);
    assert.deepEqual({ ...e.properties }, {});
  });

  test("accepts ISO-8601 and Unix-seconds timestamps", () => {
    assert.equal(parseUsageEvent({ ...base, timestamp: "2026-11-26T12:00:00Z" }, NOW).timestamp, 1_795_694_400);
    assert.equal(parseUsageEvent({ ...base, timestamp: "2026-11-26T13:00:00+01:00" }, NOW).timestamp, 1_795_694_400);
    assert.equal(parseUsageEvent({ ...base, timestamp: 1_795_000_000 }, NOW).timestamp, 1_795_000_000);
  });

  test("rejects timestamps without a zone or in other formats", () => {
    rejects({ ...base, timestamp: "2026-11-26T12:00:00" }, "invalid_event", "ISO-8601");
    rejects({ ...base, timestamp: "yesterday" }, "invalid_event", "timestamp");
    rejects({ ...base, timestamp: -5 }, "invalid_event", "timestamp");
  });

  test("requires id, event_name and customer", () => {
    rejects({ event_name: "x", customer: "cus_1" }, "invalid_event", "id: is required");
    rejects({ id: "a", customer: "cus_1" }, "invalid_event", "event_name");
    rejects({ id: "a", event_name: "x" }, "invalid_event", "customer");
  });

  test("limits event_name to 1-100 characters", () => {
    assert.equal(parseUsageEvent({ ...base, event_name: "e".repeat(100) }, NOW).event_name.length, 100);
    rejects({ ...base, event_name: "e".repeat(101) }, "invalid_event", "event_name");
    rejects({ ...base, event_name: "" }, "invalid_event", "event_name");
  });

  test("rejects unknown fields, so a misspelt value is not billed as 1", () => {
    rejects({ ...base, valeu: 40 }, "invalid_event", "unknown field\\(s\\): valeu");
  });

  test("rejects non-numeric values with invalid_value", () => {
    rejects({ ...base, value: "3" }, "invalid_value", "value");
    rejects({ ...base, value: null }, "invalid_value", "value");
  });

  test("rejects control characters in ids", () => {
    rejects({ ...base, id: "req\u0000x" }, "invalid_event", "control characters");
  });

  test("refuses prototype-pollution and bracketed property names", () => {
    rejects(
      JSON.parse('{"id":"a","event_name":"x","customer":"cus_1","properties":{"__proto__":"x"}}'),
      "invalid_event",
    );
    rejects({ ...base, properties: { constructor: "x" } }, "invalid_event");
    rejects({ ...base, properties: { "a[b]": "x" } }, "invalid_event");
    rejects({ ...base, properties: { prototype: "x" } }, "invalid_event");
    rejects({ ...base, properties: { "a[": "x" } }, "invalid_event");
    rejects({ ...base, properties: { "a]": "x" } }, "invalid_event");
    assert.equal(({} as Record<string, unknown>).x, undefined);
  });

  test("property values are strings up to 100 characters or numbers", () => {
    const e = parseUsageEvent({ ...base, properties: { region: "eu", tier: 2 } }, NOW);
    assert.deepEqual({ ...e.properties }, { region: "eu", tier: 2 });
    rejects({ ...base, properties: { region: "e".repeat(101) } }, "invalid_event", "properties");
    rejects({ ...base, properties: { nested: { a: 1 } } }, "invalid_event", "properties");
  });

  test("rejects a non-object", () => {
    rejects("hello", "invalid_event");
    rejects(null, "invalid_event");
    rejects([base], "invalid_event");
  });

  test("canonical JSON round-trips to the same event", () => {
    const e = parseUsageEvent({ ...base, value: 2.5, properties: { region: "eu" } }, NOW);
    assert.deepEqual(parseUsageEvent(toCanonicalJson(e), NOW + 999), e);
  });
});
