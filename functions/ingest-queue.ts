import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";
import { type Consumer, createConsumerFromConfig } from "../lib/app.js";
import { loadConfig } from "../lib/config.js";
import { MetricsRecorder } from "../lib/metrics.js";
import { oncePerColdStart } from "./support/cold-start.js";
import { publishMetrics } from "./support/observability.js";

/**
 * The ingest-queue consumer (SQS trigger with ReportBatchItemFailures): only the messages that
 * failed transiently are reported, so SQS retries those and deletes the rest. If the handler
 * throws, Lambda retries the whole batch: nothing is lost.
 */
export function createQueueHandler(getConsumer: () => Promise<Consumer>, onDone?: () => void) {
  return async (event: SQSEvent, context: Pick<Context, "getRemainingTimeInMillis">): Promise<SQSBatchResponse> => {
    const deadline = Date.now() + context.getRemainingTimeInMillis();
    try {
      const consumer = await getConsumer();
      const result = await consumer.process(
        event.Records.map((r) => ({
          messageId: r.messageId,
          body: r.body,
          receiveCount: Number(r.attributes.ApproximateReceiveCount) || 1,
          sentAt: Number(r.attributes.SentTimestamp) || Date.now(),
          firstReceivedAt: Number(r.attributes.ApproximateFirstReceiveTimestamp) || Date.now(),
          attributes: stringAttributes(r.messageAttributes),
        })),
        deadline,
      );
      return { batchItemFailures: result.failedMessageIds.map((itemIdentifier) => ({ itemIdentifier })) };
    } finally {
      onDone?.();
    }
  };
}

/** A record's string message attributes; undefined when it has none, as most canonical events. */
function stringAttributes(attributes: SQSRecord["messageAttributes"] | undefined): Record<string, string> | undefined {
  let out: Record<string, string> | undefined;
  for (const k in attributes) {
    const v = attributes[k]?.stringValue;
    if (v === undefined) continue;
    // Null prototype: an attribute may be named __proto__ (SQS allows it).
    out ??= Object.create(null) as Record<string, string>;
    out[k] = v;
  }
  return out;
}

const metrics = new MetricsRecorder();
export const handler = createQueueHandler(
  oncePerColdStart(() => createConsumerFromConfig(loadConfig(), { metrics })),
  () => publishMetrics(metrics, "ingest-queue"),
);
