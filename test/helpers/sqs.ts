import {
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";
import type { DeadLetterBody } from "../../lib/dead-letter.js";
import { type LocalQueues, startLocalQueues } from "../../local/queues.js";

export interface TestQueues extends LocalQueues {
  sqs: SQSClient;
}

/** fauxqs on a free port with the ingest queue and DLQ, and a real SQS client pointed at it. */
export async function startTestQueues(options: Parameters<typeof startLocalQueues>[0] = {}): Promise<TestQueues> {
  const queues = await startLocalQueues({ port: 0, ...options });
  const sqs = new SQSClient({
    endpoint: queues.endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
  });
  return {
    ...queues,
    sqs,
    async stop() {
      sqs.destroy();
      await queues.stop();
    },
  };
}

export interface ReceivedMessage {
  body: string;
  attributes: Record<string, string>;
  systemAttributes: Record<string, string>;
}

/** Receives (and deletes) every message currently visible on the queue. */
export async function drain(sqs: SQSClient, queueUrl: string): Promise<ReceivedMessage[]> {
  const out: ReceivedMessage[] = [];
  for (;;) {
    const res = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 0,
        MessageAttributeNames: ["All"],
        MessageSystemAttributeNames: ["All"],
      }),
    );
    const msgs = res.Messages ?? [];
    if (msgs.length === 0) return out;
    for (const m of msgs) {
      out.push({
        body: m.Body ?? "",
        attributes: Object.fromEntries(
          Object.entries(m.MessageAttributes ?? {}).map(([k, v]) => [k, v.StringValue ?? ""]),
        ),
        systemAttributes: (m.Attributes ?? {}) as Record<string, string>,
      });
    }
    await sqs.send(
      new DeleteMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: msgs.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle ?? "" })),
      }),
    );
  }
}

export async function drainDeadLetters(
  sqs: SQSClient,
  queueUrl: string,
): Promise<Array<DeadLetterBody & { attributes: Record<string, string> }>> {
  return (await drain(sqs, queueUrl)).map((m) => ({
    ...(JSON.parse(m.body) as DeadLetterBody),
    attributes: m.attributes,
  }));
}

/** Messages on the queue: visible, in flight, or delayed (a pack's events to retry). */
export async function queueDepth(sqs: SQSClient, queueUrl: string): Promise<number> {
  const res = await sqs.send(
    new GetQueueAttributesCommand({
      QueueUrl: queueUrl,
      AttributeNames: [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
      ],
    }),
  );
  const a = res.Attributes ?? {};
  return (
    Number(a.ApproximateNumberOfMessages ?? 0) +
    Number(a.ApproximateNumberOfMessagesNotVisible ?? 0) +
    Number(a.ApproximateNumberOfMessagesDelayed ?? 0)
  );
}
