import type { Context, SQSBatchResponse, SQSEvent } from "aws-lambda";
import { type Consumer, createConsumerFromConfig } from "../lib/app.js";
import { loadConfig } from "../lib/config.js";

/**
 * The ingest-queue consumer (SQS trigger with ReportBatchItemFailures): only the messages that
 * failed transiently are reported, so SQS retries those and deletes the rest.
 */
export function createQueueHandler(getConsumer: () => Consumer) {
  return async (event: SQSEvent, context: Pick<Context, "getRemainingTimeInMillis">): Promise<SQSBatchResponse> => {
    const deadline = Date.now() + context.getRemainingTimeInMillis();
    const result = await getConsumer().process(
      event.Records.map((r) => ({
        messageId: r.messageId,
        body: r.body,
        receiveCount: Number(r.attributes.ApproximateReceiveCount) || 1,
        sentAt: Number(r.attributes.SentTimestamp) || Date.now(),
        firstReceivedAt: Number(r.attributes.ApproximateFirstReceiveTimestamp) || Date.now(),
      })),
      deadline,
    );
    return { batchItemFailures: result.failedMessageIds.map((itemIdentifier) => ({ itemIdentifier })) };
  };
}

let consumer: Consumer | undefined;
export const handler = createQueueHandler(() => {
  consumer ??= createConsumerFromConfig(loadConfig());
  return consumer;
});
