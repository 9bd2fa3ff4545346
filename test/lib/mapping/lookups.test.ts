import assert from "node:assert/strict";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { cachedLookup } from "../../../lib/customers.js";
import { CustomerNotFoundError, TransientError } from "../../../lib/errors.js";
import { httpLookup, stripeSearchLookup } from "../../../lib/mapping/lookups.js";
import { createWireTransport } from "../../../lib/stripe/wire.js";
import type { StripeEmulator } from "../../../local/stripe-emulator/server.js";
import { clientFor, startEmulator } from "../../helpers/stripe.js";

/** The app's own billing service, on loopback: answers per account, can be told to fail or stall. */
const accounts: Record<string, string | null> = {
  ws_1: "cus_ws1",
  "ws 2/x": "cus_ws2",
  ws_unmapped: null, // the service knows the account, which has no Stripe customer yet
  ws_acct: "acct_1Nv0FGQ9RKHgCVdK", // the service answers some other id
};
const requests: Array<{ url: string; auth?: string }> = [];
let failNext = 0;
let stallMs = 0;
let url = "";
const server = createServer(async (req: IncomingMessage, res) => {
  requests.push({ url: req.url ?? "", auth: req.headers.authorization });
  if (stallMs) await new Promise((r) => setTimeout(r, stallMs));
  if (failNext > 0) {
    failNext--;
    res.writeHead(503).end();
    return;
  }
  const id = decodeURIComponent((req.url ?? "").split("/")[2] ?? "");
  const cus = accounts[id];
  if (cus === undefined) {
    res.writeHead(404).end();
    return;
  }
  res
    .writeHead(200, { "content-type": "application/json" })
    .end(JSON.stringify({ billing: { stripe_customer_id: cus } }));
});
const transport = createWireTransport();
let emulator: StripeEmulator;

before(async () => {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  emulator = await startEmulator({
    customers: [
      { id: "cus_acme", metadata: { account_id: "acct_42" } },
      { id: "cus_q", metadata: { account_id: "o'brien" } },
    ],
  });
});
after(async () => {
  await transport.close();
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  await emulator.stop();
});

const lookup = (timeoutMs = 500) =>
  httpLookup(transport, {
    url: `${url}/accounts/{customer}/stripe`,
    headers: { authorization: "Bearer svc-token-0001" },
    timeoutMs,
    stripeIdPath: "billing.stripe_customer_id",
  });

describe("HTTP lookup", () => {
  test("reads the Stripe id at the JMESPath, sends the auth header, URL-encodes the customer", async () => {
    assert.equal(await lookup().resolve("ws_1"), "cus_ws1");
    assert.equal(await lookup().resolve("ws 2/x"), "cus_ws2");
    assert.equal(requests.at(-1)?.url, "/accounts/ws%202%2Fx/stripe");
    assert.equal(requests.at(-1)?.auth, "Bearer svc-token-0001");
  });

  test("404 is not found", async () => assert.equal(await lookup().resolve("ws_none"), undefined));

  test("an answer with no id is not found; one with something else is customer_not_found saying what it got", async () => {
    assert.equal(await lookup().resolve("ws_unmapped"), undefined);
    await assert.rejects(
      lookup().resolve("ws_acct"),
      (e: unknown) =>
        e instanceof CustomerNotFoundError &&
        e.code === "customer_not_found" &&
        e.message.includes('`billing.stripe_customer_id` gave "acct_1Nv0FGQ9RKHgCVdK", not a cus_ id'),
    );
  });

  test("5xx and timeouts are transient", async () => {
    failNext = 1;
    await assert.rejects(
      lookup().resolve("ws_1"),
      (e: unknown) => e instanceof TransientError && /503/.test(e.message),
    );
    stallMs = 300;
    await assert.rejects(lookup(100).resolve("ws_1"), (e: unknown) => e instanceof TransientError);
    stallMs = 0;
  });
});

describe("cached lookup", () => {
  test("caches hits for the TTL and misses for the shorter negative TTL", async () => {
    let clock = 0;
    const cached = cachedLookup(lookup(), { ttlMs: 10_000, negativeTtlMs: 1_000, now: () => clock });
    const before = requests.length;
    await cached.resolve("ws_1");
    await cached.resolve("ws_1");
    await cached.resolve("ws_new");
    await cached.resolve("ws_new");
    assert.equal(requests.length - before, 2, "one request per customer");
    accounts.ws_new = "cus_wsnew"; // the mapping appears
    clock += 1_001;
    assert.equal(await cached.resolve("ws_new"), "cus_wsnew", "negative entry expired");
    assert.equal(await cached.resolve("ws_1"), "cus_ws1");
    assert.equal(requests.length - before, 3);
  });

  test("does not cache failures: 5xx then success", async () => {
    const cached = cachedLookup(lookup(), { ttlMs: 10_000, negativeTtlMs: 10_000 });
    failNext = 1;
    await assert.rejects(cached.resolve("ws_1"));
    assert.equal(await cached.resolve("ws_1"), "cus_ws1");
  });

  test("concurrent lookups of one customer share one request", async () => {
    const cached = cachedLookup(lookup(), { ttlMs: 10_000, negativeTtlMs: 1_000 });
    stallMs = 50;
    const before = requests.length;
    const got = await Promise.all(Array.from({ length: 10 }, () => cached.resolve("ws_1")));
    stallMs = 0;
    assert.deepEqual(new Set(got), new Set(["cus_ws1"]));
    assert.equal(requests.length - before, 1);
  });
});

describe("Stripe customer search", () => {
  const search = () => {
    const c = clientFor(emulator);
    return stripeSearchLookup(async (path, query) => {
      const v = await c.client.call({ base: "api", method: "GET", path, query, deadline: Date.now() + 5000 });
      await c.transport.close();
      return v.kind === "ok" ? { status: 200, body: v.body } : { error: v.reason };
    }, "account_id");
  };

  test("finds the customer by metadata, quoting the value", async () => {
    assert.equal(await search().resolve("acct_42"), "cus_acme");
    assert.equal(await search().resolve("o'brien"), "cus_q");
    assert.equal(await search().resolve("acct_none"), undefined);
  });
});
