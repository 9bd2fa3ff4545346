/**
 * `npm run bench:v1-layers`: where a v1 event's CPU goes, layer by layer, against the Stripe
 * emulator (in another process) with BENCH_STRIPE_LATENCY_MS added (20 by default). Each layer
 * runs in a process of its own, rounds interleaved, and the table shows the median CPU µs per
 * request (or per event, for the pipeline) of every process of that layer:
 *   dispatch   undici's Agent.dispatch with a minimal handler: the floor for a client on undici
 *   transport  lib/stripe/undici-transport.ts (STRIPE_HTTP_CLIENT=undici)
 *   wire       lib/stripe/wire.ts, the default HTTP client
 *   client     StripeClient.call on the wire client (headers, idempotency key, retry policy, logging hooks)
 *   pipeline   the whole consumer, v1, batches of 100, 8 in flight (as `npm run bench`)
 * BENCH_EVENTS (20000 per run), BENCH_ROUNDS (3 processes per layer, 3 measured runs each after one
 * warm-up), BENCH_LAYERS (all; e.g. "client,pipeline").
 */
import { type ChildProcess, fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import Agent from "undici/lib/dispatcher/agent.js";
import { silentLogger } from "../lib/logger.js";
import type { MeterEvent } from "../lib/meter-event.js";
import { StripeClient } from "../lib/stripe/client.js";
import { runPool } from "../lib/stripe/submitter.js";
import { createUndiciTransport } from "../lib/stripe/undici-transport.js";
import { encodeV1Form } from "../lib/stripe/v1-meter-events.js";
import { createWireTransport } from "../lib/stripe/wire.js";
import { meterhook, records } from "./pipeline-clients.js";
import { median, startEmulator } from "./stats.js";

const LAYERS = ["dispatch", "transport", "wire", "client", "pipeline"] as const;
type Layer = (typeof LAYERS)[number];
const EVENTS = Number(process.env.BENCH_EVENTS ?? 20_000);
const KEY = "sk_test_meterhook_local";
const PATH = "/v1/billing/meter_events";

const event = (i: number): MeterEvent => ({
  event_name: "api_requests",
  identifier: `mh_${randomUUID()}`,
  timestamp: Math.floor(Date.now() / 1000) - 60,
  payload: { stripe_customer_id: `cus_bench${i % 200}`, value: String(1 + (i % 7)) },
});
const headers = () => ({
  authorization: `Bearer ${KEY}`,
  "stripe-version": "2026-09-30.endive",
  "user-agent": "meterhook/0.1",
  "content-type": "application/x-www-form-urlencoded",
  "idempotency-key": randomUUID(),
});

/**
 * Runs of `layer`: each call builds a run's input (request bodies, or SQS messages) and answers
 * the run itself, the work of EVENTS events with 64 requests in flight, so that only the work is
 * measured.
 */
async function layerRun(layer: Layer, url: string): Promise<() => () => Promise<void>> {
  const origin = new URL(url).origin;
  // A run over fresh request bodies, built when the run is prepared.
  const overBodies = (send: (body: string) => Promise<void>) => () => {
    const bodies = Array.from({ length: EVENTS }, (_, i) => encodeV1Form(event(i)));
    return () => runPool(bodies, 64, send);
  };
  if (layer === "dispatch") {
    const agent = new Agent({ connections: 64, keepAliveTimeout: 30_000 });
    const one = (body: string) =>
      new Promise<void>((resolve, reject) => {
        agent.dispatch({ origin, path: PATH, method: "POST", headers: headers(), body, blocking: false }, {
          onRequestStart() {},
          onResponseStart() {},
          onResponseData() {},
          onResponseEnd: () => resolve(),
          onResponseError: (_c: unknown, err: Error) => reject(err),
        } as never);
      });
    return overBodies(one);
  }
  const transport =
    layer === "transport" ? createUndiciTransport({ connections: 64 }) : createWireTransport({ connections: 64 });
  if (layer === "transport" || layer === "wire") {
    return overBodies(async (body) => {
      await transport.send({ method: "POST", url: `${url}${PATH}`, headers: headers(), body, timeoutMs: 10_000 });
    });
  }
  if (layer === "client") {
    const client = new StripeClient({ apiKey: KEY, apiBase: url, meterEventsBase: url }, transport, silentLogger);
    const deadline = () => Date.now() + 600_000;
    const call = (body: string) =>
      client.call({
        base: "api",
        path: PATH,
        body,
        contentType: "application/x-www-form-urlencoded",
        deadline: deadline(),
      });
    return overBodies(async (body) => void (await call(body)));
  }
  const consumer = await meterhook(url, "v1");
  return () => {
    const batches = Array.from({ length: EVENTS / 100 }, () => records(100));
    return () => runPool(batches, 8, async (b) => void (await consumer.process(b, Date.now() + 120_000)));
  };
}

/** Child: one layer, one warm-up run and three measured; prints CPU µs per event of each. */
async function child(layer: Layer, url: string): Promise<void> {
  const prepare = await layerRun(layer, url);
  const cpu: number[] = [];
  for (let r = 0; r < 4; r++) {
    // The input is built before the clock starts (until 2026-11-27 it was measured with the run).
    const run = prepare();
    const c0 = process.cpuUsage();
    await run();
    const c = process.cpuUsage(c0);
    if (r > 0) cpu.push((c.user + c.system) / EVENTS);
  }
  process.send?.(cpu);
  process.exit(0);
}

async function main(): Promise<void> {
  const latency = Number(process.env.BENCH_STRIPE_LATENCY_MS ?? 20);
  const { url, child: emulator } = await startEmulator(latency);
  const only = process.env.BENCH_LAYERS?.split(",");
  const layers = LAYERS.filter((l) => !only || only.includes(l));
  const results = new Map<Layer, number[]>(layers.map((l) => [l, []]));
  for (let round = 0; round < Number(process.env.BENCH_ROUNDS ?? 3); round++) {
    for (const layer of layers) {
      const c: ChildProcess = fork("bench/v1-layers.bench.ts", {
        execArgv: ["--import", "tsx"],
        env: { ...process.env, BENCH_LAYER: layer, BENCH_STRIPE_URL: url },
      });
      const [cpu] = (await once(c, "message")) as [number[]];
      results.get(layer)?.push(...cpu);
      await once(c, "exit");
    }
  }
  emulator.kill("SIGTERM");
  console.log(`v1 CPU per event by layer, Stripe emulator latency ${latency} ms, ${EVENTS} events per run`);
  console.log("| layer | CPU µs per event (median) | fastest | slowest |");
  console.log("|---|---:|---:|---:|");
  for (const [layer, cpu] of results) {
    console.log(
      `| ${layer} | ${median(cpu).toFixed(1)} | ${Math.min(...cpu).toFixed(1)} | ${Math.max(...cpu).toFixed(1)} |`,
    );
  }
}

const layer = process.env.BENCH_LAYER as Layer | undefined;
if (layer) await child(layer, process.env.BENCH_STRIPE_URL as string);
else await main();
