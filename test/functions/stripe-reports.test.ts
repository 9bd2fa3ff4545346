import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createReportsHandler, REPORTS_LAG_MS } from "../../functions/stripe-reports.js";
import { createConsumerFromConfig, createErrorReportReaderFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import { processBatch } from "../../lib/consumer.js";
import { createLogger, silentLogger } from "../../lib/logger.js";
import { meterEventIdentifier } from "../../lib/meter-event.js";
import { MetricsRecorder } from "../../lib/metrics.js";
import { ErrorReportsUnavailable } from "../../lib/stripe/error-reports.js";
import { EMULATOR_DEFAULT_KEY, type StripeEmulator } from "../../local/stripe-emulator/server.js";
import { lambdaContext, queueMessage, usageEvent } from "../helpers/factories.js";
import { startTestQueues, type TestQueues } from "../helpers/sqs.js";
import { startEmulator } from "../helpers/stripe.js";

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
});
