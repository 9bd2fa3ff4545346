import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { CreateQueueCommand, SendMessageBatchCommand } from "@aws-sdk/client-sqs";
import { createReportsHandler, MISSED_STOP_MARGIN_MS, REPORTS_LAG_MS } from "../../functions/stripe-reports.js";
import { createConsumerFromConfig, createErrorReportReaderFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import { processBatch } from "../../lib/consumer.js";
import { createLogger, silentLogger } from "../../lib/logger.js";
import { meterEventIdentifier } from "../../lib/meter-event.js";
import { MetricsRecorder } from "../../lib/metrics.js";
import { ErrorReportsUnavailable } from "../../lib/stripe/error-reports.js";
import { startPoller } from "../../local/poller.js";
import { EMULATOR_DEFAULT_KEY, type StripeEmulator } from "../../local/stripe-emulator/server.js";
import { lambdaContext, queueMessage, sqsRecord, usageEvent } from "../helpers/factories.js";
import { queueDepth, startTestQueues, type TestQueues } from "../helpers/sqs.js";
import { startEmulator } from "../helpers/stripe.js";
import { waitFor } from "../helpers/wait.js";

// Stripe knows one customer and one meter: the rest is refused asynchronously, after the v2
// stream has accepted the batch.
let emulator: StripeEmulator;
let queues: TestQueues;
before(async () => {
  emulator = await startEmulator({ customers: ["cus_Known"], meters: [{ event_name: "api_requests" }] });
  queues = await startTestQueues();
});
after(async () => {
  await emulator.stop();
  await queues.stop();
});

const env = (extra: Record<string, string> = {}) =>
  loadConfig({
    STRIPE_API_KEY: EMULATOR_DEFAULT_KEY,
    STRIPE_API_BASE: emulator.url,
    STRIPE_METER_EVENTS_BASE: emulator.url,
    METERHOOK_DLQ_URL: queues.deadLetterQueueUrl,
    SQS_ENDPOINT: queues.endpoint,
    STRIPE_MAX_ATTEMPTS: "2",
    ...extra,
  });

/** The scheduled function as Lambda runs it, its log lines and metrics, for a run scheduled at `at`. */
async function runAt(at: number) {
  const lines: string[] = [];
  const metrics = new MetricsRecorder();
  const reader = await createErrorReportReaderFromConfig(env(), {
    logger: createLogger({ write: (line) => lines.push(line) }),
    metrics,
  });
  const handler = createReportsHandler(async () => ({ reader, intervalMs: 5 * 60_000 }));
  try {
    const result = await handler({ time: new Date(at).toISOString() }, lambdaContext());
    return { result, logged: lines.map((l) => JSON.parse(l)), points: metrics.drain() };
  } finally {
    await reader.close();
  }
}

describe("Stripe's asynchronous error reports (the stripe-reports function)", () => {
  test("events the v2 stream accepted and Stripe then refused are logged with their codes and counted", async () => {
    const consumer = await createConsumerFromConfig(env(), { sqs: queues.sqs, logger: silentLogger });
    const known = usageEvent({ customer: "cus_Known", value: 5 });
    const unknown = [usageEvent({ customer: "cus_Gone1" }), usageEvent({ customer: "cus_Gone2" })];
    const noMeter = usageEvent({ customer: "cus_Known", event_name: "no_such_meter" });
    const result = await processBatch(
      [known, ...unknown, noMeter].map((e) => queueMessage(e)),
      Date.now() + 30_000,
      consumer.deps,
    );
    await consumer.close();
    // Stripe took the whole batch: nothing meterhook could have dead-lettered.
    assert.equal(result.billed, 4);
    emulator.errorReports.flush();

    // Scheduled a little after the reports were made: they are in its window.
    const { result: run, logged, points } = await runAt(Date.now() + REPORTS_LAG_MS + 1_000);

    assert.deepEqual({ reports: run.reports, refused: run.refused }, { reports: 2, refused: 3 });
    const reports = logged.filter((l) => l.message === "Stripe refused meter events it had accepted");
    assert.ok(reports.every((r) => r.level === "error"));
    const byType = Object.fromEntries(reports.map((r) => [r.type, r]));
    const customers = byType["v1.billing.meter.error_report_triggered"];
    assert.equal(customers.meter, emulator.ledger.meters.get("api_requests")?.id);
    assert.equal(customers.errorCount, 2);
    assert.equal(customers.errors[0].code, "meter_event_customer_not_found");
    assert.deepEqual(
      customers.errors[0].samples.map((s: { identifier: string }) => s.identifier).sort(),
      unknown.map((e) => meterEventIdentifier(e.id as string, "api_requests")).sort(),
    );
    assert.match(customers.errors[0].samples[0].message, /cus_Gone/);
    const meters = byType["v1.billing.meter.no_meter_found"];
    assert.equal(meters.meter, undefined);
    assert.deepEqual(
      meters.errors.map((t: { code: string; count: number }) => [t.code, t.count]),
      [["no_meter", 1]],
    );
    // One metric for the alarm (all codes), and one per code.
    const refused = points.filter((p) => p.name === "StripeRefusedEvents");
    assert.equal(refused.find((p) => Object.keys(p.dimensions).length === 0)?.values[0], 3);
    assert.equal(refused.find((p) => p.dimensions.code === "meter_event_customer_not_found")?.values[0], 2);
    assert.equal(refused.find((p) => p.dimensions.code === "no_meter")?.values[0], 1);
    // The billed event counted; the refused ones did not.
    assert.equal(emulator.ledger.summaries().find((s) => s.customer === "cus_Known")?.aggregated_value, 5);

    // The run before saw none of them, and the next run sees them no more.
    assert.equal((await runAt(Date.now() + REPORTS_LAG_MS - 5 * 60_000)).result.reports, 0);
    assert.equal((await runAt(Date.now() + REPORTS_LAG_MS + 5 * 60_000 + 1_000)).result.reports, 0);
  });

  test("reads every page of reports", async () => {
    const at = Date.now() + REPORTS_LAG_MS + 2_000;
    const before = (await runAt(at)).result.reports;
    for (let i = 0; i < 130; i++) {
      emulator.ledger.addError({
        code: "meter_event_customer_not_found",
        message: `Customer cus_page${i} was not found.`,
        identifier: `mh_page${i}`,
        event_name: "api_requests",
      });
      emulator.errorReports.flush();
    }
    const listsBefore = emulator.requests.filter((r) => r.path === "/v2/core/events").length;
    const { result } = await runAt(at);
    assert.equal(result.reports - before, 130);
    // Two pages of 100 of one type, and one of the other.
    assert.equal(emulator.requests.filter((r) => r.path === "/v2/core/events").length - listsBefore, 3);
  });

  test("a read Stripe keeps failing fails the run, so that Lambda retries it", async () => {
    emulator.injectFaults({ path: "/v2/core/events", respond: { status: 500 }, times: 2 });
    await assert.rejects(runAt(Date.now() + REPORTS_LAG_MS), ErrorReportsUnavailable);
  });

  /** A report Stripe makes now, in the window of a run scheduled just over REPORTS_LAG_MS later. */
  const reportNow = (customer: string) => {
    emulator.ledger.addError({
      code: "meter_event_customer_not_found",
      message: `Customer ${customer} was not found.`,
      identifier: `mh_${customer}`,
      event_name: "api_requests",
    });
    emulator.errorReports.flush();
  };

  /** What Lambda writes to the on-failure destination after a scheduled run's last retry. */
  const invocationRecord = (scheduled: string) => ({
    version: "1.0",
    timestamp: new Date().toISOString(),
    requestContext: {
      requestId: "5f6c1a7e-0000-4000-8000-000000000000",
      functionArn: "arn:aws:lambda:us-east-1:000000000000:function:meterhook-dev-stripeReports:$LATEST",
      condition: "RetriesExhausted",
      approximateInvokeCount: 3,
    },
    requestPayload: {
      version: "0",
      id: "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
      "detail-type": "Scheduled Event",
      source: "aws.events",
      account: "000000000000",
      time: scheduled,
      region: "us-east-1",
      resources: ["arn:aws:events:us-east-1:000000000000:rule/meterhook-dev-StripeReportsEventsRuleSchedule1"],
      detail: {},
    },
    responseContext: { statusCode: 200, executedVersion: "$LATEST", functionError: "Unhandled" },
    responsePayload: { errorType: "ErrorReportsUnavailable", errorMessage: "reading Stripe's error reports failed" },
  });

  /**
   * The reports-missed queue on fauxqs (visible again 1 s after a failure) feeding the function
   * as its SQS trigger does, until `until` holds.
   */
  async function throughMissedQueue(
    bodies: string[],
    until: (logged: Array<{ message: string } & Record<string, unknown>>) => boolean,
  ) {
    const { QueueUrl } = await queues.sqs.send(
      new CreateQueueCommand({
        QueueName: `meterhook-reports-missed-${bodies.length}-${Date.now()}`,
        Attributes: { VisibilityTimeout: "1" },
      }),
    );
    const queueUrl = QueueUrl as string;
    await queues.sqs.send(
      new SendMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: bodies.map((MessageBody, i) => ({ Id: String(i), MessageBody })),
      }),
    );
    const lines: string[] = [];
    const metrics = new MetricsRecorder();
    const logger = createLogger({ write: (line) => lines.push(line) });
    const reader = await createErrorReportReaderFromConfig(env(), { logger, metrics });
    const handler = createReportsHandler(async () => ({ reader, intervalMs: 5 * 60_000, logger }));
    const poller = startPoller({ sqs: queues.sqs, queueUrl, handler, waitTimeSeconds: 0 });
    const logged = () => lines.map((l) => JSON.parse(l) as { message: string } & Record<string, unknown>);
    try {
      await waitFor(() => until(logged()), "the reports-missed queue to be read");
      await waitFor(async () => (await queueDepth(queues.sqs, queueUrl)) === 0, "the reports-missed queue to empty");
    } finally {
      await poller.stop();
      await reader.close();
    }
    return { logged: logged(), points: metrics.drain() };
  }

  test("a window whose run failed every retry is read from the reports-missed queue once Stripe answers", async () => {
    reportNow("cus_MissedWindow");
    const scheduled = new Date(Date.now() + REPORTS_LAG_MS + 1_000).toISOString();
    // Stripe fails the run and Lambda's two retries of it (each read tries STRIPE_MAX_ATTEMPTS 2 times).
    emulator.injectFaults({ path: "/v2/core/events", respond: { status: 503 }, times: 6 });
    for (let attempt = 0; attempt < 3; attempt++) {
      await assert.rejects(runAt(Date.parse(scheduled)), ErrorReportsUnavailable);
    }
    // Lambda writes the run to the function's on-failure destination. Stripe still fails the
    // first read from there, so SQS gives the window back, and the next read gets it.
    emulator.injectFaults({ path: "/v2/core/events", respond: { status: 503 }, times: 2 });
    const { logged, points } = await throughMissedQueue([JSON.stringify(invocationRecord(scheduled))], (lines) =>
      lines.some((l) => l.message === "a missed window of Stripe's error reports was read"),
    );

    const retried = logged.find((l) => l.message.includes("could not be read yet"));
    assert.equal(retried?.level, "warn");
    assert.equal(retried?.scheduled, scheduled);
    // Earlier tests' reports share the window; this one is among them.
    const report = logged.find(
      (l) =>
        l.message === "Stripe refused meter events it had accepted" &&
        JSON.stringify(l.errors).includes("cus_MissedWindow"),
    );
    assert.equal(report?.level, "error");
    const read = logged.find((l) => l.message === "a missed window of Stripe's error reports was read");
    assert.equal(read?.to, new Date(Date.parse(scheduled) - REPORTS_LAG_MS).toISOString());
    assert.ok((read?.reports as number) >= 1);
    const refused = points.filter((p) => p.name === "StripeRefusedEvents" && Object.keys(p.dimensions).length === 0);
    assert.ok(refused.reduce((n, p) => n + (p.values[0] ?? 0), 0) >= 1, "the alarm's metric counts it");
  });

  test("a window named twice is read once, and a record naming no time is logged, not retried", async () => {
    // An hour ago: a window without reports, read in one list per report type.
    const scheduled = new Date(Date.now() - 3_600_000).toISOString();
    const listsBefore = emulator.requests.filter((r) => r.path === "/v2/core/events").length;
    const record = JSON.stringify(invocationRecord(scheduled));
    const { logged } = await throughMissedQueue(
      [record, record, JSON.stringify({ time: scheduled }), "not json", JSON.stringify({ requestPayload: {} })],
      (lines) => lines.filter((l) => l.message.includes("names no scheduled time")).length === 2,
    );
    const dropped = logged.filter((l) => l.message.includes("names no scheduled time"));
    assert.ok(dropped.every((l) => l.level === "error"));
    assert.deepEqual(dropped.map((l) => l.body).sort(), ["not json", '{"requestPayload":{}}']);
    // The three records that name the window share one read.
    const lists = emulator.requests.filter((r) => r.path === "/v2/core/events").length - listsBefore;
    assert.equal(lists, 2);
  });

  test("missed windows are not started too close to the function's timeout, and go back to the queue", async () => {
    const lines: string[] = [];
    const logger = createLogger({ write: (line) => lines.push(line) });
    const reader = await createErrorReportReaderFromConfig(env(), { logger });
    const handler = createReportsHandler(async () => ({ reader, intervalMs: 5 * 60_000, logger }));
    const listsBefore = emulator.requests.filter((r) => r.path === "/v2/core/events").length;
    const record = (messageId: string) => ({
      ...sqsRecord(invocationRecord(new Date().toISOString())),
      messageId,
    });
    try {
      // Less than MISSED_STOP_MARGIN_MS left: nothing is read, everything is given back.
      const answer = await handler(
        { Records: [record("m1"), record("m2")] },
        { getRemainingTimeInMillis: () => MISSED_STOP_MARGIN_MS - 1_000 },
      );
      assert.deepEqual(answer, { batchItemFailures: [{ itemIdentifier: "m1" }, { itemIdentifier: "m2" }] });
    } finally {
      await reader.close();
    }
    assert.equal(emulator.requests.filter((r) => r.path === "/v2/core/events").length, listsBefore);
    const left = lines.map((l) => JSON.parse(l)).find((l) => l.message.includes("no time left"));
    assert.equal(left?.unstarted, 2);
  });
});
