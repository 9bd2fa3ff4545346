/**
 * Measures what the deployed functions would spend per event, to price them (README "Cost"):
 * the bundled handlers (dist/, as Lambda loads them) against fauxqs and the Stripe emulator with
 * 20 ms of added latency per Stripe request. Run: `npm run bench:cost` (builds first).
 *
 * Prints per-invocation wall time (median and p90 of the runs) and the process's peak RSS.
 */
import { SQSClient } from "@aws-sdk/client-sqs";
import { packBodies } from "../lib/pack.js";
import { startLocalQueues } from "../local/queues.js";
import { EMULATOR_DEFAULT_KEY, StripeEmulator } from "../local/stripe-emulator/server.js";

const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const LATENCY_MS = Number(process.env.BENCH_STRIPE_LATENCY_MS ?? 20);

const queues = await startLocalQueues({ port: 0 });
const emulator = new StripeEmulator({ latencyMs: LATENCY_MS });
await emulator.start(0);
Object.assign(process.env, {
  METERHOOK_API_KEYS: "bench-key-0001",
  METERHOOK_INGEST_QUEUE_URL: queues.ingestQueueUrl,
  METERHOOK_DLQ_URL: queues.deadLetterQueueUrl,
  SQS_ENDPOINT: queues.endpoint,
  STRIPE_API_KEY: EMULATOR_DEFAULT_KEY,
  STRIPE_API_BASE: emulator.url,
  STRIPE_METER_EVENTS_BASE: emulator.url,
  METERHOOK_LOG_LEVEL: "error",
});
// The bundles print EMF metric lines to stdout, as on Lambda; keep the report readable.
const write = process.stdout.write.bind(process.stdout);
const report = (line: string) => write(`${line}\n`);
process.stdout.write = (() => true) as typeof process.stdout.write;

const http = (await import(`${process.cwd()}/dist/http-api/index.mjs`)).handler;
const queue = (await import(`${process.cwd()}/dist/ingest-queue/index.mjs`)).handler;
const sqs = new SQSClient({
  endpoint: queues.endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "b", secretAccessKey: "b" },
});

let seq = 0;
const event = () => ({ id: `bench_${++seq}`, event_name: "api_requests", customer: "cus_bench", value: 1 });
const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)] as number, p90: s[Math.floor(s.length * 0.9)] as number };
};
async function time(fn: () => Promise<unknown>): Promise<number[]> {
  await fn(); // warm: the cold start is measured separately
  const out: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    await fn();
    out.push(performance.now() - t);
  }
  return out;
}
const httpEvent = (body: unknown) => ({
  rawPath: "/v1/events",
  headers: { authorization: "Bearer bench-key-0001", "content-type": "application/json" },
  body: JSON.stringify(body),
  isBase64Encoded: false,
  requestContext: { http: { method: "POST" }, requestId: `r${seq}`, stage: "$default" },
});
/** n messages, each one event, or a pack of `perMessage` as the HTTP API writes with METERHOOK_EVENTS_PER_MESSAGE. */
const sqsBatch = (n: number, perMessage = 1) => ({
  Records: Array.from({ length: n }, () => ({
    messageId: `m${++seq}`,
    body: packBodies(
      Array.from({ length: perMessage }, () => JSON.stringify(event())),
      perMessage,
    )[0] as string,
    attributes: {
      ApproximateReceiveCount: "1",
      SentTimestamp: String(Date.now()),
      ApproximateFirstReceiveTimestamp: String(Date.now()),
    },
  })),
});
const context = { getRemainingTimeInMillis: () => 60_000 };

/** A figure for a failing handler would price the wrong thing: every invocation must succeed. */
async function accepted(event: unknown, handler = http): Promise<void> {
  const res = (await handler(event)) as { statusCode: number; body: string };
  if (res.statusCode !== 202) throw new Error(`http-api answered ${res.statusCode}: ${res.body}`);
}
async function billed(n: number, perMessage = 1): Promise<void> {
  const res = (await queue(sqsBatch(n, perMessage), context)) as { batchItemFailures: unknown[] };
  if (res.batchItemFailures.length > 0) throw new Error(`ingest-queue left ${res.batchItemFailures.length} to retry`);
}

const rows: Array<[string, number[], number]> = [
  ["http-api, 1 event per request", await time(() => accepted(httpEvent(event()))), 1],
  [
    "http-api, 100 events per request",
    await time(() => accepted(httpEvent({ events: Array.from({ length: 100 }, event) }))),
    100,
  ],
  ["ingest-queue, batch of 800 (v2 stream, the stack's batch)", await time(() => billed(800)), 800],
  ["ingest-queue, batch of 100 (v2 stream)", await time(() => billed(100)), 100],
  ["ingest-queue, batch of 10 (v2 stream)", await time(() => billed(10)), 10],
];
// The same functions with METERHOOK_EVENTS_PER_MESSAGE=100: a second instance of the HTTP API's
// bundle (a new module URL), which reads its config on its first request.
process.env.METERHOOK_EVENTS_PER_MESSAGE = "100";
const packedHttp = (await import(`${process.cwd()}/dist/http-api/index.mjs?packed`)).handler;
const request = (n: number) => httpEvent({ events: Array.from({ length: n }, event) });
rows.push(
  ["http-api, 100 events per request, packed", await time(() => accepted(request(100), packedHttp)), 100],
  ["http-api, 500 events per request, packed", await time(() => accepted(request(500), packedHttp)), 500],
  ["ingest-queue, batch of 10 packs of 100 (v2 stream)", await time(() => billed(10, 100)), 1_000],
  ["ingest-queue, batch of 100 packs of 100 (v2 stream)", await time(() => billed(100, 100)), 10_000],
);
const rssMb = process.memoryUsage().rss / 1024 / 1024;
report(`Stripe latency ${LATENCY_MS} ms, ${RUNS} runs each, Node ${process.version}, ${process.arch}`);
report("| invocation | median ms | p90 ms | events | median ms per event |");
report("|---|---:|---:|---:|---:|");
for (const [name, xs, n] of rows) {
  const s = stats(xs);
  report(`| ${name} | ${s.median.toFixed(1)} | ${s.p90.toFixed(1)} | ${n} | ${(s.median / n).toFixed(2)} |`);
}
report(`peak RSS of this process (both handlers, fauxqs and the emulator): ${rssMb.toFixed(0)} MB`);

process.stdout.write = write;
sqs.destroy();
await emulator.stop();
await queues.stop();
process.exit(0);
