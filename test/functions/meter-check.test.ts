import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";
import { ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { createQueueHandler } from "../../functions/ingest-queue.js";
import { createConsumerFromConfig, replayFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import type { DeadLetterBody } from "../../lib/dead-letter.js";
import { silentLogger } from "../../lib/logger.js";
import { meterEventIdentifier } from "../../lib/meter-event.js";
import { packBodies } from "../../lib/pack.js";
import { EMULATOR_DEFAULT_KEY, type StripeEmulator } from "../../local/stripe-emulator/server.js";
import { lambdaContext, sqsEvent, sqsRecord, usageEvent } from "../helpers/factories.js";
import { drain, drainDeadLetters, queueDepth, startTestQueues, type TestQueues } from "../helpers/sqs.js";
import { startEmulator } from "../helpers/stripe.js";

// Stripe as a user may have it: a meter with Stripe's default payload keys, one that reads its
// own keys, and one deactivated. Only these meters exist (no meter is made on first sight).
let emulator: StripeEmulator;
let queues: TestQueues;
before(async () => {
  emulator = await startEmulator({
    meters: [
      { event_name: "api_requests" },
      { event_name: "tokens", customerKey: "customer_ref", valueKey: "tokens_used" },
      { event_name: "retired", status: "inactive" },
    ],
  });
  queues = await startTestQueues();
});
after(async () => {
  await emulator.stop();
  await queues.stop();
});
beforeEach(() => drain(queues.sqs, queues.deadLetterQueueUrl));

const env = (extra: Record<string, string>) => ({
  STRIPE_API_KEY: EMULATOR_DEFAULT_KEY,
  STRIPE_API_BASE: emulator.url,
  STRIPE_METER_EVENTS_BASE: emulator.url,
  METERHOOK_DLQ_URL: queues.deadLetterQueueUrl,
  SQS_ENDPOINT: queues.endpoint,
  METERHOOK_LOG_LEVEL: "error",
  ...extra,
});

/** The ingest-queue handler as deployed, against fauxqs and the emulator. */
async function consume(events: Array<Record<string, unknown>>, extra: Record<string, string>) {
  const consumer = await createConsumerFromConfig(loadConfig(env(extra)), { sqs: queues.sqs, logger: silentLogger });
  try {
    const records = events.map((e) => sqsRecord(e));
    const response = await createQueueHandler(async () => consumer)(sqsEvent(records), lambdaContext());
    const failed = new Set(response.batchItemFailures.map((f) => f.itemIdentifier));
    return records.map((r) => failed.has(r.messageId));
  } finally {
    await consumer.close();
  }
}
const identifier = (e: Record<string, unknown>) => meterEventIdentifier(e.id as string, e.event_name as string);
const sent = (e: Record<string, unknown>) => emulator.ledger.events.find((r) => r.identifier === identifier(e));
const refusedLater = (e: Record<string, unknown>) => {
  emulator.errorReports.flush();
  return emulator.ledger.errors.find((r) => r.identifier === identifier(e))?.code;
};

for (const api of ["v2", "v1"] as const) {
  describe(`the meter check (METERHOOK_METER_CHECK=on), ${api}`, () => {
    const on = { METERHOOK_STRIPE_API: api, METERHOOK_METER_CHECK: "on" };

    test("an event_name with no active meter is dead-lettered meter_not_found, and not sent; the rest are billed", async () => {
      const billed = usageEvent({ customer: `cus_${api}Billed`, value: 2 });
      const unknown = usageEvent({ event_name: "api_request", customer: `cus_${api}Typo` });
      const retired = usageEvent({ event_name: "retired", customer: `cus_${api}Retired` });

      const failed = await consume([billed, unknown, retired], on);

      assert.deepEqual(failed, [false, false, false]);
      const letters = await drainDeadLetters(queues.sqs, queues.deadLetterQueueUrl);
      assert.deepEqual(
        letters.map((l) => [(l.event as { id: string }).id, l.error.code, l.attributes.code]).sort(),
        [
          [unknown.id, "meter_not_found", "meter_not_found"],
          [retired.id, "meter_not_found", "meter_not_found"],
        ].sort(),
      );
      const letter = letters.find((l) => (l.event as { id: string }).id === unknown.id);
      assert.match(letter?.error.message ?? "", /no active Stripe meter has event_name "api_request"/);
      assert.equal(letter?.stripeMayHaveRecorded, undefined);
      assert.deepEqual(letter?.event, unknown);
      assert.ok(sent(billed));
      assert.equal(sent(unknown), undefined);
      assert.equal(sent(retired), undefined);
    });

    test("a meter's own payload keys are used, so Stripe counts the events instead of refusing them later", async () => {
      const customer = `cus_${api}Tokens`;
      const checked = usageEvent({ event_name: "tokens", customer, value: 7, properties: { model: "large" } });
      assert.deepEqual(await consume([checked], on), [false]);
      assert.deepEqual(sent(checked)?.payload, { model: "large", customer_ref: customer, tokens_used: "7" });
      assert.equal(refusedLater(checked), undefined);
      const meter = emulator.ledger.meters.get("tokens")?.id as string;
      assert.equal(emulator.ledger.aggregate(meter, customer), 7);

      // Without the check: Stripe's defaults are sent, accepted, and then refused.
      const unchecked = usageEvent({ event_name: "tokens", customer, value: 5 });
      assert.deepEqual(await consume([unchecked], { METERHOOK_STRIPE_API: api }), [false]);
      assert.equal(refusedLater(unchecked), "meter_event_no_customer_defined");
      assert.equal(emulator.ledger.aggregate(meter, customer), 7);
      assert.equal((await drainDeadLetters(queues.sqs, queues.deadLetterQueueUrl)).length, 0);
    });

    test("a property named like one of the meter's payload keys is dead-lettered invalid_payload", async () => {
      const clash = usageEvent({ event_name: "tokens", customer: `cus_${api}Clash`, properties: { tokens_used: "9" } });
      assert.deepEqual(await consume([clash], on), [false]);
      const [letter] = await drainDeadLetters(queues.sqs, queues.deadLetterQueueUrl);
      assert.equal(letter?.error.code, "invalid_payload");
      assert.match(
        letter?.error.message ?? "",
        /property "tokens_used" is the payload key meter mtr_\w+ reads the value from/,
      );
      assert.equal(sent(clash), undefined);
    });
  });
}

describe("the meter check with packs and pre-aggregation", () => {
  test("a pack's event for a missing meter is dead-lettered alone; combined events for one are dead-lettered member by member", async () => {
    const ok = usageEvent({ customer: "cus_PackOk", value: 3 });
    const nope = usageEvent({ event_name: "nope", customer: "cus_PackNope" });
    const tokens = usageEvent({ event_name: "tokens", customer: "cus_PackTokens", value: 2 });
    const packed = [ok, nope, tokens];
    const [body] = packBodies(
      packed.map((e) => JSON.stringify(e)),
      100,
    );
    const combined = [1, 2, 3].map((value) => usageEvent({ event_name: "nope", customer: "cus_Combined", value }));
    const consumer = await createConsumerFromConfig(
      loadConfig(
        env({
          METERHOOK_METER_CHECK: "on",
          METERHOOK_AGGREGATE: JSON.stringify({ nope: "sum" }),
          METERHOOK_INGEST_QUEUE_URL: queues.ingestQueueUrl,
        }),
      ),
      { sqs: queues.sqs, logger: silentLogger },
    );
    try {
      const records = [sqsRecord(body as string), ...combined.map((e) => sqsRecord(e))];
      const response = await createQueueHandler(async () => consumer)(sqsEvent(records), lambdaContext());
      assert.deepEqual(response.batchItemFailures, []);
    } finally {
      await consumer.close();
    }
    const letters = await drainDeadLetters(queues.sqs, queues.deadLetterQueueUrl);
    assert.deepEqual(
      letters.map((l) => [(l.event as { id: string }).id, l.error.code]).sort(),
      [nope, ...combined].map((e) => [e.id, "meter_not_found"]).sort(),
    );
    assert.ok(sent(ok));
    assert.equal(sent(tokens)?.payload.customer_ref, "cus_PackTokens");
    assert.equal((await drain(queues.sqs, queues.ingestQueueUrl)).length, 0);
  });
});

describe("replaying meter_not_found", () => {
  test("once the meter is made, replay bills the dead-lettered events", async () => {
    const events = [usageEvent({ event_name: "signups", customer: "cus_Replay", value: 1 })];
    events.push(usageEvent({ event_name: "signups", customer: "cus_Replay", value: 4 }));
    await consume(events, { METERHOOK_METER_CHECK: "on" });
    assert.equal(emulator.ledger.meters.has("signups"), false);
    const replay = async (dryRun: boolean) => {
      return replayFromConfig(
        loadConfig(env({ METERHOOK_METER_CHECK: "on" })),
        { limit: 10, dryRun },
        { sqs: queues.sqs, logger: silentLogger },
      );
    };

    // A dry run before the meter exists says what a replay would do: dead-letter them again.
    const preview = await replay(true);
    assert.deepEqual([preview.billed, preview.deadLettered], [0, { meter_not_found: 2 }]);
    assert.equal(await queueDepth(queues.sqs, queues.deadLetterQueueUrl), 2);

    emulator.defineMeter({ event_name: "signups" });
    assert.deepEqual((await replay(true)).billed, 2);
    const report = await replay(false);

    assert.equal(report.examined, 2);
    assert.equal(report.billed, 2);
    const meter = emulator.ledger.meters.get("signups")?.id as string;
    assert.equal(emulator.ledger.aggregate(meter, "cus_Replay"), 5);
    assert.equal((await drainDeadLetters(queues.sqs, queues.deadLetterQueueUrl)).length, 0);
  });
});

describe("without the meter check, a Stripe that refuses an unknown event_name at once (v1)", () => {
  test("the event is dead-lettered stripe_rejected quoting Stripe, and billed once replayed after the meter is made", async () => {
    const strict = await startEmulator({ meters: [{ event_name: "api_requests" }], v1RefusesAtOnce: ["no_meter"] });
    const settings = { METERHOOK_STRIPE_API: "v1", STRIPE_API_BASE: strict.url, STRIPE_METER_EVENTS_BASE: strict.url };
    try {
      const billed = usageEvent({ customer: "cus_strictBilled", value: 2 });
      const unknown = usageEvent({ event_name: "api_request", customer: "cus_strictTypo", value: 5 });
      assert.deepEqual(await consume([billed, unknown], settings), [false, false]);
      // Read, not taken: the replay below takes it.
      const { Messages = [] } = await queues.sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: queues.deadLetterQueueUrl,
          MaxNumberOfMessages: 10,
          VisibilityTimeout: 0,
        }),
      );
      assert.equal(Messages.length, 1);
      const letter = JSON.parse(Messages[0]?.Body ?? "{}") as DeadLetterBody;
      assert.equal((letter.event as { id: string }).id, unknown.id);
      assert.equal(letter.error.code, "stripe_rejected");
      assert.match(letter.error.message, /No active meter found for event_name api_request/);
      assert.deepEqual(
        strict.ledger.events.map((e) => e.identifier),
        [identifier(billed)],
      );

      // The meter made, the letter replayed: billed, once.
      strict.defineMeter({ event_name: "api_request" });
      const report = await replayFromConfig(
        loadConfig(env(settings)),
        { limit: 10, dryRun: false },
        { sqs: queues.sqs, logger: silentLogger },
      );
      assert.deepEqual([report.examined, report.billed], [1, 1]);
      assert.equal(strict.ledger.events.filter((e) => e.identifier === identifier(unknown)).length, 1);
      assert.equal(await queueDepth(queues.sqs, queues.deadLetterQueueUrl), 0);
    } finally {
      await strict.stop();
    }
  });
});
