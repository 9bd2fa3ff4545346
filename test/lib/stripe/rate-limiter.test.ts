import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { RateLimiter } from "../../../lib/stripe/rate-limiter.js";
import { createV1Submitter } from "../../../lib/stripe/v1-meter-events.js";
import type { StripeEmulator } from "../../../local/stripe-emulator/server.js";
import { clientFor, meterEvent, startEmulator } from "../../helpers/stripe.js";

describe("RateLimiter", () => {
  test("spaces requests at the rate, in order, and refuses to wait past a deadline", async () => {
    let t = 0;
    const limiter = new RateLimiter(
      10,
      1,
      () => t,
      async (ms) => {
        t += ms;
      },
    );
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      assert.equal(await limiter.acquire(10_000), true);
      times.push(t);
    }
    assert.deepEqual(times, [0, 100, 200, 300, 400]);
    assert.equal(await limiter.acquire(t + 50), false, "the next token is 100 ms away");
  });
});

describe("against Stripe's rate limit", () => {
  let emulator: StripeEmulator;
  before(async () => {
    emulator = await startEmulator({ v1RateLimit: 20 });
  });
  after(() => emulator.stop());
  const run = async (limit: number | undefined, offset: number) => {
    const { client, transport } = clientFor(emulator, { maxAttempts: 1 });
    if (limit) Object.assign(client.config, { limiter: new RateLimiter(limit) });
    const submitter = createV1Submitter(client, { concurrency: 8, stopMarginMs: 100 });
    const events = Array.from({ length: 40 }, (_, i) =>
      meterEvent(offset + i, { payload: { stripe_customer_id: `cus_rl${i}`, value: "1" } }),
    );
    const before = emulator.requests.length;
    await submitter.submit(events, Date.now() + 30_000);
    await transport.close();
    return emulator.requests.slice(before).filter((r) => r.status === 429).length;
  };

  test("without a client limit, a burst meets 429s", async () => {
    assert.ok((await run(undefined, 5_000)) > 0);
  });

  test("with STRIPE_MAX_REQUESTS_PER_SECOND under the account's limit, none", async () => {
    await new Promise((r) => setTimeout(r, 1_100)); // the emulator counts per second: start afresh
    assert.equal(await run(15, 6_000), 0);
  });
});
