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

describe("an endpoint's own limit (StripeCall.limit)", () => {
  let emulator: StripeEmulator;
  before(async () => {
    emulator = await startEmulator({ customers: [{ id: "cus_lim", metadata: { account_id: "acct_lim" } }] });
  });
  after(() => emulator.stop());
  const query = { query: "metadata['account_id']:'acct_lim'" };
  /** A limiter on its own clock (moved by its waits), counting the turns it grants. */
  const counted = (perSecond: number) => {
    let t = Date.now();
    let turns = 0;
    const limiter = new RateLimiter(
      perSecond,
      1,
      () => t,
      async (ms) => {
        t += ms;
      },
    );
    const acquire = limiter.acquire.bind(limiter);
    limiter.acquire = async (deadline) => {
      const ok = await acquire(deadline);
      if (ok) turns++;
      return ok;
    };
    return { limiter, turns: () => turns, now: () => t };
  };

  test("every attempt takes a turn: a search Stripe answered 500 is retried under the limit", async () => {
    const { client, transport } = clientFor(emulator);
    const { limiter, turns } = counted(1);
    emulator.injectFaults({ path: "/v1/customers/search", respond: { status: 500 } });
    const before = emulator.requests.length;
    const v = await client.call({
      base: "api",
      method: "GET",
      path: "/v1/customers/search",
      query,
      deadline: Date.now() + 10_000,
      limit: { limiter, name: "A_LIMIT", startBy: Number.POSITIVE_INFINITY },
    });
    await transport.close();
    assert.equal(v.kind, "ok");
    assert.deepEqual(
      emulator.requests.slice(before).map((r) => r.status),
      [500, 200],
    );
    assert.equal(turns(), 2);
  });

  test("a turn that would come after startBy: nothing sent, not retried, the call says so", async () => {
    const { client, transport } = clientFor(emulator);
    const { limiter, now } = counted(1);
    await limiter.acquire(Number.POSITIVE_INFINITY); // the next turn is a second away
    const before = emulator.requests.length;
    const v = await client.call({
      base: "api",
      method: "GET",
      path: "/v1/customers/search",
      query,
      deadline: Date.now() + 10_000,
      limit: { limiter, name: "A_LIMIT", startBy: now() + 500 },
    });
    await transport.close();
    assert.equal(emulator.requests.length, before);
    assert.deepEqual(v, {
      kind: "retry",
      reason: "no turn under A_LIMIT before the time it had to start",
      notStarted: true,
    });
  });
});
