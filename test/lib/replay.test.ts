import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeEach, describe, test } from "node:test";
import { promisify } from "node:util";
import { ReceiveMessageCommand, SendMessageCommand } from "@aws-sdk/client-sqs";
import { parse as parseYaml } from "yaml";
import { createQueueHandler } from "../../functions/ingest-queue.js";
import { createConsumerFromConfig, replayFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import type { DeadLetterBody } from "../../lib/dead-letter.js";
import { createLogger, type Logger, silentLogger } from "../../lib/logger.js";
import { meterEventIdentifier } from "../../lib/meter-event.js";
import { createSqsReader, type QueueReader } from "../../lib/queue.js";
import { type ReplayOptions, replayDeadLetters } from "../../lib/replay.js";
import { lambdaContext, sqsEvent, sqsRecord, usageEvent } from "../helpers/factories.js";
import { loadTrigger } from "../helpers/fixtures.js";
import { consumerEnv, usePipelineParts } from "../helpers/pipeline.js";
import { drain, drainDeadLetters, queueDepth } from "../helpers/sqs.js";

const parts = usePipelineParts();
beforeEach(() => drain(parts.queues.sqs, parts.queues.deadLetterQueueUrl));

const env = (customers: Record<string, string> = {}) =>
  consumerEnv(parts, { METERHOOK_CUSTOMERS: JSON.stringify(customers), METERHOOK_LOG_LEVEL: "error" });

/** The ingest-queue handler as deployed, against fauxqs and the parts.emulator. */
const ingestHandler = (extra: Record<string, string> = {}, customers: Record<string, string> = {}) =>
  createQueueHandler(() =>
    createConsumerFromConfig(loadConfig({ ...env(customers), ...extra }), {
      sqs: parts.queues.sqs,
      logger: silentLogger,
    }),
  );
/** Runs events through the real consumer so they are dead-lettered as in production. */
async function deadLetter(events: Array<Record<string, unknown> | string>) {
  await ingestHandler()(sqsEvent(events.map((e) => sqsRecord(e))), lambdaContext());
}
/** Letters back on the DLQ as they were (drainDeadLetters took them off). */
async function putBack(letters: Array<DeadLetterBody & { attributes: Record<string, string> }>) {
  for (const { attributes, ...letter } of letters) {
    await parts.queues.sqs.send(
      new SendMessageCommand({
        QueueUrl: parts.queues.deadLetterQueueUrl,
        MessageBody: JSON.stringify(letter),
        MessageAttributes: Object.fromEntries(
          Object.entries(attributes).map(([k, v]) => [k, { DataType: "String", StringValue: v }]),
        ),
      }),
    );
  }
}
/** Stripe's permanent refusal, as the emulator is told to answer it. */
const refused = {
  status: 400,
  headers: { "stripe-should-retry": "false" },
  body: { error: { type: "invalid_request_error", message: "refused" } },
};
const replay = (
  options: Partial<Pick<ReplayOptions, "limit" | "dryRun" | "afterDedupeWindow" | "deadline" | "now" | "codes">>,
  customers: Record<string, string> = {},
  /** More of the environment, e.g. METERHOOK_CONFIG. */
  extra: Record<string, string> = {},
) =>
  replayFromConfig(
    loadConfig({ ...env(customers), ...extra }),
    { limit: 100, dryRun: false, ...options },
    {
      sqs: parts.queues.sqs,
      logger: silentLogger,
    },
  );
/**
 * Replay through `reader` (the DLQ's, as a test shapes it) with the consumer the replay
 * function builds, the given customer table and logger.
 */
async function replayThrough(
  reader: QueueReader,
  options: ReplayOptions,
  customers: Record<string, string> = {},
  logger: Logger = silentLogger,
) {
  const consumer = await createConsumerFromConfig(
    loadConfig(env(customers)),
    { sqs: parts.queues.sqs, logger },
    { replaying: true },
  );
  try {
    return await replayDeadLetters(reader, consumer.deps, options);
  } finally {
    await consumer.close();
  }
}
const total = (customer: string) =>
  parts.emulator.ledger.summaries().find((s) => s.customer === customer)?.aggregated_value ?? 0;

describe("DLQ replay", () => {
  test("bills what is now billable, and re-dead-letters the rest with its history and updated reason", async () => {
    const late = usageEvent({ customer: "acct_late", value: 6 });
    await deadLetter([late, { id: "evt_broken", customer: "cus_1" }]);
    const before = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.deepEqual(before.map((l) => l.error.code).sort(), ["customer_not_found", "invalid_event"]);
    await putBack(before);

    const report = await replay({}, { acct_late: "cus_late" });

    assert.deepEqual(report, {
      dryRun: false,
      examined: 2,
      billed: 1,
      cancelled: 0,
      deadLettered: { invalid_event: 1 },
      leftUntouched: 0,
      pastDedupeWindow: 0,
    });
    assert.equal(total("cus_late"), 6);
    const after = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
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
    const requests = parts.emulator.requests.length;
    const report = await replay({ dryRun: true }, { acct_dry: "cus_dry" });
    assert.deepEqual(report, {
      dryRun: true,
      examined: 2,
      billed: 1,
      cancelled: 0,
      deadLettered: { customer_not_found: 1 },
      leftUntouched: 0,
      pastDedupeWindow: 0,
    });
    assert.equal(parts.emulator.requests.length, requests);
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 2);
    assert.equal(total("cus_dry"), 0);
  });

  test("a letter sent in the millisecond the replay starts is replayed, not taken for one of its own", async () => {
    await deadLetter([usageEvent({ customer: "acct_same_ms", value: 4 })]);
    // The letter's SentTimestamp, read without hiding it, is the replay's clock at its start.
    const peek = await parts.queues.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: parts.queues.deadLetterQueueUrl,
        VisibilityTimeout: 0,
        MessageSystemAttributeNames: ["SentTimestamp"],
      }),
    );
    const sentAt = Number(peek.Messages?.[0]?.Attributes?.SentTimestamp);
    assert.ok(sentAt > 0);
    const report = await replayFromConfig(
      loadConfig(env({ acct_same_ms: "cus_SameMs" })),
      { limit: 10, dryRun: false, now: () => sentAt },
      { sqs: parts.queues.sqs, logger: silentLogger },
    );
    assert.deepEqual([report.examined, report.billed], [1, 1]);
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 0);
  });

  test("near its deadline a replay takes no letter, says so, and leaves the DLQ as it was", async () => {
    await deadLetter([usageEvent({ customer: "acct_no_time" })]);
    const report = await replay({ deadline: Date.now() + 20_000 }, { acct_no_time: "cus_NoTime" });
    assert.deepEqual([report.examined, report.billed, report.stoppedForTime], [0, 0, true]);
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 1);
    const ample = await replay({ deadline: Date.now() + 900_000 }, { acct_no_time: "cus_NoTime" });
    assert.deepEqual([ample.examined, ample.billed, ample.stoppedForTime], [1, 1, undefined]);
  });

  test("a replay stops taking letters once its deadline comes near; what it took is settled, the rest left", async () => {
    await deadLetter(Array.from({ length: 12 }, () => usageEvent({ customer: "acct_late" })));
    const dlq = createSqsReader(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    // 40 s pass while the first letters are worked; the deadline is 60 s off at the start.
    let clock = Date.now();
    const reader: QueueReader = {
      ...dlq,
      receive: async (max, visibility) => {
        const got = await dlq.receive(max, visibility);
        clock += 40_000;
        return got;
      },
    };
    const lines: string[] = [];
    const logger = createLogger({ write: (line) => lines.push(line) });
    const report = await replayThrough(
      reader,
      { limit: 100, dryRun: false, deadline: clock + 60_000, now: () => clock },
      { acct_late: "cus_Late" },
      logger,
    );
    assert.equal(report.stoppedForTime, true);
    // An asynchronous invocation's answer is discarded: the logs say it too.
    const said = lines.map((l) => JSON.parse(l)).find((l) => /replay stopped near its deadline/.test(l.message));
    assert.deepEqual([said?.level, said?.examined, said?.stoppedForTime], ["warn", report.examined, true]);
    assert.ok(report.examined >= 1 && report.examined < 12, `took ${report.examined} of 12 in one receive`);
    assert.equal(report.billed, report.examined);
    assert.equal(total("cus_Late"), 3 * report.examined);
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 12 - report.examined);
  });

  test("its own new letters do not crowd out letters not yet replayed, whatever order the DLQ gives", async () => {
    // 20 letters that fail again (their customer is still unmapped). SQS keeps no order: this
    // reader gives the newest letters first, so a replay's own new letters come round at once.
    await deadLetter(Array.from({ length: 20 }, () => usageEvent({ customer: "acct_still_unmapped" })));
    const dlq = createSqsReader(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    const newestFirst: QueueReader = {
      ...dlq,
      receive: async (max, visibility) => {
        const all = [];
        for (let got = await dlq.receive(10, visibility); got.length > 0; got = await dlq.receive(10, visibility))
          all.push(...got);
        all.sort((a, b) => b.sentAt - a.sentAt);
        const n = Math.min(10, max); // as SQS: at most 10 a call
        await dlq.release(all.slice(n).map((m) => m.receiptHandle));
        return all.slice(0, n);
      },
    };
    const report = await replayThrough(newestFirst, { limit: 20, dryRun: false });
    assert.deepEqual([report.examined, report.deadLettered], [20, { customer_not_found: 20 }]);
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(letters.length, 20);
    assert.ok(letters.every((l) => l.attempts === 2));
  });

  test("a replay whose clock lags the queue's still replays a letter sent before it started", async () => {
    // Its own letters are known by their meterhook_replay attribute, not by SentTimestamp.
    await deadLetter([usageEvent({ customer: "acct_lagging", value: 2 })]);
    const report = await replay({ now: () => Date.now() - 60_000 }, { acct_lagging: "cus_Lagging" });
    assert.deepEqual([report.examined, report.billed], [1, 1]);
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 0);
  });

  test("a letter the consumer writes while a replay runs is replayed too; the replay's own are tagged and left", async () => {
    await deadLetter([usageEvent({ customer: "acct_before" })]);
    const dlq = createSqsReader(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    let first = true;
    const reader: QueueReader = {
      ...dlq,
      receive: async (max, visibility) => {
        const got = await dlq.receive(max, visibility);
        // The consumer dead-letters another event just after the replay's first receive.
        if (first) await deadLetter([usageEvent({ customer: "acct_during" })]);
        first = false;
        return got;
      },
    };
    const report = await replayThrough(reader, { limit: 10, dryRun: false });
    assert.deepEqual([report.examined, report.deadLettered], [2, { customer_not_found: 2 }]);
    const peek = await parts.queues.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: parts.queues.deadLetterQueueUrl,
        MaxNumberOfMessages: 10,
        VisibilityTimeout: 0,
        MessageAttributeNames: ["All"],
      }),
    );
    assert.equal(peek.Messages?.length, 2);
    const runs = new Set(peek.Messages?.map((m) => m.MessageAttributes?.meterhook_replay?.StringValue));
    assert.equal(runs.size, 1, "both written by the one replay run");
    assert.match([...runs][0] ?? "", /^[0-9a-f-]{36}$/);
  });

  test("--code replays only letters of those codes; the others are put back as they were, and count to the limit", async () => {
    await deadLetter([
      usageEvent({ customer: "acct_mapped_now", value: 4 }),
      { id: "evt_broken_code", customer: "cus_1" },
      usageEvent({ customer: "acct_still_unmapped" }),
    ]);
    const before = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    await putBack(before);

    // The mapping for one customer was added: only customer_not_found letters are replayed.
    const report = await replay({ codes: ["customer_not_found"] }, { acct_mapped_now: "cus_MappedNow01" });
    assert.deepEqual(report, {
      dryRun: false,
      examined: 2,
      billed: 1,
      cancelled: 0,
      deadLettered: { customer_not_found: 1 },
      leftUntouched: 0,
      pastDedupeWindow: 0,
      notSelected: 1,
    });
    assert.equal(total("cus_MappedNow01"), 4);
    const after = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    const broken = after.find((l) => l.error.code === "invalid_event");
    assert.equal(broken?.attempts, 1, "the invalid_event letter was put back as it was, not replayed");
    assert.deepEqual(after.map((l) => [l.error.code, l.attempts]).sort(), [
      ["customer_not_found", 2],
      ["invalid_event", 1],
    ]);

    // Letters of other codes taken count to the limit, so a scan of a large DLQ ends.
    await putBack(after);
    const limited = await replay({ codes: ["meter_not_found"], limit: 2 });
    assert.deepEqual([limited.examined, limited.notSelected], [0, 2]);
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 2);
  });

  test("takes at most --limit messages", async () => {
    await deadLetter(Array.from({ length: 5 }, () => usageEvent({ customer: "acct_lim" })));
    const report = await replay({ limit: 2 }, { acct_lim: "cus_lim" });
    assert.equal(report.examined, 2);
    assert.equal(report.billed, 2);
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 3);
  });

  test("replays a raw message moved by the redrive policy, and an already-billed event is not billed twice", async () => {
    const event = usageEvent({ customer: "cus_redriven", value: 2 });
    await parts.queues.sqs.send(
      new SendMessageCommand({ QueueUrl: parts.queues.deadLetterQueueUrl, MessageBody: JSON.stringify(event) }),
    );
    await parts.queues.sqs.send(
      new SendMessageCommand({ QueueUrl: parts.queues.deadLetterQueueUrl, MessageBody: JSON.stringify(event) }),
    );
    const report = await replay({});
    assert.equal(report.billed, 2);
    assert.equal(total("cus_redriven"), 2);
    const identifier = meterEventIdentifier(event.id as string, "api_requests");
    assert.equal(parts.emulator.ledger.events.filter((e) => e.identifier === identifier).length, 1);
  });

  test("replays an app's message the redrive policy moved, for the source its meterhook_source attribute names", async () => {
    // No default source: only the attribute, which SQS moves with the message, says it is a
    // storage snapshot. Replay must read it as the consumer would have.
    const dir = mkdtempSync(join(tmpdir(), "mh-replay-attr-"));
    const file = join(dir, "config.yaml");
    const config = parseYaml(readFileSync("examples/sqs-app-messages.yaml", "utf8"));
    delete config.sqs;
    config.sources.storage.customer.table = { "tenant-42": "cus_attrReplay" };
    writeFileSync(file, JSON.stringify(config));
    await parts.queues.sqs.send(
      new SendMessageCommand({
        QueueUrl: parts.queues.deadLetterQueueUrl,
        MessageBody: JSON.stringify(loadTrigger("sqs-storage-snapshot.json")),
        MessageAttributes: { meterhook_source: { DataType: "String", StringValue: "storage" } },
      }),
    );
    const report = await replayFromConfig(
      loadConfig({ ...env(), METERHOOK_CONFIG: file }),
      { limit: 10, dryRun: false },
      { sqs: parts.queues.sqs, logger: silentLogger },
    );
    assert.deepEqual([report.examined, report.billed, report.deadLettered], [1, 1, {}]);
    assert.equal(
      parts.emulator.ledger.summaries().find((x) => x.customer === "cus_attrReplay")?.aggregated_value,
      734.0032,
    );
  });

  test("an app's message whose rule reads its message attributes is replayed with them", async () => {
    // The rule reads the attribute `tenant`: a letter that kept only meterhook_source would, on
    // replay, match no rule and be acknowledged as ignored, never billed.
    const dir = mkdtempSync(join(tmpdir(), "mh-replay-attrs-"));
    const config = parseYaml(readFileSync("examples/sqs-app-messages.yaml", "utf8"));
    delete config.sqs;
    config.sources.storage.unmatched = "ignore";
    config.sources.storage.rules[0].when = "headers.Kind == 'snapshot'";
    config.sources.storage.rules[0].customer = "headers.tenant";
    config.sources.storage.customer.table = {};
    writeFileSync(join(dir, "before.json"), JSON.stringify(config));
    config.sources.storage.customer.table = { "tenant-7": "cus_attrs7" };
    writeFileSync(join(dir, "fixed.json"), JSON.stringify(config));
    // SQS attribute names keep their case, and so must the letter's (`Kind`, not `kind`).
    const attributes = {
      meterhook_source: "storage",
      Kind: "snapshot",
      tenant: "tenant-7",
      Authorization: "Bearer attr-secret-0001", // a credential: never kept in a letter
    };
    // A day of its own: its identifier must not be one another test billed.
    const record = sqsRecord({ ...(loadTrigger("sqs-storage-snapshot.json") as object), day: "attrs-day" });
    record.messageAttributes = Object.fromEntries(
      Object.entries(attributes).map(([k, v]) => [
        k,
        { stringValue: v, dataType: "String", stringListValues: [], binaryListValues: [] },
      ]),
    );
    await ingestHandler({ METERHOOK_CONFIG: join(dir, "before.json") })(sqsEvent([record]), lambdaContext());
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.deepEqual(
      letters.map((l) => l.error.code),
      ["customer_not_found"],
    );
    assert.deepEqual(
      [letters[0]?.source, letters[0]?.messageAttributes],
      ["storage", { Kind: "snapshot", tenant: "tenant-7" }],
    );
    await putBack(letters);

    const report = await replay({}, {}, { METERHOOK_CONFIG: join(dir, "fixed.json") });
    assert.deepEqual([report.billed, report.deadLettered], [1, {}]);
    assert.equal(total("cus_attrs7"), 734.0032);
  });

  test("replays an event EventBridge put in the DLQ after failing to deliver it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mh-replay-eb-"));
    const file = join(dir, "config.yaml");
    const config = parseYaml(readFileSync("examples/eventbridge-orders.yaml", "utf8"));
    config.sources.orders.customer = { lookup: "table", table: { acct_42: "cus_eb42" } };
    writeFileSync(file, JSON.stringify(config));
    await parts.queues.sqs.send(
      new SendMessageCommand({
        QueueUrl: parts.queues.deadLetterQueueUrl,
        MessageBody: JSON.stringify(loadTrigger("eventbridge-order-placed.json")),
      }),
    );
    const report = await replayFromConfig(
      loadConfig({ ...env(), METERHOOK_CONFIG: file }),
      { limit: 10, dryRun: false },
      { sqs: parts.queues.sqs, logger: silentLogger },
    );
    assert.deepEqual(report, {
      dryRun: false,
      examined: 1,
      billed: 1,
      cancelled: 0,
      deadLettered: {},
      leftUntouched: 0,
      pastDedupeWindow: 0,
    });
    assert.equal(parts.emulator.ledger.summaries().find((x) => x.customer === "cus_eb42")?.aggregated_value, 5);
  });

  const hoursLater = (h: number) => () => Date.now() + h * 3_600_000;

  /**
   * An event Stripe recorded though meterhook never heard so: every attempt is processed, then
   * its connection dropped, until the message is out of deliveries.
   */
  async function recordedButUnknown(customer: string) {
    const event = usageEvent({ customer, value: 4 });
    const identifier = meterEventIdentifier(event.id as string, "api_requests");
    parts.emulator.setFaultPolicy((req) =>
      req.identifiers.includes(identifier) ? { path: req.path, action: "accept-then-drop" } : undefined,
    );
    const handler = ingestHandler({ METERHOOK_MAX_ATTEMPTS: "1", STRIPE_MAX_ATTEMPTS: "2" });
    try {
      await handler(sqsEvent([sqsRecord(event)]), lambdaContext());
    } finally {
      parts.emulator.setFaultPolicy(undefined);
    }
    return { event, identifier, letters: await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl) };
  }

  test("holds a letter Stripe may have recorded once Stripe's 24-hour duplicate check has passed; resends it only when asked", async () => {
    const { identifier, letters } = await recordedButUnknown("cus_window");
    assert.equal(letters.length, 1);
    assert.equal(letters[0]?.error.code, "retries_exhausted");
    assert.equal(letters[0]?.stripeMayHaveRecorded, true);
    assert.equal(parts.emulator.ledger.events.filter((e) => e.identifier === identifier).length, 1);
    await putBack(letters);

    const requests = parts.emulator.requests.length;
    const held = await replay({ now: hoursLater(25) });
    assert.deepEqual(held, {
      dryRun: false,
      examined: 1,
      billed: 0,
      cancelled: 0,
      deadLettered: {},
      leftUntouched: 0,
      pastDedupeWindow: 1,
    });
    assert.equal(parts.emulator.requests.length, requests, "nothing sent to Stripe");
    const untouched = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.deepEqual(untouched, letters);

    // Inside the window (22 hours on), or when the operator asks, it is resent and Stripe dedupes it.
    await putBack(untouched);
    const inside = await replay({ now: hoursLater(22) });
    assert.equal(inside.billed, 1);
    assert.equal(inside.pastDedupeWindow, 0);
    await putBack(letters);
    const asked = await replay({ now: hoursLater(25), afterDedupeWindow: true });
    assert.equal(asked.billed, 1);
    assert.equal(asked.pastDedupeWindow, 0);
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 0);
    assert.equal(parts.emulator.ledger.events.filter((e) => e.identifier === identifier).length, 1);
  });

  test("a letter that fails again on replay still says Stripe may have recorded it", async () => {
    const { letters } = await recordedButUnknown("cus_window_again");
    await putBack(letters);
    parts.emulator.injectFaults({ path: "/v2/billing/meter_event_stream", respond: refused });
    const report = await replay({});
    assert.deepEqual(report.deadLettered, { stripe_rejected: 1 });
    const [again] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(again?.error.code, "stripe_rejected");
    assert.equal(again?.stripeMayHaveRecorded, true);
    assert.equal(again?.receivedAt, letters[0]?.receivedAt);
  });

  test("a trigger Stripe billed in part: its letter names the event refused, and replay, even a day later, sends that alone", async () => {
    const fanOut = { METERHOOK_CONFIG: "test/fixtures/sources/fan-out.ts", METERHOOK_STRIPE_API: "v1" };
    const handler = ingestHandler(fanOut);
    const job = (id: string) => sqsRecord({ job: id, team: "team-1", calls: 2, gb: 1 });
    parts.emulator.injectFaults({ path: "/v1/billing/meter_events", bodyIncludes: "storage_gb", respond: refused });
    await handler(sqsEvent([job("job-half")]), lambdaContext());
    parts.emulator.injectFaults({ path: "/v1/billing/meter_events", respond: refused, times: 2 });
    await handler(sqsEvent([job("job-none")]), lambdaContext());

    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    const byJob = new Map(letters.map((l) => [(l.event as { job: string }).job, l]));
    const half = byJob.get("job-half");
    const storage = meterEventIdentifier("job-half", "storage_gb", "jobs/code");
    assert.equal(half?.error.code, "stripe_rejected");
    assert.match(half?.error.message ?? "", /^1 of the trigger's 2 meter events not billed \(the others are\): /);
    assert.deepEqual(half?.unbilled, [storage]);
    // What it names was refused, so never recorded: replay need not wait for an operator.
    assert.equal(half?.stripeMayHaveRecorded, undefined);
    assert.equal(byJob.get("job-none")?.error.code, "stripe_rejected");
    assert.equal(byJob.get("job-none")?.unbilled, undefined, "nothing billed: replay sends it whole");
    assert.equal(byJob.get("job-none")?.stripeMayHaveRecorded, undefined);

    await putBack(letters.filter((l) => l === half));
    const apiCalls = meterEventIdentifier("job-half", "api_requests", "jobs/code");
    const report = await replay({ now: () => Date.now() + 30 * 3_600_000 }, {}, fanOut);
    assert.deepEqual([report.billed, report.pastDedupeWindow, report.deadLettered], [1, 0, {}]);
    assert.equal(parts.emulator.ledger.receipts.get(apiCalls), 1, "the billed event was not sent again");
    assert.equal(parts.emulator.ledger.events.filter((e) => e.identifier === storage).length, 1);
  });

  test("a letter whose `unbilled` was edited out of shape is held past Stripe's window, as one Stripe may have recorded", async () => {
    const fanOut = { METERHOOK_CONFIG: "test/fixtures/sources/fan-out.ts", METERHOOK_STRIPE_API: "v1" };
    parts.emulator.injectFaults({ path: "/v1/billing/meter_events", bodyIncludes: "storage_gb", respond: refused });
    await ingestHandler(fanOut)(
      sqsEvent([sqsRecord({ job: "job-edited", team: "team-1", calls: 2, gb: 1 })]),
      lambdaContext(),
    );
    const [letter] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    const apiCalls = meterEventIdentifier("job-edited", "api_requests", "jobs/code");
    assert.equal(parts.emulator.ledger.receipts.get(apiCalls), 1);
    // By hand, the list became its one identifier: it no longer says which events were billed.
    const edited = { ...(letter as NonNullable<typeof letter>), unbilled: letter?.unbilled?.[0] as never };
    await putBack([edited]);

    const report = await replay({ now: () => Date.now() + 30 * 3_600_000 }, {}, fanOut);
    assert.deepEqual([report.billed, report.pastDedupeWindow], [0, 1], "sent whole, it would bill api_requests again");
    assert.equal(parts.emulator.ledger.receipts.get(apiCalls), 1);
    const within = await replay({}, {}, fanOut);
    assert.deepEqual([within.billed, within.pastDedupeWindow], [1, 0], "within the window Stripe drops the repeat");
  });

  test("SQS's DLQ redrive of a letter of a trigger billed in part bills only what the letter names", async () => {
    const handler = ingestHandler({ METERHOOK_CONFIG: "test/fixtures/sources/fan-out.ts", METERHOOK_STRIPE_API: "v1" });
    parts.emulator.injectFaults({ path: "/v1/billing/meter_events", bodyIncludes: "storage_gb", respond: refused });
    await handler(sqsEvent([sqsRecord({ job: "job-redrive", team: "team-1", calls: 2, gb: 1 })]), lambdaContext());
    const [letter] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(letter?.unbilled?.length, 1);

    // The console's "Start DLQ redrive" puts the letter's body back on the ingest queue as it is.
    const { attributes: _, ...body } = letter as NonNullable<typeof letter>;
    const res = await handler(sqsEvent([sqsRecord(JSON.stringify(body))]), lambdaContext());
    assert.deepEqual(res.batchItemFailures, []);
    const receipts = (name: string) =>
      parts.emulator.ledger.receipts.get(meterEventIdentifier("job-redrive", name, "jobs/code"));
    // The refusal was the fault's answer, before the emulator's ledger: each reached it once.
    assert.deepEqual([receipts("api_requests"), receipts("storage_gb")], [1, 1], "only the refused one sent again");
    assert.deepEqual(await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl), []);
  });

  test("a batch with one record whose customer is unknown bills the others; replay after the fix bills that one alone", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mh-replay-batch-"));
    const config = parseYaml(readFileSync("examples/usage-batch.yaml", "utf8"));
    config.sources["usage-batch"].customer.table = { acct_1001: "cus_Part1001" };
    writeFileSync(join(dir, "before.json"), JSON.stringify(config));
    config.sources["usage-batch"].customer.table.acct_1002 = "cus_Part1002";
    writeFileSync(join(dir, "fixed.json"), JSON.stringify(config));
    config.sources["usage-batch"].rules[0].name = "renamed";
    writeFileSync(join(dir, "renamed.json"), JSON.stringify(config));
    const trigger = {
      meterhook: "trigger/1",
      kind: "webhook",
      source: "usage-batch",
      receivedAt: new Date().toISOString(),
      headers: {},
      body: JSON.stringify(loadTrigger("usage-batch.json")),
    };
    await ingestHandler({ METERHOOK_CONFIG: join(dir, "before.json") })(
      sqsEvent([sqsRecord(trigger)]),
      lambdaContext(),
    );

    assert.equal(total("cus_Part1001"), 123, "acct_1001's two records are billed");
    const [letter, ...more] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(more.length, 0);
    assert.equal(letter?.error.code, "customer_not_found");
    assert.match(letter?.error.message ?? "", /^1 of the trigger's 3 meter events not billed .*acct_1002/);
    assert.equal(letter?.unbilled?.length, 1);

    // Replayed after its rule was renamed, the trigger's events have other identifiers: sent
    // whole, acct_1001's would bill again. It stays a letter, still naming what is unbilled.
    await putBack([letter as NonNullable<typeof letter>]);
    const renamed = await replay({}, {}, { METERHOOK_CONFIG: join(dir, "renamed.json") });
    assert.deepEqual([renamed.billed, renamed.deadLettered], [0, { mapping_failed: 1 }]);
    const [again] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.deepEqual(again?.unbilled, letter?.unbilled);

    await putBack([again as NonNullable<typeof again>]);
    const fixed = await replay({}, {}, { METERHOOK_CONFIG: join(dir, "fixed.json") });
    assert.deepEqual([fixed.billed, fixed.deadLettered], [1, {}]);
    assert.equal(total("cus_Part1002"), 40);
    assert.equal(total("cus_Part1001"), 123);
    const sent = parts.emulator.ledger.events.filter((e) => e.payload.stripe_customer_id === "cus_Part1001");
    assert.equal(
      sent.reduce((n, e) => n + (parts.emulator.ledger.receipts.get(e.identifier) ?? 0), 0),
      2,
    );
  });

  test("a message delivered again more than 23 h after its first delivery is dead-lettered, not resent, and replay holds it", async () => {
    const handler = ingestHandler();
    const dayAgo = String(Date.now() - 24 * 3_600_000);
    const late = usageEvent({ customer: "cus_late_redelivery", value: 5 });
    const early = usageEvent({ customer: "cus_early_redelivery", value: 7 });
    const requests = parts.emulator.requests.length;
    const res = await handler(
      sqsEvent([
        sqsRecord(late, {
          ApproximateReceiveCount: "3",
          ApproximateFirstReceiveTimestamp: dayAgo,
          SentTimestamp: dayAgo,
        }),
        // A first delivery a day after it was sent (a backlog) is no repeat: it is billed.
        sqsRecord(early, {
          ApproximateReceiveCount: "1",
          ApproximateFirstReceiveTimestamp: String(Date.now()),
          SentTimestamp: dayAgo,
        }),
      ]),
      lambdaContext(),
    );
    assert.deepEqual(res.batchItemFailures, []);
    assert.equal(total("cus_late_redelivery"), 0);
    assert.equal(total("cus_early_redelivery"), 7);
    assert.ok(parts.emulator.requests.length > requests, "the early one was sent");
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(letters.length, 1);
    assert.equal(letters[0]?.error.code, "dedupe_window_passed");
    assert.match(letters[0]?.error.message ?? "", /delivered again 24 h after its first delivery/);
    assert.equal(letters[0]?.stripeMayHaveRecorded, true);
    assert.equal(letters[0]?.attributes.event_id, late.id);
    assert.deepEqual(letters[0]?.event, late);

    await putBack(letters);
    const report = await replay({});
    assert.equal(report.pastDedupeWindow, 1);
    assert.equal(total("cus_late_redelivery"), 0);
  });

  test("a dead letter put back on the ingest queue by SQS's DLQ redrive is handled as replay handles it", async () => {
    const handler = ingestHandler({}, { acct_redrive: "cus_redrive" });
    // Never seen by Stripe: billed now that the customer is mapped, no new letter.
    await deadLetter([usageEvent({ customer: "acct_redrive", value: 2 })]);
    const [unmapped] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    const { attributes: _a, ...unmappedBody } = unmapped as NonNullable<typeof unmapped>;
    // Recorded by Stripe without a clear answer: resent inside Stripe's duplicate window (and
    // deduplicated), dead-lettered again past it.
    const inside = await recordedButUnknown("cus_redrive_inside");
    const past = await recordedButUnknown("cus_redrive_past");
    const { attributes: _b, ...insideBody } = inside.letters[0] as NonNullable<(typeof inside.letters)[0]>;
    const { attributes: _c, ...pastBody } = past.letters[0] as NonNullable<(typeof past.letters)[0]>;
    const yesterday = new Date(Date.now() - 25 * 3_600_000).toISOString();
    const receipts = (identifier: string) => parts.emulator.ledger.receipts.get(identifier) ?? 0;
    const [insideBefore, pastBefore] = [receipts(inside.identifier), receipts(past.identifier)];

    const res = await handler(
      sqsEvent([
        sqsRecord(unmappedBody),
        sqsRecord(insideBody),
        sqsRecord({ ...pastBody, receivedAt: yesterday, firstFailedAt: yesterday }),
      ]),
      lambdaContext(),
    );
    assert.deepEqual(res.batchItemFailures, []);
    assert.equal(total("cus_redrive"), 2);
    assert.equal(parts.emulator.ledger.events.filter((e) => e.identifier === inside.identifier).length, 1);
    assert.equal(parts.emulator.ledger.events.filter((e) => e.identifier === past.identifier).length, 1);
    assert.equal(receipts(inside.identifier), insideBefore + 1, "resent inside the window");
    assert.equal(receipts(past.identifier), pastBefore, "not sent past the window");
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(letters.length, 1);
    assert.equal(letters[0]?.error.code, "dedupe_window_passed");
    assert.match(letters[0]?.error.message ?? "", /DLQ redrive 25 h after meterhook first received it/);
    assert.deepEqual(letters[0]?.event, past.event);
    assert.equal(letters[0]?.attempts, (pastBody.attempts as number) + 1);
    assert.equal(letters[0]?.receivedAt, yesterday);
    assert.equal(letters[0]?.stripeMayHaveRecorded, true);
  });

  test("a letter Stripe never saw is replayed however old, and a raw redriven message is held past the window", async () => {
    await deadLetter([usageEvent({ customer: "acct_old", value: 3 })]);
    const [letter] = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(letter?.error.code, "customer_not_found");
    assert.equal(letter?.stripeMayHaveRecorded, undefined);
    await putBack(letter ? [letter] : []);
    const report = await replay({ now: hoursLater(48) }, { acct_old: "cus_old" });
    assert.equal(report.billed, 1);
    assert.equal(report.pastDedupeWindow, 0);
    assert.equal(total("cus_old"), 3);

    await parts.queues.sqs.send(
      new SendMessageCommand({
        QueueUrl: parts.queues.deadLetterQueueUrl,
        MessageBody: JSON.stringify(usageEvent({ customer: "cus_redriven_old" })),
      }),
    );
    const raw = await replay({ now: hoursLater(25) });
    assert.equal(raw.pastDedupeWindow, 1);
    assert.equal(total("cus_redriven_old"), 0);
    assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 1);
  });

  test("`npm run replay -- --dry-run` prints the report", async () => {
    await deadLetter([usageEvent({ customer: "acct_cli" })]);
    const { stdout } = await promisify(execFile)(
      "npx",
      ["tsx", "cli/meterhook.ts", "replay", "--dry-run", "--limit", "10", "--after-dedupe-window"],
      {
        env: { ...process.env, ...env() },
      },
    );
    const report = JSON.parse(stdout.slice(stdout.indexOf("{\n")));
    assert.deepEqual(report.deadLettered, { customer_not_found: 1 });
    assert.equal(report.dryRun, true);
    assert.equal(report.pastDedupeWindow, 0);

    const chosen = await promisify(execFile)(
      "npx",
      ["tsx", "cli/meterhook.ts", "replay", "--dry-run", "--code", "invalid_event", "--code", "meter_not_found"],
      { env: { ...process.env, ...env() } },
    );
    const other = JSON.parse(chosen.stdout.slice(chosen.stdout.indexOf("{\n")));
    assert.deepEqual([other.examined, other.notSelected], [0, 1]);
  });
});
