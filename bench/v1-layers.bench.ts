/**
 * `npm run bench:v1-layers`: where a v1 event's CPU goes, layer by layer, against the Stripe
 * emulator (in another process) with BENCH_STRIPE_LATENCY_MS added (20 by default). Each layer
 * runs in a process of its own, rounds interleaved, and the table shows the median CPU µs per
 * request (or per event, for the pipeline) of every process of that layer:
 *   socket     node:net sockets, each request's text written whole and its answer read only as far
 *              as Content-Length: the floor for any HTTP client in Node on this machine
 *   piped      the same on BENCH_PIPE_SOCKETS (8) sockets with HTTP/1.1 pipelining, the requests a
 *              socket is given in one tick written together: the floor for a pipelining client
 *   sdk        the official stripe SDK's billing.meterEvents.create, the call of `npm run bench`'s SDK v1 row
 *   dispatch   undici's Agent.dispatch with a minimal handler: the floor for a client on undici
 *   transport  lib/stripe/undici-transport.ts (STRIPE_HTTP_CLIENT=undici)
 *   wire       lib/stripe/wire.ts, the default HTTP client
 *   client     StripeClient.call on the wire client (headers, idempotency key, retry policy, logging hooks)
 *   pipeline   the whole consumer, v1, batches of 100, 8 in flight (as `npm run bench`)
 * BENCH_EVENTS (20000 per run), BENCH_ROUNDS (3 processes per layer), BENCH_RUNS (3 measured runs per
 * process, after one warm-up), BENCH_LAYERS (all; e.g. "client,pipeline"), BENCH_SERIES=1 prints each
 * process's runs in order on stderr (to see whether a layer is still warming up). Before each
 * process the emulator forgets what earlier ones sent it (BENCH_KEEP_EMULATOR_HISTORY=1 keeps it),
 * as in `npm run bench`.
 */
import { type ChildProcess, fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import Stripe from "stripe";
import Agent from "undici/lib/dispatcher/agent.js";
import { silentLogger } from "../lib/logger.js";
import type { MeterEvent } from "../lib/meter-event.js";
import { StripeClient } from "../lib/stripe/client.js";
import { runPool } from "../lib/stripe/submitter.js";
import { createUndiciTransport } from "../lib/stripe/undici-transport.js";
import { encodeV1Form } from "../lib/stripe/v1-meter-events.js";
import { createWireTransport } from "../lib/stripe/wire.js";
import { meterhook, records, sdkOptions } from "./pipeline-clients.js";
import { forgetHistory, INGEST_QUEUE_MEMORY_MB, lambdaYoungGenerationFlags, median, startEmulator } from "./stats.js";

const LAYERS = ["socket", "piped", "sdk", "dispatch", "transport", "wire", "client", "pipeline"] as const;
type Layer = (typeof LAYERS)[number];
const EVENTS = Number(process.env.BENCH_EVENTS ?? 20_000);
const KEY = "sk_test_meterhook_local";
const PATH = "/v1/billing/meter_events";
const RUNS = Number(process.env.BENCH_RUNS ?? 3);

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
  if (layer === "socket") return overBodies(await socketFloor(new URL(url)));
  if (layer === "piped") return overBodies(await pipedFloor(new URL(url), Number(process.env.BENCH_PIPE_SOCKETS ?? 8)));
  if (layer === "sdk") {
    const stripe = new Stripe(KEY, sdkOptions(url));
    return () => {
      const events = Array.from({ length: EVENTS }, (_, i) => event(i));
      return () => runPool(events, 64, async (e) => void (await stripe.billing.meterEvents.create(e)));
    };
  }
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

/**
 * The floor: 64 kept-alive sockets, one request at a time on each, no parsing beyond finding the
 * end of the answer. Nothing here is fit for Stripe (no chunked answers, no errors, no timeouts).
 */
async function socketFloor(u: URL): Promise<(body: string) => Promise<void>> {
  const idle: Socket[] = [];
  const waiting = new Map<Socket, { buf: string; done: () => void }>();
  for (let i = 0; i < 64; i++) {
    const s = connect({ host: u.hostname, port: Number(u.port), noDelay: true });
    s.setEncoding("latin1");
    s.on("data", (chunk: string) => {
      const w = waiting.get(s);
      if (!w) return;
      w.buf += chunk;
      if (answerEnd(w.buf) === undefined) return;
      waiting.delete(s);
      idle.push(s);
      w.done();
    });
    await once(s, "connect");
    idle.push(s);
  }
  return (body) =>
    new Promise<void>((done) => {
      const s = idle.pop() as Socket; // runPool keeps 64 in flight, one per socket
      waiting.set(s, { buf: "", done });
      s.write(requestText(u, body), "latin1");
    });
}

/** Where the first answer in `buf` ends (its head, then Content-Length bytes), once all of it is there. */
const answerEnd = (buf: string): number | undefined => {
  const head = buf.indexOf("\r\n\r\n");
  if (head < 0) return undefined;
  const end = head + 4 + Number(/content-length: *(\d+)/i.exec(buf.slice(0, head))?.[1] ?? 0);
  return buf.length < end ? undefined : end;
};

/** A v1 request's text, written by hand: the floors must do nothing a client does. */
const requestText = (u: URL, body: string): string => {
  const h = headers();
  return `POST ${PATH} HTTP/1.1\r\nhost: ${u.host}\r\nauthorization: ${h.authorization}\r\nstripe-version: ${h["stripe-version"]}\r\nuser-agent: ${h["user-agent"]}\r\ncontent-type: ${h["content-type"]}\r\nidempotency-key: ${h["idempotency-key"]}\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
};

/**
 * The pipelining floor: `n` kept-alive sockets, each request given to the socket with the fewest
 * waiting, a socket's requests of one tick written in one write, its answers taken in order.
 * How much one system call per several requests saves; as unfit for Stripe as socketFloor.
 */
async function pipedFloor(u: URL, n: number): Promise<(body: string) => Promise<void>> {
  type Piped = { s: Socket; buf: string; waiting: (() => void)[]; out: string };
  const sockets: Piped[] = [];
  for (let i = 0; i < n; i++) {
    const p: Piped = {
      s: connect({ host: u.hostname, port: Number(u.port), noDelay: true }),
      buf: "",
      waiting: [],
      out: "",
    };
    p.s.setEncoding("latin1");
    p.s.on("data", (chunk: string) => {
      p.buf += chunk;
      for (let end = answerEnd(p.buf); end !== undefined; end = answerEnd(p.buf)) {
        p.buf = p.buf.slice(end);
        (p.waiting.shift() as () => void)();
      }
    });
    await once(p.s, "connect");
    sockets.push(p);
  }
  const flush = (p: Piped) => {
    p.s.write(p.out, "latin1");
    p.out = "";
  };
  return (body) =>
    new Promise<void>((done) => {
      let p = sockets[0] as Piped;
      for (const q of sockets) if (q.waiting.length < p.waiting.length) p = q;
      p.waiting.push(done);
      // After this tick's promise jobs: the requests runPool starts as answers come in go together.
      if (p.out === "") process.nextTick(flush, p);
      p.out += requestText(u, body);
    });
}

/** Child: one layer, one warm-up run and RUNS measured; sends CPU µs per event of each. */
async function child(layer: Layer, url: string): Promise<void> {
  const prepare = await layerRun(layer, url);
  const cpu: number[] = [];
  for (let r = 0; r < 1 + RUNS; r++) {
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
      // As `npm run bench`: each process meets the emulator without earlier processes' events.
      await forgetHistory(emulator);
      const c: ChildProcess = fork("bench/v1-layers.bench.ts", {
        // As `npm run bench` runs its clients: Lambda's young generation, log lines to /dev/null.
        execArgv: [...lambdaYoungGenerationFlags(INGEST_QUEUE_MEMORY_MB), "--import", "tsx"],
        env: { ...process.env, BENCH_LAYER: layer, BENCH_STRIPE_URL: url },
        stdio: ["ignore", "ignore", "inherit", "ipc"],
      });
      const [cpu] = (await once(c, "message")) as [number[]];
      if (process.env.BENCH_SERIES === "1") console.error(`${layer}: ${cpu.map((x) => x.toFixed(1)).join(" ")}`);
      results.get(layer)?.push(...cpu);
      await once(c, "exit");
    }
  }
  emulator.kill("SIGTERM");
  console.log(`v1 CPU per event by layer, Stripe emulator latency ${latency} ms, ${EVENTS} events per run`);
  // Events per CPU-second against the SDK's, the v1 goal's measure (>= 3x), when the SDK ran too.
  const sdk = results.get("sdk");
  const vsSdk = (cpu: number[]) => (sdk ? ` ${(median(sdk) / median(cpu)).toFixed(2)}x |` : "");
  console.log(`| layer | CPU µs per event (median) | fastest | slowest |${sdk ? " SDK's / this |" : ""}`);
  console.log(`|---|---:|---:|---:|${sdk ? "---:|" : ""}`);
  for (const [layer, cpu] of results) {
    console.log(
      `| ${layer} | ${median(cpu).toFixed(1)} | ${Math.min(...cpu).toFixed(1)} | ${Math.max(...cpu).toFixed(1)} |${vsSdk(cpu)}`,
    );
  }
}

const layer = process.env.BENCH_LAYER as Layer | undefined;
// As bench/client-process.ts: tsx turns source maps on, which makes the SDK's per-call stack
// capture cost what plain `node` would not; every layer runs with them off.
if (layer && process.env.BENCH_SOURCE_MAPS !== "1") process.setSourceMapsEnabled(false);
if (layer) await child(layer, process.env.BENCH_STRIPE_URL as string);
else await main();
