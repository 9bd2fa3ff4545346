import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { parse as parseYaml } from "yaml";
import { createQueueHandler } from "../../functions/ingest-queue.js";
import { createConsumerFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import { processBatch } from "../../lib/consumer.js";
import { CustomerResolver } from "../../lib/customers.js";
import { createLogger, silentLogger } from "../../lib/logger.js";
import { meterEventIdentifier } from "../../lib/meter-event.js";
import { MetricsRecorder } from "../../lib/metrics.js";
import { lambdaContext, queueMessage, sqsEvent, sqsRecord, usageEvent } from "../helpers/factories.js";
import { loadTrigger } from "../helpers/fixtures.js";
import { consumerEnv, usePipelineParts } from "../helpers/pipeline.js";
import { drainDeadLetters } from "../helpers/sqs.js";

const parts = usePipelineParts();

/** The queue handler as Lambda runs it, on config from an environment like the deployed one. */
function handlerWith(env: Record<string, string> = {}) {
  const config = loadConfig(
    consumerEnv(parts, { METERHOOK_CUSTOMERS: JSON.stringify({ acct_42: "cus_mapped42" }), ...env }),
  );
  const consumer = createConsumerFromConfig(config, { sqs: parts.queues.sqs, logger: silentLogger });
  return createQueueHandler(() => consumer);
}

const totalFor = (customer: string, eventName = "api_requests") =>
  parts.emulator.ledger.summaries().find((s) => s.customer === customer && s.event_name === eventName)
    ?.aggregated_value ?? 0;

describe("ingest-queue handler", () => {
  test("a batch with mixed outcomes reports exactly the transient failures and dead-letters the rest", async () => {
    const handler = handlerWith({ METERHOOK_STRIPE_API: "v1", STRIPE_CONCURRENCY: "1", STRIPE_MAX_ATTEMPTS: "2" });
    const transient = sqsRecord(usageEvent({ customer: "cus_transient" }));
    const mappedEvent = usageEvent({ customer: "acct_42", value: 7 });
    const mapped = sqsRecord(mappedEvent);
    const redelivered = sqsRecord(mappedEvent);
    const unmapped = sqsRecord(usageEvent({ id: "evt_unmapped", customer: "acct_404" }));
    const notJson = sqsRecord("{not json");
    const invalid = sqsRecord({ id: "evt_invalid", customer: "cus_1" });
    const tooOld = sqsRecord(usageEvent({ id: "evt_old", timestamp: Math.floor(Date.now() / 1000) - 40 * 86_400 }));
    const badValue = sqsRecord(usageEvent({ id: "evt_digits", value: 0.1 + 0.2 }));
    // The first event sent (the transient one; one lane at a time) fails on both attempts.
    parts.emulator.injectFaults({ path: "/v1/billing/meter_events", respond: { status: 503 }, times: 2 });

    const res = await handler(
      sqsEvent([transient, mapped, unmapped, notJson, invalid, tooOld, badValue, redelivered]),
      lambdaContext(),
    );

    assert.deepEqual(res.batchItemFailures, [{ itemIdentifier: transient.messageId }]);
    assert.equal(totalFor("cus_mapped42"), 7, "billed once although delivered twice in the batch");
    assert.equal(totalFor("cus_transient"), 0);
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    const byCode = Object.fromEntries(letters.map((l) => [l.error.code, l]));
    assert.deepEqual(Object.keys(byCode).sort(), [
      "customer_not_found",
      "invalid_event",
      "invalid_message",
      "invalid_value",
      "timestamp_out_of_range",
    ]);
    assert.equal(letters.length, 5);
    assert.equal(byCode.invalid_message?.event, "{not json");
    assert.deepEqual((byCode.customer_not_found?.event as { id?: string } | undefined)?.id, "evt_unmapped");
    assert.match(byCode.customer_not_found?.error.message ?? "", /acct_404/);
    assert.equal(byCode.invalid_event?.attributes.code, "invalid_event");
    assert.equal(byCode.invalid_event?.attributes.event_id, "evt_invalid");
    for (const l of letters) {
      assert.equal(l.attempts, 1);
      assert.ok(Date.parse(l.firstFailedAt) <= Date.parse(l.lastFailedAt));
    }
  });

  for (const api of ["v1", "v2"]) {
    test(`${api}: events as the HTTP API queues them (ISO timestamps over several seconds, properties) reach Stripe as sent`, async () => {
      const handler = handlerWith({ METERHOOK_STRIPE_API: api });
      const now = Math.floor(Date.now() / 1000);
      // Interleaved seconds, 64 apart too (they share a slot of the ISO cache), with and without properties.
      const offsets = [120, 184, 120, 121, 185, 184];
      const events = offsets.map((ago, i) =>
        usageEvent({
          customer: "cus_queuedshape",
          value: i + 1,
          timestamp: new Date((now - ago) * 1000).toISOString(),
          ...(i % 2 ? { properties: { region: "eu-west-1", weight: 2.5 } } : {}),
        }),
      );
      const res = await handler(sqsEvent(events.map((e) => sqsRecord(e))), lambdaContext());
      assert.deepEqual(res.batchItemFailures, []);
      for (const [i, e] of events.entries()) {
        const identifier = meterEventIdentifier(e.id as string, "api_requests");
        const got = parts.emulator.ledger.events.find((r) => r.identifier === identifier);
        assert.equal(got?.timestamp, now - (offsets[i] as number), `timestamp of event ${i}`);
        assert.deepEqual(
          { ...got?.payload },
          {
            ...(i % 2 ? { region: "eu-west-1", weight: "2.5" } : {}),
            stripe_customer_id: "cus_queuedshape",
            value: String(i + 1),
          },
        );
      }
    });

    test(`${api}: text that is not well-formed Unicode (a lone surrogate) is dead-lettered, and the rest billed`, async () => {
      const handler = handlerWith({ METERHOOK_STRIPE_API: api });
      const customer = `cus_surrogate_${api}`;
      const good = sqsRecord(usageEvent({ customer, value: 3 }));
      // JSON escapes decode to a lone surrogate: valid JSON, but no UTF-8 encodes it.
      const inProperty = sqsRecord(
        `{"id":"evt_lone_prop_${api}","event_name":"api_requests","customer":"${customer}","properties":{"region":"eu\\ud800"}}`,
      );
      const inId = sqsRecord(`{"id":"evt_lone_\\udfff_${api}","event_name":"api_requests","customer":"${customer}"}`);

      const res = await handler(sqsEvent([good, inProperty, inId]), lambdaContext());

      assert.deepEqual(res.batchItemFailures, []);
      assert.equal(totalFor(customer), 3);
      const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
      assert.deepEqual(letters.map((l) => [l.error.code, l.error.message.split(":")[0]]).sort(), [
        ["invalid_event", "id"],
        ["invalid_event", "properties.region"],
      ]);
      for (const l of letters) assert.match(l.error.message, /well-formed Unicode/);
    });
  }

  for (const [client, env] of [
    ["wire (default)", {}],
    ["undici", { STRIPE_HTTP_CLIENT: "undici" }],
    ["undici, pipelined", { STRIPE_PIPELINING: "4" }],
  ] as const) {
    for (const api of ["v1", "v2"] as const) {
      test(`${api} on the ${client} HTTP client: the batch is billed, each event once`, async () => {
        const handler = handlerWith({ METERHOOK_STRIPE_API: api, ...env });
        const customer = `cus_client_${api}_${client.replace(/\W+/g, "_")}`;
        const events = [2, 5].map((value) => usageEvent({ customer, value }));
        const res = await handler(sqsEvent([...events, events[0]].map((e) => sqsRecord(e))), lambdaContext());
        assert.deepEqual(res.batchItemFailures, []);
        assert.equal(totalFor(customer), 7);
      });
    }
  }

  test("the stack's v2 batch (STRIPE_CONCURRENCY x 100 messages) goes as that many full stream requests at once", async () => {
    const handler = handlerWith();
    const { stripe } = loadConfig({});
    const size = stripe.concurrency * stripe.streamBatchSize;
    const customer = "cus_wave";
    const records = Array.from({ length: size }, (_, i) => sqsRecord(usageEvent({ customer, value: 1 + (i % 3) })));
    const stream = "/v2/billing/meter_event_stream";
    const streamRequests = () => parts.emulator.requests.filter((r) => r.path === stream).length;
    const before = streamRequests();
    // Each answer held long enough that requests sent together are all held together.
    parts.emulator.injectFaults({ path: stream, delayMs: 200, times: stripe.concurrency });
    parts.emulator.peakInFlight = 0;

    const res = await handler(sqsEvent(records), lambdaContext());

    assert.deepEqual(res.batchItemFailures, []);
    assert.equal(streamRequests() - before, stripe.concurrency);
    assert.equal(parts.emulator.peakInFlight, stripe.concurrency);
    const expected = records.reduce((sum, _, i) => sum + 1 + (i % 3), 0);
    assert.equal(totalFor(customer), expected);
  });

  test("an invocation about to time out starts nothing: every message is left on the queue", async () => {
    const handler = handlerWith({ METERHOOK_STOP_MARGIN_MS: "5000" });
    // One plain canonical body (read without JSON.parse), one with properties (the general path).
    const plain = sqsRecord(usageEvent({ id: "evt_late_plain", customer: "cus_late" }));
    const general = sqsRecord(usageEvent({ id: "evt_late_props", customer: "cus_late", properties: { a: "b" } }));
    const res = await handler(sqsEvent([plain, general]), lambdaContext(1_000));
    assert.deepEqual(res.batchItemFailures, [
      { itemIdentifier: plain.messageId },
      { itemIdentifier: general.messageId },
    ]);
    assert.equal(totalFor("cus_late"), 0);
    assert.deepEqual(await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl), []);
  });

  test("the default event time is when SQS received the message", async () => {
    const handler = handlerWith();
    const sent = Date.now() - 120_000;
    const event = usageEvent({ customer: "cus_sentts" });
    await handler(sqsEvent([sqsRecord(event, { SentTimestamp: String(sent) })]), lambdaContext());
    const got = parts.emulator.ledger.events.find(
      (e) => e.identifier === meterEventIdentifier(event.id as string, "api_requests"),
    );
    assert.equal(got?.timestamp, Math.floor(sent / 1000));
  });

  test("a duplicate delivery in a later invocation is billed once", async () => {
    const handler = handlerWith();
    const event = usageEvent({ customer: "cus_dupe", value: 5 });
    const first = await handler(sqsEvent([sqsRecord(event)]), lambdaContext());
    const second = await handler(sqsEvent([sqsRecord(event, { ApproximateReceiveCount: "2" })]), lambdaContext());
    assert.deepEqual([first.batchItemFailures, second.batchItemFailures], [[], []]);
    assert.equal(totalFor("cus_dupe"), 5);
  });

  test("an event is billed once whether its body takes the plain-shape reader or the general parser", async () => {
    // The plain shape's identifiers are hashed in a pass of their own (lib/prepare.ts
    // prepareAll); the same event written with spaces takes JSON.parse and toMeterEvent's hash.
    const handler = handlerWith();
    const event = usageEvent({ customer: "cus_twoshapes", value: 4 });
    const plain = await handler(sqsEvent([sqsRecord(event)]), lambdaContext());
    const spaced = await handler(sqsEvent([sqsRecord(JSON.stringify(event, null, 2))]), lambdaContext());
    assert.deepEqual([plain.batchItemFailures, spaced.batchItemFailures], [[], []]);
    const identifier = meterEventIdentifier(event.id as string, "api_requests");
    assert.equal(parts.emulator.ledger.events.filter((e) => e.identifier === identifier).length, 1);
    assert.equal(totalFor("cus_twoshapes"), 4);
  });

  test("a message whose JSON follows a byte order mark is billed, not dead-lettered as invalid_message", async () => {
    const handler = handlerWith();
    const event = usageEvent({ customer: "cus_bom", value: 6 });
    const res = await handler(sqsEvent([sqsRecord(`\ufeff${JSON.stringify(event)}`)]), lambdaContext());
    assert.deepEqual(res.batchItemFailures, []);
    assert.equal(totalFor("cus_bom"), 6);
    assert.deepEqual(await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl), []);
  });

  test("an SNS subscription confirmation is dead-lettered invalid_message, saying to confirm it", async () => {
    const handler = handlerWith();
    const confirmation = {
      Type: "SubscriptionConfirmation",
      MessageId: "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
      Token: "2336412f37",
      TopicArn: "arn:aws:sns:us-east-1:210987654321:usage",
      Message: "You have chosen to subscribe to the topic arn:aws:sns:us-east-1:210987654321:usage.",
      SubscribeURL: "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336412f37",
      Timestamp: "2026-11-29T10:58:06.400Z",
    };
    const res = await handler(sqsEvent([sqsRecord(confirmation)]), lambdaContext());
    assert.deepEqual(res.batchItemFailures, []);
    const [letter] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(letter?.error.code, "invalid_message");
    assert.match(
      letter?.error.message ?? "",
      /SubscriptionConfirmation .* confirm the subscription by opening the SubscribeURL/,
    );
    assert.equal((letter?.event as { SubscribeURL?: string } | undefined)?.SubscribeURL, confirmation.SubscribeURL);
  });

  test("a batch's second event with an identifier already in it counts as already billed; with other contents it is logged", async () => {
    const consumer = await createConsumerFromConfig(loadConfig(consumerEnv(parts)), {
      sqs: parts.queues.sqs,
      logger: silentLogger,
    });
    const lines: string[] = [];
    const metrics = new MetricsRecorder();
    const event = usageEvent({ customer: "cus_reused", value: 2, timestamp: Math.floor(Date.now() / 1000) - 30 });
    const messages = [
      queueMessage(event),
      queueMessage(event), // SQS delivered it twice
      queueMessage({ ...event, value: 9 }), // the app reused the id for other usage
    ];
    const result = await processBatch(messages, Date.now() + 30_000, {
      ...consumer.deps,
      logger: createLogger({ write: (line) => lines.push(line) }),
      metrics,
    });
    await consumer.close();

    assert.deepEqual([result.billed, result.duplicates, result.failedMessageIds], [3, 2, []]);
    assert.equal(totalFor("cus_reused"), 2, "Stripe got the first only");
    const counted = (name: string) => metrics.drain().find((p) => p.name === name)?.values[0];
    assert.equal(counted("EventsAlreadyBilled"), 2);
    const warnings = lines.map((l) => JSON.parse(l)).filter((l) => l.level === "warn");
    assert.deepEqual(
      warnings.map((w) => [w.messageId, w.identifier]),
      [[messages[2]?.messageId, meterEventIdentifier(event.id as string, "api_requests")]],
      "only the copy with another value is logged",
    );
  });

  test("triggers no rule matched are counted by source, in the metric and the batch's log", async () => {
    // A sender that renames a field its rules' `when` reads is ignored from then on: only these
    // counts show it, so they say which source.
    const consumer = await createConsumerFromConfig(
      loadConfig(consumerEnv(parts, { METERHOOK_CONFIG: "examples/sqs-app-messages.yaml" })),
      { sqs: parts.queues.sqs, logger: silentLogger },
    );
    const lines: string[] = [];
    const metrics = new MetricsRecorder();
    const renamed = { kind: "storage.snapshot", tenant: "tenant-42", day: "d1", bytes: 1 };
    const messages = [queueMessage(renamed), queueMessage({ ...renamed, day: "d2" })];
    const result = await processBatch(messages, Date.now() + 30_000, {
      ...consumer.deps,
      logger: createLogger({ level: "debug", write: (line) => lines.push(line) }),
      metrics,
    });
    await consumer.close();

    assert.deepEqual([result.ignored, result.ignoredBySource], [2, { storage: 2 }]);
    const points = metrics.drain().filter((p) => p.name === "EventsIgnored");
    assert.deepEqual(
      points.map((p) => [p.dimensions, p.values[0]]),
      [
        [{}, 2],
        [{ source: "storage" }, 2],
      ],
    );
    const ignored = lines.map((l) => JSON.parse(l)).filter((l) => l.message.startsWith("trigger ignored"));
    assert.deepEqual(
      ignored.map((l) => [l.level, l.source, l.messageId]),
      messages.map((m) => ["debug", "storage", m.messageId]),
    );
  });

  test("a trigger billed in part is counted as such beside its dead letter, in the metric and the batch's log", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mh-part-"));
    const config = parseYaml(readFileSync("examples/usage-batch.yaml", "utf8"));
    config.sources["usage-batch"].customer.table = { acct_1001: "cus_InPart1001" };
    writeFileSync(join(dir, "config.json"), JSON.stringify(config));
    const lines: string[] = [];
    const metrics = new MetricsRecorder();
    const consumer = await createConsumerFromConfig(
      loadConfig(consumerEnv(parts, { METERHOOK_CONFIG: join(dir, "config.json") })),
      { sqs: parts.queues.sqs, logger: createLogger({ write: (line) => lines.push(line) }), metrics },
    );
    const trigger = (body: unknown) => ({
      meterhook: "trigger/1",
      kind: "webhook",
      source: "usage-batch",
      receivedAt: new Date().toISOString(),
      headers: {},
      body: JSON.stringify(body),
    });
    const batch = loadTrigger("usage-batch.json") as { records: Array<{ account: string }> };
    const messages = [
      queueMessage(trigger(batch)), // acct_1001's records billed, acct_1002's not
      queueMessage(
        trigger({ ...batch, batch_id: "b-none", records: batch.records.filter((r) => r.account !== "acct_1001") }),
      ),
    ];
    const result = await consumer.process(messages, Date.now() + 30_000);
    await consumer.close();
    await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);

    assert.deepEqual([result.billed, result.billedInPart, result.deadLettered], [0, 1, { customer_not_found: 2 }]);
    const counted = metrics.drain();
    const value = (name: string) => counted.find((p) => p.name === name && !p.dimensions.code)?.values[0];
    assert.equal(value("EventsBilledInPart"), 1);
    assert.equal(counted.find((p) => p.name === "EventsDeadLettered")?.values[0], 2);
    const done = lines.map((l) => JSON.parse(l)).find((l) => l.message === "batch done");
    assert.equal(done?.billedInPart, 1);
  });

  test("plain events whose customers need a lookup over I/O each keep their own identifier", async () => {
    // A lookup with no synchronous answer (as an HTTP one would be) sends plain events down
    // the awaited path, which reuses the identifiers prepareAll hashed, index for index.
    const consumer = await createConsumerFromConfig(loadConfig(consumerEnv(parts)), {
      sqs: parts.queues.sqs,
      logger: silentLogger,
    });
    const resolver = new CustomerResolver([
      { name: "slow-table", resolve: async (c) => (c === "acct_slow" ? "cus_slowlookup" : undefined) },
    ]);
    const events = [usageEvent({ customer: "acct_slow", value: 2 }), usageEvent({ customer: "acct_slow", value: 5 })];
    const result = await processBatch(
      events.map((e) => queueMessage(e)),
      Date.now() + 30_000,
      { ...consumer.deps, resolver },
    );
    await consumer.close();
    assert.equal(result.billed, 2);
    for (const e of events) {
      const identifier = meterEventIdentifier(e.id as string, "api_requests");
      assert.deepEqual(
        parts.emulator.ledger.events.filter((x) => x.identifier === identifier).map((x) => x.payload.value),
        [String(e.value)],
      );
    }
    assert.equal(totalFor("cus_slowlookup"), 7);
  });

  test("a permanent Stripe rejection goes to the DLQ as stripe_rejected", async () => {
    const handler = handlerWith();
    parts.emulator.injectFaults({
      path: "/v2/billing/meter_event_stream",
      respond: { status: 400, body: { error: { code: "invalid_fields", message: "events[0]: bad" } } },
    });
    const record = sqsRecord(usageEvent({ id: "evt_rejected", customer: "cus_rej" }));
    const res = await handler(sqsEvent([record]), lambdaContext());
    assert.deepEqual(res.batchItemFailures, []);
    const [letter] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(letter?.error.code, "stripe_rejected");
    assert.match(letter?.error.message ?? "", /400 invalid_fields/);
    assert.equal((letter?.event as { id?: string } | undefined)?.id, "evt_rejected");
  });

  test("a message still failing at METERHOOK_MAX_ATTEMPTS deliveries is dead-lettered as retries_exhausted", async () => {
    const handler = handlerWith({ METERHOOK_MAX_ATTEMPTS: "4", STRIPE_MAX_ATTEMPTS: "1" });
    parts.emulator.injectFaults({ path: "/v2/billing/meter_event_stream", respond: { status: 503 }, times: 2 });
    const firstReceived = Date.now() - 60_000;
    const early = sqsRecord(usageEvent({ customer: "cus_ex1" }), { ApproximateReceiveCount: "3" });
    const last = sqsRecord(usageEvent({ id: "evt_exhausted", customer: "cus_ex2" }), {
      ApproximateReceiveCount: "4",
      ApproximateFirstReceiveTimestamp: String(firstReceived),
    });
    const res1 = await handler(sqsEvent([early]), lambdaContext());
    const res2 = await handler(sqsEvent([last]), lambdaContext());
    assert.deepEqual(res1.batchItemFailures, [{ itemIdentifier: early.messageId }]);
    assert.deepEqual(res2.batchItemFailures, []);
    const [letter] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(letter?.error.code, "retries_exhausted");
    assert.match(letter?.error.message ?? "", /still failing after 4 attempts; last error: Stripe answered 503/);
    assert.equal(letter?.attempts, 4);
    assert.equal(letter?.firstFailedAt, new Date(firstReceived).toISOString());
  });

  test("when the dead-letter queue cannot be written, the message stays on the ingest queue", async () => {
    const handler = handlerWith({
      METERHOOK_DLQ_URL: parts.queues.deadLetterQueueUrl.replace("meterhook-dlq", "no-such-queue"),
    });
    const record = sqsRecord(usageEvent({ customer: "acct_unmapped" }));
    const res = await handler(sqsEvent([record]), lambdaContext());
    assert.deepEqual(res.batchItemFailures, [{ itemIdentifier: record.messageId }]);
  });

  test("with too little time left, nothing new is started and every message is reported for retry", async () => {
    const handler = handlerWith({ METERHOOK_STOP_MARGIN_MS: "5000" });
    const before = parts.emulator.requests.length;
    const records = [sqsRecord(usageEvent()), sqsRecord(usageEvent())];
    const res = await handler(sqsEvent(records), lambdaContext(3_000));
    assert.deepEqual(res.batchItemFailures.map((f) => f.itemIdentifier).sort(), records.map((r) => r.messageId).sort());
    assert.equal(parts.emulator.requests.length, before);
  });

  test("string message attributes reach the consumer; binary ones and odd names do not get in the way", async () => {
    const handler = handlerWith();
    const named = sqsRecord({ order: 1 });
    named.messageAttributes = {
      meterhook_source: {
        stringValue: "no_such_source",
        dataType: "String",
        stringListValues: [],
        binaryListValues: [],
      },
    };
    const canonical = sqsRecord(usageEvent({ customer: "cus_attrs", value: 3 }));
    canonical.messageAttributes = {
      __proto__: { stringValue: "x", dataType: "String", stringListValues: [], binaryListValues: [] },
      blob: { binaryValue: "AAEC", dataType: "Binary", stringListValues: [], binaryListValues: [] },
    };
    const res = await handler(sqsEvent([named, canonical]), lambdaContext());
    assert.deepEqual(res.batchItemFailures, []);
    assert.equal(totalFor("cus_attrs"), 3);
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.deepEqual(
      letters.map((l) => [l.error.code, l.error.message]),
      [["unknown_source", 'no source "no_such_source" in the mapping config']],
    );
  });

  test("the Stripe key never reaches the dead-letter queue", async () => {
    const handler = handlerWith({ STRIPE_API_KEY: "sk_test_notTheEmulatorsKey123" });
    await handler(sqsEvent([sqsRecord(usageEvent({ customer: "cus_key" }))]), lambdaContext());
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(letters[0]?.error.code, "stripe_unauthorized");
    assert.doesNotMatch(JSON.stringify(letters), /notTheEmulatorsKey123/);
  });
});
