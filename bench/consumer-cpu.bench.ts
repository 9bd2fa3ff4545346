/**
 * `npm run bench:consumer`: the consumer's own CPU per event, without a network. The consumer is
 * built as the Lambda builds it, but its HTTP transport answers at once in process, so the
 * figure is meterhook's work alone (parsing, validation, customer lookup, identifiers, request
 * bodies, outcomes) and moves only when that code does. Batches of 100 run one at a time.
 *
 * BENCH_EVENTS (200000 per run), BENCH_ROUNDS (7; the table shows medians), one uncounted warm-up;
 * BENCH_BATCH (100) messages per batch;
 * BENCH_APIS (v2,v1) for the consumers to run; BENCH_REWARM_EVENTS (a run's worth) processed
 * unmeasured after each run's forced collection. BENCH_LATENCY_MS (0) delays each answer and
 * BENCH_IN_FLIGHT (1) batches run at a time: with 20 and 16, the consumer works in the pattern of
 * `npm run bench`'s v2 rows (bursts of work between waits), still without a socket.
 */
import { randomUUID } from "node:crypto";
import type { QueueMessage } from "../lib/consumer.js";
import { runPool } from "../lib/stripe/submitter.js";
import type { HttpRequest, HttpResponse, HttpTransport } from "../lib/stripe/transport.js";
import { meterhook, records } from "./pipeline-clients.js";
import { collectGarbage, median, rewarmEvents } from "./stats.js";

const EVENTS = Number(process.env.BENCH_EVENTS ?? 200_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
/** Batches of 100 processed unmeasured after each forced collection (BENCH_REWARM_EVENTS). */
const REWARM_BATCHES = rewarmEvents(EVENTS) / Number(process.env.BENCH_BATCH ?? 100);
const LATENCY_MS = Number(process.env.BENCH_LATENCY_MS ?? 0);
const IN_FLIGHT = Number(process.env.BENCH_IN_FLIGHT ?? 1);
/** Messages per batch (BENCH_BATCH, 100): 800 is a v2 stack's invocation. */
const BATCH = Number(process.env.BENCH_BATCH ?? 100);

/** `answer` now, or after LATENCY_MS. */
const after = <T>(answer: T): Promise<T> =>
  LATENCY_MS > 0 ? new Promise((resolve) => setTimeout(() => resolve(answer), LATENCY_MS)) : Promise.resolve(answer);

/** Stripe's success answers, given without a socket. */
const instant: HttpTransport = {
  send(req: HttpRequest): Promise<HttpResponse> {
    const headers = { "request-id": "req_local" };
    if (req.url.endsWith("/v2/billing/meter_event_session")) {
      const expires = new Date(Date.now() + 15 * 60_000).toISOString();
      const body = JSON.stringify({ authentication_token: `mes_${randomUUID()}`, expires_at: expires });
      return Promise.resolve({ status: 200, headers, body });
    }
    if (req.method === "GET" && req.url.includes("/v1/billing/meters?")) {
      const meter = { id: "mtr_bench", object: "billing.meter", event_name: "api_requests", status: "active" };
      return Promise.resolve({ status: 200, headers, body: JSON.stringify({ data: [meter], has_more: false }) });
    }
    if (req.method === "GET" && req.url.includes("/v1/customers/")) {
      const id = decodeURIComponent(req.url.slice(req.url.indexOf("/v1/customers/") + 14));
      return Promise.resolve({ status: 200, headers, body: JSON.stringify({ id, object: "customer" }) });
    }
    return after({ status: req.url.includes("/v2/") ? 202 : 200, headers, body: "{}" });
  },
  close: async () => {},
};

console.log(
  `meterhook consumer CPU without a network: ${EVENTS} events per run, ${ROUNDS} runs, answers after ${LATENCY_MS} ms, ${IN_FLIGHT} batches in flight, Node ${process.version}`,
);
console.log("| consumer | CPU µs per event (median) | fastest run | events/s (median) |");
console.log("|---|---:|---:|---:|");
for (const api of (process.env.BENCH_APIS ?? "v2,v1").split(",") as Array<"v2" | "v1">) {
  const consumer = await meterhook("http://127.0.0.1:9", api, {}, instant);
  const cpu: number[] = [];
  const rate: number[] = [];
  for (let round = 0; round <= ROUNDS; round++) {
    const batches = Array.from({ length: EVENTS / BATCH }, () => records(BATCH));
    const rewarm = Array.from({ length: REWARM_BATCHES }, () => records(BATCH));
    collectGarbage(); // the garbage of building the input is not the consumer's
    // The collection throws away optimized code (bench/pipeline-clients.ts, REWARM): compiled
    // again here, unmeasured, as `npm run bench` does since 2026-11-27.
    const work = (batch: QueueMessage[]) =>
      consumer.process(batch, Date.now() + 60_000).then((r) => {
        if (r.billed !== batch.length) throw new Error(`billed ${r.billed} of ${batch.length}`);
      });
    await runPool(rewarm, IN_FLIGHT, work);
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await runPool(batches, IN_FLIGHT, work);
    const ms = performance.now() - t0;
    const c = process.cpuUsage(c0);
    if (round === 0) continue; // warm-up
    cpu.push((c.user + c.system) / EVENTS);
    rate.push((EVENTS / ms) * 1000);
  }
  await consumer.close();
  console.log(
    `| ${api} | ${median(cpu).toFixed(2)} | ${Math.min(...cpu).toFixed(2)} | ${Math.round(median(rate)).toLocaleString("en-US")} |`,
  );
}
