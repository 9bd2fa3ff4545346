import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";
import { SQSClient } from "@aws-sdk/client-sqs";
import type { SQSRecord } from "aws-lambda";
import { createHttpHandler } from "../../functions/http-api.js";
import { createQueueHandler } from "../../functions/ingest-queue.js";
import { createConsumerFromConfig, createIngestApiFromConfig, replayFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import { silentLogger } from "../../lib/logger.js";
import { meterEventIdentifier } from "../../lib/meter-event.js";
import { MAX_DEFERRED, MAX_PACK_BYTES, PACK_FORMAT, packBodies, retryBody } from "../../lib/pack.js";
import { createSqsSender } from "../../lib/queue.js";
import { httpEvent, lambdaContext, sqsEvent, sqsRecord, usageEvent } from "../helpers/factories.js";
import { consumerEnv, usePipelineParts } from "../helpers/pipeline.js";
import { drain, drainDeadLetters, queueDepth, type ReceivedMessage } from "../helpers/sqs.js";

const KEY = "mh_test_pack_key";
const parts = usePipelineParts();
beforeEach(async () => {
  await drain(parts.queues.sqs, parts.queues.ingestQueueUrl);
  await drain(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
});

/** The HTTP API function as deployed, with METERHOOK_EVENTS_PER_MESSAGE set. */
async function httpApi(perMessage: number) {
  const config = loadConfig({
    METERHOOK_API_KEYS: KEY,
    METERHOOK_INGEST_QUEUE_URL: parts.queues.ingestQueueUrl,
    SQS_ENDPOINT: parts.queues.endpoint,
    METERHOOK_EVENTS_PER_MESSAGE: String(perMessage),
  });
  const api = await createIngestApiFromConfig(config, { sqs: parts.queues.sqs, logger: silentLogger });
  const handler = createHttpHandler(async () => api);
  return async (events: unknown[]) => {
    const res = await handler(
      httpEvent({
        body: JSON.stringify({ events }),
        headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      }),
    );
    return res.statusCode;
  };
}

/** The queue consumer function as deployed. */
function consumer(env: Record<string, string> = {}) {
  const config = loadConfig(
    consumerEnv(parts, {
      METERHOOK_CUSTOMERS: JSON.stringify({ acct_7: "cus_packmapped" }),
      METERHOOK_INGEST_QUEUE_URL: parts.queues.ingestQueueUrl,
      // A pack's events to retry are visible again at once (the stack waits 360 s).
      METERHOOK_PACK_RETRY_DELAY_SECONDS: "0",
      ...env,
    }),
  );
  return createQueueHandler(async () =>
    createConsumerFromConfig(config, { sqs: parts.queues.sqs, logger: silentLogger }),
  );
}

/** What Lambda's event source mapping hands the consumer for a message taken off the ingest queue. */
function asRecord(m: ReceivedMessage, receiveCount = 1, id = m.systemAttributes.MessageId ?? "pack"): SQSRecord {
  const r = sqsRecord(m.body, {
    ApproximateReceiveCount: String(receiveCount),
    SentTimestamp: m.systemAttributes.SentTimestamp,
  });
  r.messageId = id;
  r.messageAttributes = Object.fromEntries(
    Object.entries(m.attributes).map(([k, v]) => [k, { stringValue: v, dataType: "String" }]),
  ) as SQSRecord["messageAttributes"];
  return r;
}

const totalFor = (customer: string) =>
  parts.emulator.ledger.summaries().find((s) => s.customer === customer)?.aggregated_value ?? 0;
const receipts = (id: unknown) =>
  parts.emulator.ledger.receipts.get(meterEventIdentifier(id as string, "api_requests")) ?? 0;

describe("packBodies", () => {
  const events = (n: number, size = 10) =>
    Array.from({ length: n }, (_, i) => JSON.stringify({ id: `e${i}`, pad: "x".repeat(size) }));

  test("packs at most the given number of events, in order; an event left alone goes as itself", () => {
    const bodies = packBodies(events(201), 100);
    assert.equal(bodies.length, 3);
    const [a, b, c] = bodies.map((b) => JSON.parse(b));
    assert.equal(a.meterhook, PACK_FORMAT);
    assert.deepEqual(
      [...a.events, ...b.events].map((e: string) => JSON.parse(e).id),
      Array.from({ length: 200 }, (_, i) => `e${i}`),
    );
    assert.equal(c.id, "e200", "the 201st event is a plain one-event message");
  });

  test("one event per message (the default) leaves bodies as they are", () => {
    assert.deepEqual(packBodies(events(3), 1), events(3));
  });

  test("no pack is larger than MAX_PACK_BYTES, escapes counted", () => {
    // Quotes in the event's text are escaped inside the pack, growing it.
    const quoted = Array.from({ length: 100 }, (_, i) => JSON.stringify({ id: `q${i}`, pad: '"'.repeat(1_000) }));
    const bodies = packBodies(quoted, 100);
    assert.ok(bodies.length > 1);
    for (const b of bodies) assert.ok(Buffer.byteLength(b) <= MAX_PACK_BYTES, `${Buffer.byteLength(b)} bytes`);
    assert.equal(bodies.flatMap((b) => JSON.parse(b).events).length, 100);
  });

  test("a pack is exactly the JSON text JSON.stringify writes, escapes and history included", () => {
    const odd = [
      JSON.stringify({ id: 'q"1', name: "tab\there \\ back", emoji: "é🙂" }),
      JSON.stringify({ id: "q2", ctl: "\u0001\n" }),
    ];
    const [pack] = packBodies(odd, 100);
    assert.equal(pack, JSON.stringify({ meterhook: PACK_FORMAT, events: odd }));
    const retried = retryBody(
      odd.map((body, i) => ({
        messageId: `m#${i}`,
        body,
        receiveCount: 3,
        sentAt: 1_000,
        firstReceivedAt: 2_000,
        deferred: 4,
      })),
      true,
    );
    assert.equal(
      retried,
      JSON.stringify({
        meterhook: PACK_FORMAT,
        events: odd,
        attempts: 2,
        firstReceivedAt: 2_000,
        sentAt: 1_000,
        deferred: 5,
      }),
    );
  });

  test("an event too big to share a pack goes as a plain message between packs", () => {
    const big = JSON.stringify({ id: "big", pad: "x".repeat(MAX_PACK_BYTES) });
    const bodies = packBodies([...events(2), big, ...events(2)], 100);
    assert.equal(bodies.length, 3);
    assert.equal(bodies[1], big);
    assert.deepEqual(
      JSON.parse(bodies[0] as string).events.map((e: string) => JSON.parse(e).id),
      ["e0", "e1"],
    );
  });
});

describe("several events per ingest-queue message", () => {
  test("250 events in one request become 3 messages, and each event is billed once", async () => {
    const post = await httpApi(100);
    const events = Array.from({ length: 250 }, (_, i) =>
      usageEvent({ id: `pk_${i}`, customer: "cus_packa", value: 1 }),
    );
    assert.equal(await post(events), 202);
    const queued = await drain(parts.queues.sqs, parts.queues.ingestQueueUrl);
    assert.equal(queued.length, 3);
    assert.ok(
      queued.every((m) => m.attributes.correlation_id),
      "the request id follows every pack",
    );

    const res = await consumer()(sqsEvent(queued.map((m) => asRecord(m))), lambdaContext());
    assert.deepEqual(res.batchItemFailures, []);
    assert.equal(totalFor("cus_packa"), 250);
    assert.deepEqual(await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl), []);
  });

  test("each event of a pack that cannot be billed gets its own dead letter, as if sent alone", async () => {
    const post = await httpApi(100);
    const good = usageEvent({ customer: "acct_7", value: 2 });
    const unmapped = usageEvent({ id: "pk_unmapped", customer: "acct_missing" });
    assert.equal(await post([good, unmapped]), 202);
    const [pack] = await drain(parts.queues.sqs, parts.queues.ingestQueueUrl);
    assert.equal(JSON.parse(pack?.body ?? "{}").meterhook, PACK_FORMAT);

    const res = await consumer()(sqsEvent([asRecord(pack as ReceivedMessage)]), lambdaContext());
    assert.deepEqual(res.batchItemFailures, []);
    assert.equal(totalFor("cus_packmapped"), 2);
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(letters.length, 1);
    assert.equal(letters[0]?.error.code, "customer_not_found");
    assert.equal((letters[0]?.event as { id?: string } | undefined)?.id, "pk_unmapped");
    assert.equal(letters[0]?.attributes.event_id, "pk_unmapped");
  });

  test("v1: only a pack's event to retry goes back, as a smaller pack; the rest is billed or dead-lettered at once", async () => {
    const handle = consumer({ METERHOOK_STRIPE_API: "v1", STRIPE_MAX_ATTEMPTS: "1" });
    const post = await httpApi(100);
    const billed = usageEvent({ customer: "cus_packb", value: 5 });
    const flaky = usageEvent({ customer: "cus_packflaky", value: 7 });
    const unmapped = usageEvent({ id: "pk_unmapped_once", customer: "acct_missing" });
    assert.equal(await post([billed, flaky, unmapped]), 202);
    const [pack] = (await drain(parts.queues.sqs, parts.queues.ingestQueueUrl)) as [ReceivedMessage];
    parts.emulator.injectFaults({
      path: "/v1/billing/meter_events",
      bodyIncludes: "cus_packflaky",
      respond: { status: 503 },
    });

    const first = await handle(sqsEvent([asRecord(pack, 2)]), lambdaContext());
    assert.deepEqual(first.batchItemFailures, [], "the pack is done: its event to retry is queued again");
    assert.deepEqual([totalFor("cus_packb"), totalFor("cus_packflaky")], [5, 0]);
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.deepEqual(
      letters.map((l) => [l.error.code, (l.event as { id: string }).id, l.attempts]),
      [["customer_not_found", "pk_unmapped_once", 2]],
    );
    const [retry, ...others] = await drain(parts.queues.sqs, parts.queues.ingestQueueUrl);
    assert.deepEqual(others, []);
    const body = JSON.parse(retry?.body ?? "{}");
    assert.deepEqual(
      body.events.map((e: string) => JSON.parse(e).id),
      [flaky.id],
    );
    assert.equal(body.attempts, 2, "the pack's deliveries so far go along");
    assert.equal(retry?.attributes.correlation_id, pack.attributes.correlation_id);

    const second = await handle(sqsEvent([asRecord(retry as ReceivedMessage)]), lambdaContext());
    assert.deepEqual(second.batchItemFailures, []);
    assert.deepEqual([totalFor("cus_packb"), totalFor("cus_packflaky")], [5, 7]);
    assert.equal(receipts(billed.id), 1, "the billed event was not sent again");
    assert.deepEqual(await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl), []);
  });

  test("a pack whose every event is to retry goes back whole, nothing queued in its place", async () => {
    const handle = consumer({ STRIPE_MAX_ATTEMPTS: "1" });
    const post = await httpApi(100);
    assert.equal(await post([usageEvent({ customer: "cus_packall" }), usageEvent({ customer: "cus_packall" })]), 202);
    const [pack] = (await drain(parts.queues.sqs, parts.queues.ingestQueueUrl)) as [ReceivedMessage];
    parts.emulator.injectFaults({ path: "/v2/billing/meter_event_stream", respond: { status: 503 } });
    const res = await handle(sqsEvent([asRecord(pack)]), lambdaContext());
    assert.deepEqual(res.batchItemFailures, [{ itemIdentifier: asRecord(pack).messageId }]);
    assert.deepEqual(await drain(parts.queues.sqs, parts.queues.ingestQueueUrl), []);
    assert.deepEqual(await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl), []);
  });

  test("when the events to retry cannot be queued, the whole pack goes back and its billed event is deduplicated", async () => {
    const handle = consumer({
      METERHOOK_STRIPE_API: "v1",
      STRIPE_MAX_ATTEMPTS: "1",
      METERHOOK_INGEST_QUEUE_URL: parts.queues.ingestQueueUrl.replace("meterhook-ingest", "no-such-queue"),
    });
    const post = await httpApi(100);
    const billed = usageEvent({ customer: "cus_packc", value: 2 });
    const flaky = usageEvent({ customer: "cus_packflaky2", value: 3 });
    assert.equal(await post([billed, flaky]), 202);
    const [pack] = (await drain(parts.queues.sqs, parts.queues.ingestQueueUrl)) as [ReceivedMessage];
    parts.emulator.injectFaults({
      path: "/v1/billing/meter_events",
      bodyIncludes: "cus_packflaky2",
      respond: { status: 503 },
    });

    const first = await handle(sqsEvent([asRecord(pack, 1)]), lambdaContext());
    assert.deepEqual(first.batchItemFailures, [{ itemIdentifier: asRecord(pack).messageId }]);
    const second = await handle(sqsEvent([asRecord(pack, 2)]), lambdaContext());
    assert.deepEqual(second.batchItemFailures, []);
    assert.deepEqual([totalFor("cus_packc"), totalFor("cus_packflaky2")], [2, 3]);
    assert.equal(receipts(billed.id), 2, "sent again with the pack and recognised by Stripe as a repeat");
  });

  test("a pack's events to retry carry its history: METERHOOK_MAX_ATTEMPTS counts every delivery", async () => {
    const handle = consumer({ METERHOOK_STRIPE_API: "v1", STRIPE_MAX_ATTEMPTS: "1", METERHOOK_MAX_ATTEMPTS: "3" });
    const post = await httpApi(100);
    const billed = usageEvent({ customer: "cus_packd", value: 1 });
    const failing = usageEvent({ id: "pk_exhausted", customer: "cus_packdown" });
    assert.equal(await post([billed, failing]), 202);
    const [pack] = (await drain(parts.queues.sqs, parts.queues.ingestQueueUrl)) as [ReceivedMessage];
    const firstReceived = Date.now() - 60_000;
    const record = asRecord(pack, 2);
    record.attributes.ApproximateFirstReceiveTimestamp = String(firstReceived);
    parts.emulator.injectFaults({
      path: "/v1/billing/meter_events",
      bodyIncludes: "cus_packdown",
      respond: { status: 503 },
      times: 2,
    });
    assert.deepEqual((await handle(sqsEvent([record]), lambdaContext())).batchItemFailures, []);
    const [retry] = (await drain(parts.queues.sqs, parts.queues.ingestQueueUrl)) as [ReceivedMessage];
    // Its third delivery: two of the pack, one of its own.
    assert.deepEqual((await handle(sqsEvent([asRecord(retry, 1)]), lambdaContext())).batchItemFailures, []);
    assert.equal(totalFor("cus_packd"), 1);
    const [letter, ...rest] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.deepEqual(rest, []);
    assert.equal(letter?.error.code, "retries_exhausted");
    assert.equal((letter?.event as { id?: string } | undefined)?.id, "pk_exhausted");
    assert.equal(letter?.attempts, 3);
    assert.equal(letter?.firstFailedAt, new Date(firstReceived).toISOString());
    assert.equal(letter?.stripeMayHaveRecorded, true);
    assert.deepEqual(await drain(parts.queues.sqs, parts.queues.ingestQueueUrl), []);
  });

  test("events an invocation had no time to send go back without spending an attempt", async () => {
    const post = await httpApi(100);
    const events = [usageEvent({ customer: "cus_packlater", value: 2 }), usageEvent({ customer: "cus_packlater" })];
    assert.equal(await post(events), 202);
    const [pack] = (await drain(parts.queues.sqs, parts.queues.ingestQueueUrl)) as [ReceivedMessage];
    const before = parts.emulator.requests.length;
    // Its last attempt by METERHOOK_MAX_ATTEMPTS, with too little time left to start anything.
    const late = consumer({ METERHOOK_MAX_ATTEMPTS: "3", METERHOOK_STOP_MARGIN_MS: "5000" });
    const res = await late(sqsEvent([asRecord(pack, 3)]), lambdaContext(1_000));
    assert.deepEqual(res.batchItemFailures, []);
    assert.equal(parts.emulator.requests.length, before);
    assert.deepEqual(
      await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl),
      [],
      "not retries_exhausted",
    );
    const [retry] = (await drain(parts.queues.sqs, parts.queues.ingestQueueUrl)) as [ReceivedMessage];
    const body = JSON.parse(retry.body);
    assert.deepEqual(
      [body.events.length, body.attempts, body.deferred],
      [2, 2, 1],
      "two attempts spent, this delivery not counted",
    );

    const res2 = await consumer({ METERHOOK_MAX_ATTEMPTS: "3" })(sqsEvent([asRecord(retry)]), lambdaContext());
    assert.deepEqual(res2.batchItemFailures, []);
    assert.equal(totalFor("cus_packlater"), 5);
  });

  test("v1: an event the submitter had no time to send is deferred, the one sent before it billed", async () => {
    const post = await httpApi(100);
    const first = usageEvent({ customer: "cus_packslow", value: 1 });
    const second = usageEvent({ customer: "cus_packslow", value: 10 });
    assert.equal(await post([first, second]), 202);
    const [pack] = (await drain(parts.queues.sqs, parts.queues.ingestQueueUrl)) as [ReceivedMessage];
    // One lane (same customer and meter): the first answer takes 3 s of the invocation's 6, so
    // less than the 4 s stop margin is left for the second. Slack either way for a slow machine:
    // the first call may start up to 2 s late, and its answer may come up to 3 s late.
    parts.emulator.injectFaults({ path: "/v1/billing/meter_events", delayMs: 3_000 });
    const handle = consumer({ METERHOOK_STRIPE_API: "v1", METERHOOK_STOP_MARGIN_MS: "4000" });
    const res = await handle(sqsEvent([asRecord(pack, 2)]), lambdaContext(6_000));
    assert.deepEqual(res.batchItemFailures, []);
    assert.equal(totalFor("cus_packslow"), 1);
    assert.equal(receipts(second.id), 0);
    const [retry] = (await drain(parts.queues.sqs, parts.queues.ingestQueueUrl)) as [ReceivedMessage];
    const body = JSON.parse(retry.body);
    assert.deepEqual(
      [body.events.map((e: string) => JSON.parse(e).id), body.attempts, body.deferred],
      [[second.id], 1, 1],
    );
  });

  test("without the ingest queue to defer through, the last attempt with no time left is retries_exhausted", async () => {
    const event = usageEvent({ id: "pk_no_requeue", customer: "cus_packnoqueue" });
    const pack = { meterhook: PACK_FORMAT, events: [JSON.stringify(event), JSON.stringify(usageEvent())] };
    const late = consumer({
      METERHOOK_MAX_ATTEMPTS: "3",
      METERHOOK_STOP_MARGIN_MS: "5000",
      METERHOOK_INGEST_QUEUE_URL: undefined as unknown as string,
    });
    const res = await late(sqsEvent([sqsRecord(pack, { ApproximateReceiveCount: "3" })]), lambdaContext(1_000));
    assert.deepEqual(res.batchItemFailures, []);
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.deepEqual(
      letters.map((l) => l.error.code),
      ["retries_exhausted", "retries_exhausted"],
    );
  });

  test("uncounted deliveries are bounded: past MAX_DEFERRED they count, and attempts run out", async () => {
    const event = usageEvent({ id: "pk_deferred_max", customer: "cus_packnever" });
    const now = Date.now();
    const retry = {
      meterhook: PACK_FORMAT,
      events: [JSON.stringify(event)],
      attempts: 2,
      firstReceivedAt: now - 60_000,
      sentAt: now - 60_000,
      deferred: MAX_DEFERRED,
    };
    const late = consumer({ METERHOOK_MAX_ATTEMPTS: "3", METERHOOK_STOP_MARGIN_MS: "5000" });
    const res = await late(sqsEvent([sqsRecord(retry)]), lambdaContext(1_000));
    assert.deepEqual(res.batchItemFailures, []);
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.deepEqual(
      letters.map((l) => [l.error.code, (l.event as { id: string }).id, l.attempts]),
      [["retries_exhausted", "pk_deferred_max", 3]],
    );
    assert.deepEqual(await drain(parts.queues.sqs, parts.queues.ingestQueueUrl), []);
  });

  test("with pre-aggregation on, a pack's events are sent as they are, never combined", async () => {
    const handle = consumer({ METERHOOK_AGGREGATE: JSON.stringify({ api_requests: "sum" }) });
    const post = await httpApi(100);
    const events = Array.from({ length: 3 }, () => usageEvent({ customer: "cus_packagg", value: 2 }));
    assert.equal(await post(events), 202);
    const queued = await drain(parts.queues.sqs, parts.queues.ingestQueueUrl);
    const res = await handle(sqsEvent(queued.map((m) => asRecord(m))), lambdaContext());
    assert.deepEqual(res.batchItemFailures, []);
    assert.equal(totalFor("cus_packagg"), 6);
    assert.deepEqual(
      events.map((e) => receipts(e.id)),
      [1, 1, 1],
    );
  });

  test("a pack delivered again more than 23 h after its first delivery is dead-lettered event by event, unsent", async () => {
    const post = await httpApi(100);
    const events = [usageEvent({ customer: "cus_packlate" }), usageEvent({ customer: "cus_packlate" })];
    assert.equal(await post(events), 202);
    const [pack] = (await drain(parts.queues.sqs, parts.queues.ingestQueueUrl)) as [ReceivedMessage];
    const record = asRecord(pack, 2);
    record.attributes.ApproximateFirstReceiveTimestamp = String(Date.now() - 24 * 3_600_000);
    const before = parts.emulator.requests.length;
    const res = await consumer()(sqsEvent([record]), lambdaContext());
    assert.deepEqual(res.batchItemFailures, []);
    assert.equal(parts.emulator.requests.length, before);
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.deepEqual(
      letters.map((l) => [l.error.code, (l.event as { id: string }).id, l.stripeMayHaveRecorded]).sort(),
      events.map((e) => ["dedupe_window_passed", e.id, true]).sort(),
    );
  });

  test("so are a pack's events to retry whose first delivery was more than 23 h ago, on their first delivery", async () => {
    const event = usageEvent({ id: "pk_late_retry", customer: "cus_packlate" });
    const dayAgo = Date.now() - 24 * 3_600_000;
    const retry = {
      meterhook: PACK_FORMAT,
      events: [JSON.stringify(event)],
      attempts: 1,
      firstReceivedAt: dayAgo,
      sentAt: dayAgo,
    };
    const before = parts.emulator.requests.length;
    const res = await consumer()(sqsEvent([sqsRecord(retry)]), lambdaContext());
    assert.deepEqual(res.batchItemFailures, []);
    assert.equal(parts.emulator.requests.length, before);
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.deepEqual(
      letters.map((l) => [l.error.code, (l.event as { id: string }).id, l.attempts]),
      [["dedupe_window_passed", "pk_late_retry", 2]],
    );
  });

  test("a pack that cannot be read is dead-lettered whole as invalid_message, with why", async () => {
    const tooMany = { meterhook: PACK_FORMAT, events: Array.from({ length: 101 }, () => JSON.stringify(usageEvent())) };
    const notStrings = { meterhook: PACK_FORMAT, events: [JSON.stringify(usageEvent()), usageEvent()] };
    const notJson = `{"meterhook":"${PACK_FORMAT}","events":["{}"`;
    const badHistory = { meterhook: PACK_FORMAT, events: [JSON.stringify(usageEvent())], attempts: -1 };
    const before = parts.emulator.requests.length;
    const res = await consumer()(
      sqsEvent([sqsRecord(tooMany), sqsRecord(notStrings), sqsRecord(notJson), sqsRecord(badHistory)]),
      lambdaContext(),
    );
    assert.deepEqual(res.batchItemFailures, []);
    assert.equal(parts.emulator.requests.length, before, "no event of a pack that cannot be read is sent");
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    const byEvent = (e: unknown) => letters.find((l) => JSON.stringify(l.event) === JSON.stringify(e));
    for (const body of [tooMany, notStrings]) {
      assert.equal(byEvent(body)?.error.code, "invalid_message");
      assert.match(byEvent(body)?.error.message ?? "", /not a valid pack\/1 message: events must be 1 to 100 strings/);
    }
    assert.deepEqual(
      [byEvent(notJson)?.error.code, byEvent(notJson)?.error.message],
      ["invalid_message", "pack/1 message body is not valid JSON"],
    );
    assert.equal(byEvent(badHistory)?.error.code, "invalid_message");
    assert.match(byEvent(badHistory)?.error.message ?? "", /attempts, firstReceivedAt, sentAt and deferred must be/);
    assert.equal(letters.length, 4);
  });

  test("a pack that does not start exactly as packs do is refused with the start it needs, not taken for an event", async () => {
    // As Python's json.dumps writes it: spaces after the separators.
    const spaced = `{"meterhook": "${PACK_FORMAT}", "events": [${JSON.stringify(JSON.stringify(usageEvent()))}]}`;
    const before = parts.emulator.requests.length;
    const res = await consumer()(sqsEvent([sqsRecord(spaced)]), lambdaContext());
    assert.deepEqual(res.batchItemFailures, []);
    assert.equal(parts.emulator.requests.length, before);
    const [letter, ...rest] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.deepEqual(rest, []);
    assert.equal(letter?.error.code, "invalid_message");
    assert.match(letter?.error.message ?? "", /must start exactly with \{"meterhook":"pack\/1","events":\[/);
  });

  test("replay takes a pack the redrive policy moved to the DLQ and bills each event", async () => {
    const post = await httpApi(100);
    const events = [usageEvent({ customer: "cus_packmoved", value: 4 }), usageEvent({ customer: "cus_packmoved" })];
    assert.equal(await post(events), 202);
    const [pack] = (await drain(parts.queues.sqs, parts.queues.ingestQueueUrl)) as [ReceivedMessage];
    // As the redrive policy moves it: the raw message, no envelope.
    const dlq = createSqsSender(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.deepEqual(await dlq.send([{ key: "0", body: pack.body }]), { failed: [] });

    const report = await replayFromConfig(
      loadConfig(consumerEnv(parts)),
      { limit: 10, dryRun: false },
      { sqs: parts.queues.sqs, logger: silentLogger },
    );
    assert.equal(report.examined, 1);
    assert.equal(report.billed, 2);
    assert.equal(totalFor("cus_packmoved"), 7);
    assert.deepEqual(await drain(parts.queues.sqs, parts.queues.deadLetterQueueUrl), []);
  });
  test("replay leaves a pack whose dead letter cannot be written on the DLQ whole, nothing queued elsewhere", async () => {
    const post = await httpApi(100);
    const events = [usageEvent({ customer: "cus_packreplay" }), usageEvent({ customer: "acct_missing" })];
    assert.equal(await post(events), 202);
    const [pack] = (await drain(parts.queues.sqs, parts.queues.ingestQueueUrl)) as [ReceivedMessage];
    const dlq = createSqsSender(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.deepEqual(await dlq.send([{ key: "0", body: pack.body }]), { failed: [] });
    // The DLQ takes no writes (its reads work): the unmapped event's letter cannot be written.
    const sqs = new SQSClient({
      endpoint: parts.queues.endpoint,
      region: "us-east-1",
      credentials: { accessKeyId: "t", secretAccessKey: "t" },
    });
    sqs.middlewareStack.add(
      (next, context) => async (args) => {
        const url = (args.input as { QueueUrl?: string }).QueueUrl;
        if (context.commandName === "SendMessageBatchCommand" && url === parts.queues.deadLetterQueueUrl)
          throw Object.assign(new Error("DLQ unavailable (test)"), { name: "ServiceUnavailable" });
        return next(args);
      },
      { step: "initialize", name: "failDlqWrites" },
    );
    try {
      const report = await replayFromConfig(
        loadConfig(consumerEnv(parts, { METERHOOK_INGEST_QUEUE_URL: parts.queues.ingestQueueUrl })),
        { limit: 10, dryRun: false },
        { sqs, logger: silentLogger },
      );
      assert.equal(report.leftUntouched, 1);
    } finally {
      sqs.destroy();
    }
    assert.deepEqual(await drain(parts.queues.sqs, parts.queues.ingestQueueUrl), []);
    // Still on the DLQ, in flight until replay's visibility timeout ends.
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 1);
  });
});
