import assert from "node:assert/strict";
import { test } from "node:test";
import { createLogger } from "../../lib/logger.js";
import { redact, registerSecret } from "../../lib/redact.js";

test("masks Stripe keys, session tokens and webhook secrets by shape", () => {
  const text = redact("key sk_live_abc123 rk_test_XYZ ek_test_tok whsec_c2VjcmV0 end");
  assert.equal(text, "key [REDACTED] [REDACTED] [REDACTED] [REDACTED] end");
});

test("masks registered secrets of any shape", () => {
  registerSecret("my-api-key-0001");
  registerSecret("short"); // too short to be worth masking
  assert.equal(redact("auth my-api-key-0001 short"), "auth [REDACTED] short");
});

test("log lines are JSON with secrets removed, errors reduced to name, message and code", () => {
  const lines: string[] = [];
  const log = createLogger({ write: (l) => lines.push(l), base: { component: "t" } });
  log
    .child({ requestId: "r1" })
    .error("failed", { error: Object.assign(new Error("bad sk_test_leak99"), { code: "E1" }) });
  log.debug("hidden at info");
  assert.equal(lines.length, 1);
  const rec = JSON.parse(lines[0] as string);
  assert.equal(rec.component, "t");
  assert.equal(rec.requestId, "r1");
  assert.deepEqual(rec.error, { name: "Error", message: "bad [REDACTED]", code: "E1" });
});
