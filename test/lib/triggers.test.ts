import assert from "node:assert/strict";
import { test } from "node:test";
import { triggerBody } from "../../lib/triggers.js";

const FORM = { "content-type": "application/x-www-form-urlencoded; charset=utf-8" };

test("a form body is its fields: decoded, a repeated field as a list, every value a string", () => {
  const body = "MessageSid=SM0001&MessageStatus=delivered&NumSegments=2&To=%2B15558675310&Body=hi+there&tag=a&tag=b";
  assert.deepEqual(triggerBody({ headers: FORM, body }), {
    MessageSid: "SM0001",
    MessageStatus: "delivered",
    NumSegments: "2",
    To: "+15558675310",
    Body: "hi there",
    tag: ["a", "b"],
  });
});

test("a form field named __proto__ is a field, not the object's prototype", () => {
  const fields = triggerBody({ headers: FORM, body: "__proto__=x&n=1" }) as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(fields), Object.prototype);
  assert.deepEqual(Object.entries(fields), [
    ["__proto__", "x"],
    ["n", "1"],
  ]);
});

test("JSON labelled as a form (curl -d's default) is still read as JSON", () => {
  assert.deepEqual(triggerBody({ headers: FORM, body: '{"account":"acct_1","n":2}' }), { account: "acct_1", n: 2 });
});

test("a byte order mark before JSON is ignored; text that is not JSON nor a form stays text", () => {
  assert.deepEqual(triggerBody({ headers: {}, body: '\ufeff{"n":1}' }), { n: 1 });
  assert.equal(triggerBody({ headers: {}, body: "n=1" }), "n=1");
  assert.equal(triggerBody({ headers: { "content-type": "text/plain" }, body: "plain" }), "plain");
});
