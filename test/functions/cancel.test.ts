import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeEach, describe, test } from "node:test";
import { createHttpHandler } from "../../functions/http-api.js";
import { createQueueHandler } from "../../functions/ingest-queue.js";
import { createConsumerFromConfig, createIngestApiFromConfig, replayFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import { silentLogger } from "../../lib/logger.js";
import { meterEventIdentifier } from "../../lib/meter-event.js";
import type { Metrics } from "../../lib/metrics.js";
import { httpEvent, lambdaContext, sqsEvent, sqsRecord, usageEvent } from "../helpers/factories.js";
import { consumerEnv, usePipelineParts } from "../helpers/pipeline.js";
import { drain, drainDeadLetters } from "../helpers/sqs.js";

// The whole way a cancellation goes: POST /v1/events/cancel (the deployed HTTP handler), the
// ingest queue (fauxqs), the deployed consumer handler, Stripe (the emulator).
const parts = usePipelineParts();
const KEY = "mh_test_cancel_key";
/** Every count the HTTP API and the consumer made, by metric name. */
const counted = new Map<string, number>();
const metrics: Metrics = {
  count: (name, n) => {
    counted.set(name, (counted.get(name) ?? 0) + (n ?? 1));
  },
  timing() {},
};

beforeEach(async () => {
  await drain(parts.queues.sqs, parts.queues.ingestQueueUrl);
  await drain(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
  counted.clear();
});

async function post(path: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const config = loadConfig({
    METERHOOK_API_KEYS: KEY,
    METERHOOK_INGEST_QUEUE_URL: parts.queues.ingestQueueUrl,
    SQS_ENDPOINT: parts.queues.endpoint,
  });
  const api = await createIngestApiFromConfig(config, { sqs: parts.queues.sqs, logger: silentLogger, metrics });
  const res = await createHttpHandler(async () => api)(
    httpEvent({
      path,
      body: JSON.stringify(body),
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
    }),
  );
  return { status: res.statusCode ?? 0, body: JSON.parse(res.body ?? "null") };
}

const env = (extra: Record<string, string>) => ({
  ...consumerEnv(parts, { METERHOOK_LOG_LEVEL: "error", METERHOOK_INGEST_QUEUE_URL: parts.queues.ingestQueueUrl }),
  ...extra,
});

/**
 * Takes what the ingest queue holds and hands it to the consumer handler as SQS would, as its
 * `delivery`th delivery; answers the bodies of the messages it left to retry.
 */
async function consumeQueue(
  extra: Record<string, string>,
  delivery = 1,
  firstReceivedAt = Date.now(),
): Promise<string[]> {
  const messages = await drain(parts.queues.sqs, parts.queues.ingestQueueUrl);
  const records = messages.map((m) =>
    sqsRecord(m.body, {
      ApproximateReceiveCount: String(delivery),
      ApproximateFirstReceiveTimestamp: String(firstReceivedAt),
    }),
  );
  const consumer = await createConsumerFromConfig(loadConfig(env(extra)), {
    sqs: parts.queues.sqs,
    logger: silentLogger,
    metrics,
  });
  try {
    const res = await createQueueHandler(async () => consumer)(sqsEvent(records), lambdaContext());
    const failed = new Set(res.batchItemFailures.map((f) => f.itemIdentifier));
    return records.filter((r) => failed.has(r.messageId)).map((r) => r.body);
  } finally {
    await consumer.close();
  }
}

/** Puts bodies back on the ingest queue, as SQS makes a failed message visible again. */
async function requeue(bodies: string[]): Promise<void> {
  const { SendMessageCommand } = await import("@aws-sdk/client-sqs");
  for (const body of bodies)
    await parts.queues.sqs.send(new SendMessageCommand({ QueueUrl: parts.queues.ingestQueueUrl, MessageBody: body }));
}

const total = (customer: string) =>
  parts.emulator.ledger.summaries().find((s) => s.customer === customer && s.event_name === "api_requests");
const adjustments = () =>
  parts.emulator.requests.filter((r) => r.path === "/v1/billing/meter_event_adjustments").length;

for (const api of ["v2", "v1"] as const) {
  describe(`cancelling a billed event (${api})`, () => {
    const on = { METERHOOK_STRIPE_API: api };

    test("POST /v1/events/cancel takes the event out of Stripe's totals; the customer's other events stay", async () => {
      const customer = `cus_${api}Cancel`;
      const kept = usageEvent({ customer, value: 2 });
      const voided = usageEvent({ customer, value: 5 });
      assert.equal((await post("/v1/events", { events: [kept, voided] })).status, 202);
      assert.deepEqual(await consumeQueue(on), []);
      assert.equal(total(customer)?.aggregated_value, 7);

      const res = await post("/v1/events/cancel", { id: voided.id, event_name: "api_requests" });
      assert.equal(res.status, 202);
      assert.deepEqual(res.body.accepted, [voided.id]);
      const [message] = await drain(parts.queues.sqs, parts.queues.ingestQueueUrl);
      await requeue([message?.body as string]);
      assert.deepEqual(await consumeQueue(on), []);
      // SQS delivers it again: Stripe says it is cancelled already, which is done, not a dead letter.
      await requeue([message?.body as string]);
      assert.deepEqual(await consumeQueue(on, 2), []);

      assert.equal(total(customer)?.aggregated_value, 2);
      assert.equal(total(customer)?.event_count, 1);
      assert.ok(parts.emulator.ledger.cancelled.has(meterEventIdentifier(voided.id as string, "api_requests")));
      assert.equal(counted.get("CancellationsAccepted"), 1);
      assert.equal(counted.get("EventsCancelled"), 1, "the cancellation Stripe took");
      assert.equal(counted.get("EventsAlreadyCancelled"), 1, "the delivery after it, which Stripe had already");
      assert.equal((await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl)).length, 0);
    });

    test("a cancellation that reaches Stripe before its event is retried, and cancels the event once it is billed", async () => {
      const customer = `cus_${api}Early`;
      const event = usageEvent({ customer, value: 4 });
      await post("/v1/events/cancel", { id: event.id, event_name: "api_requests" });
      const retried = await consumeQueue(on);
      assert.equal(retried.length, 1, "refused by Stripe on its first delivery: left on the queue");
      assert.equal((await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl)).length, 0);

      await post("/v1/events", event);
      assert.deepEqual(await consumeQueue(on), []);
      assert.equal(total(customer)?.aggregated_value, 4);

      await requeue(retried);
      assert.deepEqual(await consumeQueue(on, 2), []);
      assert.equal(total(customer)?.aggregated_value, 0);
    });

    test("an event and its cancellation in one batch: sent, then cancelled", async () => {
      const customer = `cus_${api}Same`;
      const event = usageEvent({ customer, value: 6 });
      await post("/v1/events", event);
      await post("/v1/events/cancel", { id: event.id, event_name: "api_requests" });
      assert.deepEqual(await consumeQueue(on), []);
      assert.equal(total(customer)?.aggregated_value, 0);
      assert.equal(total(customer)?.event_count, 0);
    });
  });
}

describe("cancellations that cannot be made", () => {
  test("still refused at its METERHOOK_CANCEL_ATTEMPTS-th delivery: dead-lettered cancel_rejected with Stripe's answer; replay cancels it once the event is billed", async () => {
    const customer = "cus_CancelLate";
    const event = usageEvent({ customer, value: 8 });
    await post("/v1/events/cancel", { id: event.id, event_name: "api_requests" });
    assert.equal((await consumeQueue({ METERHOOK_CANCEL_ATTEMPTS: "3" }, 2)).length, 1, "retried at the 2nd");
    await drain(parts.queues.sqs, parts.queues.ingestQueueUrl);
    await post("/v1/events/cancel", { id: event.id, event_name: "api_requests" });
    assert.deepEqual(await consumeQueue({ METERHOOK_CANCEL_ATTEMPTS: "3" }, 3), []);

    const [letter, ...more] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(more.length, 0);
    assert.equal(letter?.error.code, "cancel_rejected");
    assert.equal(letter?.attributes.code, "cancel_rejected");
    assert.equal(letter?.attributes.event_id, event.id);
    assert.match(
      letter?.error.message ?? "",
      /Stripe would not cancel meter event mh_\S+ \(api_requests\): Stripe answered 400/,
    );
    assert.match(letter?.error.message ?? "", /No meter event with identifier/);
    assert.deepEqual(letter?.event, { meterhook: "cancel/1", id: event.id, event_name: "api_requests" });

    // The letter back on the DLQ, the event billed meanwhile: replay sends the cancellation again.
    const { SendMessageCommand } = await import("@aws-sdk/client-sqs");
    const { attributes: _, ...body } = letter as NonNullable<typeof letter>;
    await parts.queues.sqs.send(
      new SendMessageCommand({ QueueUrl: parts.queues.deadLetterQueueUrl, MessageBody: JSON.stringify(body) }),
    );
    await post("/v1/events", event);
    assert.deepEqual(await consumeQueue({}), []);
    assert.equal(total(customer)?.aggregated_value, 8);

    const config = loadConfig(env({}));
    const sentBefore = adjustments();
    const preview = await replayFromConfig(
      config,
      { limit: 10, dryRun: true },
      { sqs: parts.queues.sqs, logger: silentLogger },
    );
    assert.equal(preview.cancelled, 1);
    assert.equal(adjustments(), sentBefore, "a dry run sends nothing");
    assert.equal(total(customer)?.aggregated_value, 8);

    const report = await replayFromConfig(
      config,
      { limit: 10, dryRun: false },
      { sqs: parts.queues.sqs, logger: silentLogger },
    );
    assert.equal(report.cancelled, 1);
    assert.deepEqual(report.deadLettered, {});
    assert.equal(total(customer)?.aggregated_value, 0);
    assert.equal((await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl)).length, 0);
  });

  test("Stripe's 24-hour duplicate window does not hold a cancellation back: it never bills", async () => {
    const customer = "cus_CancelDayOld";
    const event = usageEvent({ customer, value: 2 });
    await post("/v1/events", event);
    await consumeQueue({});
    // Delivered again a day after its first delivery (an event would be dead_lettered dedupe_window_passed).
    await post("/v1/events/cancel", { id: event.id, event_name: "api_requests" });
    assert.deepEqual(await consumeQueue({}, 2, Date.now() - 86_400_000), []);
    assert.equal(total(customer)?.aggregated_value, 0);

    // A retries_exhausted letter of a cancellation, first received two days ago: replay sends it
    // (a letter of an event would be held, as Stripe may have recorded it).
    const other = usageEvent({ customer, value: 5 });
    await post("/v1/events", other);
    await consumeQueue({});
    const { SendMessageCommand } = await import("@aws-sdk/client-sqs");
    const twoDaysAgo = new Date(Date.now() - 2 * 86_400_000).toISOString();
    const letter = {
      event: { meterhook: "cancel/1", id: other.id, event_name: "api_requests" },
      error: { code: "retries_exhausted", message: "still failing after 5 attempts; last error: Stripe answered 503" },
      attempts: 5,
      firstFailedAt: twoDaysAgo,
      lastFailedAt: twoDaysAgo,
      receivedAt: twoDaysAgo,
    };
    await parts.queues.sqs.send(
      new SendMessageCommand({ QueueUrl: parts.queues.deadLetterQueueUrl, MessageBody: JSON.stringify(letter) }),
    );
    const report = await replayFromConfig(
      loadConfig(env({})),
      { limit: 10, dryRun: false },
      { sqs: parts.queues.sqs, logger: silentLogger },
    );
    assert.deepEqual([report.cancelled, report.pastDedupeWindow], [1, 0]);
    assert.equal(total(customer)?.aggregated_value, 0);
  });

  test("a pre-aggregated meter's event: dead-lettered cancel_rejected at once, nothing asked of Stripe", async () => {
    const event = usageEvent({ customer: "cus_CancelCombined" });
    await post("/v1/events/cancel", { id: event.id, event_name: "api_requests" });
    const sentBefore = adjustments();
    assert.deepEqual(await consumeQueue({ METERHOOK_AGGREGATE: JSON.stringify({ api_requests: "sum" }) }), []);
    const [letter] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(letter?.error.code, "cancel_rejected");
    assert.match(letter?.error.message ?? "", /pre-aggregated \(METERHOOK_AGGREGATE\).*send a negative event instead/);
    assert.equal(adjustments(), sentBefore);
  });

  test("a Stripe key that may not cancel: dead-lettered stripe_unauthorized, the key never in the letter", async () => {
    const event = usageEvent({ customer: "cus_CancelKey" });
    await post("/v1/events/cancel", { id: event.id, event_name: "api_requests" });
    assert.deepEqual(await consumeQueue({ STRIPE_API_KEY: "sk_test_not_this_one" }), []);
    const raw = await drain(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(raw.length, 1);
    assert.equal(JSON.parse(raw[0]?.body ?? "{}").error.code, "stripe_unauthorized");
    assert.doesNotMatch(raw[0]?.body ?? "", /sk_test_not_this_one/);
  });

  test("a cancellation message that breaks the schema is dead-lettered invalid_event", async () => {
    await requeue([JSON.stringify({ meterhook: "cancel/1", id: "req_x" })]);
    assert.deepEqual(await consumeQueue({}), []);
    const [letter] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(letter?.error.code, "invalid_event");
    assert.match(letter?.error.message ?? "", /event_name/);
  });
});

describe("POST /v1/events/cancel", () => {
  test("a batch: valid cancellations queued, each invalid one listed with its code", async () => {
    const res = await post("/v1/events/cancel", {
      events: [
        { id: "req_1", event_name: "api_requests" },
        { id: "req_2" },
        { id: "req_3", event_name: "api_requests", source: "github" },
        { id: 42, event_name: "tokens", source: "github", rule: "workflow-job-completed" },
        { id: "req_5", event_name: "api_requests", value: 3 },
      ],
    });
    assert.equal(res.status, 202);
    assert.deepEqual(res.body.accepted, ["req_1", "42"]);
    assert.deepEqual(
      (res.body.rejected as Array<{ index: number; code: string }>).map((r) => [r.index, r.code]),
      [
        [1, "invalid_event"],
        [2, "invalid_event"],
        [4, "invalid_event"],
      ],
    );
    const queued = (await drain(parts.queues.sqs, parts.queues.ingestQueueUrl)).map((m) => JSON.parse(m.body));
    assert.deepEqual(queued, [
      { meterhook: "cancel/1", id: "req_1", event_name: "api_requests" },
      { meterhook: "cancel/1", id: "42", event_name: "tokens", source: "github", rule: "workflow-job-completed" },
    ]);
  });

  test("400 when nothing is valid, with the item's own code for a single one", async () => {
    const one = await post("/v1/events/cancel", { id: "req_1" });
    assert.equal(one.status, 400);
    assert.equal((one.body.error as { code: string }).code, "invalid_event");
    assert.match((one.body.error as { message: string }).message, /event_name: is required/);
    const all = await post("/v1/events/cancel", { events: [{ id: "" }, {}] });
    assert.equal(all.status, 400);
    assert.equal((all.body.error as { code: string }).code, "all_events_rejected");
    assert.equal((await drain(parts.queues.sqs, parts.queues.ingestQueueUrl)).length, 0);
  });
});

describe("cancellations from a mapping config's rules", () => {
  // An app's own messages on the ingest queue: orders placed, refunded, and corrected.
  const config = join(mkdtempSync(join(tmpdir(), "meterhook-cancel-")), "shop.yaml");
  writeFileSync(
    config,
    `version: 1
sqs:
  defaultSource: shop
sources:
  shop:
    type: sqs
    rules:
      - name: order-placed
        when: "body.type == 'order.placed' || body.type == 'order.corrected'"
        id: body.order_id
        customer: body.customer
        emit:
          - event_name: api_requests
            value: body.amount
      - name: order-refunded
        when: "body.type == 'order.refunded'"
        id: body.order_id
        cancel:
          - event_name: api_requests
            rule: order-placed
      - name: order-corrected
        when: "body.type == 'order.corrected'"
        cancel:
          - event_name: api_requests
            rule: order-placed
            id: body.replaces
          - event_name: api_requests
            id: body.app_event_id
`,
  );
  const message = (body: Record<string, unknown>) => requeue([JSON.stringify(body)]);

  test("a refund cancels the order's event; a correction cancels the old one and bills the new in one message", async () => {
    const customer = "cus_ShopOrders";
    await message({ type: "order.placed", order_id: "o-1", customer, amount: 5 });
    await message({ type: "order.placed", order_id: "o-2", customer, amount: 7 });
    // An event the app sent itself, canonical: a rule cancels it too (no rule named).
    const canonical = usageEvent({ customer, value: 100 });
    await post("/v1/events", canonical);
    assert.deepEqual(await consumeQueue({ METERHOOK_CONFIG: config }), []);
    assert.equal(total(customer)?.aggregated_value, 112);

    await message({ type: "order.refunded", order_id: "o-1" });
    assert.deepEqual(await consumeQueue({ METERHOOK_CONFIG: config }), []);
    assert.equal(total(customer)?.aggregated_value, 107);

    await message({
      type: "order.corrected",
      order_id: "o-2b",
      replaces: "o-2",
      app_event_id: canonical.id,
      customer,
      amount: 6,
    });
    assert.deepEqual(await consumeQueue({ METERHOOK_CONFIG: config }), []);
    assert.equal(total(customer)?.aggregated_value, 6);
    assert.equal(total(customer)?.event_count, 1);
    assert.equal((await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl)).length, 0);
  });

  test("a cancel rule without an id to give is dead-lettered mapping_failed, naming the rule", async () => {
    await message({ type: "order.refunded" });
    assert.deepEqual(await consumeQueue({ METERHOOK_CONFIG: config }), []);
    const [letter] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(letter?.error.code, "mapping_failed");
    assert.match(letter?.error.message ?? "", /order-refunded, cancel api_requests: id gave nothing/);
  });
});
