/**
 * `npm run bench:http`: HTTP ingest under load. autocannon drives `POST /v1/events` on the local
 * runtime (gateway -> the same HTTP handler Lambda runs -> SendMessageBatch to fauxqs), with 1 and
 * with 100 events per request (and 100 gzip-compressed). The consumer is not running, so only ingest is measured; latency
 * is the gateway's whole round trip on loopback, which includes fauxqs.
 *
 * BENCH_SECONDS (10), BENCH_CONNECTIONS (16).
 */
import { gzipSync } from "node:zlib";
import autocannon from "autocannon";
import { startLocalRuntime } from "../local/runtime.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16);

const rt = await startLocalRuntime({ env: { METERHOOK_LOG_LEVEL: "error" }, pollers: 0 });
// The same with METERHOOK_EVENTS_PER_MESSAGE=100: one SendMessageBatch entry per 100 events.
const packed = await startLocalRuntime({
  env: { METERHOOK_LOG_LEVEL: "error", METERHOOK_EVENTS_PER_MESSAGE: "100" },
  pollers: 0,
});
let seq = 0;
const event = () => ({ id: `http-bench-${++seq}`, event_name: "api_requests", customer: "cus_bench", value: 1 });

// Compressed before the run, so that the client's gzip (in this process) does not slow the handler.
let sent = 0;
const compressed = Array.from({ length: 200 }, () =>
  gzipSync(JSON.stringify({ events: Array.from({ length: 100 }, event) })),
);

/** One row: `perRequest` events per request, on `runtime`, gzip-compressed when `gzip`. */
async function run(perRequest: number, runtime = rt, gzip = false) {
  const result = await autocannon({
    url: `${runtime.gatewayUrl}/v1/events`,
    method: "POST",
    connections: CONNECTIONS,
    duration: SECONDS,
    headers: {
      authorization: `Bearer ${rt.apiKey}`,
      "content-type": "application/json",
      ...(gzip ? { "content-encoding": "gzip" } : {}),
    },
    requests: [
      {
        setupRequest: (req) => {
          // Built for the gzip row too, so that the client's work is the same as in the row before.
          const json = JSON.stringify(
            perRequest === 1 ? event() : { events: Array.from({ length: perRequest }, event) },
          );
          return { ...req, body: gzip ? compressed[sent++ % compressed.length] : json };
        },
      },
    ],
  });
  const label = `${perRequest}${runtime === rt ? "" : ", packed"}${gzip ? ", gzip" : ""}`;
  return { perRequest: label, result };
}

const rows = [await run(1), await run(100), await run(100, packed), await run(100, packed, true)];
console.log(`HTTP ingest, ${CONNECTIONS} connections, ${SECONDS} s each, Node ${process.version}`);
console.log("| events per request | requests/s | events/s | p50 ms | p99 ms | non-2xx |");
console.log("|---:|---:|---:|---:|---:|---:|");
for (const { perRequest, result } of rows) {
  const rps = result.requests.average;
  const events = rps * Number.parseInt(perRequest, 10);
  console.log(
    `| ${perRequest} | ${Math.round(rps).toLocaleString("en-US")} | ${Math.round(events).toLocaleString("en-US")} | ${result.latency.p50} | ${result.latency.p99} | ${result.non2xx} |`,
  );
}
await rt.stop();
await packed.stop();
process.exit(0);
