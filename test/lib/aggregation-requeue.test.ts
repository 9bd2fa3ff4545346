import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createConsumerFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import { silentLogger } from "../../lib/logger.js";
import { queueMessage, usageEvent } from "../helpers/factories.js";
import { consumerEnv, usePipelineParts } from "../helpers/pipeline.js";
import { drain, drainDeadLetters } from "../helpers/sqs.js";

// A combined event whose outcome is unknown must be retried as itself: its members, delivered
// again, could be grouped differently and billed a second time under a new identifier.

const parts = usePipelineParts();

async function consumer(ingestQueueUrl = parts.queues.ingestQueueUrl, env: Record<string, string> = {}) {
  return createConsumerFromConfig(
    loadConfig({
      ...consumerEnv(parts, {
        STRIPE_MAX_ATTEMPTS: "1",
        METERHOOK_INGEST_QUEUE_URL: ingestQueueUrl,
        METERHOOK_AGGREGATE: JSON.stringify({ api_requests: "sum" }),
        ...env,
      }),
    }),
    { sqs: parts.queues.sqs, logger: silentLogger },
  );
}

const total = (customer: string) =>
  parts.emulator.ledger.summaries().find((s) => s.customer === customer)?.aggregated_value ?? 0;
const inAMinute = () => Date.now() + 60_000;

describe("requeued combined events", () => {
  test("pre-aggregation without the ingest queue's URL is a configuration error that names it", async () => {
    const env: Record<string, string | undefined> = {
      ...consumerEnv(parts, { METERHOOK_AGGREGATE: JSON.stringify({ api_requests: "sum" }) }),
    };
    delete env.METERHOOK_INGEST_QUEUE_URL;
    await assert.rejects(
      createConsumerFromConfig(loadConfig(env), { sqs: parts.queues.sqs, logger: silentLogger }),
      /METERHOOK_INGEST_QUEUE_URL \(METERHOOK_AGGREGATE requeues through it\)/,
    );
  });

  test("recorded by Stripe but unanswered: requeued as one message, then counted once", async () => {
    const c = await consumer();
    const messages = [2, 3, 5].map((value) => queueMessage(usageEvent({ customer: "cus_requeue", value })));
    parts.emulator.injectFaults({ path: "/v2/billing/meter_event_stream", action: "accept-then-drop" });

    const first = await c.process(messages, inAMinute());
    assert.deepEqual([first.requeued, first.billed, first.failedMessageIds], [3, 0, []]);
    assert.equal(total("cus_requeue"), 10, "Stripe did record it");

    const requeued = await drain(parts.queues.sqs, parts.queues.ingestQueueUrl);
    assert.equal(requeued.length, 1);
    const body = JSON.parse(requeued[0]?.body ?? "{}");
    assert.equal(body.meterhook, "meterhook.aggregate/1");
    assert.equal(body.event.payload.value, "10");
    assert.equal(body.members.length, 3);

    // Only inside Stripe's 24-hour duplicate check: a day later it is dead-lettered, not resent.
    const requests = parts.emulator.requests.length;
    const late = await c.process(
      [queueMessage(requeued[0]?.body, { sentAt: Date.now() - 24 * 3_600_000 })],
      inAMinute(),
    );
    assert.deepEqual([late.billed, late.deadLettered], [0, { dedupe_window_passed: 1 }]);
    assert.equal(parts.emulator.requests.length, requests);
    const [letter] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.match(letter?.error.message ?? "", /combined event sent 24 h ago/);
    assert.equal(letter?.stripeMayHaveRecorded, true);

    // Delivered again: the same identifier, so Stripe drops it as a duplicate (the stream does
    // so after answering 202).
    const again = await c.process([queueMessage(requeued[0]?.body)], inAMinute());
    assert.equal(again.billed, 1);
    assert.equal(total("cus_requeue"), 10);
    await c.close();
  });

  test("when the requeue cannot be written, the members stay on the queue", async () => {
    const c = await consumer(`${parts.queues.endpoint}/000000000000/no-such-queue`);
    const messages = [1, 1].map((value) => queueMessage(usageEvent({ customer: "cus_stay", value })));
    parts.emulator.injectFaults({ path: "/v2/billing/meter_event_stream", respond: { status: 503 } });
    const res = await c.process(messages, inAMinute());
    assert.equal(res.requeued, 0);
    assert.deepEqual(new Set(res.failedMessageIds), new Set(messages.map((m) => m.messageId)));
    await c.close();
  });

  test("a combined event Stripe refuses dead-letters each member with the code", async () => {
    const c = await consumer();
    const messages = [1, 2].map((value) => queueMessage(usageEvent({ customer: "cus_refused", value })));
    parts.emulator.injectFaults({
      path: "/v2/billing/meter_event_stream",
      respond: {
        status: 400,
        headers: { "stripe-should-retry": "false" },
        body: { error: { type: "invalid_request_error", message: "refused" } },
      },
    });
    const res = await c.process(messages, inAMinute());
    assert.deepEqual([res.billed, res.requeued, res.deadLettered], [0, 0, { stripe_rejected: 2 }]);
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.deepEqual(letters.map((l) => [l.error.code, (l.event as { value?: number }).value]).sort(), [
      ["stripe_rejected", 1],
      ["stripe_rejected", 2],
    ]);
    assert.equal(total("cus_refused"), 0);
    await c.close();
  });

  test("a malformed requeued message is dead-lettered as invalid_message", async () => {
    const c = await consumer();
    const res = await c.process(
      [queueMessage({ meterhook: "meterhook.aggregate/1", event: { event_name: "api_requests" }, members: [] })],
      inAMinute(),
    );
    assert.deepEqual(res.deadLettered, { invalid_message: 1 });
    const [letter] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(letter?.error.code, "invalid_message");
    await c.close();
  });

  test("events of a message that fans out are never combined", async () => {
    const c = await consumer(parts.queues.ingestQueueUrl, { METERHOOK_CONFIG: "test/fixtures/sources/fan-out.ts" });
    const jobs = ["job-a", "job-b"].map((job) => queueMessage({ job, team: "team-1", calls: 3, gb: 1 }));
    const res = await c.process(jobs, inAMinute());
    assert.equal(res.billed, 2);
    const calls = parts.emulator.ledger.events.filter(
      (e) => e.payload.stripe_customer_id === "cus_FanOut1" && e.event_name === "api_requests",
    );
    assert.deepEqual(
      calls.map((e) => e.payload.value),
      ["3", "3"],
      "sent one by one, not as one combined event of 6",
    );
    await c.close();
  });
});
