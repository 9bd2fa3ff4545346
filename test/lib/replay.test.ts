import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, test } from "node:test";
import { promisify } from "node:util";
import { SendMessageCommand } from "@aws-sdk/client-sqs";
import { parse as parseYaml } from "yaml";
import { createQueueHandler } from "../../functions/ingest-queue.js";
import { createConsumerFromConfig, replayFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import { silentLogger } from "../../lib/logger.js";
import { meterEventIdentifier } from "../../lib/meter-event.js";
import type { StripeEmulator } from "../../local/stripe-emulator/server.js";
import { lambdaContext, sqsEvent, sqsRecord, usageEvent } from "../helpers/factories.js";
import { loadTrigger } from "../helpers/fixtures.js";
import { consumerEnv, type PipelineParts, startPipelineParts } from "../helpers/pipeline.js";
import { drain, drainDeadLetters, queueDepth, type TestQueues } from "../helpers/sqs.js";

let parts: PipelineParts;
let queues: TestQueues;
let emulator: StripeEmulator;
before(async () => {
  parts = await startPipelineParts();
  ({ queues, emulator } = parts);
});
after(() => parts.stop());
beforeEach(() => drain(queues.sqs, queues.deadLetterQueueUrl));

const env = (customers: Record<string, string> = {}) =>
  consumerEnv(parts, { METERHOOK_CUSTOMERS: JSON.stringify(customers), METERHOOK_LOG_LEVEL: "error" });

/** Runs events through the real consumer so they are dead-lettered as in production. */
async function deadLetter(events: Array<Record<string, unknown> | string>) {
  const handler = createQueueHandler(() =>
    createConsumerFromConfig(loadConfig(env()), { sqs: queues.sqs, logger: silentLogger }),
  );
  await handler(sqsEvent(events.map((e) => sqsRecord(e))), lambdaContext());
}
const replay = (options: { limit?: number; dryRun?: boolean }, customers: Record<string, string> = {}) =>
  replayFromConfig(
    loadConfig(env(customers)),
    { limit: options.limit ?? 100, dryRun: options.dryRun ?? false },
    {
      sqs: queues.sqs,
      logger: silentLogger,
    },
  );
const total = (customer: string) =>
  emulator.ledger.summaries().find((s) => s.customer === customer)?.aggregated_value ?? 0;

describe("DLQ replay", () => {
  test("bills what is now billable, and re-dead-letters the rest with its history and updated reason", async () => {
    const late = usageEvent({ customer: "acct_late", value: 6 });
    await deadLetter([late, { id: "evt_broken", customer: "cus_1" }]);
    const before = await drainDeadLetters(queues.sqs, queues.deadLetterQueueUrl);
    assert.deepEqual(before.map((l) => l.error.code).sort(), ["customer_not_found", "invalid_event"]);
    for (const l of before) {
      await queues.sqs.send(
        new SendMessageCommand({
          QueueUrl: queues.deadLetterQueueUrl,
          MessageBody: JSON.stringify(l),
          MessageAttributes: { code: { DataType: "String", StringValue: l.error.code } },
        }),
      );
    }
    await new Promise((r) => setTimeout(r, 5));

    const report = await replay({}, { acct_late: "cus_late" });

    assert.deepEqual(report, {
      dryRun: false,
      examined: 2,
      billed: 1,
      deadLettered: { invalid_event: 1 },
      leftUntouched: 0,
    });
    assert.equal(total("cus_late"), 6);
    const after = await drainDeadLetters(queues.sqs, queues.deadLetterQueueUrl);
    assert.equal(after.length, 1);
    const old = before.find((l) => l.error.code === "invalid_event");
    assert.equal(after[0]?.error.code, "invalid_event");
    assert.equal(after[0]?.attempts, 2);
    assert.equal(after[0]?.firstFailedAt, old?.firstFailedAt);
    assert.ok(Date.parse(after[0]?.lastFailedAt ?? "") >= Date.parse(old?.lastFailedAt ?? ""));
    assert.deepEqual(after[0]?.event, old?.event);
  });

  test("a dry run sends nothing and leaves the DLQ as it was", async () => {
    await deadLetter([usageEvent({ customer: "acct_dry" }), usageEvent({ customer: "acct_dry2" })]);
    const requests = emulator.requests.length;
    const report = await replay({ dryRun: true }, { acct_dry: "cus_dry" });
    assert.deepEqual(report, {
      dryRun: true,
      examined: 2,
      billed: 1,
      deadLettered: { customer_not_found: 1 },
      leftUntouched: 0,
    });
    assert.equal(emulator.requests.length, requests);
    assert.equal(await queueDepth(queues.sqs, queues.deadLetterQueueUrl), 2);
    assert.equal(total("cus_dry"), 0);
  });

  test("takes at most --limit messages", async () => {
    await deadLetter(Array.from({ length: 5 }, () => usageEvent({ customer: "acct_lim" })));
    const report = await replay({ limit: 2 }, { acct_lim: "cus_lim" });
    assert.equal(report.examined, 2);
    assert.equal(report.billed, 2);
    assert.equal(await queueDepth(queues.sqs, queues.deadLetterQueueUrl), 3);
  });

  test("replays a raw message moved by the redrive policy, and an already-billed event is not billed twice", async () => {
    const event = usageEvent({ customer: "cus_redriven", value: 2 });
    await queues.sqs.send(
      new SendMessageCommand({ QueueUrl: queues.deadLetterQueueUrl, MessageBody: JSON.stringify(event) }),
    );
    await queues.sqs.send(
      new SendMessageCommand({ QueueUrl: queues.deadLetterQueueUrl, MessageBody: JSON.stringify(event) }),
    );
    await new Promise((r) => setTimeout(r, 5));
    const report = await replay({});
    assert.equal(report.billed, 2);
    assert.equal(total("cus_redriven"), 2);
    const identifier = meterEventIdentifier(event.id as string, "api_requests");
    assert.equal(emulator.ledger.events.filter((e) => e.identifier === identifier).length, 1);
  });

  test("replays an event EventBridge put in the DLQ after failing to deliver it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mh-replay-eb-"));
    const file = join(dir, "config.yaml");
    const config = parseYaml(readFileSync("examples/eventbridge-orders.yaml", "utf8"));
    config.sources.orders.customer = { lookup: "table", table: { acct_42: "cus_eb42" } };
    writeFileSync(file, JSON.stringify(config));
    await queues.sqs.send(
      new SendMessageCommand({
        QueueUrl: queues.deadLetterQueueUrl,
        MessageBody: JSON.stringify(loadTrigger("eventbridge-order-placed.json")),
      }),
    );
    const report = await replayFromConfig(
      loadConfig({ ...env(), METERHOOK_CONFIG: file }),
      { limit: 10, dryRun: false },
      { sqs: queues.sqs, logger: silentLogger },
    );
    assert.deepEqual(report, { dryRun: false, examined: 1, billed: 1, deadLettered: {}, leftUntouched: 0 });
    assert.equal(emulator.ledger.summaries().find((x) => x.customer === "cus_eb42")?.aggregated_value, 5);
  });

  test("`npm run replay -- --dry-run` prints the report", async () => {
    await deadLetter([usageEvent({ customer: "acct_cli" })]);
    const { stdout } = await promisify(execFile)(
      "npx",
      ["tsx", "cli/meterhook.ts", "replay", "--dry-run", "--limit", "10"],
      {
        env: { ...process.env, ...env() },
      },
    );
    const report = JSON.parse(stdout.slice(stdout.indexOf("{\n")));
    assert.deepEqual(report.deadLettered, { customer_not_found: 1 });
    assert.equal(report.dryRun, true);
  });
});
