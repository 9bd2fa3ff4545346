import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { createConsumerFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import { processBatch } from "../../lib/consumer.js";
import { CustomerResolver, stripeIdLookup } from "../../lib/customers.js";
import { createLogger, silentLogger } from "../../lib/logger.js";
import { httpLookup } from "../../lib/mapping/lookups.js";
import { createWireTransport } from "../../lib/stripe/wire.js";
import { SOURCE_ATTRIBUTE } from "../../lib/triggers.js";
import type { StripeEmulator } from "../../local/stripe-emulator/server.js";
import { queueMessage, usageEvent } from "../helpers/factories.js";
import { consumerEnv, usePipelineParts } from "../helpers/pipeline.js";
import { startEmulator } from "../helpers/stripe.js";

const parts = usePipelineParts();

/** The app's own billing service on loopback: `acct_<n>` is `cus_lookup<n>`, each answer after `delayMs`. */
const service = { delayMs: 0, inFlight: 0, peak: 0, asked: [] as string[], url: "", onRequest: () => {} };
const server = createServer(async (req, res) => {
  const account = decodeURIComponent((req.url ?? "").split("/")[2] ?? "");
  service.asked.push(account);
  service.onRequest();
  service.peak = Math.max(service.peak, ++service.inFlight);
  await new Promise((r) => setTimeout(r, service.delayMs));
  service.inFlight--;
  res.writeHead(200, { "content-type": "application/json" });
  res.end(JSON.stringify({ stripe_customer_id: account.replace("acct_", "cus_lookup") }));
});
const transport = createWireTransport();
before(async () => {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  service.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  await transport.close();
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

/** The consumer's dependencies with canonical events' customers looked up over HTTP. */
async function depsWith(env: Record<string, string>) {
  const consumer = await createConsumerFromConfig(loadConfig(consumerEnv(parts, env)), {
    sqs: parts.queues.sqs,
    logger: silentLogger,
  });
  const lookup = httpLookup(transport, {
    url: `${service.url}/accounts/{customer}`,
    headers: {},
    timeoutMs: 5_000,
    stripeIdPath: "stripe_customer_id",
  });
  return { consumer, deps: { ...consumer.deps, resolver: new CustomerResolver([stripeIdLookup, lookup]) } };
}

const totalFor = (customer: string) =>
  parts.emulator.ledger.summaries().find((s) => s.customer === customer)?.aggregated_value ?? 0;

describe("customer lookups over I/O in a batch", () => {
  test("run at most METERHOOK_LOOKUP_CONCURRENCY at a time, and every event is billed", async () => {
    const { consumer, deps } = await depsWith({ METERHOOK_LOOKUP_CONCURRENCY: "3" });
    Object.assign(service, { delayMs: 50, peak: 0, asked: [] });
    const events = Array.from({ length: 12 }, (_, i) => usageEvent({ customer: `acct_c${i}`, value: i + 1 }));

    const result = await processBatch(
      events.map((e) => queueMessage(e)),
      Date.now() + 30_000,
      deps,
    );
    await consumer.close();

    assert.equal(result.billed, 12);
    assert.equal(service.asked.length, 12);
    assert.equal(service.peak, 3);
    for (let i = 0; i < events.length; i++) assert.equal(totalFor(`cus_lookupc${i}`), i + 1);
  });

  test("a lookup whose turn comes inside the stop margin is not started; its message is retried", async () => {
    const { consumer, deps } = await depsWith({ METERHOOK_LOOKUP_CONCURRENCY: "1", METERHOOK_STOP_MARGIN_MS: "1000" });
    const lines: string[] = [];
    const logger = createLogger({ write: (line) => lines.push(line) });
    // One at a time, 500 ms each, 1,750 ms left: the first two start with 1,750 and 1,250 ms
    // left, the third would start with 750, inside the 1,000 ms margin. By then nothing may be
    // sent either, so all three stay on the queue, and only two lookups were made.
    Object.assign(service, { delayMs: 500, peak: 0, asked: [] });
    const messages = ["acct_d0", "acct_d1", "acct_d2"].map((customer) => queueMessage(usageEvent({ customer })));

    const result = await processBatch(messages, Date.now() + 1_750, { ...deps, logger });
    await consumer.close();

    assert.deepEqual(service.asked, ["acct_d0", "acct_d1"]);
    assert.deepEqual(
      result.failedMessageIds,
      messages.map((m) => m.messageId),
    );
    const reasons = lines.map((l) => JSON.parse(l)).filter((l) => l.message === "event will be retried");
    assert.match(
      reasons.find((r) => r.messageId === messages[2]?.messageId)?.reason ?? "",
      /customer lookup not started: the invocation was about to time out/,
    );
    for (const c of ["cus_lookupd0", "cus_lookupd1", "cus_lookupd2"]) assert.equal(totalFor(c), 0);
  });

  test("lookups started in time are billed; the one refused for time alone is retried", async () => {
    const { consumer, deps } = await depsWith({ METERHOOK_LOOKUP_CONCURRENCY: "1", METERHOOK_STOP_MARGIN_MS: "1000" });
    // The consumer's clock moves 500 ms with each lookup the service answers, not with real
    // time: the third lookup's turn comes with 750 ms left, whatever the machine's speed.
    let clock = Date.now();
    const start = clock;
    Object.assign(service, { delayMs: 0, asked: [], onRequest: () => (clock += 500) });
    const messages = ["acct_e0", "acct_e1", "acct_e2"].map((customer) => queueMessage(usageEvent({ customer })));

    const result = await processBatch(messages, start + 1_750, { ...deps, now: () => clock });
    service.onRequest = () => {};
    await consumer.close();

    assert.deepEqual(service.asked, ["acct_e0", "acct_e1"]);
    assert.equal(result.billed, 2);
    assert.deepEqual(result.failedMessageIds, [messages[2]?.messageId]);
    assert.equal(totalFor("cus_lookupe0"), 3);
    assert.equal(totalFor("cus_lookupe1"), 3);
    assert.equal(totalFor("cus_lookupe2"), 0);
  });
});

describe("customer lookups through Stripe's customer search", () => {
  // An app's own messages, `{"id", "account", "n"}`, whose accounts Stripe's search finds by
  // metadata['account_id'].
  const dir = mkdtempSync(join(tmpdir(), "mh-search-"));
  const configFile = join(dir, "config.yaml");
  writeFileSync(
    configFile,
    [
      "version: 1",
      "sources:",
      "  usage:",
      "    type: sqs",
      "    customer: { lookup: stripe-search, metadataKey: account_id }",
      "    rules:",
      "      - name: usage",
      "        id: body.id",
      "        customer: body.account",
      "        emit:",
      "          - event_name: api_requests",
      "            value: body.n",
    ].join("\n"),
  );
  // Its own Stripe, holding searches to 4 per second per key as Stripe holds them to 20.
  let stripe: StripeEmulator;
  before(async () => {
    stripe = await startEmulator({ searchRateLimit: 4 });
  });
  after(() => stripe.stop());

  const consumerWith = (env: Record<string, string>) =>
    createConsumerFromConfig(
      loadConfig({
        ...consumerEnv(parts, env),
        STRIPE_API_BASE: stripe.url,
        STRIPE_METER_EVENTS_BASE: stripe.url,
        METERHOOK_CONFIG: configFile,
      }),
      { sqs: parts.queues.sqs, logger: silentLogger },
    );
  const messagesFor = (prefix: string, n: number) =>
    Array.from({ length: n }, (_, i) => {
      stripe.addCustomer(`cus_${prefix}${i}`, { account_id: `acct_${prefix}${i}` });
      return queueMessage(
        { id: `${prefix}-${i}`, account: `acct_${prefix}${i}`, n: i + 1 },
        { attributes: { [SOURCE_ATTRIBUTE]: "usage" } },
      );
    });
  const searches = () => stripe.requests.filter((r) => r.path === "/v1/customers/search");
  const total = (customer: string) =>
    stripe.ledger.summaries().find((s) => s.customer === customer)?.aggregated_value ?? 0;

  test("keep to STRIPE_SEARCH_MAX_REQUESTS_PER_SECOND (3 by default), so Stripe never answers 429", async () => {
    const consumer = await consumerWith({});
    const before = searches().length;
    // Nine new accounts in one batch: eight lookups may run at once, but searches go out at 3/s.
    const messages = messagesFor("srch", 9);

    const result = await processBatch(messages, Date.now() + 30_000, consumer.deps);
    await consumer.close();

    assert.equal(result.billed, 9);
    const made = searches().slice(before);
    assert.equal(made.length, 9);
    assert.deepEqual(
      made.filter((r) => r.status !== 200),
      [],
    );
    for (let i = 0; i < 9; i++) assert.equal(total(`cus_srch${i}`), i + 1);
  });

  test("a search whose turn would come inside the stop margin is not made; its message is retried", async () => {
    const consumer = await consumerWith({
      STRIPE_SEARCH_MAX_REQUESTS_PER_SECOND: "1",
      METERHOOK_STOP_MARGIN_MS: "1000",
    });
    const lines: string[] = [];
    const logger = createLogger({ write: (line) => lines.push(line) });
    const before = searches().length;
    const messages = messagesFor("late", 3);

    // One search a second, 2.9 s left: searches may start until 1.9 s from now. The first goes
    // at once and the second after 1 s; the third's turn, at 2 s, comes too late (decided when
    // the second is taken). A stall of up to 0.9 s on a slow machine changes neither that nor
    // the submission, which starts after the second search with 1.9 s left.
    const result = await processBatch(messages, Date.now() + 2_900, { ...consumer.deps, logger });
    await consumer.close();

    assert.equal(searches().length - before, 2);
    assert.equal(result.billed, 2);
    assert.equal(result.failedMessageIds.length, 1);
    const retried = messages.find((m) => m.messageId === result.failedMessageIds[0]);
    const reason = lines.map((l) => JSON.parse(l)).find((l) => l.messageId === retried?.messageId)?.reason;
    assert.match(reason ?? "", /customer lookup not started: no turn under STRIPE_SEARCH_MAX_REQUESTS_PER_SECOND/);
    assert.equal(messages.filter((_, i) => total(`cus_late${i}`) === i + 1).length, 2);
  });
});
