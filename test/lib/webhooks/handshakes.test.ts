import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { test } from "node:test";
import { handshakeOf, isSlackSslCheck, metaSubscription } from "../../../lib/webhooks/handshakes.js";

const of = (scheme: "slack" | "zoom", body: unknown) =>
  handshakeOf(scheme, Buffer.from(typeof body === "string" ? body : JSON.stringify(body)), "secret-0001");

test("Slack's url_verification is answered with its challenge", () => {
  assert.deepEqual(of("slack", { token: "t", challenge: "c-123", type: "url_verification" }), {
    kind: "answer",
    body: { challenge: "c-123" },
  });
  assert.equal(of("slack", { type: "url_verification", challenge: 42 })?.kind, "invalid");
  assert.equal(of("slack", { type: "url_verification", challenge: "x".repeat(1025) })?.kind, "invalid");
});

test("Zoom's endpoint.url_validation is answered with the token and its hex HMAC-SHA256", () => {
  const answer = of("zoom", { event: "endpoint.url_validation", payload: { plainToken: "qgg8vlvZRS6UYooatFL8Aw" } });
  assert.deepEqual(answer, {
    kind: "answer",
    body: {
      plainToken: "qgg8vlvZRS6UYooatFL8Aw",
      encryptedToken: createHmac("sha256", "secret-0001").update("qgg8vlvZRS6UYooatFL8Aw").digest("hex"),
    },
  });
  assert.equal(of("zoom", { event: "endpoint.url_validation", payload: null })?.kind, "invalid");
  assert.equal(of("zoom", { event: "endpoint.url_validation" })?.kind, "invalid");
});

test("an event that only mentions a handshake, another scheme's handshake, or a form is an event", () => {
  const mention = {
    type: "event_callback",
    event: { type: "app_mention", text: "what is url_verification?" },
    challenge: "c",
  };
  assert.equal(of("slack", mention), undefined);
  assert.equal(of("zoom", { event: "meeting.ended", payload: { note: "endpoint.url_validation" } }), undefined);
  assert.equal(of("zoom", { token: "t", challenge: "c", type: "url_verification" }), undefined);
  assert.equal(of("slack", { event: "endpoint.url_validation", payload: { plainToken: "p" } }), undefined);
  assert.equal(of("slack", "command=%2Furl_verification&text=x"), undefined);
  assert.equal(of("slack", ["url_verification"]), undefined);
});

test("Meta's GET subscription check: the challenge for either Verify Token during a rotation, nothing else", () => {
  const tokens = ["verify-old", "verify-new"];
  const q = (token: string, challenge = "1158201444", mode = "subscribe") =>
    new URLSearchParams({ "hub.mode": mode, "hub.challenge": challenge, "hub.verify_token": token }).toString();
  assert.deepEqual(metaSubscription(q("verify-new"), tokens), { kind: "answer", challenge: "1158201444" });
  assert.deepEqual(metaSubscription(q("verify-old"), tokens), { kind: "answer", challenge: "1158201444" });
  assert.deepEqual(metaSubscription(q("verify-ne"), tokens), { kind: "mismatch" });
  assert.deepEqual(metaSubscription(q("verify-new"), []), { kind: "mismatch" }, "no token configured admits none");
  assert.equal(metaSubscription(q("verify-new", "1", "unsubscribe"), tokens).kind, "invalid");
  assert.equal(metaSubscription(q("verify-new", "<b>x</b>"), tokens).kind, "invalid");
  assert.equal(metaSubscription(q("verify-new", "9".repeat(257)), tokens).kind, "invalid");
  assert.equal(metaSubscription("hub.mode=subscribe&hub.challenge=1", tokens).kind, "invalid");
});

test("Slack's unsigned SSL check is recognised only as ssl_check=1 and a token, nothing else", () => {
  const check = (text: string) => isSlackSslCheck(Buffer.from(text));
  assert.equal(check("ssl_check=1&token=gIkuvaNzQIHg97ATvDxqgjtO"), true);
  assert.equal(check("ssl_check=1"), true);
  // An event riding along is not a check: it must be signed (Bolt's bypass, fixed in 2026).
  assert.equal(check(`ssl_check=1&token=t&payload=${encodeURIComponent('{"type":"block_actions"}')}`), false);
  assert.equal(check("ssl_check=1&command=%2Fsummarize&team_id=T1&trigger_id=1.2"), false);
  assert.equal(check("ssl_check=0&token=t"), false);
  assert.equal(check("ssl_check=true&token=t"), false);
  assert.equal(check("ssl_check=1&ssl_check=1&token=t"), false);
  assert.equal(check('{"ssl_check":"1"}'), false);
});
