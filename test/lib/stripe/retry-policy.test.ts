import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  backoffDelayMs,
  classifyNetworkError,
  classifyResponse,
  DEFAULT_RETRY,
  parseRetryAfter,
  type Verdict,
  withRetries,
} from "../../../lib/stripe/retry-policy.js";

const res = (status: number, body: unknown = {}, headers: Record<string, string> = {}) => ({
  status,
  headers,
  body: JSON.stringify(body),
});
const NOW = 1_800_000_000_000;

describe("classifyResponse", () => {
  const cases: Array<[string, ReturnType<typeof res>, string]> = [
    ["200", res(200), "ok"],
    ["500", res(500), "retry"],
    ["502", res(502), "retry"],
    ["503", res(503), "retry"],
    ["429", res(429), "retry"],
    ["409 too_many_concurrent_requests", res(409, { error: { code: "too_many_concurrent_requests" } }), "retry"],
    ["400 with Stripe-Should-Retry: true", res(400, {}, { "stripe-should-retry": "true" }), "retry"],
    ["500 with Stripe-Should-Retry: false", res(500, {}, { "stripe-should-retry": "false" }), "permanent"],
    ["400 invalid_request_error", res(400, { error: { type: "invalid_request_error", message: "bad" } }), "permanent"],
    ["404", res(404), "permanent"],
    ["401 bad key", res(401, { error: { type: "invalid_request_error" } }), "permanent"],
  ];
  for (const [name, r, kind] of cases) {
    test(`${name} → ${kind}`, () => assert.equal(classifyResponse(r, NOW).kind, kind));
  }

  test("a duplicate identifier is success: v1 message and v2 code", () => {
    const v1 = classifyResponse(
      res(
        400,
        { error: { type: "invalid_request_error", message: "An event already exists with identifier mh_x." } },
        {
          "stripe-should-retry": "false",
        },
      ),
      NOW,
    );
    assert.deepEqual([v1.kind, v1.kind === "ok" && v1.duplicate], ["ok", true]);
    const v2 = classifyResponse(res(400, { error: { code: "duplicate_meter_event", message: "dup" } }), NOW);
    assert.deepEqual([v2.kind, v2.kind === "ok" && v2.duplicate], ["ok", true]);
  });

  test("an expired session asks for a new one", () => {
    const v = classifyResponse(
      res(401, { error: { code: "billing_meter_event_session_expired", type: "temporary_session_expired" } }),
      NOW,
    );
    assert.equal(v.kind === "retry" && v.sessionExpired, true);
  });

  test("401/403 are stripe_unauthorized, other 4xx stripe_rejected", () => {
    const a = classifyResponse(res(401), NOW);
    const b = classifyResponse(res(400), NOW);
    assert.equal(a.kind === "permanent" && a.code, "stripe_unauthorized");
    assert.equal(b.kind === "permanent" && b.code, "stripe_rejected");
  });

  test("reasons never carry a secret key", () => {
    const v = classifyResponse(res(401, { error: { message: "Invalid API Key provided: sk_test_abcdef123456" } }), NOW);
    assert.ok(v.kind === "permanent");
    assert.doesNotMatch(v.reason, /sk_test_abcdef123456/);
  });

  test("Retry-After in seconds or as a date", () => {
    assert.equal(parseRetryAfter("2", NOW), 2000);
    assert.equal(parseRetryAfter(new Date(NOW + 3000).toUTCString(), NOW), 3000);
    assert.equal(parseRetryAfter("soon", NOW), undefined);
    const v = classifyResponse(res(429, {}, { "retry-after": "7" }), NOW);
    assert.equal(v.kind === "retry" && v.retryAfterMs, 7000);
  });

  test("network errors are retried", () => {
    assert.equal(
      classifyNetworkError(Object.assign(new Error("other side closed"), { code: "UND_ERR_SOCKET" })).kind,
      "retry",
    );
  });
});

describe("backoff", () => {
  test("doubles, is capped, and jitters within [50%, 100%] of the step", () => {
    assert.equal(
      backoffDelayMs(0, DEFAULT_RETRY, () => 1),
      500,
    );
    assert.equal(
      backoffDelayMs(1, DEFAULT_RETRY, () => 1),
      1000,
    );
    assert.equal(
      backoffDelayMs(2, DEFAULT_RETRY, () => 0),
      1000,
    );
    assert.equal(
      backoffDelayMs(10, DEFAULT_RETRY, () => 1),
      5000,
    );
  });
});

describe("withRetries", () => {
  function scripted(verdicts: Verdict[]) {
    const sleeps: number[] = [];
    let t = NOW;
    const env = {
      now: () => t,
      sleep: async (ms: number) => {
        sleeps.push(ms);
        t += ms;
      },
      random: () => 1,
    };
    let calls = 0;
    const attempt = async () => verdicts[Math.min(calls++, verdicts.length - 1)] as Verdict;
    return { env, sleeps, attempt, calls: () => calls };
  }
  const retry = (extra: Partial<Extract<Verdict, { kind: "retry" }>> = {}): Verdict => ({
    kind: "retry",
    reason: "x",
    ...extra,
  });
  const ok: Verdict = { kind: "ok", duplicate: false, body: "" };

  test("retries then succeeds, with backoff between attempts", async () => {
    const s = scripted([retry(), retry(), ok]);
    const v = await withRetries(s.attempt, { ...DEFAULT_RETRY, timeoutMs: 1000 }, NOW + 60_000, s.env);
    assert.equal(v.kind, "ok");
    assert.deepEqual(s.sleeps, [500, 1000]);
  });

  test("honours Retry-After when longer than the backoff", async () => {
    const s = scripted([retry({ retryAfterMs: 3000 }), ok]);
    await withRetries(s.attempt, { ...DEFAULT_RETRY, timeoutMs: 1000 }, NOW + 60_000, s.env);
    assert.deepEqual(s.sleeps, [3000]);
  });

  test("leaves a Retry-After beyond the cap to the queue", async () => {
    const s = scripted([retry({ retryAfterMs: 60_000 }), ok]);
    const v = await withRetries(s.attempt, { ...DEFAULT_RETRY, timeoutMs: 1000 }, NOW + 600_000, s.env);
    assert.equal(v.kind, "retry");
    assert.equal(s.calls(), 1);
  });

  test("stops at maxAttempts and returns the last retryable verdict", async () => {
    const s = scripted([retry()]);
    const v = await withRetries(s.attempt, { ...DEFAULT_RETRY, timeoutMs: 1000 }, NOW + 60_000, s.env);
    assert.equal(v.kind, "retry");
    assert.equal(s.calls(), DEFAULT_RETRY.maxAttempts);
  });

  test("does not sleep past the deadline", async () => {
    const s = scripted([retry(), ok]);
    const v = await withRetries(s.attempt, { ...DEFAULT_RETRY, timeoutMs: 1000 }, NOW + 400, s.env);
    assert.equal(v.kind, "retry");
    assert.deepEqual(s.sleeps, []);
  });

  test("resends at once after a session expiry", async () => {
    const s = scripted([retry({ sessionExpired: true }), ok]);
    const v = await withRetries(s.attempt, { ...DEFAULT_RETRY, timeoutMs: 1000 }, NOW + 60_000, s.env);
    assert.equal(v.kind, "ok");
    assert.deepEqual(s.sleeps, []);
  });

  test("a permanent verdict is not retried", async () => {
    const s = scripted([{ kind: "permanent", code: "stripe_rejected", reason: "no", status: 400 }, ok]);
    const v = await withRetries(s.attempt, { ...DEFAULT_RETRY, timeoutMs: 1000 }, NOW + 60_000, s.env);
    assert.equal(v.kind, "permanent");
    assert.equal(s.calls(), 1);
  });
});

describe("ambiguous attempts", () => {
  test("a rejection after an attempt whose outcome is unknown is not final", async () => {
    let t = NOW;
    const env = {
      now: () => t,
      sleep: async (ms: number) => {
        t += ms;
      },
      random: () => 1,
    };
    const verdicts: Verdict[] = [
      classifyNetworkError(Object.assign(new Error("other side closed"), { code: "UND_ERR_SOCKET" })),
      { kind: "permanent", code: "stripe_rejected", reason: "Stripe answered 400", status: 400 },
    ];
    let i = 0;
    const v = await withRetries(
      async () => verdicts[i++] as Verdict,
      { ...DEFAULT_RETRY, timeoutMs: 1000 },
      NOW + 60_000,
      env,
    );
    assert.equal(v.kind, "retry");
    assert.match(v.kind === "retry" ? v.reason : "", /outcome is unknown/);
  });

  test("a refused connection never reached Stripe: not ambiguous", () => {
    const v = classifyNetworkError(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }));
    assert.equal(v.kind === "retry" && v.ambiguous, false);
  });
});
