import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";
import { createQueueHandler } from "../../functions/ingest-queue.js";
import { createConsumerFromConfig, replayFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import { silentLogger } from "../../lib/logger.js";
import { meterEventIdentifier } from "../../lib/meter-event.js";
import { MetricsRecorder } from "../../lib/metrics.js";
import type { StripeEmulator } from "../../local/stripe-emulator/server.js";
import { lambdaContext, sqsEvent, sqsRecord, usageEvent } from "../helpers/factories.js";
import { consumerEnv, usePipelineParts } from "../helpers/pipeline.js";
import { drain, drainDeadLetters, queueDepth, type TestQueues } from "../helpers/sqs.js";

// Stripe with the customers it has: a mistyped id, an id from the other mode and a deleted
// customer are accepted by the v2 stream and then dropped, unless the consumer checks first.
const parts = usePipelineParts({ customers: ["cus_Alive", "cus_AliveToo", "cus_Churned"] });
let emulator: StripeEmulator;
let queues: TestQueues;
beforeEach(async () => {
  ({ emulator, queues } = parts);
  emulator.deleteCustomer("cus_Churned");
  await drain(queues.sqs, queues.deadLetterQueueUrl);
});

const env = (extra: Record<string, string>) => consumerEnv(parts, { METERHOOK_LOG_LEVEL: "warn", ...extra });

/** What `metrics` counted under `name` since it was last drained (all dimensions). */
const countOf = (metrics: MetricsRecorder, name: string) =>
  metrics
    .drain()
    .filter((p) => p.name === name)
    .reduce((sum, p) => sum + (p.values[0] ?? 0), 0);

/** The ingest-queue handler as deployed, against fauxqs and the emulator: which records failed, and its metrics. */
async function consume(events: Array<Record<string, unknown>>, extra: Record<string, string>) {
  const metrics = new MetricsRecorder();
  const consumer = await createConsumerFromConfig(loadConfig(env(extra)), {
    sqs: queues.sqs,
    logger: silentLogger,
    metrics,
  });
  try {
    const records = events.map((e) => sqsRecord(e));
    const response = await createQueueHandler(async () => consumer)(sqsEvent(records), lambdaContext());
    const failed = new Set(response.batchItemFailures.map((f) => f.itemIdentifier));
    return { failed: records.map((r) => failed.has(r.messageId)), metrics };
  } finally {
    await consumer.close();
  }
}
const identifier = (e: Record<string, unknown>) => meterEventIdentifier(e.id as string, e.event_name as string);
/** Stripe received it (and counted it, or refused it later). */
const sent = (e: Record<string, unknown>) => emulator.ledger.receipts.has(identifier(e));
const billed = (e: Record<string, unknown>) => emulator.ledger.events.some((r) => r.identifier === identifier(e));
const refusedLater = (e: Record<string, unknown>) => {
  emulator.errorReports.flush();
  return emulator.ledger.errors.find((r) => r.identifier === identifier(e))?.code;
};
const customerReads = () => emulator.requests.filter((r) => r.path.startsWith("/v1/customers/")).length;

for (const api of ["v2", "v1"] as const) {
  describe(`the customer check (METERHOOK_CUSTOMER_CHECK=on), ${api}`, () => {
    // Ten checks a second, so that each customer of these batches has its turn.
    const on = {
      METERHOOK_STRIPE_API: api,
      METERHOOK_CUSTOMER_CHECK: "on",
      STRIPE_CUSTOMER_CHECK_MAX_REQUESTS_PER_SECOND: "10",
    };

    test("events for a customer Stripe does not have, or has deleted, are dead-lettered customer_not_in_stripe, not sent; the rest are billed", async () => {
      const ok = usageEvent({ customer: "cus_Alive", value: 2 });
      const typo = usageEvent({ customer: "cus_Alvie" });
      const churned = usageEvent({ customer: "cus_Churned", value: 5 });
      const reads = customerReads();

      const { failed, metrics } = await consume([ok, typo, churned], on);

      assert.deepEqual(failed, [false, false, false]);
      const letters = await drainDeadLetters(queues.sqs, queues.deadLetterQueueUrl);
      assert.deepEqual(
        letters.map((l) => [(l.event as { id: string }).id, l.error.code, l.attributes.code]).sort(),
        [
          [typo.id, "customer_not_in_stripe", "customer_not_in_stripe"],
          [churned.id, "customer_not_in_stripe", "customer_not_in_stripe"],
        ].sort(),
      );
      const letter = (e: Record<string, unknown>) => letters.find((l) => (l.event as { id: string }).id === e.id);
      assert.match(
        letter(typo)?.error.message ?? "",
        /Stripe has no customer cus_Alvie \(a typo, or an id from the other mode/,
      );
      assert.match(letter(churned)?.error.message ?? "", /customer cus_Churned was deleted in Stripe/);
      assert.equal(letter(typo)?.stripeMayHaveRecorded, undefined);
      assert.deepEqual(letter(churned)?.event, churned);
      assert.equal(billed(ok), true);
      assert.equal(sent(typo), false);
      assert.equal(sent(churned), false);
      // One read per customer, and none went unchecked.
      assert.equal(customerReads() - reads, 3);
      assert.equal(countOf(metrics, "EventsCustomerUnchecked"), 0);
    });

    test("without the check, the same events are sent, accepted, and only refused later in Stripe's reports", async () => {
      const typo = usageEvent({ customer: "cus_Alvei" });
      const churned = usageEvent({ customer: "cus_Churned" });
      const { failed } = await consume([typo, churned], { METERHOOK_STRIPE_API: api });
      assert.deepEqual(failed, [false, false]);
      assert.equal(sent(typo), true);
      assert.equal(sent(churned), true);
      assert.equal(refusedLater(typo), "meter_event_customer_not_found");
      assert.equal(refusedLater(churned), "meter_event_customer_not_found");
      assert.equal(await queueDepth(queues.sqs, queues.deadLetterQueueUrl), 0);
    });
  });
}

describe("the customer check's rate", () => {
  test("a batch checks only the customers it has a turn for; the rest are sent unchecked and counted, and checked by later batches", async () => {
    const metrics = new MetricsRecorder();
    const config = loadConfig(
      env({ METERHOOK_CUSTOMER_CHECK: "on", STRIPE_CUSTOMER_CHECK_MAX_REQUESTS_PER_SECOND: "1" }),
    );
    const consumer = await createConsumerFromConfig(config, { sqs: queues.sqs, logger: silentLogger, metrics });
    const handler = createQueueHandler(async () => consumer);
    const unchecked = () => countOf(metrics, "EventsCustomerUnchecked");
    try {
      const first = usageEvent({ customer: "cus_AliveToo" });
      const early = usageEvent({ customer: "cus_NeverMade" });
      const reads = customerReads();

      assert.deepEqual(
        (await handler(sqsEvent([sqsRecord(first), sqsRecord(early)]), lambdaContext())).batchItemFailures,
        [],
      );

      // One turn: the first customer is checked; the second's event goes as it would without
      // the check: Stripe takes it, and refuses it later.
      assert.equal(customerReads() - reads, 1);
      assert.equal(unchecked(), 1);
      assert.equal(billed(first), true);
      assert.equal(sent(early), true);
      assert.equal(refusedLater(early), "meter_event_customer_not_found");
      assert.equal(await queueDepth(queues.sqs, queues.deadLetterQueueUrl), 0);

      // A second later the rate has a turn again: the customer is checked, its event dead-lettered.
      await new Promise((r) => setTimeout(r, 1_100));
      const later = usageEvent({ customer: "cus_NeverMade" });
      const again = usageEvent({ customer: "cus_AliveToo" });
      assert.deepEqual(
        (await handler(sqsEvent([sqsRecord(again), sqsRecord(later)]), lambdaContext())).batchItemFailures,
        [],
      );
      assert.equal(customerReads() - reads, 2);
      assert.equal(unchecked(), 0);
      assert.equal(billed(again), true);
      assert.equal(sent(later), false);
      const letters = await drainDeadLetters(queues.sqs, queues.deadLetterQueueUrl);
      assert.deepEqual(
        letters.map((l) => [(l.event as { id: string }).id, l.error.code]),
        [[later.id, "customer_not_in_stripe"]],
      );
    } finally {
      await consumer.close();
    }
  });

  test("a consumer checks a customer once and remembers it: later batches read nothing", async () => {
    const consumer = await createConsumerFromConfig(loadConfig(env({ METERHOOK_CUSTOMER_CHECK: "on" })), {
      sqs: queues.sqs,
      logger: silentLogger,
    });
    try {
      const handler = createQueueHandler(async () => consumer);
      const reads = customerReads();
      for (let i = 0; i < 3; i++) {
        const batch = [usageEvent({ customer: "cus_Alive" }), usageEvent({ customer: "cus_Churned" })];
        const response = await handler(sqsEvent(batch.map((e) => sqsRecord(e))), lambdaContext());
        assert.deepEqual(response.batchItemFailures, []);
      }
      assert.equal(customerReads() - reads, 2);
      const letters = await drainDeadLetters(queues.sqs, queues.deadLetterQueueUrl);
      assert.deepEqual(
        letters.map((l) => l.error.code),
        ["customer_not_in_stripe", "customer_not_in_stripe", "customer_not_in_stripe"],
      );
    } finally {
      await consumer.close();
    }
  });
});

describe("replaying customer_not_in_stripe", () => {
  test("once Stripe has the customer, replay bills the dead-lettered events", async () => {
    const events = [usageEvent({ customer: "cus_Late", value: 1 }), usageEvent({ customer: "cus_Late", value: 4 })];
    await consume(events, { METERHOOK_CUSTOMER_CHECK: "on" });
    assert.equal(await queueDepth(queues.sqs, queues.deadLetterQueueUrl), 2);
    const replay = async (dryRun: boolean) => {
      return replayFromConfig(
        loadConfig(env({ METERHOOK_CUSTOMER_CHECK: "on" })),
        { limit: 10, dryRun },
        { sqs: queues.sqs, logger: silentLogger },
      );
    };

    // A dry run while Stripe still lacks the customer: both would be dead-lettered again.
    const preview = await replay(true);
    assert.deepEqual([preview.billed, preview.deadLettered], [0, { customer_not_in_stripe: 2 }]);

    emulator.addCustomer("cus_Late");
    const report = await replay(false);

    assert.equal(report.examined, 2);
    assert.equal(report.billed, 2);
    const meter = emulator.ledger.meters.get("api_requests")?.id as string;
    assert.equal(emulator.ledger.aggregate(meter, "cus_Late"), 5);
    assert.equal((await drainDeadLetters(queues.sqs, queues.deadLetterQueueUrl)).length, 0);
  });

  test("a replay waits for its checks' turns under the rate: no letter goes to Stripe unchecked", async () => {
    const strangers = ["cus_GoneA", "cus_GoneB", "cus_GoneC"].map((customer) => usageEvent({ customer }));
    await consume(strangers, { METERHOOK_CUSTOMER_CHECK: "on", STRIPE_CUSTOMER_CHECK_MAX_REQUESTS_PER_SECOND: "10" });
    assert.equal(await queueDepth(queues.sqs, queues.deadLetterQueueUrl), 3);
    const reads = customerReads();

    // One read a second, one turn at a time: a consumer would send two of them unchecked.
    const report = await replayFromConfig(
      loadConfig(env({ METERHOOK_CUSTOMER_CHECK: "on", STRIPE_CUSTOMER_CHECK_MAX_REQUESTS_PER_SECOND: "1" })),
      { limit: 10, dryRun: false },
      { sqs: queues.sqs, logger: silentLogger },
    );

    assert.deepEqual([report.billed, report.deadLettered], [0, { customer_not_in_stripe: 3 }]);
    assert.equal(customerReads() - reads, 3);
    assert.deepEqual(
      strangers.map((e) => sent(e)),
      [false, false, false],
    );
  });
});
