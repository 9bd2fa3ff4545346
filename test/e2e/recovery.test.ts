import assert from "node:assert/strict";
import { after, test } from "node:test";
import { SQSClient } from "@aws-sdk/client-sqs";
import { replayFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import { silentLogger } from "../../lib/logger.js";
import { type LocalRuntime, startLocalRuntime } from "../../local/runtime.js";
import { EMULATOR_DEFAULT_KEY } from "../../local/stripe-emulator/server.js";
import { usageEvent } from "../helpers/factories.js";
import { queueDepth } from "../helpers/sqs.js";
import { waitFor } from "../helpers/wait.js";

let rt: LocalRuntime | undefined;
after(() => rt?.stop());

test("after a Stripe outage the backlog drains by itself, and replay bills what waited in the DLQ, each event once", async () => {
  rt = await startLocalRuntime({
    env: { METERHOOK_LOG_LEVEL: "error", STRIPE_MAX_ATTEMPTS: "2", METERHOOK_MAX_ATTEMPTS: "50" },
    visibilityTimeoutSeconds: 1,
    pollers: 2,
  });
  const emulator = rt.emulator;
  assert.ok(emulator);
  const sqs = new SQSClient({
    endpoint: rt.sqsEndpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "r", secretAccessKey: "r" },
  });

  // Stripe is down (503) for 4 seconds.
  const downUntil = Date.now() + 4_000;
  let refused = 0;
  emulator.setFaultPolicy((req) => {
    if (!req.path.includes("meter_event") || Date.now() >= downUntil) return undefined;
    refused++;
    return { path: req.path, respond: { status: 503 } };
  });

  const events = Array.from({ length: 300 }, (_, i) =>
    usageEvent({
      id: `outage_${i}`,
      customer: i % 10 === 0 ? "acct_late" : "cus_outage",
      value: 1,
      properties: { src: `outage_${i}` },
    }),
  );
  for (let i = 0; i < events.length; i += 100) {
    const res = await fetch(`${rt.gatewayUrl}/v1/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${rt.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ events: events.slice(i, i + 100) }),
    });
    assert.equal(res.status, 202);
  }

  const current = rt;
  await waitFor(
    async () => (await queueDepth(sqs, current.ingestQueueUrl)) === 0 || undefined,
    "the backlog to drain",
    60_000,
  );
  assert.ok(refused > 0, "Stripe refused requests during the outage");
  const count = (src: string) => emulator.ledger.events.filter((e) => e.payload.src === src).length;
  for (const e of events)
    if (e.customer === "cus_outage") assert.equal(count(e.id as string), 1, `${e.id} billed once`);
  // At-least-once: with a 1 s visibility timeout, a slow invocation's message can be delivered
  // again and dead-lettered twice (same event, same reason). Replay must still bill it once.
  const waiting = await queueDepth(sqs, rt.deadLetterQueueUrl);
  assert.ok(waiting >= 30 && waiting <= 33, `the unmapped events wait in the DLQ (${waiting})`);

  // The mapping is added; replay brings them back.
  const report = await replayFromConfig(
    loadConfig({
      METERHOOK_DLQ_URL: rt.deadLetterQueueUrl,
      SQS_ENDPOINT: rt.sqsEndpoint,
      STRIPE_API_KEY: EMULATOR_DEFAULT_KEY,
      STRIPE_API_BASE: rt.stripeApiBase,
      STRIPE_METER_EVENTS_BASE: rt.stripeApiBase,
      METERHOOK_CUSTOMERS: JSON.stringify({ acct_late: "cus_late" }),
    }),
    { limit: 1000, dryRun: false },
    { sqs, logger: silentLogger },
  );
  assert.deepEqual([report.examined, report.billed, report.deadLettered], [waiting, waiting, {}]);
  assert.equal(await queueDepth(sqs, rt.deadLetterQueueUrl), 0);
  for (const e of events) assert.equal(count(e.id as string), 1, `${e.id} billed once`);
  assert.equal(emulator.ledger.summaries().find((s) => s.customer === "cus_late")?.aggregated_value, 30);
  sqs.destroy();
});
