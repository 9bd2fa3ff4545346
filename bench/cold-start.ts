/**
 * `npm run bench:cold-start`: what a cold start costs on this machine. For each bundled handler
 * (dist/, as Lambda loads it): a fresh Node process that imports it and runs its first
 * invocation's init (config, clients; a health request for the HTTP API). Compared, side by side
 * and interleaved, with an empty Node process and one that only imports undici, the floor for a
 * client built on it. Median wall time of BENCH_RUNS (15) processes each.
 *
 * The HTTP API is measured twice: with a health request, and with a first `POST /v1/events`,
 * which also loads the SQS client and sends to fauxqs (started here, on loopback). The replay
 * function's first invocation stops before taking a letter (its init only).
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startLocalQueues } from "../local/queues.js";
import { median } from "./stats.js";

const RUNS = Number(process.env.BENCH_RUNS ?? 15);
const dir = mkdtempSync(join(tmpdir(), "mh-cold-"));
const cwd = process.cwd();
const script = (name: string, body: string) => {
  const file = join(dir, `${name}.mjs`);
  writeFileSync(file, body);
  return file;
};
const queues = await startLocalQueues();
const env = {
  ...process.env,
  METERHOOK_API_KEYS: "cold-start-key-0001",
  METERHOOK_INGEST_QUEUE_URL: queues.ingestQueueUrl,
  SQS_ENDPOINT: queues.endpoint,
  AWS_REGION: "us-east-1",
  AWS_ACCESS_KEY_ID: "local",
  AWS_SECRET_ACCESS_KEY: "local",
  METERHOOK_DLQ_URL: queues.deadLetterQueueUrl,
  // As the stack sets it for the consumer: read only for redriven letters, so never at cold start.
  METERHOOK_REPLAY_LEDGER_TABLE: "meterhook-bench-replay-ledger",
  STRIPE_API_KEY: "sk_test_coldstart",
  NODE_NO_WARNINGS: "1",
};
const cases: Array<[string, string]> = [
  ["empty Node process", script("empty", "")],
  ["import undici", script("undici", `await import(${JSON.stringify(join(cwd, "node_modules/undici/index.js"))});`)],
  // What lib/stripe/transport.ts imports: the Agent without fetch, WebSocket and cookies.
  [
    "import undici's Agent alone",
    script("agent", `await import(${JSON.stringify(join(cwd, "node_modules/undici/lib/dispatcher/agent.js"))});`),
  ],
  [
    "http-api: import + first request",
    script(
      "http",
      `const m = await import(${JSON.stringify(join(cwd, "dist/http-api/index.mjs"))});
       await m.handler({ rawPath: "/v1/health", headers: {}, requestContext: { http: { method: "GET" }, requestId: "r", stage: "$default" } });`,
    ),
  ],
  [
    "http-api: import + first POST /v1/events (to fauxqs)",
    script(
      "http-post",
      `const m = await import(${JSON.stringify(join(cwd, "dist/http-api/index.mjs"))});
       const r = await m.handler({ rawPath: "/v1/events", headers: { authorization: "Bearer cold-start-key-0001", "content-type": "application/json" },
         body: JSON.stringify({ id: "cold-" + process.pid, event_name: "api_requests", customer: "cus_ColdStart0001", value: 1 }),
         isBase64Encoded: false, requestContext: { http: { method: "POST" }, requestId: "r", stage: "$default" } });
       if (r.statusCode !== 202) throw new Error("first POST answered " + r.statusCode + " " + r.body);`,
    ),
  ],
  [
    "ingest-queue: import + first batch init",
    script(
      "queue",
      `const m = await import(${JSON.stringify(join(cwd, "dist/ingest-queue/index.mjs"))});
       await m.handler({ Records: [] }, { getRemainingTimeInMillis: () => 30000 });`,
    ),
  ],
  [
    "ingest-queue with a mapping config (METERHOOK_CONFIG)",
    script(
      "queue-mapped",
      `process.env.METERHOOK_CONFIG = ${JSON.stringify(join(cwd, "examples/sqs-app-messages.yaml"))};
       const m = await import(${JSON.stringify(join(cwd, "dist/ingest-queue/index.mjs"))});
       await m.handler({ Records: [] }, { getRemainingTimeInMillis: () => 30000 });`,
    ),
  ],
  [
    // Its first invocation's init (config, consumer, clients), given 20 s: under the 30 s the
    // replay keeps for a batch, so it stops before taking a letter (an empty DLQ would otherwise
    // hold it in SQS's 1 s long poll, which is waiting, not code).
    "dlq-replay: import + first invocation init",
    script(
      "replay",
      `const m = await import(${JSON.stringify(join(cwd, "dist/dlq-replay/index.mjs"))});
       const r = await m.handler({ limit: 1 }, { getRemainingTimeInMillis: () => 20000 });
       if (r.stoppedForTime !== true || r.examined !== 0) throw new Error("replay answered " + JSON.stringify(r));`,
    ),
  ],
  ["eventbridge: import", script("eb", `await import(${JSON.stringify(join(cwd, "dist/eventbridge/index.mjs"))});`)],
  [
    "stripe-reports: import",
    script("reports", `await import(${JSON.stringify(join(cwd, "dist/stripe-reports/index.mjs"))});`),
  ],
];

const times = new Map<string, number[]>(cases.map(([n]) => [n, []]));
for (let i = 0; i < RUNS; i++) {
  for (const [name, file] of cases) {
    // spawn, not spawnSync: fauxqs answers from this process's event loop.
    const t = performance.now();
    const child = spawn(process.execPath, [file], { env, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const [code] = await once(child, "exit");
    const ms = performance.now() - t;
    if (code !== 0) throw new Error(`${name} failed: ${stderr}`);
    times.get(name)?.push(ms);
  }
}
const empty = median(times.get("empty Node process") ?? []);
const undici = median(times.get("import undici") ?? []) - empty;
console.log(`cold start, Node ${process.version}, median of ${RUNS} processes each (interleaved)`);
console.log("| process | median ms | over empty Node ms | ÷ undici import |");
console.log("|---|---:|---:|---:|");
for (const [name] of cases) {
  const m = median(times.get(name) ?? []);
  console.log(
    `| ${name} | ${m.toFixed(0)} | ${(m - empty).toFixed(0)} | ${name.startsWith("empty") ? "" : ((m - empty) / undici).toFixed(2)} |`,
  );
}
await queues.stop();
