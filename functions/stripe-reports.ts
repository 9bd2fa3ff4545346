import type {
  APIGatewayProxyEventV2,
  APIGatewayProxyStructuredResultV2,
  Context,
  ScheduledEvent,
  SQSBatchResponse,
  SQSEvent,
} from "aws-lambda";
import { createErrorReportReaderFromConfig, type ErrorReportReader } from "../lib/app.js";
import { loadConfig } from "../lib/config.js";
import { createLogger, type Logger, silentLogger } from "../lib/logger.js";
import { MetricsRecorder } from "../lib/metrics.js";
import { refusedIn } from "../lib/stripe/error-reports.js";
import { oncePerColdStart } from "./support/cold-start.js";
import { httpRequestOf, httpResultOf, isHttpEvent } from "./support/http-event.js";
import { publishMetrics } from "./support/observability.js";

/**
 * Stripe's reports are read a minute late: an event Stripe creates just before a run might not
 * be listed by it yet, and the next run's window would have passed it.
 */
export const REPORTS_LAG_MS = 60_000;

/** A pushed notification is answered within this: API Gateway's integration timeout is 30 s. */
export const HTTP_ANSWER_WITHIN_MS = 25_000;

/** A missed window's read is not started, nor allowed to run, closer than this to the function's timeout. */
export const MISSED_STOP_MARGIN_MS = 5_000;

export interface ReportsSetup {
  reader: ErrorReportReader;
  intervalMs: number;
  logger?: Logger;
}

type ScheduledRun = Pick<ScheduledEvent, "time">;
export interface RunResult {
  from: string;
  to: string;
  reports: number;
  refused: number;
}

/**
 * The stripe-reports function. On a schedule (serverless.yml, every
 * METERHOOK_REPORTS_INTERVAL_MINUTES) it reads the error reports Stripe created in the interval
 * before the scheduled time (less REPORTS_LAG_MS), so consecutive runs read consecutive windows
 * and a retried run the same one. A failed read throws, and Lambda retries the invocation; a run
 * that fails every retry is written by Lambda to the reports-missed queue (its on-failure
 * destination), which triggers this function again with SQS records: each names the run's
 * scheduled time, and its window is read then, or retried by SQS until Stripe answers. As the
 * HTTP API's `POST /v1/stripe/events`, it takes the thin notifications a Stripe event destination
 * pushes (lib/stripe/event-notifications.ts).
 */
export function createReportsHandler(getSetup: () => Promise<ReportsSetup>, onDone?: () => void) {
  async function handler(
    event: SQSEvent,
    context: Pick<Context, "getRemainingTimeInMillis">,
  ): Promise<SQSBatchResponse>;
  async function handler(
    event: APIGatewayProxyEventV2,
    context: Pick<Context, "getRemainingTimeInMillis">,
  ): Promise<APIGatewayProxyStructuredResultV2>;
  async function handler(event: ScheduledRun, context: Pick<Context, "getRemainingTimeInMillis">): Promise<RunResult>;
  async function handler(
    event: ScheduledRun | SQSEvent | APIGatewayProxyEventV2,
    context: Pick<Context, "getRemainingTimeInMillis">,
  ): Promise<RunResult | SQSBatchResponse | APIGatewayProxyStructuredResultV2> {
    const deadline = Date.now() + context.getRemainingTimeInMillis();
    try {
      const setup = await getSetup();
      // A thin event notification pushed by a Stripe event destination (POST /v1/stripe/events).
      // API Gateway gives up on an integration after 30 s: the read ends before that.
      if (isHttpEvent(event)) {
        const by = Math.min(deadline, Date.now() + HTTP_ANSWER_WITHIN_MS);
        return httpResultOf(await setup.reader.receive(httpRequestOf(event), by));
      }
      if ("Records" in event) return await readMissed(event, setup, deadline);
      const scheduled = Date.parse(event.time);
      return await readWindow(setup, Number.isNaN(scheduled) ? Date.now() : scheduled, deadline);
    } finally {
      onDone?.();
    }
  }
  return handler;
}

async function readWindow({ reader, intervalMs }: ReportsSetup, scheduled: number, deadline: number) {
  const to = scheduled - REPORTS_LAG_MS;
  const from = to - intervalMs;
  const reports = await reader.run({ from, to }, deadline);
  return {
    from: new Date(from).toISOString(),
    to: new Date(to).toISOString(),
    reports: reports.length,
    refused: refusedIn(reports),
  };
}

/**
 * Records of runs that failed (Lambda's invocation records, or `{"time": ...}` an operator sent):
 * each window read once, one after another. A window Stripe still will not list is reported as a
 * batch item failure, so SQS gives it back after the queue's visibility timeout.
 */
async function readMissed(event: SQSEvent, setup: ReportsSetup, deadline: number): Promise<SQSBatchResponse> {
  const logger = setup.logger ?? silentLogger;
  const failures: SQSBatchResponse["batchItemFailures"] = [];
  const read = new Map<number, boolean>();
  // Reads end this long before Lambda would stop the invocation: a stopped invocation gives its
  // whole batch back, and the windows it had read would be logged and counted twice.
  const stopBy = deadline - MISSED_STOP_MARGIN_MS;
  let unstarted = 0;
  for (const record of event.Records) {
    if (Date.now() >= stopBy) {
      unstarted++;
      failures.push({ itemIdentifier: record.messageId });
      continue;
    }
    const scheduled = scheduledTimeOf(record.body);
    if (scheduled === undefined) {
      // Nothing names a window: retrying it cannot help. Logged where the operator looks.
      logger.error("a reports-missed record names no scheduled time; it is dropped", {
        messageId: record.messageId,
        body: record.body.slice(0, 500),
      });
      continue;
    }
    let ok = read.get(scheduled);
    if (ok === undefined) {
      try {
        const run = await readWindow(setup, scheduled, stopBy);
        logger.info("a missed window of Stripe's error reports was read", { ...run, messageId: record.messageId });
        ok = true;
      } catch (error) {
        logger.warn("a missed window of Stripe's error reports could not be read yet; SQS will retry it", {
          messageId: record.messageId,
          scheduled: new Date(scheduled).toISOString(),
          error,
        });
        ok = false;
      }
      read.set(scheduled, ok);
    }
    if (!ok) failures.push({ itemIdentifier: record.messageId });
  }
  if (unstarted > 0) {
    logger.warn("missed windows of Stripe's error reports left for a later invocation: no time left", { unstarted });
  }
  return { batchItemFailures: failures };
}

/**
 * The scheduled time of a failed run: `requestPayload.time` in Lambda's invocation record (the
 * scheduled event the run was given), or `time` at the top for the bare event (an async
 * dead-letter queue's body, or one an operator sends).
 */
export function scheduledTimeOf(body: string): number | undefined {
  let x: unknown;
  try {
    x = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (!x || typeof x !== "object") return undefined;
  const payload = (x as { requestPayload?: unknown }).requestPayload;
  const time = (payload && typeof payload === "object" ? payload : x) as { time?: unknown };
  if (typeof time.time !== "string") return undefined;
  const t = Date.parse(time.time);
  return Number.isNaN(t) ? undefined : t;
}

const metrics = new MetricsRecorder();
export const handler = createReportsHandler(
  oncePerColdStart(async () => {
    const config = loadConfig();
    const logger = createLogger({ level: config.logLevel, base: { component: "stripe-reports" } });
    const reader = await createErrorReportReaderFromConfig(config, { metrics, logger });
    return { reader, logger, intervalMs: config.reportsIntervalMinutes * 60_000 };
  }),
  () => publishMetrics(metrics, "stripe-reports"),
);
