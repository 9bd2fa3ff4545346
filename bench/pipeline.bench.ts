/**
 * `npm run bench`: the whole consumer pipeline (SQS batch in, parsing, validation, customer lookup
 * from cache, submission, partial batch response out) against the official `stripe` SDK doing
 * submission alone, both against the Stripe emulator in another process with added latency.
 * Runs are interleaved (A B C D, A B C D, ...) and the table shows medians.
 *
 * BENCH_EVENTS (20000), BENCH_ROUNDS (3), BENCH_WARMUP (1 uncounted round), BENCH_RTTS ("0,20" ms),
 * BENCH_QUICK=1 for a CI smoke run. `npm run bench` runs Node with --expose-gc so that each run
 * starts from a collected heap.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { cpus } from "node:os";
import Stripe from "stripe";
import { type Consumer, createConsumerFromConfig } from "../lib/app.js";
import { loadConfig } from "../lib/config.js";
import type { QueueMessage } from "../lib/consumer.js";
import { silentLogger } from "../lib/logger.js";

const QUICK = process.env.BENCH_QUICK === "1";
const EVENTS = Number(process.env.BENCH_EVENTS ?? (QUICK ? 2000 : 20_000));
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? (QUICK ? 1 : 3));
const WARMUP = Number(process.env.BENCH_WARMUP ?? (QUICK ? 0 : 1));
const RTTS = (process.env.BENCH_RTTS ?? (QUICK ? "0" : "0,20")).split(",").map(Number);
const KEY = "sk_test_meterhook_local";

async function startEmulator(latencyMs: number): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ["--import", "tsx", "bench/emulator-process.ts"], {
    env: { ...process.env, BENCH_STRIPE_LATENCY_MS: String(latencyMs) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const [line] = (await once(child.stdout as NodeJS.ReadableStream, "data")) as [Buffer];
  return { url: JSON.parse(line.toString()).url as string, child };
}

async function pool<T>(items: T[], limit: number, work: (t: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await work(items[next++] as T);
    }),
  );
}

interface Result {
  eventsPerSecond: number;
  cpuMsPer1000: number;
  rssMb: number;
}
/** With --expose-gc: collect before each run, so inputs built for it are not swept inside it. */
const collect = (globalThis as { gc?: () => void }).gc ?? (() => {});

async function measure(run: () => Promise<void>): Promise<Result> {
  collect();
  collect();
  let peak = process.memoryUsage().rss;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await run();
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  clearInterval(sampler);
  return {
    eventsPerSecond: (EVENTS / ms) * 1000,
    cpuMsPer1000: ((cpu.user + cpu.system) / 1000 / EVENTS) * 1000,
    rssMb: peak / 1024 / 1024,
  };
}

let runId = 0;
const now = () => Math.floor(Date.now() / 1000);

/** SQS records as the event source mapping hands them to the consumer: canonical events. */
function records(prefix: string, n: number, customers = 200): QueueMessage[] {
  const t = Date.now();
  return Array.from({ length: n }, (_, i) => ({
    messageId: `${prefix}-${i}`,
    body: JSON.stringify({
      id: `${prefix}-${i}`,
      event_name: "api_requests",
      customer: `acct_${i % customers}`,
      value: 1 + (i % 7),
      timestamp: now() - 60,
    }),
    receiveCount: 1,
    sentAt: t,
    firstReceivedAt: t,
  }));
}

async function meterhook(url: string, api: "v1" | "v2", extra: Record<string, string> = {}): Promise<Consumer> {
  const customers = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`acct_${i}`, `cus_bench${i}`]));
  const config = loadConfig({
    STRIPE_API_KEY: KEY,
    STRIPE_API_BASE: url,
    STRIPE_METER_EVENTS_BASE: url,
    METERHOOK_STRIPE_API: api,
    METERHOOK_DLQ_URL: "http://127.0.0.1:9/never-used",
    SQS_ENDPOINT: "http://127.0.0.1:9",
    METERHOOK_CUSTOMERS: JSON.stringify(customers),
    STRIPE_CONCURRENCY: "8",
    STRIPE_MAX_CONNECTIONS: "64",
    ...extra,
  });
  return createConsumerFromConfig(config, { logger: silentLogger });
}

type Scenario = { name: string; run: (url: string) => Promise<Result> };
const scenarios: Scenario[] = [
  {
    name: "stripe SDK, v2 stream, batches of 100, 16 in flight",
    run: async (url) => {
      const u = new URL(url);
      const opts = { host: u.hostname, port: Number(u.port), protocol: "http" as const, maxNetworkRetries: 2 };
      const stripe = new Stripe(KEY, opts);
      const session = await stripe.v2.billing.meterEventSession.create();
      const stream = new Stripe(session.authentication_token, opts);
      const id = ++runId;
      const batches = Array.from({ length: EVENTS / 100 }, (_, b) =>
        Array.from({ length: 100 }, (_, i) => ({
          event_name: "api_requests",
          identifier: `sdk2-${id}-${b}-${i}`,
          payload: { stripe_customer_id: `cus_bench${i}`, value: String(1 + (i % 7)) },
          timestamp: new Date((now() - 60) * 1000).toISOString(),
        })),
      );
      return measure(() => pool(batches, 16, (events) => stream.v2.billing.meterEventStream.create({ events })));
    },
  },
  {
    name: "meterhook pipeline, v2 stream, batches of 100, 16 in flight",
    run: async (url) => {
      const consumer = await meterhook(url, "v2");
      const id = ++runId;
      const batches = Array.from({ length: EVENTS / 100 }, (_, b) => records(`mh2-${id}-${b}`, 100));
      const r = await measure(() => pool(batches, 16, (batch) => consumer.process(batch, Date.now() + 60_000)));
      await consumer.close();
      return r;
    },
  },
  {
    name: "stripe SDK, v1 meter events, 64 in flight",
    run: async (url) => {
      const u = new URL(url);
      const stripe = new Stripe(KEY, {
        host: u.hostname,
        port: Number(u.port),
        protocol: "http",
        maxNetworkRetries: 2,
      });
      const id = ++runId;
      const events = Array.from({ length: EVENTS }, (_, i) => ({
        event_name: "api_requests",
        identifier: `sdk1-${id}-${i}`,
        payload: { stripe_customer_id: `cus_bench${i % 200}`, value: String(1 + (i % 7)) },
        timestamp: now() - 60,
      }));
      return measure(() => pool(events, 64, (e) => stripe.billing.meterEvents.create(e)));
    },
  },
  {
    name: "meterhook pipeline, v1, batches of 100, 8 in flight x 8 lanes",
    run: async (url) => {
      const consumer = await meterhook(url, "v1");
      const id = ++runId;
      const batches = Array.from({ length: EVENTS / 100 }, (_, b) => records(`mh1-${id}-${b}`, 100));
      const r = await measure(() => pool(batches, 8, (batch) => consumer.process(batch, Date.now() + 120_000)));
      await consumer.close();
      return r;
    },
  },
  {
    // Not part of the goals: what pre-aggregation saves when a batch holds several events per
    // customer (10 customers here), against the v1 rows above.
    name: "meterhook pipeline, v1, pre-aggregated (sum), 10 customers",
    run: async (url) => {
      const consumer = await meterhook(url, "v1", {
        METERHOOK_AGGREGATE: JSON.stringify({ api_requests: "sum" }),
        METERHOOK_INGEST_QUEUE_URL: "http://127.0.0.1:9/000000000000/never-used",
      });
      const id = ++runId;
      const batches = Array.from({ length: EVENTS / 100 }, (_, b) => records(`mha-${id}-${b}`, 100, 10));
      const r = await measure(() => pool(batches, 8, (batch) => consumer.process(batch, Date.now() + 120_000)));
      await consumer.close();
      return r;
    },
  },
];

// BENCH_ONLY=<text>: run only the scenarios whose name contains it (for profiling one).
const only = process.env.BENCH_ONLY;
if (only) scenarios.splice(0, scenarios.length, ...scenarios.filter((s) => s.name.includes(only)));

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
console.log(
  `meterhook bench: ${EVENTS} events, ${ROUNDS} interleaved rounds, Node ${process.version}, ${cpus().length} x ${cpus()[0]?.model ?? "cpu"}`,
);
for (const rtt of RTTS) {
  const { url, child } = await startEmulator(rtt);
  const results = new Map<string, Result[]>(scenarios.map((s) => [s.name, []]));
  // Warm-up rounds let the JIT settle and are not counted (cold starts have their own bench).
  for (let round = 0; round < WARMUP + ROUNDS; round++) {
    for (const s of scenarios) {
      const r = await s.run(url);
      if (round >= WARMUP) results.get(s.name)?.push(r);
    }
  }
  child.kill("SIGTERM");
  const row = (name: string) => {
    const rs = results.get(name) ?? [];
    return {
      eps: median(rs.map((r) => r.eventsPerSecond)),
      cpu: median(rs.map((r) => r.cpuMsPer1000)),
      rss: Math.max(...rs.map((r) => r.rssMb)),
    };
  };
  console.log(`\nStripe emulator latency ${rtt} ms (medians of ${ROUNDS})`);
  console.log("| client | events/s | CPU ms per 1,000 events | peak RSS MB |");
  console.log("|---|---:|---:|---:|");
  for (const s of scenarios) {
    const r = row(s.name);
    console.log(
      `| ${s.name} | ${Math.round(r.eps).toLocaleString("en-US")} | ${r.cpu.toFixed(1)} | ${r.rss.toFixed(0)} |`,
    );
  }
  const [sdk2, mh2, sdk1, mh1] = scenarios.map((s) => row(s.name));
  if (!only && sdk2 && mh2 && sdk1 && mh1) {
    console.log(
      `\nratios at ${rtt} ms: v2 pipeline/SDK events/s ${(mh2.eps / sdk2.eps).toFixed(2)}x (goal >= 1.0); ` +
        `v2 CPU per event pipeline/SDK ${(mh2.cpu / sdk2.cpu).toFixed(2)}x (goal <= 1.0); ` +
        `v1 events per CPU-second pipeline/SDK ${(sdk1.cpu / mh1.cpu).toFixed(2)}x (goal >= 3)`,
    );
  }
}
process.exit(0);
