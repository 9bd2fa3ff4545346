import type { QueueMessage } from "./consumer.js";

/**
 * Messages an SNS topic delivers to the ingest queue through a subscription without raw message
 * delivery: the app's message is the `Message` of a notification envelope, and its message
 * attributes are the envelope's `MessageAttributes`. Unwrapped, it is handled as if the app had
 * sent it to the queue itself. SNS's messages about the subscription itself are dead-lettered
 * `invalid_message` with what to do, rather than taken for the app's.
 */
const ENVELOPE_START = /^\{\s*"Type"\s*:\s*"(Notification|SubscriptionConfirmation|UnsubscribeConfirmation)"\s*,/;

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

/**
 * The app's message inside an SNS notification; for SNS's other messages to a subscriber (a
 * cross-account subscription's confirmation), `m` marked unreadable with what to do, so that it
 * is dead-lettered rather than taken for the app's; undefined for any other message.
 */
export function fromSnsNotification(m: QueueMessage): QueueMessage | undefined {
  // Two character reads rule out most messages (a canonical event starts `{"id"`): SNS writes
  // `{"Type"` or, pretty-printed, `{` and a newline.
  if (m.body.charCodeAt(1) === 34 && m.body.charCodeAt(2) !== 84) return undefined;
  const type = ENVELOPE_START.exec(m.body)?.[1];
  if (type === undefined) return undefined;
  let n: unknown;
  try {
    n = JSON.parse(m.body);
  } catch {
    return undefined;
  }
  if (type !== "Notification") {
    const topic = (n as { TopicArn?: unknown } | null)?.TopicArn;
    if (typeof topic !== "string") return undefined;
    const todo =
      type === "SubscriptionConfirmation"
        ? "confirm the subscription by opening the SubscribeURL in this letter (SNS asks it of a topic in another account)"
        : "the queue was unsubscribed; the SubscribeURL in this letter subscribes it again";
    return { ...m, unreadable: `an SNS ${type} from ${topic.slice(0, 256)}, not usage: ${todo}` };
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
