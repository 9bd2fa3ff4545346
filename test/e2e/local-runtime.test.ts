import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtempSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import { SendMessageCommand, SQSClient } from "@aws-sdk/client-sqs";
import type { DeadLetterBody } from "../../lib/dead-letter.js";
import { SOURCE_ATTRIBUTE } from "../../lib/triggers.js";
import { type LocalRuntime, startLocalRuntime } from "../../local/runtime.js";
import { usageEvent } from "../helpers/factories.js";
import { drain, drainDeadLetters, queueDepth } from "../helpers/sqs.js";
import { waitFor } from "../helpers/wait.js";

const runtimes: LocalRuntime[] = [];
after(async () => {
  for (const rt of runtimes) await rt.stop();
});

async function start(env: Record<string, string> = {}, options: Parameters<typeof startLocalRuntime>[0] = {}) {
  const rt = await startLocalRuntime({
    env: { METERHOOK_LOG_LEVEL: "error", ...env },
    visibilityTimeoutSeconds: 1,
    ...options,
  });
  runtimes.push(rt);
  const sqs = new SQSClient({
    endpoint: rt.sqsEndpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "t", secretAccessKey: "t" },
  });
  const send = (body: unknown) =>
    fetch(`${rt.gatewayUrl}/v1/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${rt.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  const total = (customer: string) =>
    rt.emulator?.ledger.summaries().find((s) => s.customer === customer)?.aggregated_value ?? 0;
  return { rt, sqs, send, total };
}

for (const api of ["v2", "v1"] as const) {
  test(`${api}: an event sent to the gateway reaches the Stripe emulator's totals, once`, async () => {
    const { send, total, rt } = await start({ METERHOOK_STRIPE_API: api });
    const event = usageEvent({ customer: "cus_e2e", value: 4 });
    const res = await send(event);
    assert.equal(res.status, 202);
    await send(event); // the app retries its request: still billed once
    await waitFor(() => total("cus_e2e") === 4 || undefined, "the event to be billed");
    const summaries = (await (await fetch(`${rt.stripeApiBase}/v1/billing/meters/summaries`)).json()) as {
      data: Array<{ customer: string; aggregated_value: number }>;
    };
    assert.deepEqual(
      summaries.data.map((s: { customer: string; aggregated_value: number }) => [s.customer, s.aggregated_value]),
      [["cus_e2e", 4]],
    );
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(rt.emulator?.ledger.events.length, 1);
  });
}

test("METERHOOK_EVENTS_PER_MESSAGE=100: 250 events in one request are billed once each through packed messages", async () => {
  const { send, total, rt } = await start({ METERHOOK_EVENTS_PER_MESSAGE: "100" });
  const events = Array.from({ length: 250 }, (_, i) => usageEvent({ id: `packed_${i}`, customer: "cus_packed" }));
  assert.equal((await send({ events })).status, 202);
  await waitFor(() => total("cus_packed") === 750 || undefined, "every event to be billed");
  assert.equal(rt.emulator?.ledger.events.filter((e) => e.payload.stripe_customer_id === "cus_packed").length, 250);
});

test("a gzip-compressed batch through the gateway is billed once per event", async () => {
  const { total, rt } = await start();
  const events = Array.from({ length: 100 }, (_, i) => usageEvent({ id: `gz_${i}`, customer: "cus_gzip", value: 2 }));
  const res = await fetch(`${rt.gatewayUrl}/v1/events`, {
    method: "POST",
    headers: { authorization: `Bearer ${rt.apiKey}`, "content-type": "application/json", "content-encoding": "gzip" },
    body: gzipSync(JSON.stringify({ events })),
  });
  assert.equal(res.status, 202);
  await waitFor(() => total("cus_gzip") === 200 || undefined, "every event to be billed");
  assert.equal(rt.emulator?.ledger.events.filter((e) => e.payload.stripe_customer_id === "cus_gzip").length, 100);
});

describe("failures through the real queues", () => {
  test("an unmapped customer lands in the DLQ with its reason", async () => {
    const { rt, sqs, send } = await start();
    await send(usageEvent({ id: "evt_nomap", customer: "acct_unknown" }));
    const letters = await waitFor(async () => {
      const got = await drainDeadLetters(sqs, rt.deadLetterQueueUrl);
      return got.length > 0 ? got : undefined;
    }, "a dead letter");
    assert.equal(letters[0]?.error.code, "customer_not_found");
    assert.equal((letters[0]?.event as { id?: string } | undefined)?.id, "evt_nomap");
  });

  test("a Stripe outage is ridden out: the backlog drains once it answers again", async () => {
    const { send, total, rt } = await start({ STRIPE_MAX_ATTEMPTS: "1" });
    rt.emulator?.injectFaults({ path: "/v2/billing/meter_event_stream", respond: { status: 503 }, times: 3 });
    const events = Array.from({ length: 30 }, (_, i) =>
      usageEvent({ id: `outage_${i}`, customer: "cus_outage", value: 1 }),
    );
    assert.equal((await send({ events })).status, 202);
    await waitFor(() => total("cus_outage") === 30 || undefined, "the backlog to drain", 30_000);
    assert.equal(
      await queueDepth(
        new SQSClient({
          endpoint: rt.sqsEndpoint,
          region: "us-east-1",
          credentials: { accessKeyId: "t", secretAccessKey: "t" },
        }),
        rt.ingestQueueUrl,
      ),
      0,
    );
  });

  test("the redrive policy moves a poison message to the DLQ when the consumer never settles it", async () => {
    // The consumer would keep retrying (high METERHOOK_MAX_ATTEMPTS) while Stripe keeps failing:
    // SQS's own redrive policy is the backstop that moves the message after maxReceiveCount.
    const { rt, sqs, send } = await start(
      { METERHOOK_MAX_ATTEMPTS: "100", STRIPE_MAX_ATTEMPTS: "1" },
      { maxReceiveCount: 2 },
    );
    rt.emulator?.injectFaults({ path: "/v2/billing/meter_event_stream", respond: { status: 500 }, times: 1000 });
    await send(usageEvent({ id: "evt_poison", customer: "cus_poison" }));
    const moved = await waitFor(
      async () => {
        const got = await drain(sqs, rt.deadLetterQueueUrl);
        return got.length > 0 ? got : undefined;
      },
      "the redrive to the DLQ",
      20_000,
    );
    assert.equal(JSON.parse(moved[0]?.body ?? "{}").id, "evt_poison");
    assert.equal(await queueDepth(sqs, rt.ingestQueueUrl), 0);
  });
});

test("an event Stripe accepts and then refuses (a customer it does not have) shows in Stripe's error reports", async () => {
  const { send, rt } = await start(
    {},
    { emulator: { customers: ["cus_e2eKnown"], errorReportWindowMs: 100 }, reportsEveryMs: 200 },
  );
  const refused = usageEvent({ customer: "cus_e2eDeleted" });
  assert.equal((await send(refused)).status, 202);
  const report = await waitFor(() => rt.stripeReports[0], "Stripe's error report to be read");
  assert.equal(report.type, "v1.billing.meter.error_report_triggered");
  assert.deepEqual(
    report.errors.map((t) => [t.code, t.count]),
    [["meter_event_customer_not_found", 1]],
  );
  assert.match(report.errors[0]?.samples[0]?.message ?? "", /cus_e2eDeleted/);
});

test("with STRIPE_EVENTS_SECRET, the embedded Stripe pushes its report to POST /v1/stripe/events, and it is read once, not on a schedule too", async () => {
  const { send, rt } = await start(
    { STRIPE_EVENTS_SECRET: "whsec_e2e_events" },
    { emulator: { customers: ["cus_e2eKnown"], errorReportWindowMs: 100 }, reportsEveryMs: 200 },
  );
  assert.equal(rt.reportsPushed, true);
  assert.equal((await send(usageEvent({ customer: "cus_e2ePushed" }))).status, 202);
  const report = await waitFor(() => rt.stripeReports[0], "the pushed report to be read");
  assert.deepEqual(
    report.errors.map((t) => [t.code, t.count]),
    [["meter_event_customer_not_found", 1]],
  );
  assert.deepEqual(
    rt.emulator?.eventDeliveries.log.map((d) => [d.url, d.status]),
    [[`${rt.gatewayUrl}/v1/stripe/events`, 200]],
  );
  await new Promise((r) => setTimeout(r, 600)); // three intervals of the schedule it replaces
  assert.equal(rt.stripeReports.length, 1);
});

test("a runtime that cannot start (a secret its config names is not set) stops what it had started", async () => {
  // Two free ports, for fauxqs and the emulator: free again afterwards only if both were stopped.
  const freePort = async () => {
    const server = createServer().listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as AddressInfo;
    await new Promise((r) => server.close(r));
    return port;
  };
  const [sqsPort, stripeEmulatorPort] = [await freePort(), await freePort()];
  await assert.rejects(
    startLocalRuntime({
      env: { METERHOOK_LOG_LEVEL: "error", METERHOOK_CONFIG: "examples/github-ci-minutes.yaml" },
      sqsPort,
      stripeEmulatorPort,
    }),
    /GITHUB_WEBHOOK_SECRET .* is not set/,
  );
  for (const port of [sqsPort, stripeEmulatorPort]) {
    const server = createServer().listen(port, "127.0.0.1");
    await once(server, "listening");
    await new Promise((r) => server.close(r));
  }
});

describe("a mapping config with dynamodb lookups", () => {
  const configFile = "examples/dynamodb-accounts.yaml";
  const dir = mkdtempSync(join(tmpdir(), "mh-local-dynamo-"));

  test("gets a local DynamoDB with the lookups' tables, filled from DYNAMODB_ITEMS, and bills through it (the example)", async () => {
    const { rt, sqs, total } = await start(
      { METERHOOK_CONFIG: configFile },
      { dynamodbItems: "examples/dynamodb-accounts.items.json" },
    );
    assert.deepEqual(rt.dynamodb?.tables, [{ name: "accounts", keys: [{ name: "account_id", type: "N" }] }]);
    assert.equal(rt.dynamodb?.items, 2);
    assert.match(rt.dynamodb?.endpoint ?? "", /^http:\/\/127\.0\.0\.1:\d+$/);
    for (const [job_id, account_id] of [
      ["j1", 1001],
      ["j2", 1002],
      ["j3", 7],
    ] as const) {
      await sqs.send(
        new SendMessageCommand({
          QueueUrl: rt.ingestQueueUrl,
          MessageBody: JSON.stringify({ type: "job.finished", job_id, account_id, seconds: 42 }),
          MessageAttributes: { [SOURCE_ATTRIBUTE]: { DataType: "String", StringValue: "jobs" } },
        }),
      );
    }
    await waitFor(() => total("cus_NciAYcXfLnqBoz") === 42 || undefined, "the event to be billed");
    // An account whose item holds no Stripe id, and one with no item, are dead-lettered, not billed.
    const letters: DeadLetterBody[] = [];
    await waitFor(async () => {
      letters.push(...(await drainDeadLetters(sqs, rt.deadLetterQueueUrl)));
      return letters.length === 2 || undefined;
    }, "the two dead letters");
    assert.deepEqual(letters.map((l) => [(l.event as { job_id: string }).job_id, l.error.code]).sort(), [
      ["j2", "customer_not_found"],
      ["j3", "customer_not_found"],
    ]);
    assert.equal(rt.emulator?.ledger.events.length, 1);
  });

  test("DYNAMODB_ITEMS naming a table no lookup reads stops the start, saying so", async () => {
    const itemsFile = join(dir, "other.json");
    writeFileSync(itemsFile, JSON.stringify({ orgs: [{ org_id: "a" }] }));
    await assert.rejects(
      startLocalRuntime({
        env: { METERHOOK_LOG_LEVEL: "error", METERHOOK_CONFIG: configFile },
        dynamodbItems: itemsFile,
      }),
      /DYNAMODB_ITEMS: orgs is not a table of the mapping config's dynamodb lookups \(accounts\)/,
    );
    // Without dynamodb lookups there is no local DynamoDB to fill.
    await assert.rejects(
      startLocalRuntime({ env: { METERHOOK_LOG_LEVEL: "error" }, dynamodbItems: itemsFile }),
      /DYNAMODB_ITEMS fills the local DynamoDB, which runs only for a mapping config with dynamodb lookups/,
    );
  });
});
