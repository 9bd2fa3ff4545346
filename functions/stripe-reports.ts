import type { Context, ScheduledEvent } from "aws-lambda";
import { createErrorReportReaderFromConfig, type ErrorReportReader } from "../lib/app.js";
import { loadConfig } from "../lib/config.js";
import { MetricsRecorder } from "../lib/metrics.js";
import { refusedIn } from "../lib/stripe/error-reports.js";
import { oncePerColdStart } from "./support/cold-start.js";
import { publishMetrics } from "./support/observability.js";

/**
 * Stripe's reports are read a minute late: an event Stripe creates just before a run might not
 * be listed by it yet, and the next run's window would have passed it.
 */
export const REPORTS_LAG_MS = 60_000;

/**
 * On a schedule (serverless.yml, every METERHOOK_REPORTS_INTERVAL_MINUTES): reads the error
 * reports Stripe created in the interval before the scheduled time (less REPORTS_LAG_MS), so
 * consecutive runs read consecutive windows, and a retried run the same one. A failed read
 * throws, and Lambda retries the invocation.
 */
export function createReportsHandler(
  getReader: () => Promise<{ reader: ErrorReportReader; intervalMs: number }>,
  onDone?: () => void,
) {
  return async (
    event: Pick<ScheduledEvent, "time">,
    context: Pick<Context, "getRemainingTimeInMillis">,
  ): Promise<{ from: string; to: string; reports: number; refused: number }> => {
    const deadline = Date.now() + context.getRemainingTimeInMillis();
    try {
      const { reader, intervalMs } = await getReader();
      const scheduled = Date.parse(event.time);
      const to = (Number.isNaN(scheduled) ? Date.now() : scheduled) - REPORTS_LAG_MS;
      const from = to - intervalMs;
      const reports = await reader.run({ from, to }, deadline);
      return {
        from: new Date(from).toISOString(),
        to: new Date(to).toISOString(),
        reports: reports.length,
        refused: refusedIn(reports),
      };
    } finally {
      onDone?.();
    }
  };
}

const metrics = new MetricsRecorder();
export const handler = createReportsHandler(
  oncePerColdStart(async () => {
    const config = loadConfig();
    const reader = await createErrorReportReaderFromConfig(config, { metrics });
    return { reader, intervalMs: config.reportsIntervalMinutes * 60_000 };
  }),
  () => publishMetrics(metrics, "stripe-reports"),
);
