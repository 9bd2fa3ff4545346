/**
 * The clients `npm run bench` compares, each run in its own process by bench/client-process.ts:
 * the official `stripe` SDK doing submission alone, and the meterhook consumer pipeline (and,
 * for reference, meterhook's own Stripe client doing submission alone).
 */
import { randomUUID } from "node:crypto";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { type PerformanceEntry, PerformanceObserver } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import type { SQSBatchResponse, SQSEvent } from "aws-lambda";
import Stripe from "stripe";
import { createQueueHandler } from "../functions/ingest-queue.js";
import { publishMetrics } from "../functions/support/observability.js";
import { type AppDeps, type Consumer, createConsumerFromConfig } from "../lib/app.js";
import { loadConfig } from "../lib/config.js";
import type { QueueMessage } from "../lib/consumer.js";
import { silentLogger } from "../lib/logger.js";
import { type MeterEvent, meterEventIdentifier } from "../lib/meter-event.js";
import { MetricsRecorder } from "../lib/metrics.js";
import { packBodies } from "../lib/pack.js";
import { runPool } from "../lib/stripe/submitter.js";
import type { HttpTransport } from "../lib/stripe/transport.js";
import { sqsRecord } from "../test/helpers/factories.js";
import { collectGarbage, rewarmEvents, statCpuMs } from "./stats.js";

const KEY = "sk_test_meterhook_local";
/** Events per run; the coordinator (bench/pipeline.bench.ts) sets it for every client process. */
const EVENTS = Number(process.env.BENCH_EVENTS ?? 20_000);

/** `work` on every item, `limit` at a time. */
const pool = <T>(items: T[], limit: number, work: (t: T) => Promise<unknown>) =>
  runPool(items, limit, async (t) => {
    await work(t);
  });

export interface Result {
  eventsPerSecond: number;
  cpuMsPer1000: number;
  /** Garbage-collection pauses on the main thread during the run (part of the CPU above). */
  gcMsPer1000: number;
  /**
   * CPU of the process's other threads during the run (part of the CPU above): V8's compiler and
   * GC helpers, libuv's pool. NaN where /proc is missing (not Linux).
   */
  otherThreadsMsPer1000: number;
  rssMb: number;
}

/** Garbage-collection pauses, as V8 reports them, kept while a run is measured. */
const gcPauses: PerformanceEntry[] = [];
let recordingGc = false;
new PerformanceObserver((list) => {
  if (recordingGc) gcPauses.push(...list.getEntries());
}).observe({ entryTypes: ["gc"] });
/** CPU ms so far of every thread but the main one, from /proc (clock ticks of 10 ms); NaN elsewhere. */
function otherThreadsCpuMs(): number {
  let ms = 0;
  try {
    for (const tid of readdirSync("/proc/self/task")) {
      if (tid === String(process.pid)) continue;
      ms += statCpuMs(`/proc/self/task/${tid}/stat`);
    }
  } catch {
    return Number.NaN;
  }
  return ms;
}

/** Lets the observer's queued entries arrive. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

/**
 * Events each client processes after the forced collection and before its measured window
 * (BENCH_REWARM_EVENTS; default a whole run's worth, see rewarmEvents). A full collection frees
 * objects that V8's optimized code refers to weakly (shapes of per-request objects nothing holds
 * any more), and that code is thrown away (`--trace-deopt`: "weak objects") and compiled again
 * over the next thousands of events: in the SDK's v2 client, over the next 100,000 and more.
 * The bench's own collections come at idle, when no request holds anything, and cost 10-20 µs
 * per v1 event of recompilation on both sides; a consumer's own collections, which come while it
 * works and throw away less, stay inside the window. Rounded to whole batches of 100; 0 measures
 * from the collection on, as the bench did before 2026-11-27.
 */
const REWARM = rewarmEvents(EVENTS);

/**
 * BENCH_PROFILE_DIR=<dir>: a CPU profile of each measured window alone (not of building inputs,
 * forced collections or re-warming, which --cpu-prof also records), one .cpuprofile per run.
 * The profiler's sampling costs CPU: figures of a profiled run are not comparable.
 */
const PROFILE_DIR = process.env.BENCH_PROFILE_DIR;
const profiler = PROFILE_DIR ? new Session() : undefined;
let profiled = 0;
const post = (method: string) =>
  new Promise<unknown>((resolve, reject) => profiler?.post(method, (err, res) => (err ? reject(err) : resolve(res))));
async function startProfile(): Promise<void> {
  if (!profiler) return;
  if (profiled === 0) profiler.connect();
  await post("Profiler.enable");
  await post("Profiler.start");
}
async function stopProfile(): Promise<void> {
  if (!profiler || !PROFILE_DIR) return;
  const { profile } = (await post("Profiler.stop")) as { profile: unknown };
  mkdirSync(PROFILE_DIR, { recursive: true });
  const name = (process.env.BENCH_CLIENT ?? "client").replace(/[^a-z0-9]+/gi, "-");
  writeFileSync(`${PROFILE_DIR}/${name}-${++profiled}-${process.pid}.cpuprofile`, JSON.stringify(profile));
}

/**
 * Runs `work` over `items` (`perItem` events each): the first REWARM events unmeasured, after a
 * full collection, then the run's EVENTS measured.
 */
async function measure<T>(items: T[], perItem: number, work: (items: T[]) => Promise<unknown>): Promise<Result> {
  const split = Math.ceil(REWARM / perItem);
  // Collected before each run, so inputs built for it (and garbage from the last) are not swept inside it.
  collectGarbage();
  collectGarbage();
  if (split > 0) await work(items.slice(0, split));
  await settle();
  gcPauses.length = 0;
  recordingGc = true;
  const measured = items.slice(split);
  // EVENTS unless a row's invocations do not divide it (the 800-record row in a BENCH_QUICK run).
  const events = measured.length * perItem;
  await startProfile();
  // memoryUsage.rss() alone: memoryUsage() also walks V8's heap spaces, 1-2 % of a v1 run's CPU.
  let peak = process.memoryUsage.rss();
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20);
  const others0 = otherThreadsCpuMs();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await work(measured);
  const t1 = performance.now();
  const cpu = process.cpuUsage(cpu0);
  const othersMs = otherThreadsCpuMs() - others0;
  clearInterval(sampler);
  await stopProfile();
  await settle();
  recordingGc = false;
  const gcMs = gcPauses.filter((e) => e.startTime >= t0 && e.startTime <= t1).reduce((sum, e) => sum + e.duration, 0);
  return {
    eventsPerSecond: (events / (t1 - t0)) * 1000,
    cpuMsPer1000: ((cpu.user + cpu.system) / 1000 / events) * 1000,
    gcMsPer1000: (gcMs / events) * 1000,
    otherThreadsMsPer1000: (othersMs / events) * 1000,
    rssMb: peak / 1024 / 1024,
  };
}

const now = () => Math.floor(Date.now() / 1000);
/**
 * An identifier as the pipeline makes one for a canonical event with a UUID id (`mh_` and 40
 * characters), for the rows that submit events built beforehand, so that every row puts the
 * same meter events on the wire. Until 2026-11-28 they sent counters (`sdk2-<run>-<batch>-<i>`),
 * about 30 bytes shorter.
 */
const pipelineIdentifier = () => meterEventIdentifier(randomUUID(), "api_requests");
/** A run's batches of 100 (`make` gets the position in its batch, 0-99), re-warm included. */
const batchesOf100 = <T>(make: (i: number) => T): T[][] =>
  Array.from({ length: (REWARM + EVENTS) / 100 }, () => Array.from({ length: 100 }, (_, i) => make(i)));

/**
 * SQS records as the event source mapping hands them to the consumer: canonical events. Ids are
 * UUIDs, as SQS message ids and most apps' event ids are (V8's JSON.parse interns strings of up to
 * 10 characters, so short counters would measure string-table work real traffic does not do).
 */
export function records(n: number, customers = 200): QueueMessage[] {
  const t = Date.now();
  return Array.from({ length: n }, (_, i) => ({
    messageId: randomUUID(),
    body: JSON.stringify({
      id: randomUUID(),
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

/** An SQS event of `n` canonical events, as the event source mapping hands it to the ingest-queue handler. */
export const sqsEvent = (n: number, customers = 200): SQSEvent => ({
  Records: records(n, customers).map((m) => sqsRecord(m.body)),
});

/** The same `n` events in one record, packed as the HTTP API does with METERHOOK_EVENTS_PER_MESSAGE=n. */
const packedSqsEvent = (n: number, customers = 200): SQSEvent => ({
  Records: packBodies(
    records(n, customers).map((m) => m.body),
    n,
  ).map((body) => sqsRecord(body)),
});

/**
 * The consumer as the ingest-queue Lambda builds it. `transport` replaces HTTP (bench/consumer-cpu);
 * `observability` replaces the production logger (JSON lines to stdout at METERHOOK_LOG_LEVEL's
 * default) and metrics, which the benches that print to the terminal silence.
 */
export async function meterhook(
  url: string,
  api: "v1" | "v2",
  extra: Record<string, string> = {},
  transport?: HttpTransport,
  observability: Pick<AppDeps, "logger" | "metrics"> = { logger: silentLogger },
): Promise<Consumer> {
  return createConsumerFromConfig(loadConfig(consumerEnv(url, api, extra)), { ...observability, transport });
}

/** The ingest-queue function's environment for the bench's consumer. */
function consumerEnv(url: string, api: "v1" | "v2", extra: Record<string, string>): Record<string, string> {
  const customers = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`acct_${i}`, `cus_bench${i}`]));
  return {
    STRIPE_API_KEY: KEY,
    STRIPE_API_BASE: url,
    STRIPE_METER_EVENTS_BASE: url,
    METERHOOK_STRIPE_API: api,
    METERHOOK_DLQ_URL: "http://127.0.0.1:9/never-used",
    SQS_ENDPOINT: "http://127.0.0.1:9",
    METERHOOK_CUSTOMERS: JSON.stringify(customers),
    STRIPE_CONCURRENCY: "8",
    STRIPE_MAX_CONNECTIONS: "64",
    // As the stack runs it (serverless.yml meterCheck). BENCH_METER_CHECK=off for a bundle built
    // before the check existed (BENCH_COMPARE_BUNDLE), whose config refuses the unknown name.
    ...(process.env.BENCH_METER_CHECK === "off" ? {} : { METERHOOK_METER_CHECK: "on" }),
    // The customer check too (serverless.yml customerCheck), its rate high enough that the
    // first batch reads the 200 customers: the rows measure a warm instance that knows them.
    // BENCH_CUSTOMER_CHECK=off for a bundle built before it existed.
    ...(process.env.BENCH_CUSTOMER_CHECK === "off"
      ? {}
      : { METERHOOK_CUSTOMER_CHECK: "on", STRIPE_CUSTOMER_CHECK_MAX_REQUESTS_PER_SECOND: "1000" }),
    // The replay ledger, as the stack sets it for the consumer: read only for redriven letters,
    // which the bench sends none of. BENCH_REPLAY_LEDGER=off for a bundle built before it existed.
    ...(process.env.BENCH_REPLAY_LEDGER === "off"
      ? {}
      : { METERHOOK_REPLAY_LEDGER_TABLE: "meterhook-bench-replay-ledger" }),
    // STRIPE_HTTP_CLIENT=undici in the bench's environment measures the undici client instead.
    ...(process.env.STRIPE_HTTP_CLIENT ? { STRIPE_HTTP_CLIENT: process.env.STRIPE_HTTP_CLIENT } : {}),
    ...extra,
  };
}

/**
 * A client is built once per emulator and reused by the warm-up and every round, as a warm Lambda
 * keeps its consumer and an app keeps its `Stripe` instance: building one per run measured V8
 * compiling the new instances' code again rather than steady state.
 */
export type Scenario = {
  name: string;
  /** What the bench's ratios take this row as (bench/pipeline.bench.ts); rows without one are shown only. */
  role?: Role;
  start: (url: string) => Promise<{ run: () => Promise<Result>; close: () => Promise<void> }>;
};
export type Role =
  | "sdk v2"
  | "pipeline v2"
  | "sdk v1"
  | "pipeline v1"
  | "pipeline v2, stack batch"
  | "pipeline v2, packed"
  | "client alone v2"
  | "client alone v1"
  | "pipeline v2, compared build";
export const sdkOptions = (url: string) => {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port), protocol: "http" as const, maxNetworkRetries: 2 };
};
/**
 * BENCH_RUNTIME_PARSE=1: each invocation's SQS event is held as the JSON text Lambda's Runtime API
 * serves and parsed per invocation, as the Node.js runtime does before it calls the handler, so
 * the pipeline rows also count that parse: what a deployed consumer's CPU holds, though no handler
 * can change it. The SDK rows (an app's events already in memory) have nothing like it.
 */
const RUNTIME_PARSE = process.env.BENCH_RUNTIME_PARSE === "1";

/**
 * The pipeline rows run the ingest-queue handler from its Lambda bundle (`npm run build`'s
 * dist/ingest-queue/index.mjs, which `npm run bench` builds first): what Lambda runs, chunks and
 * all. BENCH_SOURCES=1 runs it from the sources through tsx instead, as the bench did before
 * 2026-11-27 15:58; the two measured the same, interleaved in one run (HISTORY.md).
 */
const BUNDLE = process.env.BENCH_SOURCES === "1" ? undefined : "dist/ingest-queue/index.mjs";

/**
 * BENCH_COMPARE_BUNDLE=<path to an ingest-queue index.mjs>: one more client, the v2 pipeline on
 * that bundle (a copy of dist/ made before a change, say), interleaved with the others so that
 * each round pairs the two builds under the same state of the machine; the bench prints their
 * ratio. Run against a copy of the same build, it shows how fine a difference the pairing sees.
 */
const COMPARE_BUNDLE = process.env.BENCH_COMPARE_BUNDLE;

/**
 * The ingest-queue Lambda handler as deployed (functions/ingest-queue.ts, bundled), on an SQS event of
 * `perInvocation` records, `inFlight` invocations at a time: SQS records in, partial batch response
 * out, the production logger at its default level and the CloudWatch metrics it publishes after
 * each invocation. The client process's stdout is /dev/null (bench/pipeline.bench.ts), so each
 * log and metrics line costs a write, as Lambda's stdout does.
 */
async function pipeline(
  url: string,
  api: "v1" | "v2",
  inFlight: number,
  {
    customers = 200,
    extra = {},
    batch = sqsEvent,
    bundle = BUNDLE,
    perInvocation = 100,
  }: {
    /** Distinct customers in each invocation's events. */
    customers?: number;
    /** More of the function's environment. */
    extra?: Record<string, string>;
    /** Builds one invocation's SQS event of `n` events. */
    batch?: (n: number, customers: number) => SQSEvent;
    bundle?: string;
    perInvocation?: number;
  } = {},
) {
  let handler: (event: SQSEvent, context: { getRemainingTimeInMillis: () => number }) => Promise<SQSBatchResponse>;
  let close = () => Promise.resolve();
  if (bundle) {
    // The deployed artifact, configured from the environment as on Lambda.
    Object.assign(process.env, consumerEnv(url, api, extra));
    ({ handler } = await import(pathToFileURL(bundle).href));
  } else {
    const metrics = new MetricsRecorder();
    const consumer = await meterhook(url, api, extra, undefined, { metrics });
    handler = createQueueHandler(
      () => Promise.resolve(consumer),
      () => publishMetrics(metrics, "ingest-queue"),
    );
    close = () => consumer.close();
  }
  const context = { getRemainingTimeInMillis: () => 120_000 };
  const invoke = async (event: SQSEvent) => {
    const res = await handler(event, context);
    if (res.batchItemFailures.length > 0) throw new Error(`${res.batchItemFailures.length} messages failed`);
  };
  return {
    run: () => {
      const events = Array.from({ length: Math.ceil((REWARM + EVENTS) / perInvocation) }, () =>
        batch(perInvocation, customers),
      );
      if (!RUNTIME_PARSE) return measure(events, perInvocation, (slice) => pool(slice, inFlight, invoke));
      const texts = events.map((e) => JSON.stringify(e));
      return measure(texts, perInvocation, (slice) => pool(slice, inFlight, (text) => invoke(JSON.parse(text))));
    },
    close,
  };
}
/**
 * meterhook's submitter (the consumer's, checks included) on batches of 100 events built
 * beforehand, `inFlight` batches at a time: submission alone, without reading SQS records.
 */
async function clientAlone(url: string, api: "v1" | "v2", inFlight: number) {
  const consumer = await meterhook(url, api);
  const { submitter } = consumer.deps;
  const send = async (events: MeterEvent[]) => {
    const outcomes = await submitter.submit(events, Date.now() + 120_000);
    if (outcomes.some((o) => o.kind !== "billed")) throw new Error("a batch was not billed");
  };
  return {
    run: () => {
      const batches = batchesOf100(
        (i): MeterEvent => ({
          event_name: "api_requests",
          identifier: pipelineIdentifier(),
          timestamp: now() - 60,
          payload: { stripe_customer_id: `cus_bench${i}`, value: String(1 + (i % 7)) },
        }),
      );
      return measure(batches, 100, (slice) => pool(slice, inFlight, send));
    },
    close: () => consumer.close(),
  };
}

export const scenarios: Scenario[] = [
  {
    name: "stripe SDK, v2 stream, batches of 100, 16 in flight",
    role: "sdk v2",
    start: async (url) => {
      // A session lasts 15 minutes, less than a long bench: renewed before a run it might not
      // outlast, outside the measured window, as an app renews it before it expires.
      const api = new Stripe(KEY, sdkOptions(url));
      let expiresAt = 0;
      let stream: Stripe | undefined;
      const renew = async () => {
        if (stream && expiresAt - Date.now() > 5 * 60_000) return stream;
        const session = await api.v2.billing.meterEventSession.create();
        expiresAt = Date.parse(String(session.expires_at));
        stream = new Stripe(session.authentication_token, sdkOptions(url));
        return stream;
      };
      await renew();
      return {
        run: async () => {
          const client = await renew();
          const batches = batchesOf100((i) => ({
            event_name: "api_requests",
            identifier: pipelineIdentifier(),
            payload: { stripe_customer_id: `cus_bench${i}`, value: String(1 + (i % 7)) },
            timestamp: new Date((now() - 60) * 1000).toISOString(),
          }));
          return measure(batches, 100, (slice) =>
            pool(slice, 16, (events) => client.v2.billing.meterEventStream.create({ events })),
          );
        },
        close: async () => {},
      };
    },
  },
  {
    name: "meterhook pipeline, v2 stream, batches of 100, 16 in flight",
    role: "pipeline v2",
    start: (url) => pipeline(url, "v2", 16),
  },
  {
    name: "stripe SDK, v1 meter events, 64 in flight",
    role: "sdk v1",
    start: async (url) => {
      const stripe = new Stripe(KEY, sdkOptions(url));
      return {
        run: () => {
          const events = Array.from({ length: REWARM + EVENTS }, (_, i) => ({
            event_name: "api_requests",
            identifier: pipelineIdentifier(),
            payload: { stripe_customer_id: `cus_bench${i % 200}`, value: String(1 + (i % 7)) },
            timestamp: now() - 60,
          }));
          return measure(events, 1, (slice) => pool(slice, 64, (e) => stripe.billing.meterEvents.create(e)));
        },
        close: async () => {},
      };
    },
  },
  {
    name: "meterhook pipeline, v1, batches of 100, 8 in flight x 8 lanes",
    role: "pipeline v1",
    start: (url) => pipeline(url, "v1", 8),
  },
  {
    // Not part of the goals: what pre-aggregation saves when a batch holds several events per
    // customer (10 customers here), against the v1 rows above.
    name: "meterhook pipeline, v1, pre-aggregated (sum), 10 customers",
    start: (url) =>
      pipeline(url, "v1", 8, {
        customers: 10,
        extra: {
          METERHOOK_AGGREGATE: JSON.stringify({ api_requests: "sum" }),
          METERHOOK_INGEST_QUEUE_URL: "http://127.0.0.1:9/000000000000/never-used",
        },
      }),
  },
  {
    // Not part of the goals: the v2 row's events and Stripe traffic, 100 events per invocation,
    // but in one record packed as the HTTP API writes them with METERHOOK_EVENTS_PER_MESSAGE=100.
    name: "meterhook pipeline, v2 stream, 1 pack of 100 per invocation, 16 in flight",
    role: "pipeline v2, packed",
    start: (url) => pipeline(url, "v2", 16, { batch: packedSqsEvent }),
  },
  {
    // Not a goal row: the v2 stack's batch (serverless.yml custom.consumerBatchSize), 800 records
    // per invocation, sent as STRIPE_CONCURRENCY (8) stream requests at once; 2 invocations in
    // flight keep the SDK row's 16 requests in flight.
    name: "meterhook pipeline, v2 stream, 800 records per invocation, 2 in flight",
    role: "pipeline v2, stack batch",
    start: (url) => pipeline(url, "v2", 2, { perInvocation: 800 }),
  },
  {
    // Not part of the goals: meterhook's own Stripe client and transport on the SDK row's task,
    // submission alone of events built beforehand, so that the pipeline row splits into
    // submission and everything else the pipeline does.
    name: "meterhook Stripe client alone, v2 stream, batches of 100, 16 in flight",
    role: "client alone v2",
    start: (url) => clientAlone(url, "v2", 16),
  },
  {
    // Likewise for v1, on the v1 pipeline row's traffic (batches of 100, 8 at once, 8 lanes
    // each: the SDK row's 64 requests in flight): the v1 goal's floor, what the HTTP client
    // alone spends per request against the SDK.
    name: "meterhook Stripe client alone, v1 meter events, batches of 100, 8 in flight x 8 lanes",
    role: "client alone v1",
    start: (url) => clientAlone(url, "v1", 8),
  },
  ...(COMPARE_BUNDLE
    ? [
        {
          // Not part of the goals: the v2 row on another build (BENCH_COMPARE_BUNDLE).
          name: "meterhook pipeline on BENCH_COMPARE_BUNDLE, v2 stream, batches of 100, 16 in flight",
          role: "pipeline v2, compared build" as const,
          start: (url: string) => pipeline(url, "v2", 16, { bundle: COMPARE_BUNDLE }),
        },
      ]
    : []),
];
