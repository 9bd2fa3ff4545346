import type { QueueMessage } from "./consumer.js";

/**
 * Messages an SNS topic delivers to the ingest queue through a subscription without raw message
 * delivery: the app's message is the `Message` of a notification envelope, and its message
 * attributes are the envelope's `MessageAttributes`. Unwrapped, it is handled as if the app had
 * sent it to the queue itself.
 */
const ENVELOPE_START = /^\{\s*"Type"\s*:\s*"Notification"\s*,/;

interface Notification {
  Type: "Notification";
  MessageId: string;
  TopicArn: string;
  Message: string;
  MessageAttributes?: Record<string, { Type?: unknown; Value?: unknown }>;
}

function isNotification(x: unknown): x is Notification {
  const n = x as Notification | null;
  return (
    !!n &&
    n.Type === "Notification" &&
    typeof n.MessageId === "string" &&
    typeof n.TopicArn === "string" &&
    typeof n.Message === "string"
  );
}

/** The app's message inside an SNS notification, or undefined when `m` is not one. */
export function fromSnsNotification(m: QueueMessage): QueueMessage | undefined {
  // Two character reads rule out most messages (a canonical event starts `{"id"`): SNS writes
  // `{"Type"` or, pretty-printed, `{` and a newline.
  if (m.body.charCodeAt(1) === 34 && m.body.charCodeAt(2) !== 84) return undefined;
  if (!ENVELOPE_START.test(m.body)) return undefined;
  let n: unknown;
  try {
    n = JSON.parse(m.body);
  } catch {
    return undefined;
  }
  if (!isNotification(n)) return undefined;
  const attributes: Record<string, string> = { ...m.attributes };
  // String and Number attributes, as the consumer reads an SQS message's; Binary ones are left out.
  for (const [name, a] of Object.entries(n.MessageAttributes ?? {})) {
    if ((a?.Type === "String" || a?.Type === "Number") && typeof a.Value === "string") attributes[name] = a.Value;
  }
  return {
    ...m,
    body: n.Message,
    ...(Object.keys(attributes).length > 0 ? { attributes } : {}),
  };
}
