import type { Context } from "aws-lambda";
import * as z from "zod";
import { replayFromConfig } from "../lib/app.js";
import { loadConfig } from "../lib/config.js";
import { MetricsRecorder } from "../lib/metrics.js";
import type { ReplayReport } from "../lib/replay.js";
import { publishMetrics } from "./support/observability.js";

/**
 * Invoke with `{"limit": 100, "dryRun": true}` (all optional; default limit 100, not a dry run;
 * `"afterDedupeWindow": true` also resends letters held as past Stripe's duplicate window;
 * `"codes": ["customer_not_found"]` replays only letters of those codes).
 */
const ReplayRequestSchema = z.strictObject({
  limit: z.number().int().min(1).max(10_000).default(100),
  dryRun: z.boolean().default(false),
  afterDedupeWindow: z.boolean().default(false),
  codes: z
    .array(z.string().regex(/^[a-z_]{1,64}$/, "a dead-letter code, e.g. customer_not_found"))
    .min(1)
    .optional(),
});

const metrics = new MetricsRecorder();

export const handler = async (
  event: unknown,
  context?: Pick<Context, "getRemainingTimeInMillis">,
): Promise<ReplayReport> => {
  const request = ReplayRequestSchema.parse(event ?? {});
  // Stop taking letters before Lambda's timeout ends the invocation without a report.
  const deadline = context ? Date.now() + context.getRemainingTimeInMillis() : undefined;
  try {
    return await replayFromConfig(
      loadConfig(),
      { ...request, ...(deadline !== undefined ? { deadline } : {}) },
      { metrics },
    );
  } finally {
    // What the replay billed and dead-lettered, and what its ledger did, as the consumer's are.
    publishMetrics(metrics, "dlq-replay");
  }
};
