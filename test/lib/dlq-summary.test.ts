import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";
import { SendMessageCommand } from "@aws-sdk/client-sqs";
import { createQueueHandler } from "../../functions/ingest-queue.js";
import { createConsumerFromConfig, summarizeDlqFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import { silentLogger } from "../../lib/logger.js";
import { meterhookCli } from "../helpers/cli.js";
import { lambdaContext, sqsEvent, sqsRecord, usageEvent } from "../helpers/factories.js";
import { consumerEnv, usePipelineParts } from "../helpers/pipeline.js";
import { drain, drainDeadLetters, queueDepth } from "../helpers/sqs.js";

const parts = usePipelineParts();
beforeEach(() => drain(parts.queues.sqs, parts.queues.deadLetterQueueUrl));
const env = () => consumerEnv(parts, { METERHOOK_LOG_LEVEL: "error" });

/** Dead letters as the consumer writes them: two unmapped customers, a broken event, a trigger, a raw message. */
async function fillDlq() {
  const consumer = createQueueHandler(() =>
    createConsumerFromConfig(loadConfig(env()), { sqs: parts.queues.sqs, logger: silentLogger }),
  );
  const events = [
    usageEvent({ id: "req_dlq_1", customer: "acct_unmapped_1" }),
    usageEvent({ id: "req_dlq_2", customer: "acct_unmapped_2" }),
    { id: "req_dlq_broken", customer: "cus_1" },
    // A webhook's trigger for a source the config no longer has.
    {
      meterhook: "trigger/1",
      kind: "webhook",
      source: "gone",
      receivedAt: new Date().toISOString(),
      headers: {},
      body: "{}",
    },
  ];
  await consumer(sqsEvent(events.map((e) => sqsRecord(e))), lambdaContext());
  // What the ingest queue's redrive policy moves: the message as it was, no envelope.
  await parts.queues.sqs.send(
    new SendMessageCommand({
      QueueUrl: parts.queues.deadLetterQueueUrl,
      MessageBody: JSON.stringify(usageEvent({ customer: "cus_redriven" })),
    }),
  );
}

test("meterhook dlq counts the letters by code and source, with samples, and leaves every letter as it was", async () => {
  const filledFrom = Date.now();
  await fillDlq();
  const filledTo = Date.now();
  const summary = await summarizeDlqFromConfig(loadConfig(env()), { limit: 100 }, { sqs: parts.queues.sqs });
  assert.equal(summary.examined, 5);
  assert.deepEqual(summary.byCode, { customer_not_found: 2, invalid_event: 1, unknown_source: 1, no_envelope: 1 });
  assert.deepEqual(summary.bySource, { events: 4, gone: 1 });
  assert.deepEqual(summary.samples.customer_not_found?.map((s) => s.eventId).sort(), ["req_dlq_1", "req_dlq_2"]);
  assert.match(summary.samples.customer_not_found?.[0]?.message ?? "", /acct_unmapped_/);
  assert.ok(summary.oldestFirstFailedAt && Date.parse(summary.oldestFirstFailedAt) <= Date.now());
  // When the oldest was written (SQS's clock, in whole ms), and when the DLQ's 14 days end for it.
  const written = Date.parse(summary.oldestWrittenAt ?? "");
  assert.ok(written >= filledFrom - 1_000 && written <= filledTo, summary.oldestWrittenAt);
  assert.equal(Date.parse(summary.firstExpiresAt ?? "") - written, 14 * 86_400_000);

  // Read, not taken: all five are visible again, each letter unchanged.
  assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 5);
  const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
  assert.deepEqual(letters.map((l) => l.attempts ?? "raw").sort(), [1, 1, 1, 1, "raw"]);
});

test("the CLI prints the summary; --limit caps the letters it reads", async () => {
  await fillDlq();
  const { code, stdout } = await meterhookCli(["dlq", "--limit", "2"], env());
  assert.equal(code, 0);
  const summary = JSON.parse(stdout) as { examined: number; byCode: Record<string, number> };
  assert.equal(summary.examined, 2);
  assert.equal(
    Object.values(summary.byCode).reduce((a, b) => a + b, 0),
    2,
  );
  assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 5);
});
