/**
 * The Stripe emulator in its own process, so that a benchmark measures only the client's CPU.
 * Prints {"url": ...} on stdout once listening; BENCH_STRIPE_LATENCY_MS adds latency per request.
 * On the IPC message "forget" it drops the history earlier runs left and collects its heap, then
 * answers "forgot" (bench/stats.ts forgetHistory).
 */
import { StripeEmulator } from "../local/stripe-emulator/server.js";

const emulator = new StripeEmulator({ latencyMs: Number(process.env.BENCH_STRIPE_LATENCY_MS ?? 0) || undefined });
// The bench's meter, there before any event (the consumer checks events against Stripe's meters).
emulator.defineMeter({ event_name: "api_requests" });
const url = await emulator.start(0);
process.stdout.write(`${JSON.stringify({ url })}\n`);
process.on("SIGTERM", () => void emulator.stop().then(() => process.exit(0)));
process.on("message", (msg) => {
  if (msg !== "forget") return;
  emulator.forgetHistory();
  (globalThis as { gc?: () => void }).gc?.();
  process.send?.("forgot");
});
