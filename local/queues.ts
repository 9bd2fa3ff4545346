import { startFauxqs } from "fauxqs";

export const INGEST_QUEUE = "meterhook-ingest";
export const DEAD_LETTER_QUEUE = "meterhook-dlq";

export interface LocalQueues {
  endpoint: string;
  ingestQueueUrl: string;
  deadLetterQueueUrl: string;
  stop(): Promise<void>;
}

/**
 * The SQS emulator (fauxqs) in process, with the ingest queue and its dead-letter queue. The
 * ingest queue's redrive policy sends a message there after `maxReceiveCount` deliveries, as the
 * deployed stack does.
 */
export async function startLocalQueues(
  options: { port?: number; visibilityTimeoutSeconds?: number; maxReceiveCount?: number } = {},
): Promise<LocalQueues> {
  const server = await startFauxqs({ port: options.port ?? 0, host: "localhost", logger: false });
  const dlq = server.createQueue(DEAD_LETTER_QUEUE, { attributes: { MessageRetentionPeriod: "1209600" } });
  const ingest = server.createQueue(INGEST_QUEUE, {
    attributes: {
      VisibilityTimeout: String(options.visibilityTimeoutSeconds ?? 30),
      RedrivePolicy: JSON.stringify({
        deadLetterTargetArn: dlq.queueArn,
        maxReceiveCount: String(options.maxReceiveCount ?? 8),
      }),
    },
  });
  return {
    endpoint: server.address,
    ingestQueueUrl: ingest.queueUrl,
    deadLetterQueueUrl: dlq.queueUrl,
    stop: () => server.stop(),
  };
}
