import type { AddressInfo } from "node:net";
import { CreateQueueCommand, GetQueueAttributesCommand, SQSClient } from "@aws-sdk/client-sqs";
import { buildApp } from "fauxqs";
import { MAX_MESSAGE_BYTES } from "../lib/queue.js";

import { DEAD_LETTER_QUEUE, INGEST_QUEUE } from "./defaults.js";

export { DEAD_LETTER_QUEUE, INGEST_QUEUE };

export interface LocalQueues {
  endpoint: string;
  ingestQueueUrl: string;
  deadLetterQueueUrl: string;
  stop(): Promise<void>;
}

/**
 * The SQS emulator (fauxqs) in process, on loopback only, with the ingest queue and its
 * dead-letter queue. The ingest queue's redrive policy sends a message there after
 * `maxReceiveCount` deliveries, as the deployed stack does.
 */
export async function startLocalQueues(
  options: { port?: number; visibilityTimeoutSeconds?: number; maxReceiveCount?: number } = {},
): Promise<LocalQueues> {
  // fauxqs 1.9.2's startFauxqs listens on every interface, which would open unauthenticated
  // queues to the network: its app is started here on 127.0.0.1 instead. The "localhost" host
  // keeps the queue URLs startFauxqs gave (http://sqs.<region>.localhost:<port>/...).
  const app = buildApp({ logger: false, host: "localhost" });
  await app.listen({ port: options.port ?? 0, host: "127.0.0.1" });
  const endpoint = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  // The queues are made through the SQS API, as any client would make them.
  const sqs = new SQSClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
  });
  try {
    const create = async (name: string, attributes: Record<string, string>) => {
      const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: name, Attributes: attributes }));
      if (!QueueUrl) throw new Error(`fauxqs gave no URL for the queue ${name}`);
      return QueueUrl;
    };
    // As deployed (infra/queues.yml): SQS's largest message.
    const size = String(MAX_MESSAGE_BYTES);
    const deadLetterQueueUrl = await create(DEAD_LETTER_QUEUE, {
      MessageRetentionPeriod: "1209600",
      MaximumMessageSize: size,
    });
    const { Attributes } = await sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: deadLetterQueueUrl, AttributeNames: ["QueueArn"] }),
    );
    // Without it the ingest queue would have no redrive policy to speak of: fail instead.
    const deadLetterArn = Attributes?.QueueArn;
    if (!deadLetterArn) throw new Error(`fauxqs gave no ARN for the queue ${DEAD_LETTER_QUEUE}`);
    const ingestQueueUrl = await create(INGEST_QUEUE, {
      VisibilityTimeout: String(options.visibilityTimeoutSeconds ?? 30),
      MaximumMessageSize: size,
      RedrivePolicy: JSON.stringify({
        deadLetterTargetArn: deadLetterArn,
        maxReceiveCount: String(options.maxReceiveCount ?? 8),
      }),
    });
    return { endpoint, ingestQueueUrl, deadLetterQueueUrl, stop: () => app.close() };
  } catch (err) {
    await app.close();
    throw err;
  } finally {
    sqs.destroy();
  }
}
