import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";
import { brotliCompressSync, deflateRawSync, deflateSync, gzipSync } from "node:zlib";
import { createHttpHandler } from "../../functions/http-api.js";
import { createIngestApiFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import { silentLogger } from "../../lib/logger.js";
import { MetricsRecorder } from "../../lib/metrics.js";
import { httpEvent, usageEvent } from "../helpers/factories.js";
import { startSilentServer } from "../helpers/silent-server.js";
import { drain, startTestQueues, type TestQueues } from "../helpers/sqs.js";

const KEY = "mh_test_key_one";
const ROTATED = "mh_test_key_two";
let queues: TestQueues;
let handler: ReturnType<typeof createHttpHandler>;
const metrics = new MetricsRecorder();

before(async () => {
  queues = await startTestQueues();
  const config = loadConfig({
    METERHOOK_API_KEYS: `${KEY}, ${ROTATED}`,
    METERHOOK_INGEST_QUEUE_URL: queues.ingestQueueUrl,
    SQS_ENDPOINT: queues.endpoint,
  });
  const api = await createIngestApiFromConfig(config, { sqs: queues.sqs, logger: silentLogger, metrics });
  handler = createHttpHandler(async () => api);
});
after(() => queues.stop());
beforeEach(() => drain(queues.sqs, queues.ingestQueueUrl));

const headers = (key = KEY) => ({ authorization: `Bearer ${key}`, "content-type": "application/json" });
async function post(
  body: unknown,
  options: { key?: string; headers?: Record<string, string>; raw?: boolean; base64?: boolean } = {},
) {
  const res = await handler(
    httpEvent({
      body: options.raw ? (body as string) : JSON.stringify(body),
      headers: options.headers ?? headers(options.key),
      base64: options.base64,
    }),
  );
  return { status: res.statusCode, headers: res.headers ?? {}, body: JSON.parse(res.body ?? "null") };
}
const queued = async () => (await drain(queues.sqs, queues.ingestQueueUrl)).map((m) => JSON.parse(m.body));

describe("POST /v1/events", () => {
  test("202: one event is queued in canonical form with its time of receipt", async () => {
    const event = usageEvent({ properties: { region: "eu" } });
    const before = Math.floor(Date.now() / 1000);
    const res = await post(event);
    assert.equal(res.status, 202);
    assert.deepEqual(res.body.accepted, [event.id]);
    assert.deepEqual(res.body.rejected, []);
    const [raw] = await drain(queues.sqs, queues.ingestQueueUrl);
    const msg = JSON.parse(raw?.body ?? "{}");
    assert.equal(
      raw?.attributes.correlation_id,
      res.body.requestId,
      "the request id follows the event for log correlation",
    );
    assert.equal(msg.id, event.id);
    assert.equal(msg.value, 3);
    assert.deepEqual(msg.properties, { region: "eu" });
    assert.ok(Date.parse(msg.timestamp) / 1000 >= before);
  });

  test("202 for a batch: valid events queued, each rejected one listed with index, id, code and message", async () => {
    const good = [usageEvent(), usageEvent({ customer: "acct_7" })];
    const res = await post({
      events: [
        good[0],
        { id: "bad_name", event_name: "x".repeat(101), customer: "cus_1" },
        good[1],
        42,
        { id: "old", event_name: "a", customer: "cus_1", timestamp: 1 },
      ],
    });
    assert.equal(res.status, 202);
    assert.deepEqual(
      res.body.accepted,
      good.map((e) => e.id),
    );
    assert.deepEqual(
      res.body.rejected.map((r: { index: number; id?: string; code: string }) => [r.index, r.id, r.code]),
      [
        [1, "bad_name", "invalid_event"],
        [3, undefined, "invalid_event"],
        [4, "old", "timestamp_out_of_range"],
      ],
    );
    assert.equal((await queued()).length, 2);
  });

  test("a batch item with an earlier item's id and event_name but other contents is rejected duplicate_id; an exact repeat is accepted", async () => {
    // A timestamp of its own, so that every copy is the same event to the last field.
    const first = usageEvent({
      value: 3,
      timestamp: Math.floor(Date.now() / 1000) - 60,
      properties: { region: "eu", tier: "gold" },
    });
    const res = await post({
      events: [
        first,
        { ...first }, // the same event again: Stripe bills it once, as the client meant
        { ...first, properties: { tier: "gold", region: "eu" } }, // the same, properties reordered
        { ...first, value: 5 }, // another amount under the same id: would never be billed
        { ...first, event_name: "storage_gb" }, // another meter: another identifier
        { ...first, customer: "cus_Other" },
      ],
    });
    assert.equal(res.status, 202);
    assert.deepEqual(res.body.accepted, [first.id, first.id, first.id, first.id]);
    assert.deepEqual(
      res.body.rejected.map((r: { index: number; id?: string; code: string }) => [r.index, r.id, r.code]),
      [
        [3, first.id, "duplicate_id"],
        [5, first.id, "duplicate_id"],
      ],
    );
    assert.match(res.body.rejected[0].message, /at index 0 of this request with other contents/);
    const bodies = await queued();
    assert.deepEqual(
      bodies.map((b) => [b.event_name, b.value, b.customer]),
      [
        ["api_requests", 3, "cus_NciAYcXfLnqBoz"],
        ["api_requests", 3, "cus_NciAYcXfLnqBoz"],
        ["api_requests", 3, "cus_NciAYcXfLnqBoz"],
        ["storage_gb", 3, "cus_NciAYcXfLnqBoz"],
      ],
    );
  });

  test("an event and a copy with another value: the first is queued, the copy rejected duplicate_id", async () => {
    const event = usageEvent();
    const res = await post({ events: [event, { ...event, value: 4 }] });
    assert.equal(res.status, 202);
    assert.deepEqual(res.body.accepted, [event.id]);
    assert.deepEqual(
      res.body.rejected.map((r: { code: string }) => r.code),
      ["duplicate_id"],
    );
    assert.deepEqual(
      (await queued()).map((b) => b.value),
      [3],
    );
  });

  test("characters beyond U+FFFF and U+FFFF itself are queued and read back as sent", async () => {
    // SQS refuses a raw U+FFFF (JSON.stringify leaves it raw) and fauxqs anything beyond U+FFFF:
    // both were 503 enqueue_failed, on every resend.
    const event = usageEvent({ id: `req_😀_${Date.now()}`, properties: { flag: "🇪🇺", odd: "a\uffffb\ufffe" } });
    const res = await post(event);
    assert.equal(res.status, 202, JSON.stringify(res.body));
    const [msg] = await queued();
    assert.deepEqual([msg?.id, msg?.properties], [event.id, event.properties]);
  });

  test("400 when a single event is invalid, with its own code; nothing queued", async () => {
    const res = await post(usageEvent({ value: Number.MAX_SAFE_INTEGER * 10 }));
    assert.equal(res.status, 400);
    assert.equal(res.body.error.code, "invalid_value");
    assert.equal((await queued()).length, 0);
  });

  test("400 for text that is not well-formed Unicode (a lone surrogate, sent as a JSON escape); nothing queued", async () => {
    // JSON.stringify writes the lone surrogate as the escape "\\ud800".
    const res = await post(usageEvent({ properties: { region: "eu\ud800" } }));
    assert.equal(res.status, 400);
    assert.equal(res.body.error.code, "invalid_event");
    assert.match(res.body.error.message, /properties\.region: .*well-formed Unicode/);
    assert.equal((await queued()).length, 0);
  });

  test("400 all_events_rejected when no event of a batch is valid", async () => {
    const res = await post({ events: [{ id: "a" }, { id: "b" }] });
    assert.equal(res.status, 400);
    assert.equal(res.body.error.code, "all_events_rejected");
    assert.equal(res.body.rejected.length, 2);
  });

  test("a byte order mark before the JSON is ignored, as RFC 8259 allows (some .NET and Windows senders write one)", async () => {
    const event = usageEvent();
    const res = await post(`\ufeff${JSON.stringify(event)}`, { raw: true });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    assert.deepEqual(res.body.accepted, [event.id]);
    assert.equal((await queued())[0]?.id, event.id);
  });

  test("400 for malformed JSON, an empty batch, a key beside events, and more than 500 events; nothing queued", async () => {
    assert.equal((await post('{"id": "x",', { raw: true })).body.error.code, "invalid_json");
    assert.equal((await post({ events: [] })).body.error.code, "invalid_body");
    assert.equal((await post({ events: "nope" })).body.error.code, "invalid_body");
    // A key beside "events" is refused, as an unknown field of an event is: it was ignored.
    const extra = await post({ events: [usageEvent()], dryRun: true });
    assert.deepEqual([extra.status, extra.body.error.code], [400, "invalid_body"]);
    assert.match(extra.body.error.message, /unknown: dryRun/);
    const both = await post({ ...usageEvent(), events: [usageEvent()] });
    assert.match(both.body.error.message, /unknown: id, event_name, customer, value/);
    const many = await post({ events: Array.from({ length: 501 }, () => usageEvent()) });
    assert.deepEqual([many.status, many.body.error.code], [400, "too_many_events"]);
    assert.equal((await queued()).length, 0);
  });

  test("accepts 500 events in one request", async () => {
    const res = await post({ events: Array.from({ length: 500 }, () => usageEvent()) });
    assert.equal(res.status, 202);
    assert.equal(res.body.accepted.length, 500);
    assert.equal((await queued()).length, 500);
  });

  test("401 without a key or with a wrong one; both configured keys work", async () => {
    const none = await post(usageEvent(), { headers: { "content-type": "application/json" } });
    assert.equal(none.status, 401);
    assert.equal(none.body.error.code, "unauthorized");
    assert.match(none.headers["www-authenticate"] as string, /Bearer/);
    assert.equal((await post(usageEvent(), { key: "mh_test_key_on" })).status, 401);
    assert.equal(
      (await post(usageEvent(), { headers: { authorization: KEY, "content-type": "application/json" } })).status,
      401,
    );
    assert.equal((await queued()).length, 0);
    assert.equal((await post(usageEvent(), { key: ROTATED })).status, 202);
  });

  test("requests refused whole are counted by code (RequestsRejected): a key rotated on one side only shows", async () => {
    metrics.drain();
    await post(usageEvent(), { key: "mh_retired_key" });
    await post(usageEvent(), { key: "mh_retired_key" });
    await post("{not json", { raw: true });
    assert.equal((await post(usageEvent())).status, 202);
    const points = metrics.drain().filter((p) => p.name === "RequestsRejected");
    assert.deepEqual(points.map((p) => [p.dimensions.code, p.values.reduce((a, b) => a + b, 0)]).sort(), [
      ["invalid_json", 1],
      ["unauthorized", 2],
    ]);
  });

  test("415 for a wrong content type", async () => {
    const res = await post(usageEvent(), { headers: { authorization: `Bearer ${KEY}`, "content-type": "text/plain" } });
    assert.deepEqual([res.status, res.body.error.code], [415, "unsupported_media_type"]);
    assert.equal((await post(usageEvent(), { headers: { authorization: `Bearer ${KEY}` } })).status, 415);
    assert.equal(
      (await post(usageEvent(), { headers: { ...headers(), "content-type": "application/json; charset=utf-8" } }))
        .status,
      202,
    );
  });

  /** The handler's answer to `body` sent with Content-Encoding `coding`, as API Gateway passes it: base64. */
  async function postCoded(body: Buffer, coding: string, path = "/v1/events") {
    const res = await handler(
      httpEvent({ path, body, base64: true, headers: { ...headers(), "content-encoding": coding } }),
    );
    return { status: res.statusCode, body: JSON.parse(res.body ?? "null") };
  }

  test("a gzip, x-gzip, deflate (zlib or raw) or br body is inflated: its events are queued as sent", async () => {
    const codings: Array<[string, (b: string) => Buffer]> = [
      ["gzip", (b) => gzipSync(b)],
      ["X-Gzip", (b) => gzipSync(b)],
      ["deflate", (b) => deflateSync(b)],
      ["deflate", (b) => deflateRawSync(b)],
      ["br", (b) => brotliCompressSync(b)],
      ["gzip, br", (b) => brotliCompressSync(gzipSync(b))],
    ];
    for (const [index, [coding, compress]] of codings.entries()) {
      const events = [usageEvent({ id: `gz_${index}_a`, value: 2 }), usageEvent({ id: `gz_${index}_b`, value: 5 })];
      const res = await postCoded(compress(JSON.stringify({ events })), coding);
      assert.deepEqual([res.status, res.body.accepted], [202, [events[0]?.id, events[1]?.id]], coding);
      const sent = (await queued()).map((m) => [m.id, m.value]);
      assert.deepEqual(sent, [
        [events[0]?.id, 2],
        [events[1]?.id, 5],
      ]);
    }
    const cancel = await postCoded(
      gzipSync(JSON.stringify({ id: "gz_0_a", event_name: usageEvent().event_name })),
      "gzip",
      "/v1/events/cancel",
    );
    assert.deepEqual([cancel.status, cancel.body.accepted], [202, ["gz_0_a"]]);
    assert.equal((await queued()).length, 1);
  });

  test("a compressed body that cannot be read is refused whole: 415 for an unknown coding, 400 for bytes not in the coding named, 413 past 1 MiB inflated", async () => {
    const json = JSON.stringify(usageEvent());
    const refused = [
      [
        await postCoded(gzipSync(json), "zstd"),
        415,
        "unsupported_media_type",
        /Content-Encoding zstd is not supported/,
      ],
      [await postCoded(gzipSync(json), "gzip, gzip, gzip"), 415, "unsupported_media_type", /3 codings/],
      [await postCoded(Buffer.from(json), "gzip"), 400, "invalid_body", /not valid gzip data/],
      [await postCoded(gzipSync(json).subarray(0, 12), "gzip"), 400, "invalid_body", /not valid gzip data/],
      [await postCoded(deflateSync(json), "br"), 400, "invalid_body", /not valid br data/],
      // 2 MiB of one event's padding gzips to about 2 KiB: the bound is on what it inflates to.
      [
        await postCoded(gzipSync(JSON.stringify(usageEvent({ properties: { pad: "x".repeat(2 << 20) } }))), "gzip"),
        413,
        "payload_too_large",
        /larger than 1048576 bytes once inflated/,
      ],
    ] as const;
    for (const [res, status, code, message] of refused) {
      assert.deepEqual([res.status, res.body.error.code], [status, code], res.body.error.message);
      assert.match(res.body.error.message, message);
    }
    assert.equal((await queued()).length, 0);
    const identity = await post(usageEvent(), { headers: { ...headers(), "content-encoding": "identity" } });
    assert.equal(identity.status, 202);
  });

  test("413 for a body over 1 MiB; nothing queued", async () => {
    const big = JSON.stringify({ events: [usageEvent({ properties: { pad: "x" } })], pad: "x".repeat(1024 * 1024) });
    const res = await post(big, { raw: true });
    assert.deepEqual([res.status, res.body.error.code], [413, "payload_too_large"]);
    assert.equal((await queued()).length, 0);
  });

  test("decodes base64 bodies (Function URLs and binary payloads)", async () => {
    const event = usageEvent();
    const res = await post(event, { base64: true });
    assert.equal(res.status, 202);
    assert.equal((await queued())[0]?.id, event.id);
  });

  test("503 enqueue_failed when the queue cannot be written", async () => {
    const config = loadConfig({
      METERHOOK_API_KEYS: KEY,
      METERHOOK_INGEST_QUEUE_URL: queues.ingestQueueUrl.replace("meterhook-ingest", "gone"),
      SQS_ENDPOINT: queues.endpoint,
    });
    const api = await createIngestApiFromConfig(config, { sqs: queues.sqs, logger: silentLogger });
    const res = await createHttpHandler(async () => api)(
      httpEvent({ body: JSON.stringify(usageEvent()), headers: headers() }),
    );
    assert.equal(res.statusCode, 503);
    assert.equal(JSON.parse(res.body ?? "").error.code, "enqueue_failed");
  });

  // The SDK bounds no call by default: without METERHOOK_AWS_REQUEST_TIMEOUT_MS's bound this
  // request would wait on the silent queue until the test's own timeout fails it.
  test("503 enqueue_failed when the queue never answers: each call ends at the AWS request timeout", {
    timeout: 30_000,
  }, async () => {
    const silent = await startSilentServer();
    try {
      const config = loadConfig({
        METERHOOK_API_KEYS: KEY,
        METERHOOK_INGEST_QUEUE_URL: queues.ingestQueueUrl,
        SQS_ENDPOINT: silent.endpoint,
        METERHOOK_AWS_REQUEST_TIMEOUT_MS: "200",
      });
      // The SQS client the function makes from its settings, not the test's.
      const api = await createIngestApiFromConfig(config, { logger: silentLogger });
      const res = await createHttpHandler(async () => api)(
        httpEvent({ body: JSON.stringify(usageEvent()), headers: headers() }),
      );
      assert.equal(res.statusCode, 503);
      assert.equal(JSON.parse(res.body ?? "").error.code, "enqueue_failed");
      assert.ok(silent.connections() >= 1, "the call reached the endpoint and was cut off there");
    } finally {
      await silent.stop();
    }
  });
});

describe("other routes", () => {
  test("GET /v1/health answers 200 without a key", async () => {
    const res = await handler(httpEvent({ method: "GET", path: "/v1/health" }));
    assert.equal(res.statusCode, 200);
  });

  test("404 and 405 are JSON errors", async () => {
    const nf = await handler(httpEvent({ method: "GET", path: "/v2/nothing" }));
    assert.equal(nf.statusCode, 404);
    assert.equal(JSON.parse(nf.body ?? "").error.code, "not_found");
    const na = await handler(httpEvent({ method: "GET", path: "/v1/events" }));
    assert.equal(na.statusCode, 405);
  });

  test("a named stage prefix is stripped", async () => {
    const res = await handler(httpEvent({ method: "GET", path: "/prod/v1/health", stage: "prod" }));
    assert.equal(res.statusCode, 200);
  });
});

describe("GET /v1/webhooks/{source}, Meta's subscription check", () => {
  test("every refusal is counted in WebhooksRejected by its code, as a POST's are", async () => {
    const recorder = new MetricsRecorder();
    const config = loadConfig({
      METERHOOK_API_KEYS: KEY,
      METERHOOK_INGEST_QUEUE_URL: queues.ingestQueueUrl,
      SQS_ENDPOINT: queues.endpoint,
      METERHOOK_CONFIG: "examples/whatsapp-messages.yaml",
      META_APP_SECRET: "meta-app-secret-http-0001",
      META_VERIFY_TOKEN: "meta-verify-token-http-0001",
    });
    const api = await createIngestApiFromConfig(config, { sqs: queues.sqs, logger: silentLogger, metrics: recorder });
    const meta = createHttpHandler(async () => api);
    const get = async (path: string, query: string) =>
      (await meta(httpEvent({ method: "GET", path, query }))).statusCode;

    const challenge = "hub.mode=subscribe&hub.challenge=1158201444";
    assert.equal(await get("/v1/webhooks/whatsapp", `${challenge}&hub.verify_token=meta-verify-token-http-0001`), 200);
    assert.equal(await get("/v1/webhooks/whatsup", `${challenge}&hub.verify_token=meta-verify-token-http-0001`), 404);
    assert.equal(await get("/v1/webhooks/whatsapp", "hub.challenge=1158201444"), 400);
    assert.equal(await get("/v1/webhooks/whatsapp", `${challenge}&hub.verify_token=guess`), 403);

    const refused = recorder
      .drain()
      .filter((p) => p.name === "WebhooksRejected")
      .map((p) => [p.dimensions.code, p.values[0]]);
    assert.deepEqual(refused.sort(), [
      ["invalid_handshake", 1],
      ["unknown_source", 1],
      ["verify_token_mismatch", 1],
    ]);
  });
});
