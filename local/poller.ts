import { DeleteMessageBatchCommand, ReceiveMessageCommand, type SQSClient } from "@aws-sdk/client-sqs";
import type { SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";

export type QueueLambda = (
  event: SQSEvent,
  context: { getRemainingTimeInMillis(): number },
) => Promise<SQSBatchResponse>;

export interface PollerOptions {
  sqs: SQSClient;
  queueUrl: string;
  queueArn?: string;
  handler: QueueLambda;
  batchSize?: number;
  /** The simulated Lambda timeout: the handler sees its remaining time count down from this. */
  functionTimeoutMs?: number;
  waitTimeSeconds?: number;
  onError?: (err: unknown) => void;
  /** Fault injection: when it says true, a succeeded message is not deleted (SQS delivers it again). */
  skipDelete?: (messageId: string) => boolean;
}

/**
 * Feeds the queue to the consumer handler as Lambda's SQS event source mapping does: receive a
 * batch, invoke, delete what succeeded, and leave the reported failures (or the whole batch when
 * the handler throws) to reappear after the visibility timeout.
 */
export function startPoller(options: PollerOptions): { stop(): Promise<void> } {
  let running = true;
  const timeout = options.functionTimeoutMs ?? 30_000;
  const loop = async () => {
    while (running) {
      try {
        const received = await options.sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: options.queueUrl,
            MaxNumberOfMessages: Math.min(10, options.batchSize ?? 10),
            WaitTimeSeconds: options.waitTimeSeconds ?? 1,
            MessageSystemAttributeNames: ["All"],
            MessageAttributeNames: ["All"],
          }),
        );
        const messages = received.Messages ?? [];
        if (messages.length === 0) continue;
        const records: SQSRecord[] = messages.map((m) => ({
          messageId: m.MessageId ?? "",
          receiptHandle: m.ReceiptHandle ?? "",
          body: m.Body ?? "",
          attributes: (m.Attributes ?? {}) as unknown as SQSRecord["attributes"],
          messageAttributes: Object.fromEntries(
            Object.entries(m.MessageAttributes ?? {}).map(([k, v]) => [
              k,
              {
                stringValue: v.StringValue,
                dataType: v.DataType ?? "String",
                stringListValues: [],
                binaryListValues: [],
              },
            ]),
          ),
          md5OfBody: m.MD5OfBody ?? "",
          eventSource: "aws:sqs",
          eventSourceARN: options.queueArn ?? options.queueUrl,
          awsRegion: "us-east-1",
        }));
        const started = Date.now();
        let failed: Set<string>;
        let timer: NodeJS.Timeout | undefined;
        try {
          // Like Lambda, an invocation that outlives its timeout fails as a whole batch.
          const timedOut = new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`invocation timed out after ${timeout} ms`)), timeout);
          });
          const res = await Promise.race([
            options.handler({ Records: records }, { getRemainingTimeInMillis: () => timeout - (Date.now() - started) }),
            timedOut,
          ]);
          failed = new Set((res?.batchItemFailures ?? []).map((f) => f.itemIdentifier));
        } catch (err) {
          options.onError?.(err);
          failed = new Set(records.map((r) => r.messageId));
        } finally {
          clearTimeout(timer);
        }
        const done = records.filter((r) => !failed.has(r.messageId) && !options.skipDelete?.(r.messageId));
        if (done.length > 0) {
          await options.sqs.send(
            new DeleteMessageBatchCommand({
              QueueUrl: options.queueUrl,
              Entries: done.map((r, i) => ({ Id: String(i), ReceiptHandle: r.receiptHandle })),
            }),
          );
        }
      } catch (err) {
        if (running) {
          options.onError?.(err);
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    }
  };
  const done = loop();
  return {
    async stop() {
      running = false;
      await done;
    },
  };
}
