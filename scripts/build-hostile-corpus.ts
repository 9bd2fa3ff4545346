/**
 * Builds test/fixtures/hostile-inputs.json: bad inputs for every entry point, each with what
 * meterhook must answer. `npm run corpus` rewrites it; the hostile-input test runs every entry.
 * Times are written as "$now" / "$now+N" / "$now-N" (seconds) and filled in when the test runs;
 * bodies too big to keep are described by `generate`.
 */
import { writeFileSync } from "node:fs";
import type { HostileExpect, HostileInput } from "../test/hostile/corpus.js";

type Entry = HostileInput;
type Expect = HostileExpect;

const good = { id: "evt_hostile_ok", event_name: "api_requests", customer: "cus_Hostile", value: 3 };
const goodText = JSON.stringify(good);
const out: Entry[] = [];
const events = (name: string, json: unknown, expect: Expect, extra: Partial<Entry> = {}) =>
  out.push({ name, entry: "events", json, expect, ...extra });

// Malformed and truncated JSON.
for (let cut = 1; cut < goodText.length; cut += 2) {
  out.push({
    name: `truncated JSON at byte ${cut}`,
    entry: "events",
    body: goodText.slice(0, cut),
    expect: { status: 400, code: "invalid_json" },
  });
}
for (const [name, body] of [
  ["NaN token", '{"id":"a","event_name":"e","customer":"cus_1","value":NaN}'],
  ["Infinity token", '{"id":"a","event_name":"e","customer":"cus_1","value":Infinity}'],
  ["single quotes", "{'id':'a'}"],
  ["trailing comma", '{"id":"a",}'],
  ["comment", '{"id":"a" /* x */}'],
  ["empty body", ""],
  ["only whitespace", "   \n\t "],
  // One byte order mark is ignored (RFC 8259 allows it); a second is not JSON.
  ["two BOMs then JSON", `\ufeff\ufeff${goodText}`],
  ["two documents", `${goodText}${goodText}`],
  ["unescaped control character in a string", '{"id":"a\u0001","event_name":"e","customer":"cus_1"}'],
] as const) {
  out.push({ name: `malformed JSON: ${name}`, entry: "events", body, expect: { status: 400, code: "invalid_json" } });
}

// Wrong types, field by field.
const wrong: unknown[] = [123, null, true, [], {}, ["a"], { a: 1 }];
for (const field of ["id", "event_name", "customer"]) {
  for (const v of wrong)
    events(`${field} is ${JSON.stringify(v)}`, { ...good, [field]: v }, { status: 400, code: "invalid_event" });
}
for (const v of ["3", null, true, [], {}, "0x10", "1e3", ""])
  events(`value is ${JSON.stringify(v)}`, { ...good, value: v }, { status: 400, code: "invalid_value" });
for (const v of [true, [], {}, "", "tomorrow", "2026-13-45T25:61:61Z", "2026-11-26", "2026-11-26T12:00:00"]) {
  events(`timestamp is ${JSON.stringify(v)}`, { ...good, timestamp: v }, { status: 400, code: "invalid_event" });
}
for (const v of ["x", [], 1, null, [{ a: 1 }], { nested: { a: 1 } }, { flag: true }, { list: [1] }]) {
  events(`properties is ${JSON.stringify(v)}`, { ...good, properties: v }, { status: 400, code: "invalid_event" });
}
for (const body of [null, 42, "a string", [], [good], true])
  events(`body is ${JSON.stringify(body)?.slice(0, 20)}`, body, { status: 400 });

// Huge numbers, NaN and Infinity as strings, precision.
for (const [name, v] of [
  ["1e309 (Infinity)", "1e309"],
  ["-1e309", "-1e309"],
  ["2^53 + 2", "9007199254740994"],
  ["1e20", "1e20"],
  ["16 significant digits", "1234567890123456"],
  ["0.1 + 0.2", "0.30000000000000004"],
  ["many decimals", "0.1234567890123456789"],
] as const) {
  out.push({
    name: `value ${name}`,
    entry: "events",
    body: goodText.replace('"value":3', `"value":${v}`),
    expect: { status: 400, code: "invalid_value" },
  });
}
for (const v of ["NaN", "Infinity", "-Infinity", "nan", "inf"])
  events(`value is the string ${v}`, { ...good, value: v }, { status: 400, code: "invalid_value" });

// Negative and zero values where the meter forbids them (the test sets api_requests: positive).
for (const v of [0, -1, -0.5, -1e-9])
  events(`value ${v} for a positive-only meter`, { ...good, value: v }, { status: 400, code: "invalid_value" });

// Timestamps far in the past and future.
for (const [name, t, code] of [
  ["Unix 0", 0, "timestamp_out_of_range"],
  ["negative", -1, "invalid_event"],
  ["36 days ago", "$now-3110400", "timestamp_out_of_range"],
  ["6 minutes ahead", "$now+360", "timestamp_out_of_range"],
  ["milliseconds", "$now*1000", "timestamp_out_of_range"],
  ["year 9999", "9999-12-31T23:59:59Z", "timestamp_out_of_range"],
  ["year 1970", "1970-01-01T00:00:00Z", "timestamp_out_of_range"],
  ["1e300", 1e300, "timestamp_out_of_range"],
] as const) {
  events(`timestamp ${name}`, { ...good, timestamp: t }, { status: 400, code });
}

// Over-long names and ids.
for (const [field, n] of [
  ["event_name", 101],
  ["event_name", 10_000],
  ["id", 256],
  ["customer", 256],
] as const) {
  events(`${field} of ${n} characters`, { ...good, [field]: "x".repeat(n) }, { status: 400, code: "invalid_event" });
}
events(
  "property name of 101 characters",
  { ...good, properties: { ["k".repeat(101)]: "v" } },
  { status: 400, code: "invalid_event" },
);
events(
  "property value of 101 characters",
  { ...good, properties: { k: "v".repeat(101) } },
  { status: 400, code: "invalid_event" },
);
events(
  "51 properties",
  { ...good, properties: Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${i}`, i])) },
  { status: 400, code: "invalid_event" },
);
events("empty event_name", { ...good, event_name: "" }, { status: 400, code: "invalid_event" });
events("empty id", { ...good, id: "" }, { status: 400, code: "invalid_event" });

// Unicode and control characters.
for (const [name, s] of [
  ["NUL", "a\u0000b"],
  ["newline", "a\nb"],
  ["carriage return", "a\rb"],
  ["escape", "a\u001bb"],
  ["DEL", "a\u007fb"],
  ["unit separator", "a\u001fb"],
] as const) {
  for (const field of ["id", "event_name", "customer"])
    events(`${name} in ${field}`, { ...good, [field]: s }, { status: 400, code: "invalid_event" });
}
events("bracket in a property name", { ...good, properties: { "a[b]": "x" } }, { status: 400, code: "invalid_event" });
events(
  "property overwriting the customer",
  { ...good, properties: { stripe_customer_id: "cus_Other" } },
  { status: 400, code: "invalid_payload" },
);
events(
  "property overwriting the value",
  { ...good, properties: { value: "1000000" } },
  { status: 400, code: "invalid_payload" },
);

// Prototype pollution.
for (const [name, body] of [
  ["top-level __proto__", `{"__proto__":{"polluted":1},${goodText.slice(1)}`],
  ["top-level constructor", `{"constructor":{"prototype":{"polluted":1}},${goodText.slice(1)}`],
  ["properties.__proto__", goodText.replace("}", ',"properties":{"__proto__":"x"}}')],
  ["properties.constructor", goodText.replace("}", ',"properties":{"constructor":"x"}}')],
  ["properties.prototype", goodText.replace("}", ',"properties":{"prototype":"x"}}')],
  ["batch item __proto__", `{"events":[{"__proto__":{"polluted":1},${goodText.slice(1)}]}`],
] as const) {
  out.push({ name: `prototype pollution: ${name}`, entry: "events", body, expect: { status: 400 } });
}

// Deeply nested, and very large bodies.
out.push({
  name: "1,000-deep nested arrays",
  entry: "events",
  generate: { kind: "nested", depth: 1_000 },
  expect: { status: 400 },
});
out.push({
  name: "100,000-deep nested arrays",
  entry: "events",
  generate: { kind: "nested", depth: 100_000 },
  expect: { status: 400 },
});
out.push({
  name: "2 MiB body",
  entry: "events",
  generate: { kind: "big", bytes: 2 * 1024 * 1024 },
  expect: { status: 413 },
});
out.push({
  name: "10 MB body",
  entry: "events",
  generate: { kind: "big", bytes: 10 * 1024 * 1024 },
  expect: { status: 413 },
});

// Batch envelopes.
for (const [name, body, code] of [
  ["events is an object", { events: {} }, "invalid_body"],
  ["events is null", { events: null }, "invalid_body"],
  ["events is empty", { events: [] }, "invalid_body"],
  ["events is a string", { events: "x" }, "invalid_body"],
  ["only invalid events", { events: [{ id: 1 }, null, 5] }, "all_events_rejected"],
] as const) {
  events(`batch: ${name}`, body, { status: 400, code });
}
events(
  "batch: 501 events",
  { events: Array.from({ length: 501 }, (_, i) => ({ ...good, id: `e${i}` })) },
  { status: 400, code: "too_many_events" },
);

// Content types.
for (const ct of [
  "text/plain",
  "application/xml",
  "multipart/form-data; boundary=x",
  "application/x-www-form-urlencoded",
  "application/jsonx",
  "json",
  "",
]) {
  events(
    `Content-Type ${JSON.stringify(ct)}`,
    good,
    { status: 415, code: "unsupported_media_type" },
    {
      headers: { "content-type": ct, authorization: "Bearer $KEY" },
    },
  );
}

// Authentication and header injection.
for (const [name, auth] of [
  ["no Authorization", undefined],
  ["empty Bearer", "Bearer "],
  ["Basic auth", "Basic bWg6a2V5"],
  ["wrong key", "Bearer mh_wrong_key_000"],
  ["key plus garbage", "Bearer $KEYx"],
  ["two keys", "Bearer $KEY $KEY"],
  ["key in another scheme", "Token $KEY"],
  ["CRLF injection after the key", "Bearer $KEY\r\nX-Injected: 1"],
  ["key prefix only", "Bearer mh_"],
] as const) {
  events(
    `auth: ${name}`,
    good,
    { status: 401, code: "unauthorized" },
    { headers: { "content-type": "application/json", ...(auth === undefined ? {} : { authorization: auth }) } },
  );
}
events(
  "Content-Type with CRLF injection",
  good,
  { status: 415 },
  {
    headers: { "content-type": "text/html\r\nSet-Cookie: a=b", authorization: "Bearer $KEY" },
  },
);

// Routes and methods.
for (const [method, path, status] of [
  ["GET", "/v1/events", 405],
  ["PUT", "/v1/events", 405],
  ["DELETE", "/v1/health", 405],
  ["POST", "/v1/../v1/events/x", 404],
  ["POST", "/v2/events", 404],
  ["GET", "/v1/webhooks/github", 405],
  ["POST", "/v1/webhooks/no-such-source", 404],
  ["POST", "/v1/webhooks/%E0%A4%A", 404],
  ["POST", "/v1/webhooks/github%0d%0aX-Injected:%201", 404],
] as const) {
  out.push({ name: `route ${method} ${path}`, entry: "route", method, path, json: good, expect: { status } });
}

// Webhooks: missing, forged, replayed and malformed signatures, per scheme.
const webhookBody = { type: "usage.recorded", id: "evt_w", data: { stripe_customer_id: "cus_Hostile", requests: 2 } };
const timestamped = ["stdhooks", "stripe", "hmac", "slack", "zoom", "paddle", "zendesk", "hubspot"];
const signed = [
  ...["github", "stdhooks", "stripe", "shopify", "hmac", "twilio", "slack", "zoom", "meta"],
  ...["paddle", "zendesk", "hubspot"],
];
for (const source of signed) {
  for (const [signature, code] of [
    ["missing", "signature_missing"],
    ["forged", "signature_mismatch"],
    ["malformed", "signature_malformed"],
    ["other-body", "signature_mismatch"],
    ...(timestamped.includes(source) ? [["stale", "signature_expired"]] : []),
  ] as Array<[Entry["signature"], string]>) {
    out.push({
      name: `webhook ${source}: ${signature} signature`,
      entry: "webhook",
      source,
      signature,
      json: webhookBody,
      expect: { status: 401, code },
    });
  }
}
// A handshake is answered only when signed: Zoom's answer signs the token it is sent.
for (const [source, json] of [
  ["slack", { token: "t", challenge: "hostile-challenge", type: "url_verification" }],
  ["zoom", { event: "endpoint.url_validation", payload: { plainToken: "v0:1795000000:{}" }, event_ts: 1 }],
] as const) {
  for (const [signature, code] of [
    ["missing", "signature_missing"],
    ["forged", "signature_mismatch"],
  ] as Array<[Entry["signature"], string]>) {
    out.push({
      name: `webhook ${source}: ${signature} signature on a URL handshake`,
      entry: "webhook",
      source,
      signature,
      json,
      expect: { status: 401, code },
    });
  }
}
// Slack's unsigned SSL check answers 200 only as itself: an event riding along must be signed.
out.push({
  name: "webhook slack: ssl_check=1 carrying an unsigned event payload",
  entry: "webhook",
  source: "slack",
  signature: "missing",
  body: `ssl_check=1&token=t&payload=${encodeURIComponent(JSON.stringify({ type: "event_callback", id: "evt_w", data: { stripe_customer_id: "cus_Hostile", requests: 2 } }))}`,
  expect: { status: 401, code: "signature_missing" },
});

// Meta's GET subscription check: answered only for a Verify Token, and echoing only a token.
for (const [query, status, code] of [
  ["hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=guess", 403, "verify_token_mismatch"],
  ["hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=", 400, "invalid_handshake"],
  ["hub.mode=unsubscribe&hub.challenge=1158201444&hub.verify_token=guess", 400, "invalid_handshake"],
  ["", 400, "invalid_handshake"],
] as const) {
  out.push({
    name: `route GET /v1/webhooks/meta?${query}`,
    entry: "route",
    method: "GET",
    path: "/v1/webhooks/meta",
    query,
    expect: { status, code },
  });
}
out.push({
  name: "webhook: 2 MiB body",
  entry: "webhook",
  source: "github",
  signature: "valid",
  generate: { kind: "big", bytes: 2 * 1024 * 1024 },
  expect: { status: 413 },
});
out.push({
  // 700 KB as sent, under METERHOOK_MAX_BODY_BYTES; twice that in its trigger, over a message.
  name: "webhook: a body within the size limit that outgrows a queue message once wrapped",
  entry: "webhook",
  source: "github",
  signature: "valid",
  generate: { kind: "quoted", quotes: 350_000 },
  expect: { status: 413, code: "payload_too_large" },
});

// SQS messages that cannot be events.
for (const [name, body, code] of [
  ["empty", "", "invalid_message"],
  ["not JSON", "hello", "invalid_message"],
  ["truncated JSON", goodText.slice(0, 20), "invalid_message"],
  ["XML", "<event id='1'/>", "invalid_message"],
  ["JSON null", "null", "invalid_event"],
  ["JSON number", "42", "invalid_event"],
  ["JSON string", '"event"', "invalid_event"],
  ["JSON array", `[${goodText}]`, "invalid_event"],
  ["missing customer", JSON.stringify({ id: "s1", event_name: "e" }), "invalid_event"],
  ["value string", JSON.stringify({ ...good, id: "s2", value: "5" }), "invalid_value"],
  [
    "timestamp far future",
    `{"id":"s3","event_name":"e","customer":"cus_1","timestamp":$now+86400}`,
    "timestamp_out_of_range",
  ],
  [
    "__proto__ properties",
    `{"id":"s4","event_name":"e","customer":"cus_1","properties":{"__proto__":"x"}}`,
    "invalid_event",
  ],
  ["unknown customer", JSON.stringify({ ...good, id: "s5", customer: "acct_nobody" }), "customer_not_found"],
  ["zero value for a positive-only meter", JSON.stringify({ ...good, id: "s6", value: 0 }), "invalid_value"],
  ["negative value for a positive-only meter", JSON.stringify({ ...good, id: "s7", value: -3 }), "invalid_value"],
  [
    "trigger for an unknown source",
    JSON.stringify({
      meterhook: "trigger/1",
      kind: "webhook",
      source: "nope",
      receivedAt: "2026-11-26T00:00:00Z",
      headers: {},
      body: "{}",
    }),
    "unknown_source",
  ],
] as const) {
  out.push({ name: `SQS message: ${name}`, entry: "sqs", body, expect: { dlq: code } });
}

// Cancellations: POST /v1/events/cancel and cancel/1 messages on the ingest queue.
const cancel = { id: "evt_hostile_ok", event_name: "api_requests" };
const cancels = (name: string, json: unknown, expect: Expect, extra: Partial<Entry> = {}) =>
  out.push({ name: `cancel: ${name}`, entry: "route", path: "/v1/events/cancel", json, expect, ...extra });
for (const [name, json] of [
  ["event_name missing", { id: "c1" }],
  ["id missing", { event_name: "api_requests" }],
  ["an unknown field (a value)", { ...cancel, value: 3 }],
  ["a customer field", { ...cancel, customer: "cus_1" }],
  ["source without rule", { ...cancel, source: "github" }],
  ["rule without source", { ...cancel, rule: "r" }],
  ["empty id", { ...cancel, id: "" }],
  ["id too long", { ...cancel, id: "x".repeat(256) }],
  ["event_name too long", { ...cancel, event_name: "x".repeat(101) }],
  ["id an object", { ...cancel, id: { $ne: null } }],
  ["id null", { ...cancel, id: null }],
  ["event_name a number", { ...cancel, event_name: 7 }],
  ["control character in the id", { ...cancel, id: "a\u0007b" }],
  ["a JSON array", [cancel]],
  ["JSON null", null],
] as const) {
  cancels(name, json, { status: 400, code: "invalid_event" });
}
cancels(
  "lone surrogate in the id",
  undefined,
  { status: 400, code: "invalid_event" },
  {
    json: undefined,
    body: '{"id":"\\ud800","event_name":"api_requests"}',
  },
);
cancels(
  "__proto__ field",
  undefined,
  { status: 400, code: "invalid_event" },
  {
    body: '{"id":"c2","event_name":"api_requests","__proto__":{"polluted":true}}',
  },
);
cancels("not JSON", undefined, { status: 400, code: "invalid_json" }, { body: "{id: c3}" });
cancels("an empty batch", { events: [] }, { status: 400, code: "invalid_body" });
cancels("a batch of nothing valid", { events: [{}, 1, "x", null] }, { status: 400, code: "all_events_rejected" });
cancels(
  "too many in a batch",
  { events: Array.from({ length: 501 }, () => cancel) },
  { status: 400, code: "too_many_events" },
);
cancels(
  "no API key",
  cancel,
  { status: 401, code: "unauthorized" },
  { headers: { "content-type": "application/json" } },
);
cancels(
  "a form body",
  undefined,
  { status: 415, code: "unsupported_media_type" },
  {
    body: "id=c4&event_name=api_requests",
    headers: { "content-type": "application/x-www-form-urlencoded", authorization: "Bearer $KEY" },
  },
);
cancels("GET", undefined, { status: 405, code: "method_not_allowed" }, { method: "GET" });
for (const [name, json] of [
  ["event_name missing", { meterhook: "cancel/1", id: "q1" }],
  ["an unknown field", { meterhook: "cancel/1", ...cancel, value: 1 }],
  ["source without rule", { meterhook: "cancel/1", ...cancel, source: "github" }],
  ["id an array", { meterhook: "cancel/1", ...cancel, id: ["a"] }],
] as const) {
  out.push({
    name: `SQS cancel/1 message: ${name}`,
    entry: "sqs",
    body: JSON.stringify(json),
    expect: { dlq: "invalid_event" },
  });
}

writeFileSync("test/fixtures/hostile-inputs.json", `${JSON.stringify(out, null, 1)}\n`);
console.log(`wrote ${out.length} hostile inputs to test/fixtures/hostile-inputs.json`);
