import assert from "node:assert/strict";
import { test } from "node:test";
import { MetricsRecorder } from "../../lib/metrics.js";

const byName = (r: MetricsRecorder) => r.drain().map((p) => [p.name, p.unit, p.dimensions, p.values] as const);

test("counts add up per name and dimension set; timings keep every value", () => {
  const r = new MetricsRecorder();
  const ok = Object.freeze({ status: "200" });
  r.count("StripeRequests", 1, ok);
  r.count("StripeRequests", 1, ok);
  r.count("StripeRequests", 1, { status: "503" });
  r.count("EventsBilled", 5);
  r.count("EventsBilled", 0); // nothing to add: not even a point
  r.count("EventsBilled", 2);
  r.timing("StripeLatency", 12.345);
  r.timing("StripeLatency", 20);
  assert.deepEqual(byName(r), [
    ["StripeRequests", "Count", { status: "200" }, [2]],
    ["StripeRequests", "Count", { status: "503" }, [1]],
    ["EventsBilled", "Count", {}, [7]],
    ["StripeLatency", "Milliseconds", {}, [12.35, 20]],
  ]);
  assert.deepEqual(r.drain(), [], "drain forgets");
});

test("the same dimensions in another key order, or an object changed after use, are keyed by content", () => {
  const r = new MetricsRecorder();
  r.count("X", 1, { a: "1", b: "2" });
  r.count("X", 1, { b: "2", a: "1" });
  const dims: Record<string, string> = { code: "invalid_event" };
  r.count("EventsDeadLettered", 1, dims);
  dims.code = "customer_not_found";
  r.count("EventsDeadLettered", 1, dims);
  assert.deepEqual(
    r.drain().map((p) => [p.name, p.dimensions, p.values[0]]),
    [
      ["X", { a: "1", b: "2" }, 2],
      ["EventsDeadLettered", { code: "invalid_event" }, 1],
      ["EventsDeadLettered", { code: "customer_not_found" }, 1],
    ],
  );
});
