import type { MessageAttributeValue, SQSClient } from "@aws-sdk/client-sqs";

/**
 * An SQS client, or a function that makes one on first use: the AWS SDK takes about 100 ms to
 * load, and the consumer needs it only when it has a dead letter to send.
 */
export type SqsClientSource = SQSClient | (() => Promise<SQSClient>);

const sdk = () => import("@aws-sdk/client-sqs");

function clientOf(source: SqsClientSource): () => Promise<SQSClient> {
  if (typeof source !== "function") return async () => source;
  let pending: Promise<SQSClient> | undefined;
  return () => {
    pending ??= source();
    return pending;
  };
}

export interface OutgoingMessage {
  /** Unique within one call; used to report which messages failed. */
  key: string;
  body: string;
  attributes?: Record<string, string>;
  /** Hidden from consumers for this long after it is sent (SQS DelaySeconds, 0-900). */
  delaySeconds?: number;
}

/** Writes messages to a queue; answers the keys that could not be written. Never throws. */
export interface QueueSender {
  send(messages: readonly OutgoingMessage[]): Promise<{ failed: string[] }>;
}

const MAX_ENTRIES = 10;
// Stay under SQS's oldest batch payload limit (256 KiB), whatever the queue's own setting.
const MAX_BATCH_BYTES = 250 * 1024;
const ATTEMPTS = 3;
/**
 * The largest message meterhook's queues take (their MaximumMessageSize in infra/queues.yml,
 * SQS's maximum and fauxqs's default), body and attributes together.
 */
export const MAX_MESSAGE_BYTES = 1_048_576;
/** Room left in a message for its attributes, which count towards MAX_MESSAGE_BYTES. */
export const MAX_BODY_BYTES = MAX_MESSAGE_BYTES - 4 * 1024;

// SQS refuses U+FFFE, U+FFFF and lone surrogates in a body or attribute, and fauxqs also
// anything beyond U+FFFF, which SQS takes; JSON.stringify writes the first two as they are.
const UNSENDABLE = /[\uD800-\uDFFF\uFFFE\uFFFF]/;
const UNSENDABLE_ALL = /[\uD800-\uDFFF\uFFFE\uFFFF]/g;
const escapeUnit = (c: string) => `\\u${c.charCodeAt(0).toString(16)}`;

/**
 * A body SQS and fauxqs both take. Every body meterhook sends is JSON text, where such a
 * character can only stand inside a string, and its escape reads back as the same string.
 */
export function sendableBody(body: string): string {
  return UNSENDABLE.test(body) ? body.replace(UNSENDABLE_ALL, escapeUnit) : body;
}

/** U+FFFE, U+FFFF and lone surrogates: what SQS refuses (a pair is a character beyond U+FFFF). */
const REFUSED = /[\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * An attribute value SQS takes: a character it refuses becomes U+FFFD. Attributes are not JSON,
 * so nothing can be escaped; a cut id (event_id keeps 255 characters) may end in half a pair.
 */
function sendableAttribute(value: string): string {
  return UNSENDABLE.test(value) ? value.replace(REFUSED, "\uFFFD") : value;
}

function chunk(messages: readonly OutgoingMessage[]): OutgoingMessage[][] {
  const chunks: OutgoingMessage[][] = [];
  let current: OutgoingMessage[] = [];
  let bytes = 0;
  for (const m of messages) {
    const size = Buffer.byteLength(m.body) + 512;
    if (current.length === MAX_ENTRIES || (current.length > 0 && bytes + size > MAX_BATCH_BYTES)) {
      chunks.push(current);
      current = [];
      bytes = 0;
    }
    current.push(m);
    bytes += size;
  }
  if (current.length > 0) chunks.push(current);
  return chunks;
}

function toAttributes(attrs: Record<string, string> | undefined): Record<string, MessageAttributeValue> | undefined {
  if (!attrs) return undefined;
  const out: Record<string, MessageAttributeValue> = {};
  for (const [k, v] of Object.entries(attrs)) out[k] = { DataType: "String", StringValue: sendableAttribute(v) };
  return out;
}

/**
 * SendMessageBatch in chunks of ten, retrying the entries SQS reports as failed. The SDK already
 * retries whole requests on throttling and network errors.
 */
export function createSqsSender(source: SqsClientSource, queueUrl: string): QueueSender {
  const getClient = clientOf(source);
  const sendChunk = async (entries: OutgoingMessage[]): Promise<string[]> => {
    const [client, { SendMessageBatchCommand }] = await Promise.all([getClient(), sdk()]);
    let pending = entries;
    for (let attempt = 0; attempt < ATTEMPTS && pending.length > 0; attempt++) {
      try {
        const res = await client.send(
          new SendMessageBatchCommand({
            QueueUrl: queueUrl,
            Entries: pending.map((m, i) => ({
              Id: String(i),
              MessageBody: m.body,
              MessageAttributes: toAttributes(m.attributes),
              DelaySeconds: m.delaySeconds,
            })),
          }),
        );
        const failed = new Set((res.Failed ?? []).map((f) => Number(f.Id)));
        // A sender fault (bad entry) will not pass on retry; only retry the server's own faults.
        const retryable = (res.Failed ?? []).filter((f) => !f.SenderFault).map((f) => Number(f.Id));
        if ((res.Failed ?? []).some((f) => f.SenderFault)) {
          return pending.filter((_, i) => failed.has(i)).map((m) => m.key);
        }
        pending = retryable.map((i) => pending[i] as OutgoingMessage);
      } catch {
        // The whole call failed; try again with the same entries.
      }
      if (pending.length > 0) await new Promise((r) => setTimeout(r, 50 * 2 ** attempt));
    }
    return pending.map((m) => m.key);
  };
  return {
    async send(messages) {
      const sendable = messages.map((m) => {
        const body = sendableBody(m.body);
        return body === m.body ? m : { ...m, body };
      });
      const results = await Promise.all(chunk(sendable).map(sendChunk));
      return { failed: results.flat() };
    },
  };
}

export interface ReceivedQueueMessage {
  messageId: string;
  receiptHandle: string;
  body: string;
  /** Epoch ms the message was sent to this queue. */
  sentAt: number;
  receiveCount: number;
  /** String message attributes, e.g. an app message's meterhook_source, which SQS moves with it. */
  attributes?: Record<string, string>;
}

/** Takes messages off a queue (the DLQ, for replay). */
export interface QueueReader {
  receive(max: number, visibilityTimeoutSeconds: number): Promise<ReceivedQueueMessage[]>;
  delete(receiptHandles: readonly string[]): Promise<void>;
  /** Makes messages visible again at once. */
  release(receiptHandles: readonly string[]): Promise<void>;
}

function stringAttributes(
  attrs: Record<string, MessageAttributeValue> | undefined,
): Record<string, string> | undefined {
  const entries = Object.entries(attrs ?? {}).filter(([, v]) => v.StringValue !== undefined);
  return entries.length > 0 ? Object.fromEntries(entries.map(([k, v]) => [k, v.StringValue as string])) : undefined;
}

export function createSqsReader(source: SqsClientSource, queueUrl: string): QueueReader {
  const getClient = clientOf(source);
  return {
    async receive(max, visibilityTimeoutSeconds) {
      const [client, { ReceiveMessageCommand }] = await Promise.all([getClient(), sdk()]);
      const res = await client.send(
        new ReceiveMessageCommand({
          QueueUrl: queueUrl,
          MaxNumberOfMessages: Math.min(10, max),
          VisibilityTimeout: visibilityTimeoutSeconds,
          WaitTimeSeconds: 1,
          MessageSystemAttributeNames: ["SentTimestamp", "ApproximateReceiveCount"],
          MessageAttributeNames: ["All"],
        }),
      );
      return (res.Messages ?? []).map((m) => {
        const attributes = stringAttributes(m.MessageAttributes);
        return {
          messageId: m.MessageId ?? "",
          receiptHandle: m.ReceiptHandle ?? "",
          body: m.Body ?? "",
          sentAt: Number(m.Attributes?.SentTimestamp) || Date.now(),
          receiveCount: Number(m.Attributes?.ApproximateReceiveCount) || 1,
          ...(attributes ? { attributes } : {}),
        };
      });
    },
    async delete(handles) {
      const [client, { DeleteMessageBatchCommand }] = await Promise.all([getClient(), sdk()]);
      for (let i = 0; i < handles.length; i += 10) {
        await client.send(
          new DeleteMessageBatchCommand({
            QueueUrl: queueUrl,
            Entries: handles.slice(i, i + 10).map((h, j) => ({ Id: String(j), ReceiptHandle: h })),
          }),
        );
      }
    },
    async release(handles) {
      const [client, { ChangeMessageVisibilityBatchCommand }] = await Promise.all([getClient(), sdk()]);
      for (let i = 0; i < handles.length; i += 10) {
        await client.send(
          new ChangeMessageVisibilityBatchCommand({
            QueueUrl: queueUrl,
            Entries: handles
              .slice(i, i + 10)
              .map((h, j) => ({ Id: String(j), ReceiptHandle: h, VisibilityTimeout: 0 })),
          }),
        );
      }
    },
  };
}
