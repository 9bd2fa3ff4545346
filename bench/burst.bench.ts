/**
 * `npm run bench:burst`: a burst ten times Stripe's allowed rate is absorbed by the queue and
 * drained at the configured client-side rate, with no 429 from Stripe. The Stripe emulator
 * enforces test mode's v1 limit (25 requests/s); the consumer runs v1 with
 * STRIPE_MAX_REQUESTS_PER_SECOND=20, like one Lambda of a stack whose maximum concurrency is 1.
 *
 * BENCH_BURST (250 events = 10 s of Stripe's limit, sent at once).
 */
import { startLocalRuntime } from "../local/runtime.js";

const BURST = Number(process.env.BENCH_BURST ?? 250);
const LIMIT = 20;
const rt = await startLocalRuntime({
  env: { METERHOOK_LOG_LEVEL: "error", METERHOOK_STRIPE_API: "v1", STRIPE_MAX_REQUESTS_PER_SECOND: String(LIMIT) },
  emulator: { v1RateLimit: 25 },
  visibilityTimeoutSeconds: 5,
});
const emulator = rt.emulator;
if (!emulator) throw new Error("needs the embedded emulator");

const events = Array.from({ length: BURST }, (_, i) => ({
  id: `burst-${i}`,
  event_name: "api_requests",
  customer: `cus_b${i % 25}`,
  value: 1,
}));
const t0 = Date.now();
for (let i = 0; i < events.length; i += 500) {
  await fetch(`${rt.gatewayUrl}/v1/events`, {
    method: "POST",
    headers: { authorization: `Bearer ${rt.apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({ events: events.slice(i, i + 500) }),
  });
}
const accepted = Date.now() - t0;
while (emulator.ledger.events.length < BURST && Date.now() - t0 < 120_000) await new Promise((r) => setTimeout(r, 100));
const drained = (Date.now() - t0) / 1000;
const meter = emulator.requests.filter((r) => r.path === "/v1/billing/meter_events");
console.log(`burst of ${BURST} events, client limit ${LIMIT}/s, Stripe (emulator) limit 25/s`);
console.log("| accepted by the API in | drained in | drain rate | Stripe requests | 429 answers | billed |");
console.log("|---:|---:|---:|---:|---:|---:|");
console.log(
  `| ${accepted} ms | ${drained.toFixed(1)} s | ${(BURST / drained).toFixed(1)} events/s | ${meter.length} | ${meter.filter((r) => r.status === 429).length} | ${emulator.ledger.events.length} |`,
);
await rt.stop();
process.exit(0);
