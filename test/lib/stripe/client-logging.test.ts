import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createLogger, type LogLevel } from "../../../lib/logger.js";
import { StripeClient } from "../../../lib/stripe/client.js";
import { encodeV1Form } from "../../../lib/stripe/v1-meter-events.js";
import { createWireTransport } from "../../../lib/stripe/wire.js";
import { EMULATOR_DEFAULT_KEY, type StripeEmulator } from "../../../local/stripe-emulator/server.js";
import { FAST_RETRY, inAMinute, meterEvent, startEmulator } from "../../helpers/stripe.js";

const PATH = "/v1/billing/meter_events";
let emulator: StripeEmulator;
before(async () => {
  emulator = await startEmulator();
});
after(() => emulator.stop());

let n = 0;
/** Sends one v1 meter event through a client logging at `level`; answers the lines it logged. */
async function send(level: LogLevel): Promise<Array<Record<string, unknown>>> {
  const lines: Array<Record<string, unknown>> = [];
  const transport = createWireTransport({ connections: 2 });
  const client = new StripeClient(
    { apiKey: EMULATOR_DEFAULT_KEY, apiBase: emulator.url, meterEventsBase: emulator.url, retry: FAST_RETRY },
    transport,
    createLogger({ level, write: (l) => lines.push(JSON.parse(l)) }),
  );
  try {
    const verdict = await client.call({
      base: "api",
      path: PATH,
      body: encodeV1Form(meterEvent(900_000 + ++n)),
      contentType: "application/x-www-form-urlencoded",
      deadline: inAMinute(),
    });
    assert.equal(verdict.kind, "ok");
  } finally {
    await transport.close();
  }
  return lines.filter((l) => l.message === "stripe request");
}

test("a successful Stripe request is logged at debug only, with its request id", async () => {
  assert.deepEqual(await send("info"), []);
  const [line, ...rest] = await send("debug");
  assert.equal(rest.length, 0);
  assert.equal(line?.level, "debug");
  assert.equal(line?.status, 200);
  assert.match(String(line?.stripeRequestId), /^req_/);
});

test("an answer other than 2xx is logged at info with its request id; the successful retry is not", async () => {
  emulator.injectFaults({ path: PATH, respond: { status: 503 } });
  const lines = await send("info");
  assert.deepEqual(
    lines.map((l) => [l.level, l.status, l.verdict]),
    [["info", 503, "retry"]],
  );
  assert.match(String(lines[0]?.stripeRequestId), /^req_/);
});
