import assert from "node:assert/strict";
import { test } from "node:test";
import { fromSnsNotification } from "../../lib/sns.js";
import { queueMessage } from "../helpers/factories.js";

// As SNS writes a notification to an SQS subscriber (pretty-printed, in AWS's own layout).
const envelope = (message: string, extra = "") => `{
  "Type" : "Notification",
  "MessageId" : "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
  "TopicArn" : "arn:aws:sns:us-east-1:123456789012:usage",
  "Subject" : null,
  "Message" : ${JSON.stringify(message)},
  "Timestamp" : "2026-11-29T10:58:06.400Z",
  "SignatureVersion" : "1",
  "Signature" : "EXAMPLE",
  "SigningCertURL" : "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem",
  "UnsubscribeURL" : "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"${extra}
}`;

test("a notification gives the app's message, with its String and Number attributes", () => {
  const inner = JSON.stringify({ type: "storage.snapshot", tenant: "tenant-42" });
  const attributes = `,
  "MessageAttributes" : {
    "meterhook_source" : {"Type":"String","Value":"storage"},
    "shards" : {"Type":"Number","Value":"3"},
    "blob" : {"Type":"Binary","Value":"AAEC"}
  }`;
  const m = queueMessage(envelope(inner, attributes), { attributes: { correlation_id: "c1" } });
  const got = fromSnsNotification(m);
  assert.equal(got?.body, inner);
  assert.deepEqual(got?.attributes, { correlation_id: "c1", meterhook_source: "storage", shards: "3" });
  assert.equal(got?.messageId, m.messageId, "SQS's message id, which a batch failure names");
});

test("a subscription's confirmation is marked unreadable, saying what to do, not taken for a message", () => {
  const confirmation = envelope("You have chosen to subscribe to the topic ...")
    .replace('"Notification"', '"SubscriptionConfirmation"')
    .replace(
      '"Subject" : null,',
      '"Token" : "2336412f37", "SubscribeURL" : "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",',
    );
  const got = fromSnsNotification(queueMessage(confirmation));
  assert.equal(got?.body, confirmation, "kept whole for its letter");
  assert.match(
    got?.unreadable ?? "",
    /^an SNS SubscriptionConfirmation from arn:aws:sns:us-east-1:123456789012:usage, not usage: confirm the subscription by opening the SubscribeURL/,
  );
});

test("anything else is left as it is: a canonical event, another SNS message type, a lookalike", () => {
  const not = (body: string) => assert.equal(fromSnsNotification(queueMessage(body)), undefined, body);
  not(JSON.stringify({ id: "e1", event_name: "api_requests", customer: "cus_1" }));
  not(envelope("x").replace('"Notification"', '"SomethingElse"'));
  not('{"Type":"Notification","Message":"no topic, no id"}');
  not('{"Type":"Notification",');
  not("");
});
