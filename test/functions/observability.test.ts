import assert from "node:assert/strict";
import { test } from "node:test";
import { emfDocuments, publishMetrics } from "../../functions/support/observability.js";
import { MetricsRecorder } from "../../lib/metrics.js";

type Doc = { _aws: { Timestamp: number; CloudWatchMetrics: Array<Record<string, unknown>> } } & Record<string, unknown>;

test("one EMF document per dimension set, with CloudWatch's directive naming every metric it carries", () => {
  const r = new MetricsRecorder();
  r.count("EventsReceived", 100);
  r.count("EventsBilled", 99);
  r.timing("StripeLatency", 21.5);
  r.timing("StripeLatency", 30);
  r.count("StripeRequests", 2, Object.freeze({ status: "200" }));
  r.count("EventsDeadLettered", 1, { code: "invalid_event" });
  const docs = emfDocuments(r.drain(), "ingest-queue", 1_795_000_000_000) as Doc[];
  assert.deepEqual(docs, [
    {
      _aws: {
        Timestamp: 1_795_000_000_000,
        CloudWatchMetrics: [
          {
            Namespace: "meterhook",
            Dimensions: [["service", "function"]],
            Metrics: [
              { Name: "EventsReceived", Unit: "Count" },
              { Name: "EventsBilled", Unit: "Count" },
              { Name: "StripeLatency", Unit: "Milliseconds" },
            ],
          },
        ],
      },
      service: "meterhook",
      function: "ingest-queue",
      EventsReceived: 100,
      EventsBilled: 99,
      StripeLatency: [21.5, 30],
    },
    {
      _aws: {
        Timestamp: 1_795_000_000_000,
        CloudWatchMetrics: [
          {
            Namespace: "meterhook",
            Dimensions: [["service", "function", "status"]],
            Metrics: [{ Name: "StripeRequests", Unit: "Count" }],
          },
        ],
      },
      service: "meterhook",
      function: "ingest-queue",
      status: "200",
      StripeRequests: 2,
    },
    {
      _aws: {
        Timestamp: 1_795_000_000_000,
        CloudWatchMetrics: [
          {
            Namespace: "meterhook",
            Dimensions: [["service", "function", "code"]],
            Metrics: [{ Name: "EventsDeadLettered", Unit: "Count" }],
          },
        ],
      },
      service: "meterhook",
      function: "ingest-queue",
      code: "invalid_event",
      EventsDeadLettered: 1,
    },
  ]);
});

test("more than 100 values of a metric continue in further documents, each within EMF's limit", () => {
  const r = new MetricsRecorder();
  for (let i = 0; i < 250; i++) r.timing("StripeLatency", i);
  r.count("EventsBilled", 250);
  const docs = emfDocuments(r.drain(), "ingest-queue", 1) as Doc[];
  assert.deepEqual(
    docs.map((d) => [d.StripeLatency, d.EventsBilled].map((v) => (Array.isArray(v) ? v.length : v))),
    [
      [100, 250],
      [100, undefined],
      [50, undefined],
    ],
  );
  const latencies = docs.flatMap((d) => d.StripeLatency as number[]);
  assert.deepEqual(
    latencies,
    Array.from({ length: 250 }, (_, i) => i),
  );
  for (const d of docs) {
    const names = ((d._aws.CloudWatchMetrics[0]?.Metrics ?? []) as Array<{ Name: string }>).map((m) => m.Name);
    assert.deepEqual(
      names,
      Object.keys(d).filter((k) => k === "StripeLatency" || k === "EventsBilled"),
    );
  }
});

test("publishMetrics writes one JSON line per document and empties the recorder; nothing when nothing was recorded", () => {
  const r = new MetricsRecorder();
  const out: string[] = [];
  publishMetrics(r, "http-api", (s) => out.push(s));
  assert.equal(out.length, 0);
  r.count("EventsAccepted", 3);
  r.count("EventsRejected", 1, { code: "invalid_event" });
  publishMetrics(r, "http-api", (s) => out.push(s));
  const lines = out.join("").split("\n");
  assert.equal(lines.pop(), "", "ends with a newline");
  assert.deepEqual(
    lines.map((l) => JSON.parse(l) as Doc).map((d) => [d.function, d.EventsAccepted ?? d.EventsRejected]),
    [
      ["http-api", 3],
      ["http-api", 1],
    ],
  );
  publishMetrics(r, "http-api", (s) => out.push(s));
  assert.equal(out.length, 1, "drained");
});
