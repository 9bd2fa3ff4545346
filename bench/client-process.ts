/**
 * One benchmark client in its own process (run by bench/pipeline.bench.ts over IPC): started once
 * against the emulator, then measured on each "run" message. A process per client keeps one
 * client's JIT state (the SDK's node:http, our undici) from slowing the other's shared Node code,
 * which interleaving them in one process did; in production neither shares a process with the other.
 */
import { scenarios } from "./pipeline-clients.js";

// tsx turns on source maps, which make every formatted stack trace look each frame up. The SDK
// formats one per call (StripeResource captures its caller's stack), which cost it 30-50 µs per
// request here; plain `node`, where an app runs the SDK, has them off. The pipeline formats none.
// BENCH_SOURCE_MAPS=1 leaves them on, as the bench ran before 2026-11-27 05:20.
if (process.env.BENCH_SOURCE_MAPS !== "1") process.setSourceMapsEnabled(false);

const name = process.env.BENCH_CLIENT as string;
const scenario = scenarios.find((s) => s.name === name);
if (!scenario) throw new Error(`no bench client "${name}"`);
const client = await scenario.start(process.env.BENCH_STRIPE_URL as string);
process.on("message", (msg: string) => {
  if (msg === "run") {
    void client.run().then((r) => process.send?.(r));
  } else {
    void client.close().then(() => process.exit(0));
  }
});
process.send?.("ready");
