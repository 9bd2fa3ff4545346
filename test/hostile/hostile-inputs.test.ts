import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { createHttpHandler } from "../../functions/http-api.js";
import { createQueueHandler } from "../../functions/ingest-queue.js";
import { createConsumerFromConfig, createIngestApiFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import { createLogger } from "../../lib/logger.js";
import { AuthSchema } from "../../lib/mapping/config-schema.js";
import { signWebhook } from "../../lib/webhooks/sign.js";
import type { StripeEmulator } from "../../local/stripe-emulator/server.js";
import { httpEvent, lambdaContext, sqsEvent, sqsRecord } from "../helpers/factories.js";
import { drain, drainDeadLetters, startTestQueues, type TestQueues } from "../helpers/sqs.js";
import { startEmulator } from "../helpers/stripe.js";
import type { HostileInput } from "./corpus.js";

type Entry = HostileInput;
const corpus = JSON.parse(readFileSync("test/fixtures/hostile-inputs.json", "utf8")) as Entry[];

// Every secret this suite configures: none may ever appear in an answer, a log line or a dead letter.
const API_KEY = "mh_hostile_api_key_0001";
const STRIPE_KEY = "sk_test_hostileStripeKey0001";
const SECRETS: Record<string, string> = {
  github: "gh-hostile-secret-0001",
  stdhooks: `whsec_${Buffer.from("std-hostile-secret-0001").toString("base64")}`,
  stripe: "whsec_stripeHostileSecret0001",
  shopify: "shpss_hostileSecret0001",
  hmac: "hmac-hostile-secret-0001",
  twilio: "twilio-hostile-auth-token-0001",
  slack: "slack-hostile-signing-secret-0001",
  zoom: "zoom-hostile-secret-token-0001",
  meta: "meta-hostile-app-secret-0001",
  metaVerify: "meta-hostile-verify-token-0001",
  paddle: "pdl_ntfset_hostile_secret_0001",
  zendesk: "zendesk-hostile-signing-secret-0001",
  hubspot: "hubspot-hostile-client-secret-0001",
};
const ALL_SECRETS = [API_KEY, STRIPE_KEY, ...Object.values(SECRETS)];

const config = {
  version: 1,
  sources: {
    github: { type: "webhook", auth: { scheme: "github", secrets: [{ env: "S_GITHUB" }] } },
    stdhooks: { type: "webhook", auth: { scheme: "standard-webhooks", secrets: [{ env: "S_STDHOOKS" }] } },
    stripe: { type: "webhook", auth: { scheme: "stripe", secrets: [{ env: "S_STRIPE" }] } },
    shopify: { type: "webhook", auth: { scheme: "shopify", secrets: [{ env: "S_SHOPIFY" }] } },
    hmac: {
      type: "webhook",
      auth: {
        scheme: "hmac-sha256",
        header: "X-Signature",
        timestampHeader: "X-Timestamp",
        secrets: [{ env: "S_HMAC" }],
      },
    },
    twilio: {
      type: "webhook",
      auth: { scheme: "twilio", url: "https://api.example.com/v1/webhooks/twilio", secrets: [{ env: "S_TWILIO" }] },
    },
    slack: { type: "webhook", auth: { scheme: "slack", secrets: [{ env: "S_SLACK" }] } },
    zoom: { type: "webhook", auth: { scheme: "zoom", secrets: [{ env: "S_ZOOM" }] } },
    meta: {
      type: "webhook",
      auth: { scheme: "meta", secrets: [{ env: "S_META" }], verifyTokens: [{ env: "S_META_VERIFY" }] },
    },
    paddle: { type: "webhook", auth: { scheme: "paddle", secrets: [{ env: "S_PADDLE" }] } },
    zendesk: { type: "webhook", auth: { scheme: "zendesk", secrets: [{ env: "S_ZENDESK" }] } },
    hubspot: {
      type: "webhook",
      auth: { scheme: "hubspot", url: "https://api.example.com/v1/webhooks/hubspot", secrets: [{ env: "S_HUBSPOT" }] },
    },
  },
};
for (const s of Object.values(config.sources) as Array<{ rules?: unknown }>) {
  s.rules = [
    {
      name: "r",
      id: "body.id",
      customer: "body.data.stripe_customer_id",
      emit: [{ event_name: "api_requests", value: "body.data.requests" }],
    },
  ];
}

let queues: TestQueues;
let emulator: StripeEmulator;
let http: ReturnType<typeof createHttpHandler>;
let queue: ReturnType<typeof createQueueHandler>;
const logs: string[] = [];
const answers: string[] = [];

before(async () => {
  queues = await startTestQueues();
  emulator = await startEmulator({ apiKeys: [STRIPE_KEY] });
  const dir = mkdtempSync(join(tmpdir(), "mh-hostile-"));
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  const cfg = loadConfig({
    METERHOOK_API_KEYS: API_KEY,
    METERHOOK_INGEST_QUEUE_URL: queues.ingestQueueUrl,
    METERHOOK_DLQ_URL: queues.deadLetterQueueUrl,
    METERHOOK_CONFIG: join(dir, "config.json"),
    SQS_ENDPOINT: queues.endpoint,
    STRIPE_API_KEY: STRIPE_KEY,
    METERHOOK_METER_VALUE_RULES: JSON.stringify({ api_requests: "positive" }),
    STRIPE_API_BASE: emulator.url,
    STRIPE_METER_EVENTS_BASE: emulator.url,
    S_GITHUB: SECRETS.github,
    S_STDHOOKS: SECRETS.stdhooks,
    S_STRIPE: SECRETS.stripe,
    S_SHOPIFY: SECRETS.shopify,
    S_HMAC: SECRETS.hmac,
    S_TWILIO: SECRETS.twilio,
    S_SLACK: SECRETS.slack,
    S_ZOOM: SECRETS.zoom,
    S_META: SECRETS.meta,
    S_META_VERIFY: SECRETS.metaVerify,
    S_PADDLE: SECRETS.paddle,
    S_ZENDESK: SECRETS.zendesk,
    S_HUBSPOT: SECRETS.hubspot,
  });
  const logger = createLogger({ level: "debug", write: (l) => logs.push(l) });
  const api = await createIngestApiFromConfig(cfg, { sqs: queues.sqs, logger });
  const consumer = await createConsumerFromConfig(cfg, { sqs: queues.sqs, logger });
  http = createHttpHandler(async () => api);
  queue = createQueueHandler(async () => consumer);
});
after(async () => {
  await emulator.stop();
  await queues.stop();
});

const now = () => Math.floor(Date.now() / 1000);
function fill(v: unknown): unknown {
  if (typeof v === "string") {
    const m = /^\$now(?:([+-])(\d+)|\*(\d+))?$/.exec(v);
    if (m) return m[3] ? now() * Number(m[3]) : now() + (m[1] === "-" ? -1 : 1) * Number(m[2] ?? 0);
    return v.includes("$now") ? v.replace(/\$now([+-]\d+)?/g, (_, d) => String(now() + Number(d ?? 0))) : v;
  }
  if (Array.isArray(v)) return v.map(fill);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fill(x)]));
  return v;
}
function bodyOf(e: Entry): string {
  if (e.generate?.kind === "nested") return `${"[".repeat(e.generate.depth)}${"]".repeat(e.generate.depth)}`;
  if (e.generate?.kind === "big")
    return JSON.stringify({
      events: [{ id: "big", event_name: "e", customer: "cus_1" }],
      pad: "x".repeat(e.generate.bytes),
    });
  if (e.generate?.kind === "quoted")
    return JSON.stringify({
      id: "evt_quoted",
      data: { stripe_customer_id: "cus_1", requests: 1 },
      pad: '"'.repeat(e.generate.quotes),
    });
  if (e.body !== undefined) return fill(e.body) as string;
  return JSON.stringify(fill(e.json));
}
function webhookHeaders(e: Entry, body: string): Record<string, string> {
  const source = e.source as keyof typeof SECRETS;
  const auth = AuthSchema.parse((config.sources as Record<string, { auth: unknown }>)[source]?.auth) as never;
  const secret = SECRETS[source] as string;
  switch (e.signature) {
    case "valid":
      return signWebhook(auth, secret, body);
    case "forged":
      return signWebhook(
        auth,
        source === "stdhooks" ? `whsec_${Buffer.from("forged-secret").toString("base64")}` : `${secret}-forged`,
        body,
      );
    case "other-body":
      return signWebhook(auth, secret, `${body} `);
    case "stale":
      // Past any tolerance a source may set (at most a day).
      return signWebhook(auth, secret, body, { timestamp: now() - 2 * 86_400 });
    case "malformed":
      return Object.fromEntries(
        Object.entries(signWebhook(auth, secret, body)).map(([k, v]) => [
          k,
          /timestamp/.test(k) ? v : `x${v.slice(3)}!`,
        ]),
      );
    default:
      return {};
  }
}

describe(`hostile inputs (${corpus.length} from test/fixtures/hostile-inputs.json)`, () => {
  test("the corpus has at least 200 inputs across every entry point", () => {
    assert.ok(corpus.length >= 200);
    assert.deepEqual([...new Set(corpus.map((e) => e.entry))].sort(), ["events", "route", "sqs", "webhook"]);
  });

  for (const e of corpus) {
    test(e.name, async () => {
      const body = bodyOf(e);
      if (e.entry === "sqs") {
        const res = await queue(sqsEvent([sqsRecord(body)]), lambdaContext());
        assert.deepEqual(res.batchItemFailures, []);
        const letters = await drainDeadLetters(queues.sqs, queues.deadLetterQueueUrl);
        assert.equal(letters.length, 1);
        assert.equal(letters[0]?.error.code, (e.expect as { dlq: string }).dlq);
        answers.push(JSON.stringify(letters));
        return;
      }
      const headers: Record<string, string> =
        e.entry === "webhook"
          ? { "content-type": "application/json", ...webhookHeaders(e, body) }
          : Object.fromEntries(
              Object.entries(e.headers ?? { "content-type": "application/json", authorization: "Bearer $KEY" }).map(
                ([k, v]) => [k, v.replaceAll("$KEY", API_KEY)],
              ),
            );
      const path = e.entry === "webhook" ? `/v1/webhooks/${e.source}` : (e.path ?? "/v1/events");
      const res = await http(httpEvent({ method: e.method ?? "POST", path, body, headers, query: e.query }));
      const expect = e.expect as { status: number; code?: string };
      answers.push(`${JSON.stringify(res.headers)} ${res.body}`);
      assert.equal(res.statusCode, expect.status, res.body);
      const parsed = JSON.parse(res.body ?? "") as { error?: { code: string; message: string } };
      assert.ok(parsed.error?.code, "a JSON error with a code");
      if (expect.code) assert.equal(parsed.error?.code, expect.code);
      for (const name of Object.keys(res.headers ?? {})) assert.match(name, /^[a-z-]+$/);
    });
  }

  test("nothing reached Stripe, nothing was queued", async () => {
    assert.deepEqual(
      emulator.requests.map((r) => r.path),
      [],
    );
    assert.equal((await drain(queues.sqs, queues.ingestQueueUrl)).length, 0);
  });

  test("each webhook refused is logged at warn with its code; signature refusals keep their own line", () => {
    const refused = logs
      .map((l) => JSON.parse(l) as { level: string; message: string; code?: string })
      .filter((l) => l.message === "webhook refused" || l.message === "webhook signature rejected");
    const lineOf = (code: string) => refused.find((l) => l.code === code)?.message;
    assert.equal(lineOf("signature_mismatch"), "webhook signature rejected");
    assert.equal(lineOf("unknown_source"), "webhook refused");
    assert.equal(lineOf("payload_too_large"), "webhook refused");
    assert.ok(refused.every((l) => l.level === "warn"));
  });

  test("no answer, log line or dead letter contains a secret", () => {
    assert.ok(logs.length > 20, "logs were captured");
    const haystack = [...logs, ...answers].join("\n");
    for (const s of ALL_SECRETS) assert.ok(!haystack.includes(s), `a secret leaked: ${s.slice(0, 6)}...`);
    assert.ok(!({} as Record<string, unknown>).polluted, "Object.prototype untouched");
  });
});
