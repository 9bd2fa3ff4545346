import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";
import { ScanCommand } from "@aws-sdk/client-dynamodb";
import { createQueueHandler } from "../../functions/ingest-queue.js";
import { createConsumerFromConfig, replayFromConfig } from "../../lib/app.js";
import { createDynamoReplayLedger } from "../../lib/aws-dynamodb.js";
import { loadConfig } from "../../lib/config.js";
import { createLogger, silentLogger } from "../../lib/logger.js";
import { meterEventIdentifier } from "../../lib/meter-event.js";
import { Metric, MetricsRecorder } from "../../lib/metrics.js";
import type { ReplayOptions } from "../../lib/replay.js";
import type { ReplayLedger } from "../../lib/replay-ledger.js";
import { startDynamoFaultProxy, startTestDynamo, type TestDynamo } from "../helpers/dynamodb.js";
import { lambdaContext, sqsEvent, sqsRecord, usageEvent } from "../helpers/factories.js";
import { consumerEnv, usePipelineParts } from "../helpers/pipeline.js";
import { startSilentServer } from "../helpers/silent-server.js";
import { drain, drainDeadLetters, queueDepth } from "../helpers/sqs.js";

const HOUR_MS = 3_600_000;
/** How far Stripe's clock (the emulator's) is ahead of this machine's: a replay days later. */
let stripeAhead = 0;
const parts = usePipelineParts({ now: () => Date.now() + stripeAhead });
let dynamo: TestDynamo;
const LEDGER = "meterhook-test-replay-ledger";
before(async () => {
  dynamo = await startTestDynamo();
  await dynamo.createTable(LEDGER, ["identifier"]);
});
after(() => dynamo.stop());
beforeEach(async () => {
  stripeAhead = 0;
  await drain(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
});

const env = (extra: Record<string, string> = {}) =>
  consumerEnv(parts, { METERHOOK_LOG_LEVEL: "error", DYNAMODB_ENDPOINT: dynamo.endpoint, ...extra });
const withLedger = (table = LEDGER) => ({ METERHOOK_REPLAY_LEDGER_TABLE: table });

/** The same event dead-lettered `copies` times by the real consumer, as SQS's redelivery does. */
async function deadLetterCopies(event: Record<string, unknown>, copies: number) {
  const handler = createQueueHandler(() =>
    createConsumerFromConfig(loadConfig(env()), { sqs: parts.queues.sqs, logger: silentLogger }),
  );
  const before = await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
  for (let i = 0; i < copies; i++) await handler(sqsEvent([sqsRecord(event)]), lambdaContext());
  assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), before + copies);
}
/** A replay once the customer is mapped, as `npm run replay` runs it with this environment. */
const replay = (extra: Record<string, string>, options: Partial<ReplayOptions> = {}, metrics?: MetricsRecorder) =>
  replayFromConfig(
    loadConfig(env({ METERHOOK_CUSTOMERS: JSON.stringify({ acct_late: "cus_late" }), ...extra })),
    { limit: 1, dryRun: false, ...options },
    { sqs: parts.queues.sqs, logger: silentLogger, ...(metrics ? { metrics } : {}) },
  );
/** The count `recorder` holds for metric `name` (undefined if none), emptying it. */
const counted = (recorder: MetricsRecorder, name: string) => recorder.drain().find((p) => p.name === name)?.values[0];
/** Stripe refuses (400) the next stream request that carries `identifier`. */
const refusedByStripe = (identifier: string) =>
  parts.emulator.injectFaults({
    path: "/v2/billing/meter_event_stream",
    bodyIncludes: identifier,
    respond: { status: 400, body: { error: { type: "invalid_request_error", message: "refused" } } },
  });
const billedTo = (customer: string) =>
  parts.emulator.ledger.summaries().find((s) => s.customer === customer)?.aggregated_value ?? 0;
/** How many times Stripe billed the identifier (the emulator's own 24-hour check drops repeats). */
const billings = (identifier: string) => parts.emulator.ledger.events.filter((e) => e.identifier === identifier).length;
const ledgerItems = async () =>
  (await dynamo.client.send(new ScanCommand({ TableName: LEDGER }))).Items?.map((i) => ({
    identifier: i.identifier?.S,
    eventName: i.eventName?.S,
    state: i.state?.S,
    expiresAt: Number(i.expiresAt?.N),
  })) ?? [];
/** The ledger's item for `identifier`, as DynamoDB holds it. */
const ledgerItem = async (identifier: string) =>
  (await dynamo.client.send(new ScanCommand({ TableName: LEDGER }))).Items?.find((i) => i.identifier?.S === identifier);

describe("replay ledger", () => {
  test("two letters of one event replayed more than 24 h apart bill once", async () => {
    const timestamp = Math.floor(Date.now() / 1000) - 60;
    const event = usageEvent({ customer: "acct_late", value: 7, timestamp });
    await deadLetterCopies(event, 2);

    const first = await replay(withLedger());
    assert.equal(first.billed, 1);
    assert.equal(first.billedBefore, 0);
    assert.equal(first.unrecorded, 0);
    assert.equal(billedTo("cus_late"), 7);
    const identifier = meterEventIdentifier(event.id as string, "api_requests");
    const recorded = (await ledgerItems()).find((i) => i.identifier === identifier);
    // Kept a day past Stripe's 35 days for the event's own time: no replay can bill it after.
    assert.deepEqual(recorded, {
      identifier,
      eventName: "api_requests",
      state: "billed",
      expiresAt: timestamp + 36 * 86_400,
    });

    // Two days on, Stripe no longer knows the identifier; the ledger does.
    stripeAhead = 48 * HOUR_MS;
    const metrics = new MetricsRecorder();
    const second = await replay(withLedger(), {}, metrics);
    assert.equal(counted(metrics, Metric.replayLedgerHits), 1);
    assert.equal(second.billed, 1, "the second letter is settled as billed");
    assert.equal(second.billedBefore, 1);
    assert.deepEqual(second.deadLettered, {});
    assert.equal(billedTo("cus_late"), 7, "and not billed again");
    assert.equal(parts.emulator.ledger.receipts.get(identifier), 1, "nor sent to Stripe");
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 0);
  });

  test("without a ledger, the same two letters bill twice (what the ledger is for)", async () => {
    const event = usageEvent({ customer: "acct_late", value: 5, id: `twice_${Date.now()}` });
    const before = billedTo("cus_late");
    await deadLetterCopies(event, 2);
    assert.equal((await replay({})).billedBefore, undefined, "the report says nothing of a ledger");
    stripeAhead = 48 * HOUR_MS;
    await replay({});
    assert.equal(billedTo("cus_late") - before, 10);
  });

  test("a dry run reads the ledger and records nothing", async () => {
    const billed = usageEvent({ customer: "acct_late", value: 2 });
    const fresh = usageEvent({ customer: "acct_late", value: 3 });
    await deadLetterCopies(billed, 2);
    await replay(withLedger());
    const items = (await ledgerItems()).length;
    // Beside the billed event's second letter, an event no replay has billed.
    await deadLetterCopies(fresh, 1);
    const report = await replay(withLedger(), { limit: 10, dryRun: true });
    assert.deepEqual([report.examined, report.billed, report.billedBefore], [2, 2, 1]);
    assert.equal((await ledgerItems()).length, items, "nothing recorded");
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 2, "and nothing deleted");
  });

  test("a ledger that cannot be read stops the replay before anything is sent, and leaves its letters", async () => {
    const event = usageEvent({ customer: "acct_late", value: 4 });
    await deadLetterCopies(event, 1);
    const sentBefore = parts.emulator.ledger.events.length;
    await assert.rejects(replay(withLedger("meterhook-no-such-table")), /the replay ledger could not be read/);
    assert.equal(parts.emulator.ledger.events.length, sentBefore, "nothing sent to Stripe");
    // Visible again at once, as it was: the same letter, its code unchanged.
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.deepEqual(
      letters.map((l) => [l.error.code, l.attempts]),
      [["customer_not_found", 1]],
    );
  });

  test("many letters, one to three of each event, replayed a few at a time a day or more apart: each event bills once", async () => {
    // A seeded mulberry32, so that a failure replays exactly.
    let seed = 20261129;
    const random = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const events = Array.from({ length: 120 }, (_, i) =>
      usageEvent({ customer: "acct_many", value: 1 + (i % 5), id: `many_${i}_${Date.now()}` }),
    );
    // Each event dead-lettered one to three times, the copies in batches of mixed events.
    const records = events.flatMap((e) => Array.from({ length: 1 + Math.floor(random() * 3) }, () => sqsRecord(e)));
    records.sort(() => random() - 0.5);
    const handler = createQueueHandler(() =>
      createConsumerFromConfig(loadConfig(env()), { sqs: parts.queues.sqs, logger: silentLogger }),
    );
    for (let i = 0; i < records.length; i += 50) await handler(sqsEvent(records.slice(i, i + 50)), lambdaContext());
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), records.length);

    // Replays of 5 to 40 letters, each a day and more after the one before: Stripe has
    // forgotten every identifier by the next.
    let billedBefore = 0;
    for (let round = 0; (await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl)) > 0; round++) {
      assert.ok(round < 100, "the DLQ drains");
      stripeAhead = round * 25 * HOUR_MS;
      const report = await replayFromConfig(
        loadConfig(env({ METERHOOK_CUSTOMERS: JSON.stringify({ acct_many: "cus_many" }), ...withLedger() })),
        { limit: 5 + Math.floor(random() * 36), dryRun: false },
        { sqs: parts.queues.sqs, logger: silentLogger },
      );
      assert.deepEqual([report.deadLettered, report.leftUntouched, report.unrecorded], [{}, 0, 0]);
      billedBefore += report.billedBefore ?? 0;
    }
    for (const e of events) {
      const identifier = meterEventIdentifier(e.id as string, "api_requests");
      assert.equal(parts.emulator.ledger.receipts.get(identifier), 1, `${e.id} sent to Stripe once`);
    }
    assert.equal(
      billedTo("cus_many"),
      events.reduce((sum, e) => sum + (e.value as number), 0),
    );
    // Copies replayed in the same run are Stripe's duplicates and the batch's; the others, the ledger's.
    assert.ok(billedBefore > 0, "some copies were found in the ledger");
  });

  test("a letter SQS's DLQ redrive puts back on the ingest queue is checked against the same ledger", async () => {
    const event = usageEvent({ customer: "acct_late", value: 8 });
    await deadLetterCopies(event, 2);
    await replay(withLedger());
    const identifier = meterEventIdentifier(event.id as string, "api_requests");
    const [letter] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    const { attributes: _, ...body } = letter as NonNullable<typeof letter>;

    // Two days on, the console's "Start DLQ redrive" moves the second letter to the ingest queue,
    // beside an event of the app's that is not a letter.
    stripeAhead = 48 * HOUR_MS;
    const fresh = usageEvent({ customer: "acct_late", value: 1 });
    const consumer = createQueueHandler(() =>
      createConsumerFromConfig(
        loadConfig(env({ METERHOOK_CUSTOMERS: JSON.stringify({ acct_late: "cus_late" }), ...withLedger() })),
        { sqs: parts.queues.sqs, logger: silentLogger },
      ),
    );
    const res = await consumer(sqsEvent([sqsRecord(body), sqsRecord(fresh)]), lambdaContext());
    assert.deepEqual(res.batchItemFailures, []);
    assert.equal(parts.emulator.ledger.receipts.get(identifier), 1, "the letter's event is not sent again");
    const freshIdentifier = meterEventIdentifier(fresh.id as string, "api_requests");
    assert.equal(parts.emulator.ledger.receipts.get(freshIdentifier), 1, "the app's event is billed");
    const recorded = (await ledgerItems()).map((i) => i.identifier);
    assert.ok(recorded.includes(identifier));
    assert.ok(!recorded.includes(freshIdentifier), "what the consumer bills of its own is not in the ledger");
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 0);
  });

  test("the consumer retries a redriven letter whose ledger it cannot read, and bills the rest of its batch", async () => {
    const event = usageEvent({ customer: "acct_late", value: 6 });
    await deadLetterCopies(event, 1);
    const [letter] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    const { attributes: _, ...body } = letter as NonNullable<typeof letter>;
    const fresh = usageEvent({ customer: "acct_late", value: 1 });
    const metrics = new MetricsRecorder();
    const consumer = createQueueHandler(() =>
      createConsumerFromConfig(
        loadConfig(
          env({
            METERHOOK_CUSTOMERS: JSON.stringify({ acct_late: "cus_late" }),
            ...withLedger("meterhook-no-such-table"),
          }),
        ),
        { sqs: parts.queues.sqs, logger: silentLogger, metrics },
      ),
    );
    const records = [sqsRecord(body), sqsRecord(fresh)];
    const res = await consumer(sqsEvent(records), lambdaContext());
    assert.deepEqual(
      res.batchItemFailures.map((f) => f.itemIdentifier),
      [records[0]?.messageId],
      "the letter goes back to the queue, for another try",
    );
    assert.equal(
      parts.emulator.ledger.receipts.get(meterEventIdentifier(event.id as string, "api_requests")),
      undefined,
    );
    assert.equal(parts.emulator.ledger.receipts.get(meterEventIdentifier(fresh.id as string, "api_requests")), 1);
    assert.equal(counted(metrics, Metric.replayLedgerUnavailable), 1, "counted, for the alarm");
  });

  test("a ledger that cannot record a billing: billed all the same, counted, logged, and the event stays marked sent", async () => {
    const event = usageEvent({ customer: "acct_late", value: 9 });
    const identifier = meterEventIdentifier(event.id as string, "api_requests");
    await deadLetterCopies(event, 2);
    const real = createDynamoReplayLedger({ region: "us-east-1", endpoint: dynamo.endpoint, tableName: LEDGER });
    // The write after Stripe's answer fails, as when the replay is killed between the two.
    const refusing: ReplayLedger = {
      ...real,
      record: async (entries) => {
        if (entries.some((e) => e.state === "billed")) throw new Error("ProvisionedThroughputExceededException");
        await real.record(entries);
      },
    };
    const lines: string[] = [];
    const logger = createLogger({ level: "error", write: (line) => lines.push(line) });
    const metrics = new MetricsRecorder();
    const report = await replayFromConfig(
      loadConfig(env({ METERHOOK_CUSTOMERS: JSON.stringify({ acct_late: "cus_late" }) })),
      { limit: 1, dryRun: false, ledger: refusing },
      { sqs: parts.queues.sqs, logger, metrics },
    );
    assert.deepEqual([report.billed, report.billedBefore, report.unrecorded], [1, 0, 1]);
    assert.equal(counted(metrics, Metric.replayLedgerUnrecorded), 1, "counted, for the alarm");
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 1, "its letter is settled");
    const logged = lines.map((l) => JSON.parse(l)).find((l) => /could not record/.test(l.message));
    assert.ok(logged, "an error line says so");
    assert.deepEqual(logged.identifiers, [identifier]);
    assert.equal((await ledgerItems()).find((i) => i.identifier === identifier)?.state, "sending");

    // Two days on, the other letter is held for an operator rather than billed again.
    stripeAhead = 48 * HOUR_MS;
    const later = await replay(withLedger(), { limit: 1, now: () => Date.now() + stripeAhead });
    assert.deepEqual([later.billed, later.deadLettered], [0, { dedupe_window_passed: 1 }]);
    assert.equal(parts.emulator.ledger.receipts.get(identifier), 1, "sent to Stripe once");
    const [held] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(held?.error.code, "dedupe_window_passed");
    assert.match(held?.error.message ?? "", /a replay sent it 48 h ago and never learned whether Stripe billed it/);
    assert.equal(held?.stripeMayHaveRecorded, true);
  });

  /**
   * An event dead-lettered twice, one letter of which a replay sends with the ledger while Stripe
   * records it and every answer is lost on the way back: its identifier, marked sent.
   */
  async function sentUnanswered() {
    const event = usageEvent({ customer: "acct_late", value: 3 });
    const identifier = meterEventIdentifier(event.id as string, "api_requests");
    await deadLetterCopies(event, 2);
    parts.emulator.setFaultPolicy((req) =>
      req.identifiers.includes(identifier) ? { path: req.path, action: "accept-then-drop" } : undefined,
    );
    try {
      const unanswered = await replay({ ...withLedger(), STRIPE_MAX_ATTEMPTS: "2" }, { limit: 1 });
      assert.deepEqual(unanswered.deadLettered, { retries_exhausted: 1 });
    } finally {
      parts.emulator.setFaultPolicy(undefined);
    }
    assert.equal(billings(identifier), 1);
    assert.equal((await ledgerItems()).find((i) => i.identifier === identifier)?.state, "sending");
    return identifier;
  }
  /** The other copy, not the letter the unanswered replay wrote (which counts to the limit). */
  const copies = { codes: ["customer_not_found"], limit: 2 };

  test("an event Stripe answers nothing for stays marked sent: a copy replayed within 23 h is resent, for Stripe to drop", async () => {
    const identifier = await sentUnanswered();

    // Within Stripe's window a copy is sent: Stripe drops it, and the ledger learns it is billed.
    const metrics = new MetricsRecorder();
    const inside = await replay(withLedger(), { ...copies, now: () => Date.now() + 22 * HOUR_MS }, metrics);
    assert.deepEqual([inside.billed, inside.deadLettered], [1, {}]);
    assert.equal(counted(metrics, Metric.replayLedgerHeld), undefined);
    assert.equal((await ledgerItems()).find((i) => i.identifier === identifier)?.state, "billed");
    assert.equal(billings(identifier), 1);
  });

  test("a copy of an unanswered event replayed more than 23 h later is held, and sent only when asked", async () => {
    const identifier = await sentUnanswered();
    stripeAhead = 48 * HOUR_MS;
    const later = () => Date.now() + stripeAhead;
    const metrics = new MetricsRecorder();
    const held = await replay(withLedger(), { ...copies, now: later }, metrics);
    assert.deepEqual([held.billed, held.deadLettered], [0, { dedupe_window_passed: 1 }]);
    assert.equal(counted(metrics, Metric.replayLedgerHeld), 1);
    assert.equal(billings(identifier), 1, "not billed again");

    // The operator checked Stripe and asks for it: sent, and then recorded billed.
    const asked = await replay(withLedger(), {
      codes: ["dedupe_window_passed"],
      // Beside the letter the unanswered replay wrote, which counts to the limit.
      limit: 2,
      now: later,
      afterDedupeWindow: true,
    });
    assert.equal(asked.billed, 1);
    assert.equal(billings(identifier), 2);
    assert.equal((await ledgerItems()).find((i) => i.identifier === identifier)?.state, "billed");
  });

  test("an event Stripe refuses is unmarked: a copy replayed days later is sent", async () => {
    const event = usageEvent({ customer: "acct_late", value: 2 });
    const identifier = meterEventIdentifier(event.id as string, "api_requests");
    await deadLetterCopies(event, 2);
    refusedByStripe(identifier);
    const refused = await replay(withLedger(), { limit: 1 });
    assert.deepEqual(refused.deadLettered, { stripe_rejected: 1 });
    assert.ok(!(await ledgerItems()).some((i) => i.identifier === identifier), "no mark left");
    stripeAhead = 48 * HOUR_MS;
    const copy = await replay(withLedger(), {
      codes: ["customer_not_found"],
      limit: 2,
      now: () => Date.now() + stripeAhead,
    });
    assert.equal(copy.billed, 1);
    assert.equal(parts.emulator.ledger.receipts.get(identifier), 1);
  });

  test("keys and writes a throttled DynamoDB leaves unprocessed are sent again until done", async () => {
    // Half of every batch call's keys or writes, rounded down, left for the next round: a call of
    // 20 takes five rounds (20, 10, 5, 2, 1), the most the ledger makes.
    const proxy = await startDynamoFaultProxy(dynamo.endpoint, (_, n) => Math.floor(n / 2));
    try {
      const events = Array.from({ length: 20 }, (_, i) =>
        usageEvent({ customer: "acct_late", value: 1, id: `throttled_${i}_${Date.now()}` }),
      );
      const identifiers = events.map((e) => meterEventIdentifier(e.id as string, "api_requests"));
      const handler = createQueueHandler(() =>
        createConsumerFromConfig(loadConfig(env()), { sqs: parts.queues.sqs, logger: silentLogger }),
      );
      const deadLetterAll = () => handler(sqsEvent(events.map((e) => sqsRecord(e))), lambdaContext());
      const throttled = { DYNAMODB_ENDPOINT: proxy.endpoint, ...withLedger() };

      await deadLetterAll();
      const first = await replay(throttled, { limit: 20 });
      assert.deepEqual([first.billed, first.unrecorded], [20, 0]);
      assert.ok(proxy.left.BatchWriteItem > 0, "writes were left unprocessed");
      const recorded = new Set((await ledgerItems()).map((i) => i.identifier));
      assert.deepEqual(
        identifiers.filter((id) => !recorded.has(id)),
        [],
        "every billed event is recorded",
      );

      // The same events' second letters, two days on: every one is found, through throttled reads.
      await deadLetterAll();
      stripeAhead = 48 * HOUR_MS;
      const second = await replay(throttled, { limit: 20 });
      assert.deepEqual([second.billed, second.billedBefore, second.deadLettered], [20, 20, {}]);
      assert.ok(proxy.left.BatchGetItem > 0, "reads were left unprocessed");
      for (const id of identifiers) assert.equal(parts.emulator.ledger.receipts.get(id), 1, `${id} sent once`);
    } finally {
      await proxy.stop();
    }
  });

  test("a DynamoDB that keeps leaving reads unprocessed, or refuses the marks, stops the replay before anything is sent", async () => {
    const event = usageEvent({ customer: "acct_late", value: 2 });
    await deadLetterCopies(event, 1);
    const sentBefore = parts.emulator.ledger.events.length;
    // Every read held back, five rounds until the ledger gives up.
    const unread = await startDynamoFaultProxy(dynamo.endpoint, (op, n) => (op === "BatchGetItem" ? n : 0));
    try {
      await assert.rejects(
        replay({ DYNAMODB_ENDPOINT: unread.endpoint, ...withLedger() }),
        /the replay ledger could not be read or marked, so nothing was sent: DynamoDB left 1 reads of meterhook-test-replay-ledger unprocessed/,
      );
    } finally {
      await unread.stop();
    }
    assert.equal(unread.left.BatchGetItem, 5, "five rounds, then it gives up");
    // Every mark refused, as to a role without dynamodb:PutItem.
    const unmarked = await startDynamoFaultProxy(
      dynamo.endpoint,
      () => 0,
      (op) => op === "PutItem",
    );
    try {
      await assert.rejects(
        replay({ DYNAMODB_ENDPOINT: unmarked.endpoint, ...withLedger() }),
        /the replay ledger could not be read or marked, so nothing was sent: not authorized to perform: dynamodb:PutItem/,
      );
    } finally {
      await unmarked.stop();
    }
    // At least once: the SDK tries a refused call again when the answer's Date shows its clock
    // is off (as under `npm run test:later`), not otherwise.
    assert.ok((unmarked.refused.PutItem ?? 0) >= 1);
    assert.equal(parts.emulator.ledger.events.length, sentBefore, "nothing sent to Stripe");
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 1, "the letter stays");
  });

  test("a ledger that never answers stops the replay at the AWS request timeout, before anything is sent", {
    timeout: 30_000,
  }, async () => {
    await deadLetterCopies(usageEvent({ customer: "acct_late", value: 2 }), 1);
    const sentBefore = parts.emulator.ledger.events.length;
    const silent = await startSilentServer();
    try {
      await assert.rejects(
        replay({ DYNAMODB_ENDPOINT: silent.endpoint, METERHOOK_AWS_REQUEST_TIMEOUT_MS: "200", ...withLedger() }),
        /the replay ledger could not be read or marked, so nothing was sent: .*200 ms requestTimeout/,
      );
      assert.ok(silent.connections() >= 1);
    } finally {
      await silent.stop();
    }
    assert.equal(parts.emulator.ledger.events.length, sentBefore, "nothing sent to Stripe");
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 1, "the letter stays");
  });

  test("marks written before the ledger gave up are taken back: nothing was sent", async () => {
    const events = Array.from({ length: 10 }, (_, i) =>
      usageEvent({ customer: "acct_late", value: 1, id: `half_marked_${i}_${Date.now()}` }),
    );
    const handler = createQueueHandler(() =>
      createConsumerFromConfig(loadConfig(env()), { sqs: parts.queues.sqs, logger: silentLogger }),
    );
    await handler(sqsEvent(events.map((e) => sqsRecord(e))), lambdaContext());
    // Four marks written, the other six refused; the deletes that take marks back pass.
    let marked = 0;
    const proxy = await startDynamoFaultProxy(
      dynamo.endpoint,
      () => 0,
      (op) => op === "PutItem" && ++marked > 4,
    );
    try {
      await assert.rejects(
        replay({ DYNAMODB_ENDPOINT: proxy.endpoint, ...withLedger() }, { limit: 10 }),
        /could not be read or marked, so nothing was sent: not authorized to perform: dynamodb:PutItem/,
      );
    } finally {
      await proxy.stop();
    }
    assert.ok((proxy.refused.PutItem ?? 0) >= 6, "the six marks after the fourth refused (some calls twice)");
    const ids = new Set(events.map((e) => meterEventIdentifier(e.id as string, "api_requests")));
    assert.deepEqual(
      (await ledgerItems()).filter((i) => ids.has(i.identifier as string)),
      [],
      "no event left marked sent",
    );
    for (const id of ids) assert.equal(billings(id), 0);
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 10, "the letters stay");
  });
  /**
   * A replay of `event`'s letter through the real ledger, with `race` run at one step of it, as
   * another replay of a copy of the event would, and Stripe refusing the event (so that the replay
   * takes back what it marked).
   */
  async function replayRacing(event: Record<string, unknown>, race: (ledger: ReplayLedger) => Partial<ReplayLedger>) {
    const identifier = meterEventIdentifier(event.id as string, "api_requests");
    await deadLetterCopies(event, 1);
    refusedByStripe(identifier);
    const real = createDynamoReplayLedger({ region: "us-east-1", endpoint: dynamo.endpoint, tableName: LEDGER });
    const lines: string[] = [];
    const report = await replayFromConfig(
      loadConfig(env({ METERHOOK_CUSTOMERS: JSON.stringify({ acct_late: "cus_late" }) })),
      { limit: 1, dryRun: false, ledger: { ...real, ...race(real) } },
      { sqs: parts.queues.sqs, logger: createLogger({ level: "info", write: (line) => lines.push(line) }) },
    );
    assert.deepEqual(report.deadLettered, { stripe_rejected: 1 });
    const logged = lines.map((l) => JSON.parse(l) as { message: string; identifiers?: string[] });
    return { identifier, item: await ledgerItem(identifier), logged };
  }
  const otherReplays = (identifiers: readonly string[], state: "sending" | "billed", at: string) =>
    identifiers.map((identifier) => ({
      identifier,
      eventName: "api_requests",
      state,
      at,
      expiresAt: Math.floor(Date.now() / 1000) + 86_400,
    }));

  test("a mark another replay writes between this one's read and its write stands, though this one's send is refused", async () => {
    const otherSentAt = new Date(Date.now() - 60_000).toISOString();
    const { identifier, item, logged } = await replayRacing(
      usageEvent({ customer: "acct_late", value: 4 }),
      (real) => ({
        marks: async (ids) => {
          const read = await real.marks(ids);
          await real.claim(otherReplays(ids, "sending", otherSentAt));
          return read;
        },
      }),
    );
    // Overwritten and then removed, a copy replayed more than 23 h later would be sent again
    // though the other replay's send may have billed it.
    assert.deepEqual([item?.state?.S, item?.sentAt?.S], ["sending", otherSentAt], "the other replay's mark");
    assert.deepEqual(logged.find((l) => /another replay marked these events/.test(l.message))?.identifiers, [
      identifier,
    ]);
  });

  test("a billing another replay records while this one's send is refused stays", async () => {
    const { item } = await replayRacing(usageEvent({ customer: "acct_late", value: 6 }), (real) => ({
      forget: async (marks) => {
        await real.record(
          otherReplays(
            marks.map((m) => m.identifier),
            "billed",
            new Date().toISOString(),
          ),
        );
        await real.forget(marks);
      },
    }));
    assert.equal(item?.state?.S, "billed");
  });

  test("with pre-aggregation on, a former dead letter's event is sent as itself, so that the ledger knows it", async () => {
    const aggregate = {
      METERHOOK_AGGREGATE: JSON.stringify({ api_requests: "sum" }),
      METERHOOK_INGEST_QUEUE_URL: parts.queues.ingestQueueUrl,
    };
    const customer = "acct_summed";
    const events = [1, 2].map((value) =>
      usageEvent({
        customer,
        value,
        id: `summed_${value}_${Date.now()}`,
        timestamp: Math.floor(Date.now() / 1000) - 60,
      }),
    );
    const ids = events.map((e) => meterEventIdentifier(e.id as string, "api_requests"));
    const handler = createQueueHandler(() =>
      createConsumerFromConfig(loadConfig(env()), { sqs: parts.queues.sqs, logger: silentLogger }),
    );
    const deadLetterBoth = () => handler(sqsEvent(events.map((e) => sqsRecord(e))), lambdaContext());
    const replayAll = () =>
      replayFromConfig(
        loadConfig(
          env({ METERHOOK_CUSTOMERS: JSON.stringify({ [customer]: "cus_summed" }), ...aggregate, ...withLedger() }),
        ),
        { limit: 10, dryRun: false, now: () => Date.now() + stripeAhead },
        { sqs: parts.queues.sqs, logger: silentLogger },
      );

    await deadLetterBoth();
    assert.equal((await replayAll()).billed, 2);
    const recorded = new Map((await ledgerItems()).map((i) => [i.identifier, i.state]));
    assert.deepEqual(
      ids.map((id) => recorded.get(id)),
      ["billed", "billed"],
      "each event in the ledger, by its own identifier",
    );

    // Their copies two days on: not billed again.
    await deadLetterBoth();
    stripeAhead = 48 * HOUR_MS;
    const again = await replayAll();
    assert.deepEqual([again.billed, again.billedBefore], [2, 2]);
    assert.equal(billedTo("cus_summed"), 3);
  });
});
