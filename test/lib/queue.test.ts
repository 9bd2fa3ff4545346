import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createSqsReader, createSqsSender, sendableBody } from "../../lib/queue.js";
import { drain, startTestQueues, type TestQueues } from "../helpers/sqs.js";

let queues: TestQueues;
before(async () => {
  queues = await startTestQueues();
});
after(() => queues.stop());

test("a body with characters SQS or fauxqs refuse is sent as JSON escapes that read back the same", async () => {
  const value = { s: "x\uffff\ufffe😀\ud800y", plain: "é€" };
  const body = JSON.stringify(value);
  assert.match(sendableBody(body), /^[^\ud800-\udfff\ufffe\uffff]*$/);
  assert.equal(sendableBody('{"a":"plain é€"}'), '{"a":"plain é€"}', "a body with none is left as it is");
  const { failed } = await createSqsSender(queues.sqs, queues.ingestQueueUrl).send([{ key: "a", body }]);
  assert.deepEqual(failed, []);
  const [got] = await drain(queues.sqs, queues.ingestQueueUrl);
  assert.deepEqual(JSON.parse(got?.body ?? ""), value);
});

test("an attribute value keeps characters beyond U+FFFF; those SQS refuses become U+FFFD", async () => {
  const sender = createSqsSender(queues.sqs, queues.deadLetterQueueUrl);
  await sender.send([{ key: "a", body: "{}", attributes: { event_id: "id😀\uffff\ud83d" } }]);
  const [got] = await createSqsReader(queues.sqs, queues.deadLetterQueueUrl).receive(1, 0);
  assert.equal(got?.attributes?.event_id, "id😀\ufffd\ufffd");
  await drain(queues.sqs, queues.deadLetterQueueUrl);
});
