/**
 * `npm run bench:cold-start`: what a cold start costs on this machine. For each bundled handler
 * (dist/, as Lambda loads it): a fresh Node process that imports it and runs its first
 * invocation's init (config, clients; a health request for the HTTP API). Compared, side by side
 * and interleaved, with an empty Node process and one that only imports undici, the floor for a
 * client built on it. Median wall time of BENCH_RUNS (15) processes each.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { median } from "./stats.js";

const RUNS = Number(process.env.BENCH_RUNS ?? 15);
const dir = mkdtempSync(join(tmpdir(), "mh-cold-"));
const cwd = process.cwd();
const script = (name: string, body: string) => {
  const file = join(dir, `${name}.mjs`);
  writeFileSync(file, body);
  return file;
};
const env = {
  ...process.env,
  METERHOOK_API_KEYS: "cold-start-key-0001",
  METERHOOK_INGEST_QUEUE_URL: "http://127.0.0.1:9/q",
  METERHOOK_DLQ_URL: "http://127.0.0.1:9/dlq",
  STRIPE_API_KEY: "sk_test_coldstart",
  NODE_NO_WARNINGS: "1",
};
const cases: Array<[string, string]> = [
  ["empty Node process", script("empty", "")],
  ["import undici", script("undici", `await import(${JSON.stringify(join(cwd, "node_modules/undici/index.js"))});`)],
  [
    "http-api: import + first request",
    script(
      "http",
      `const m = await import(${JSON.stringify(join(cwd, "dist/http-api/index.mjs"))});
       await m.handler({ rawPath: "/v1/health", headers: {}, requestContext: { http: { method: "GET" }, requestId: "r", stage: "$default" } });`,
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
  ["eventbridge: import", script("eb", `await import(${JSON.stringify(join(cwd, "dist/eventbridge/index.mjs"))});`)],
];

const times = new Map<string, number[]>(cases.map(([n]) => [n, []]));
for (let i = 0; i < RUNS; i++) {
  for (const [name, file] of cases) {
    const t = performance.now();
    const r = spawnSync(process.execPath, [file], { env, stdio: ["ignore", "ignore", "pipe"] });
    if (r.status !== 0) throw new Error(`${name} failed: ${r.stderr}`);
    times.get(name)?.push(performance.now() - t);
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
