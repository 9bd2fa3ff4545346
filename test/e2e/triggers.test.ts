import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import { CreateTopicCommand, PublishCommand, SNSClient, SubscribeCommand } from "@aws-sdk/client-sns";
import { GetQueueAttributesCommand, SendMessageCommand, SQSClient } from "@aws-sdk/client-sqs";
import { parse as parseYaml, stringify as toYaml } from "yaml";
import { createEventBridgeHandler } from "../../functions/eventbridge.js";
import { createEventBridgeIngest } from "../../lib/eventbridge-ingest.js";
import { AuthSchema } from "../../lib/mapping/config-schema.js";
import { createSqsSender } from "../../lib/queue.js";
import { signWebhook } from "../../lib/webhooks/sign.js";
import { type LocalRuntime, startLocalRuntime } from "../../local/runtime.js";
import type { EmulatorOptions } from "../../local/stripe-emulator/server.js";
import { loadTrigger } from "../helpers/fixtures.js";
import { drainDeadLetters } from "../helpers/sqs.js";
import { waitFor } from "../helpers/wait.js";

const runtimes: LocalRuntime[] = [];
after(async () => {
  for (const rt of runtimes) await rt.stop();
});

async function start(configFile: string, env: Record<string, string> = {}, emulator: EmulatorOptions = {}) {
  const rt = await startLocalRuntime({
    env: { METERHOOK_LOG_LEVEL: "error", METERHOOK_CONFIG: configFile, ...env },
    visibilityTimeoutSeconds: 1,
    emulator,
  });
  runtimes.push(rt);
  const sqs = new SQSClient({
    endpoint: rt.sqsEndpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "t", secretAccessKey: "t" },
  });
  const total = (customer: string, eventName: string) =>
    rt.emulator?.ledger.summaries().find((s) => s.customer === customer && s.event_name === eventName)
      ?.aggregated_value;
  const billed = (customer: string, eventName: string, value: number) =>
    waitFor(
      () => total(customer, eventName) === value || undefined,
      `${eventName} = ${value} for ${customer} (now ${total(customer, eventName)})`,
    );
  const webhook = (source: string, body: string, headers: Record<string, string>) =>
    fetch(`${rt.gatewayUrl}/v1/webhooks/${source}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body,
    });
  return { rt, sqs, total, billed, webhook };
}

const schemeOf = (file: string, source: string) =>
  AuthSchema.parse(parseYaml(readFileSync(file, "utf8")).sources[source].auth) as never;
const settle = () => new Promise((r) => setTimeout(r, 400));

/** The mapping config the README shows under "App-specific triggers", as a file. */
function readmeMappingConfig(): string {
  const readme = readFileSync("README.md", "utf8");
  const block = /```yaml\n(# yaml-language-server[^\n]*\nversion: 1\n[\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(block, "the README's mapping config");
  const file = join(mkdtempSync(join(tmpdir(), "mh-readme-")), "readme.yaml");
  writeFileSync(file, block);
  return file;
}

describe("GitHub webhook: CI minutes", () => {
  const file = "examples/github-ci-minutes.yaml";
  const secret = "gh-webhook-secret-e2e-0001";

  test("a signed workflow_job event is billed in minutes, once, however often GitHub redelivers it", async () => {
    const { webhook, billed, total, rt } = await start(file, { GITHUB_WEBHOOK_SECRET: secret });
    const body = JSON.stringify(loadTrigger("github-workflow-job-completed.json"));
    const headers = {
      "x-github-event": "workflow_job",
      "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
      ...signWebhook(schemeOf(file, "github"), secret, body),
    };
    assert.equal((await webhook("github", body, headers)).status, 202);
    assert.equal((await webhook("github", body, headers)).status, 202);
    await billed("cus_OctoOrg0001", "ci_minutes", 7.5);
    await settle();
    assert.equal(total("cus_OctoOrg0001", "ci_minutes"), 7.5);
    assert.equal(rt.emulator?.ledger.events.length, 1);
  });

  test("the README's rule bills a job of 100 s as 1.66666666666667 minutes, to Stripe's 15 digits", async () => {
    // 100 / 60 is 1.6666666666666667 as a double: 17 significant digits, which Stripe refuses.
    const readmeFile = readmeMappingConfig();
    const { webhook, sqs, rt } = await start(readmeFile, { GITHUB_WEBHOOK_SECRET: secret });
    const job = loadTrigger("github-workflow-job-completed.json") as { workflow_job: Record<string, unknown> };
    job.workflow_job.started_at = new Date(Date.parse(String(job.workflow_job.completed_at)) - 100_000).toISOString();
    const body = JSON.stringify(job);
    const headers = { "x-github-event": "workflow_job", ...signWebhook(schemeOf(readmeFile, "github"), secret, body) };
    assert.equal((await webhook("github", body, headers)).status, 202);
    const [billedEvent] = await waitFor(
      () => (rt.emulator?.ledger.events.length ? rt.emulator.ledger.events : undefined),
      "the event billed",
    );
    assert.equal(billedEvent?.payload.value, "1.66666666666667");
    assert.deepEqual(await drainDeadLetters(sqs, rt.deadLetterQueueUrl), []);
  });

  test("a wrong signature is a 401 and a compressed body a 415, and nothing is queued; other events are ignored", async () => {
    const { webhook, rt } = await start(file, { GITHUB_WEBHOOK_SECRET: secret });
    const body = JSON.stringify(loadTrigger("github-workflow-job-completed.json"));
    const forged = await webhook("github", body, {
      "x-github-event": "workflow_job",
      ...signWebhook(schemeOf(file, "github"), "not-the-secret", body),
    });
    assert.equal(forged.status, 401);
    assert.equal(((await forged.json()) as { error: { code: string } }).error.code, "signature_mismatch");
    // Mangled into text, it would match no rule and, with `unmatched: ignore`, never be billed.
    const gzipped = gzipSync(body);
    const compressed = await fetch(`${rt.gatewayUrl}/v1/webhooks/github`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "content-encoding": "gzip",
        "x-github-event": "workflow_job",
        ...signWebhook(schemeOf(file, "github"), secret, gzipped),
      },
      body: gzipped,
    });
    assert.equal(compressed.status, 415);
    assert.equal(((await compressed.json()) as { error: { code: string } }).error.code, "unsupported_media_type");
    const queued = JSON.parse(body);
    queued.action = "queued";
    const other = JSON.stringify(queued);
    assert.equal(
      (
        await webhook("github", other, {
          "x-github-event": "workflow_job",
          ...signWebhook(schemeOf(file, "github"), secret, other),
        })
      ).status,
      202,
    );
    assert.equal((await webhook("gitlab", body, {})).status, 404);
    await settle();
    assert.equal(rt.emulator?.requests.filter((r) => r.path.includes("meter_event")).length, 0);
  });
});

describe("Standard Webhooks sender", () => {
  const file = "examples/standard-webhooks.yaml";
  const current = `whsec_${Buffer.from("usage-service-secret-current").toString("base64")}`;
  const previous = `whsec_${Buffer.from("usage-service-secret-previous").toString("base64")}`;

  test("one usage record fans out to two meters; the previous secret still works during rotation", async () => {
    const { webhook, billed } = await start(file, {
      USAGE_WEBHOOK_SECRET: current,
      USAGE_WEBHOOK_SECRET_PREVIOUS: previous,
    });
    const body = JSON.stringify(loadTrigger("standard-webhooks-usage-recorded.json"));
    assert.equal(
      (await webhook("usage-service", body, signWebhook(schemeOf(file, "usage-service"), previous, body))).status,
      202,
    );
    const ignored = JSON.stringify(loadTrigger("standard-webhooks-account-updated.json"));
    assert.equal(
      (await webhook("usage-service", ignored, signWebhook(schemeOf(file, "usage-service"), current, ignored))).status,
      202,
    );
    await billed("cus_UsageSvc0001", "api_requests", 1284);
    await billed("cus_UsageSvc0001", "data_transfer_gb", 2.75);
  });

  test("a Svix sender's svix-* headers verify too, and its message id makes the same identifiers on a retry", async () => {
    const { webhook, billed, total, rt } = await start(file, {
      USAGE_WEBHOOK_SECRET: current,
      USAGE_WEBHOOK_SECRET_PREVIOUS: previous,
    });
    const record = loadTrigger("standard-webhooks-usage-recorded.json") as { data: Record<string, unknown> };
    record.data.stripe_customer_id = "cus_SvixSender001";
    const body = JSON.stringify(record);
    const svix = Object.fromEntries(
      Object.entries(signWebhook(schemeOf(file, "usage-service"), current, body, { id: "msg_svix_0001" })).map(
        ([k, v]) => [k.replace("webhook-", "svix-"), v],
      ),
    );
    assert.equal((await webhook("usage-service", body, svix)).status, 202);
    assert.equal((await webhook("usage-service", body, svix)).status, 202, "Svix's retry");
    await billed("cus_SvixSender001", "api_requests", 1284);
    await settle();
    assert.equal(total("cus_SvixSender001", "api_requests"), 1284);
    assert.equal(rt.emulator?.ledger.events.length, 2, "two meters, each once");
  });
});

describe("LLM usage: token fan-out with an HTTP customer lookup", () => {
  test("input and output tokens are billed to the customer the app's service names, once it knows it", async () => {
    const mapping: Record<string, string> = {};
    let lookups = 0;
    const service = createServer((req, res) => {
      lookups++;
      const ws = decodeURIComponent((req.url ?? "").split("/")[2] ?? "");
      if (req.headers.authorization !== "Bearer billing-token-0001") return res.writeHead(401).end();
      if (!mapping[ws]) return res.writeHead(404).end();
      res
        .writeHead(200, { "content-type": "application/json" })
        .end(JSON.stringify({ stripe_customer_id: mapping[ws] }));
    });
    await new Promise<void>((r) => service.listen(0, "127.0.0.1", () => r()));
    after(() => new Promise<void>((r) => service.close(() => r())));
    const config = parseYaml(readFileSync("examples/llm-usage.yaml", "utf8"));
    config.sources.llm.customer.url = `http://127.0.0.1:${(service.address() as AddressInfo).port}/workspaces/{customer}/stripe`;
    config.sources.llm.customer.negativeCacheTtlSeconds = 0;
    const file = join(mkdtempSync(join(tmpdir(), "mh-llm-")), "llm.yaml");
    writeFileSync(file, toYaml(config));

    const secret = "llm-signing-secret-0001";
    const { webhook, billed, total } = await start(file, {
      LLM_WEBHOOK_SECRET: secret,
      BILLING_SERVICE_TOKEN: "Bearer billing-token-0001",
    });
    const body = JSON.stringify(loadTrigger("llm-completion.json"));
    assert.equal((await webhook("llm", body, signWebhook(schemeOf(file, "llm"), secret, body))).status, 202);
    // The workspace is not mapped yet: the event waits (notFoundAttempts: 3) instead of dead-lettering.
    await waitFor(() => lookups >= 1 || undefined, "a first lookup");
    assert.equal(total("cus_llm7Hq2", "llm_input_tokens"), undefined);
    mapping.ws_7Hq2 = "cus_llm7Hq2";
    await billed("cus_llm7Hq2", "llm_input_tokens", 1532);
    await billed("cus_llm7Hq2", "llm_output_tokens", 418);
  });
});

describe("a batch of usage records in one webhook", () => {
  const file = "examples/usage-batch.yaml";
  const secret = "usage-batch-secret-0001";

  test("each record is its own meter event for its own customer, once however often the batch is resent", async () => {
    const { webhook, billed, total, rt, sqs } = await start(file, { USAGE_BATCH_SECRET: secret });
    const body = JSON.stringify(loadTrigger("usage-batch.json"));
    const headers = signWebhook(schemeOf(file, "usage-batch"), secret, body);
    assert.equal((await webhook("usage-batch", body, headers)).status, 202);
    assert.equal((await webhook("usage-batch", body, headers)).status, 202);
    await billed("cus_Batch1001", "api_requests", 123);
    await billed("cus_Batch1002", "api_requests", 40);
    await settle();
    assert.equal(total("cus_Batch1001", "api_requests"), 123);
    const sent = rt.emulator?.ledger.events ?? [];
    assert.equal(sent.length, 3, "three api_call records, the login skipped, the resent batch not billed again");
    assert.deepEqual(sent.map((e) => e.payload.endpoint).sort(), ["/v1/export", "/v1/search", "/v1/search"]);

    // A record repeating another's id with another count would be dropped by Stripe: the batch
    // is dead-lettered instead, naming both records.
    const bad = loadTrigger("usage-batch.json") as { records: Array<Record<string, unknown>> };
    bad.records = bad.records.map((r) => ({ ...r, record_id: `${r.record_id}-b` }));
    bad.records[3] = { ...bad.records[3], record_id: bad.records[0]?.record_id };
    const badBody = JSON.stringify(bad);
    await webhook("usage-batch", badBody, signWebhook(schemeOf(file, "usage-batch"), secret, badBody));
    const [letter] = await waitFor(async () => {
      const got = await drainDeadLetters(sqs, rt.deadLetterQueueUrl);
      return got.length > 0 ? got : undefined;
    }, "a dead letter");
    assert.equal(letter?.error.code, "mapping_failed");
    assert.match(
      letter?.error.message ?? "",
      /api-calls item 3, api_requests: id "r_9001-b" repeats api-calls item 0's/,
    );
    assert.equal(rt.emulator?.ledger.events.length, 3, "nothing of the bad batch was billed");
  });
});

describe("Twilio SMS status callbacks, posted as forms", () => {
  const file = "examples/twilio-sms.yaml";
  const token = "twilio-auth-token-e2e-0001";

  test("a delivered message is billed once to the customer in the callback URL's query; other statuses are ignored; a forged one is a 401", async () => {
    const { rt, webhook, billed, total } = await start(file, { TWILIO_AUTH_TOKEN: token });
    const callback = (status: string, query = "") => {
      const body = new URLSearchParams({
        MessageSid: "SM00000000000000000000000000000001",
        MessageStatus: status,
        AccountSid: "AC00000000000000000000000000000001",
        To: "+15558675310",
        ToCountry: "US",
        ApiVersion: "2010-04-01",
      }).toString();
      // Signed for the public URL in the config, as Twilio signs it, and sent to the local gateway.
      const headers = signWebhook(schemeOf(file, "twilio-sms"), token, body, { query });
      return { body, headers: { "content-type": "application/x-www-form-urlencoded", ...headers }, query };
    };
    const post = (c: ReturnType<typeof callback>) =>
      fetch(`${rt.gatewayUrl}/v1/webhooks/twilio-sms${c.query ? `?${c.query}` : ""}`, {
        method: "POST",
        headers: c.headers,
        body: c.body,
      });

    assert.equal((await post(callback("sent", "account=acct_sms_1"))).status, 202);
    const delivered = callback("delivered", "account=acct_sms_1");
    assert.equal((await post(delivered)).status, 202);
    assert.equal((await post(delivered)).status, 202, "Twilio's retry of the same callback");
    await billed("cus_SmsTenant0001", "sms_delivered", 1);
    await settle();
    assert.equal(total("cus_SmsTenant0001", "sms_delivered"), 1);
    const [event] = rt.emulator?.ledger.events ?? [];
    assert.equal(event?.payload.to_country, "US");

    // The query names the customer, and is signed: a callback replayed with another is refused.
    const forged = await post({ ...delivered, query: "account=acct_sms_2" });
    assert.equal(forged.status, 401);
    assert.equal(((await forged.json()) as { error: { code: string } }).error.code, "signature_mismatch");
    const unsigned = await webhook("twilio-sms", delivered.body, {
      "content-type": "application/x-www-form-urlencoded",
    });
    assert.equal(unsigned.status, 401);
  });
});

describe("Slack: the Events API and a slash command", () => {
  const file = "examples/slack-app.yaml";
  const secret = "slack-signing-secret-e2e-0001";

  test("url_verification is answered with its challenge, only when signed; mentions and commands are billed once", async () => {
    const { rt, webhook, billed, total } = await start(file, { SLACK_SIGNING_SECRET: secret });
    const auth = schemeOf(file, "slack");
    const signed = (body: string, type = "application/json") =>
      webhook("slack", body, { "content-type": type, ...signWebhook(auth, secret, body) });

    const verification = JSON.stringify({
      token: "Jhj5dZrVaK7ZwHHjRyZWjbDl",
      challenge: "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
      type: "url_verification",
    });
    const answer = await signed(verification);
    assert.equal(answer.status, 200);
    assert.deepEqual(await answer.json(), { challenge: "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" });
    assert.equal((await webhook("slack", verification, {})).status, 401, "an unsigned one is refused");
    // Slack's SSL check of a slash command's URL comes unsigned: answered, never queued. An
    // event riding along with it is not a check.
    const form = { "content-type": "application/x-www-form-urlencoded" };
    assert.equal((await webhook("slack", "ssl_check=1&token=gIkuvaNzQIHg97ATvDxqgjtO", form)).status, 200);
    const smuggled = `ssl_check=1&command=%2Fsummarize&team_id=T0001WORKSPACE&trigger_id=9.9.smuggled`;
    assert.equal((await webhook("slack", smuggled, form)).status, 401);
    const noChallenge = await signed(JSON.stringify({ type: "url_verification" }));
    assert.equal(noChallenge.status, 400);
    assert.equal(((await noChallenge.json()) as { error: { code: string } }).error.code, "invalid_handshake");

    const mention = JSON.stringify({
      token: "XXYYZZ",
      team_id: "T0001WORKSPACE",
      api_app_id: "A0001APP",
      event: {
        type: "app_mention",
        user: "U0001",
        text: "<@U0BOT> summarize",
        channel: "C0001",
        ts: "1795000000.000100",
      },
      type: "event_callback",
      event_id: "Ev0001MENTION",
      event_time: Math.floor(Date.now() / 1000) - 5,
    });
    assert.equal((await signed(mention)).status, 202);
    // Slack's retry of an event it got no 2xx for: new headers, the same event.
    assert.equal((await signed(mention)).status, 202);
    const command = new URLSearchParams({
      token: "gIkuvaNzQIHg97ATvDxqgjtO",
      team_id: "T0001WORKSPACE",
      channel_id: "C0001",
      user_id: "U0001",
      command: "/summarize",
      text: "last week",
      trigger_id: "13345224609.738474920.8088930838d88f008e0",
    }).toString();
    assert.equal((await signed(command, "application/x-www-form-urlencoded")).status, 202);
    await billed("cus_SlackTeam0001", "bot_mentions", 1);
    await billed("cus_SlackTeam0001", "summaries", 1);
    await settle();
    assert.equal(total("cus_SlackTeam0001", "bot_mentions"), 1);
    assert.equal(rt.emulator?.ledger.events.length, 2, "the handshakes and the SSL check were never queued");
    const billedMention = rt.emulator?.ledger.events.find((e) => e.event_name === "bot_mentions");
    assert.equal(billedMention?.payload.channel, "C0001");
  });
});

describe("Zoom: meeting minutes", () => {
  const file = "examples/zoom-meetings.yaml";

  test("endpoint.url_validation is answered with the HMAC of the token that signed it; an ended meeting is billed in minutes", async () => {
    // Two Secret Tokens, as during a rotation: Zoom signs with the new one.
    const config = parseYaml(readFileSync(file, "utf8"));
    config.sources.zoom.auth.secrets = [{ env: "ZOOM_OLD" }, { env: "ZOOM_NEW" }];
    const rotated = join(mkdtempSync(join(tmpdir(), "mh-zoom-")), "zoom.yaml");
    writeFileSync(rotated, toYaml(config));
    const { rt, webhook, billed, total } = await start(rotated, {
      ZOOM_OLD: "zoom-old-token-0001",
      ZOOM_NEW: "zoom-new-token-0002",
    });
    const auth = schemeOf(file, "zoom");
    const signed = (body: string, token = "zoom-new-token-0002") =>
      webhook("zoom", body, signWebhook(auth, token, body));

    const validation = JSON.stringify({
      payload: { plainToken: "qgg8vlvZRS6UYooatFL8Aw" },
      event_ts: Date.now(),
      event: "endpoint.url_validation",
    });
    const answer = await signed(validation);
    assert.equal(answer.status, 200);
    assert.deepEqual(await answer.json(), {
      plainToken: "qgg8vlvZRS6UYooatFL8Aw",
      encryptedToken: createHmac("sha256", "zoom-new-token-0002").update("qgg8vlvZRS6UYooatFL8Aw").digest("hex"),
    });
    const byOld = (await (await signed(validation, "zoom-old-token-0001")).json()) as { encryptedToken: string };
    assert.equal(
      byOld.encryptedToken,
      createHmac("sha256", "zoom-old-token-0001").update("qgg8vlvZRS6UYooatFL8Aw").digest("hex"),
    );
    // Unsigned, it would make meterhook sign any text it was sent.
    const forged = await webhook("zoom", validation, {});
    assert.equal(forged.status, 401);
    assert.ok(!(await forged.text()).includes("encryptedToken"));

    const ended = JSON.stringify({
      event: "meeting.ended",
      event_ts: Date.now(),
      payload: {
        account_id: "ZoomAcct0001",
        object: {
          id: "85012345678",
          uuid: "4444AAAiAAAAAiAiAiiAii==",
          host_id: "x1yCzABCDEfg23HiJKl4mN",
          topic: "Weekly sync",
          type: 2,
          start_time: new Date(Date.now() - 45 * 60_000 - 60_000).toISOString().replace(/\.\d+Z$/, "Z"),
          end_time: new Date(Date.now() - 60_000).toISOString().replace(/\.\d+Z$/, "Z"),
          duration: 30,
        },
      },
    });
    assert.equal((await signed(ended)).status, 202);
    assert.equal((await signed(ended)).status, 202, "Zoom's retry");
    await billed("cus_ZoomAccount0001", "meeting_minutes", 45);
    await settle();
    assert.equal(total("cus_ZoomAccount0001", "meeting_minutes"), 45);
    assert.equal(rt.emulator?.ledger.events.length, 1);
  });
});

describe("Meta: WhatsApp message statuses", () => {
  const file = "examples/whatsapp-messages.yaml";
  const secret = "meta-app-secret-e2e-0001";
  const verifyToken = "meta-verify-token-e2e-0001";

  test("the GET subscription check is answered with its challenge for the Verify Token only; delivered billable messages are billed once", async () => {
    const { rt, webhook, billed, total } = await start(file, {
      META_APP_SECRET: secret,
      META_VERIFY_TOKEN: verifyToken,
    });
    const check = (query: string) => fetch(`${rt.gatewayUrl}/v1/webhooks/whatsapp?${query}`);
    const ok = await check(`hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=${verifyToken}`);
    assert.equal(ok.status, 200);
    assert.match(ok.headers.get("content-type") ?? "", /^text\/plain/);
    assert.equal(await ok.text(), "1158201444");
    const wrong = await check("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=guess");
    assert.equal(wrong.status, 403);
    assert.equal(((await wrong.json()) as { error: { code: string } }).error.code, "verify_token_mismatch");
    const noMode = await check(`hub.challenge=1158201444&hub.verify_token=${verifyToken}`);
    assert.equal(noMode.status, 400);
    const markup = await check(`hub.mode=subscribe&hub.challenge=%3Cscript%3E&hub.verify_token=${verifyToken}`);
    assert.equal(markup.status, 400, "only a plain token is echoed");

    const at = Math.floor(Date.now() / 1000) - 30;
    const status = (id: string, state: string, tenant: string, billable = true) => ({
      id,
      status: state,
      timestamp: String(at),
      recipient_id: "16505551234",
      biz_opaque_callback_data: tenant,
      pricing: { billable, pricing_model: "PMP", category: "utility" },
    });
    const notification = JSON.stringify({
      object: "whatsapp_business_account",
      entry: [
        {
          id: "102290129340398",
          changes: [
            {
              field: "messages",
              value: {
                messaging_product: "whatsapp",
                metadata: { display_phone_number: "15550783881", phone_number_id: "106540352242922" },
                statuses: [
                  status("wamid.AAA1", "sent", "tenant_wa_1"),
                  status("wamid.AAA1", "delivered", "tenant_wa_1"),
                  status("wamid.AAA2", "delivered", "tenant_wa_1"),
                  status("wamid.AAA3", "delivered", "tenant_wa_1", false),
                ],
              },
            },
          ],
        },
      ],
    });
    const sign = (body: string) => signWebhook(schemeOf(file, "whatsapp"), secret, body);
    assert.equal((await webhook("whatsapp", notification, sign(notification))).status, 202);
    assert.equal((await webhook("whatsapp", notification, sign(notification))).status, 202, "Meta's retry");
    await billed("cus_WhatsAppTenant01", "whatsapp_messages", 2);
    await settle();
    assert.equal(total("cus_WhatsAppTenant01", "whatsapp_messages"), 2);
    assert.equal((await webhook("whatsapp", notification, {})).status, 401);
  });
});

describe("ElevenLabs post-call webhooks: Stripe's format under another header", () => {
  const file = "examples/elevenlabs-calls.yaml";
  const secret = "elevenlabs-webhook-secret-e2e-0001";

  test("a finished call is billed in minutes, once; a signature under Stripe's key or header is refused", async () => {
    const { webhook, billed, total, rt } = await start(file, { ELEVENLABS_WEBHOOK_SECRET: secret });
    const started = Math.floor(Date.now() / 1000) - 300;
    const body = JSON.stringify({
      type: "post_call_transcription",
      event_timestamp: started + 200,
      data: {
        agent_id: "agent_tenant_01",
        conversation_id: "conv_0001",
        status: "done",
        transcript: [{ role: "agent", message: "Hello", time_in_call_secs: 0 }],
        metadata: { start_time_unix_secs: started, call_duration_secs: 150, termination_reason: "client_disconnected" },
      },
    });
    // As ElevenLabs signs it, built here with node:crypto rather than signWebhook.
    const t = String(Math.floor(Date.now() / 1000));
    const digest = createHmac("sha256", secret).update(`${t}.${body}`).digest("hex");
    assert.equal((await webhook("elevenlabs", body, { "elevenlabs-signature": `t=${t},v0=${digest}` })).status, 202);
    assert.equal(
      (await webhook("elevenlabs", body, signWebhook(schemeOf(file, "elevenlabs"), secret, body))).status,
      202,
    );
    await billed("cus_VoiceTenant0001", "agent_call_minutes", 2.5);
    await settle();
    assert.equal(total("cus_VoiceTenant0001", "agent_call_minutes"), 2.5);
    assert.equal(rt.emulator?.ledger.events[0]?.payload.termination, "client_disconnected");

    const v1 = await webhook("elevenlabs", body, { "elevenlabs-signature": `t=${t},v1=${digest}` });
    assert.equal(v1.status, 401);
    assert.equal(((await v1.json()) as { error: { code: string } }).error.code, "signature_malformed");
    const stripeHeader = await webhook("elevenlabs", body, { "stripe-signature": `t=${t},v0=${digest}` });
    assert.equal(((await stripeHeader.json()) as { error: { code: string } }).error.code, "signature_missing");
  });
});

describe("HubSpot: a signed array of events from many portals", () => {
  const file = "examples/hubspot-contacts.yaml";
  const secret = "hubspot-client-secret-e2e-0001";

  test("each created contact is billed once to its portal; a retried request bills nothing more; the query is signed", async () => {
    const { rt, billed, total } = await start(file, { HUBSPOT_CLIENT_SECRET: secret });
    const at = Date.now() - 60_000;
    const event = (eventId: number, portalId: number, subscriptionType: string) => ({
      eventId,
      subscriptionId: 2_000_001,
      portalId,
      appId: 54_321,
      occurredAt: at,
      subscriptionType,
      attemptNumber: 0,
      objectId: 9_000 + eventId,
      changeSource: "CRM",
      changeFlag: "NEW",
    });
    const body = JSON.stringify([
      event(1, 62515, "contact.creation"),
      event(2, 62516, "contact.creation"),
      event(3, 62515, "contact.propertyChange"),
    ]);
    // Built with node:crypto as HubSpot documents v3, for the Target URL in the config, with
    // the query as sent and its %40 decoded; not with signWebhook.
    const ms = String(Date.now());
    const query = "app=billing%40example";
    const signed = `POSThttps://api.example.com/v1/webhooks/hubspot?app=billing@example${body}${ms}`;
    const headers = {
      "content-type": "application/json",
      "x-hubspot-signature-v3": createHmac("sha256", secret).update(signed).digest("base64"),
      "x-hubspot-request-timestamp": ms,
    };
    const post = (q: string) => fetch(`${rt.gatewayUrl}/v1/webhooks/hubspot?${q}`, { method: "POST", headers, body });
    assert.equal((await post(query)).status, 202);
    assert.equal((await post(query)).status, 202, "HubSpot's retry");
    await billed("cus_HubSpotPortal01", "contacts_created", 1);
    await billed("cus_HubSpotPortal02", "contacts_created", 1);
    await settle();
    assert.equal(total("cus_HubSpotPortal01", "contacts_created"), 1);
    assert.equal(rt.emulator?.ledger.events.length, 2);
    assert.equal(rt.emulator?.ledger.events[0]?.timestamp, Math.floor(at / 1000));

    const otherQuery = await post("app=other%40example");
    assert.equal(otherQuery.status, 401);
    assert.equal(((await otherQuery.json()) as { error: { code: string } }).error.code, "signature_mismatch");
  });
});

describe("Zendesk: a trigger's webhook, signed over its ISO timestamp", () => {
  const file = "examples/zendesk-tickets.yaml";
  const secret = "zendesk-signing-secret-e2e-0001";

  test("a solved ticket is billed once to its organization; a stale or forged request is refused", async () => {
    const { webhook, billed, total, rt } = await start(file, { ZENDESK_WEBHOOK_SECRET: secret });
    const body = JSON.stringify({
      event: "ticket_solved",
      ticket_id: "35436",
      organization: "org_acme",
      channel: "Web form",
    });
    // Built with node:crypto as Zendesk documents it: the timestamp, then the body; base64.
    const sign = (iso: string, key = secret) => ({
      "x-zendesk-webhook-signature": createHmac("sha256", key)
        .update(iso + body)
        .digest("base64"),
      "x-zendesk-webhook-signature-timestamp": iso,
    });
    const now = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
    assert.equal((await webhook("zendesk", body, sign(now))).status, 202);
    assert.equal((await webhook("zendesk", body, sign(now))).status, 202, "Zendesk's retry");
    await billed("cus_ZendeskClient01", "tickets_solved", 1);
    await settle();
    assert.equal(total("cus_ZendeskClient01", "tickets_solved"), 1);
    assert.equal(rt.emulator?.ledger.events[0]?.payload.channel, "Web form");

    const stale = new Date(Date.now() - 600_000).toISOString();
    const refused = await Promise.all([
      webhook("zendesk", body, sign(stale)),
      webhook("zendesk", body, sign(now, "not-the-secret")),
      webhook("zendesk", body, {}),
    ]);
    const codes = await Promise.all(
      refused.map(async (r) => [r.status, ((await r.json()) as { error: { code: string } }).error.code]),
    );
    assert.deepEqual(codes, [
      [401, "signature_expired"],
      [401, "signature_mismatch"],
      [401, "signature_missing"],
    ]);
  });
});

describe("a source authenticated by a token header", () => {
  test("the token admits the webhook and is kept out of the queue and the DLQ", async () => {
    const token = "gitlab-token-e2e-0001";
    const config = {
      version: 1,
      sources: {
        gitlab: {
          type: "webhook",
          auth: { scheme: "token", header: "X-Gitlab-Token", secrets: [{ env: "GITLAB_WEBHOOK_TOKEN" }] },
          rules: [
            {
              name: "job-finished",
              when: "body.object_kind == 'build' && body.build_status == 'success'",
              id: "to_string(body.build_id)",
              customer: "body.customer",
              emit: [{ event_name: "ci_minutes", value: "divide(body.build_duration, `60`)" }],
            },
          ],
        },
      },
    };
    const file = join(mkdtempSync(join(tmpdir(), "mh-token-")), "gitlab.yaml");
    writeFileSync(file, toYaml(config));
    const { webhook, billed, rt, sqs } = await start(file, { GITLAB_WEBHOOK_TOKEN: token });
    const job = { object_kind: "build", build_status: "success", build_id: 4711, customer: "cus_Gitlab0001" };
    const send = (body: object, headers: Record<string, string>) =>
      webhook("gitlab", JSON.stringify(body), { "x-gitlab-event": "Job Hook", ...headers });

    const refused = await send({ ...job, build_duration: 90 }, { "x-gitlab-token": "not-the-token" });
    assert.equal(refused.status, 401);
    assert.equal(((await refused.json()) as { error: { code: string } }).error.code, "signature_mismatch");
    assert.equal((await send({ ...job, build_duration: 90 }, { "x-gitlab-token": token })).status, 202);
    await billed("cus_Gitlab0001", "ci_minutes", 1.5);

    // A job without its duration is dead-lettered with its trigger: the letter has the
    // sender's headers but not the token.
    assert.equal((await send({ ...job, build_id: 4712 }, { "x-gitlab-token": token })).status, 202);
    const [letter] = await waitFor(async () => {
      const got = await drainDeadLetters(sqs, rt.deadLetterQueueUrl);
      return got.length > 0 ? got : undefined;
    }, "a dead letter");
    assert.equal(letter?.error.code, "mapping_failed");
    const headers = (letter?.event as { headers?: Record<string, string> } | undefined)?.headers ?? {};
    assert.equal(headers["x-gitlab-event"], "Job Hook");
    assert.equal(headers["x-gitlab-token"], undefined);
    assert.ok(!JSON.stringify(letter).includes(token));
  });
});

describe("EventBridge domain event", () => {
  test("an OrderPlaced event bills its item count to the customer found by Stripe search; a bad one is dead-lettered and replayable", async () => {
    const { rt, sqs, billed } = await start(
      "examples/eventbridge-orders.yaml",
      {},
      {
        customers: [{ id: "cus_acme42", metadata: { account_id: "acct_42" } }],
      },
    );
    const handler = createEventBridgeHandler(async () =>
      createEventBridgeIngest(createSqsSender(sqs, rt.ingestQueueUrl)),
    );
    const event = loadTrigger("eventbridge-order-placed.json");
    await handler(event as never);
    await handler(event as never); // EventBridge delivers at least once
    await billed("cus_acme42", "items_ordered", 5);

    const broken = { ...event, id: "evt-broken-1", detail: { accountId: "acct_42", channel: "web" } };
    await handler(broken as never);
    const [letter] = await waitFor(async () => {
      const got = await drainDeadLetters(sqs, rt.deadLetterQueueUrl);
      return got.length > 0 ? got : undefined;
    }, "a dead letter");
    assert.equal(letter?.error.code, "mapping_failed");
    assert.match(letter?.error.message ?? "", /sum\(body\.detail\.items\[\]\.quantity\)/);
  });

  test("an event a rule sends to the ingest queue itself (an SQS target) is mapped by the same source, billed once with the function's copy", async () => {
    const { rt, sqs, billed, total } = await start(
      "examples/eventbridge-orders.yaml",
      {},
      { customers: [{ id: "cus_acme43", metadata: { account_id: "acct_43" } }] },
    );
    const event = loadTrigger("eventbridge-order-placed.json") as { id: string; detail: Record<string, unknown> };
    const order = { ...event, id: "evt-sqs-target-1", detail: { ...event.detail, accountId: "acct_43" } };
    // An SQS target delivers the event itself as the message body, with no attribute.
    await sqs.send(new SendMessageCommand({ QueueUrl: rt.ingestQueueUrl, MessageBody: JSON.stringify(order) }));
    const handler = createEventBridgeHandler(async () =>
      createEventBridgeIngest(createSqsSender(sqs, rt.ingestQueueUrl)),
    );
    await handler(order as never);
    await billed("cus_acme43", "items_ordered", 5);

    const other = { ...order, id: "evt-sqs-target-2", source: "com.acme.billing" };
    await sqs.send(new SendMessageCommand({ QueueUrl: rt.ingestQueueUrl, MessageBody: JSON.stringify(other) }));
    const [letter] = await waitFor(async () => {
      const got = await drainDeadLetters(sqs, rt.deadLetterQueueUrl);
      return got.length > 0 ? got : undefined;
    }, "a dead letter");
    assert.equal(letter?.error.code, "unknown_source");
    assert.match(letter?.error.message ?? "", /source "com\.acme\.billing", detail-type "OrderPlaced"/);
    assert.equal(total("cus_acme43", "items_ordered"), 5, "the two copies are one meter event");
  });
});

describe("an app's own SQS messages", () => {
  test("a storage snapshot on the ingest queue is billed in GB-days through the default source", async () => {
    const { rt, sqs, billed } = await start("examples/sqs-app-messages.yaml");
    const snapshot = loadTrigger("sqs-storage-snapshot.json");
    await sqs.send(new SendMessageCommand({ QueueUrl: rt.ingestQueueUrl, MessageBody: JSON.stringify(snapshot) }));
    await sqs.send(
      new SendMessageCommand({
        QueueUrl: rt.ingestQueueUrl,
        MessageBody: JSON.stringify({ ...snapshot, tenant: "tenant-42", day: "other-day", bytes: 1_000_000_000 }),
        MessageAttributes: { meterhook_source: { DataType: "String", StringValue: "storage" } },
      }),
    );
    await billed("cus_Tenant420001", "storage_gb_days", 735.0032);
  });

  test("an account id that is a number finds its customer in the table", async () => {
    const config = parseYaml(readFileSync("examples/sqs-app-messages.yaml", "utf8"));
    config.sources.storage.customer.table = { 42: "cus_Tenant420001" };
    config.sources.storage.rules[0].id = "join(':', [to_string(body.tenant), body.day])";
    const file = join(mkdtempSync(join(tmpdir(), "mh-sqs-")), "sqs.yaml");
    writeFileSync(file, toYaml(config));
    const { rt, sqs, billed } = await start(file);
    const snapshot = { ...(loadTrigger("sqs-storage-snapshot.json") as object), tenant: 42 };
    await sqs.send(new SendMessageCommand({ QueueUrl: rt.ingestQueueUrl, MessageBody: JSON.stringify(snapshot) }));
    await billed("cus_Tenant420001", "storage_gb_days", 734.0032);
    assert.deepEqual(await drainDeadLetters(sqs, rt.deadLetterQueueUrl), []);
  });

  test("messages an SNS topic delivers in its notification envelope are billed as if sent to the queue", async () => {
    const { rt, sqs, billed, total } = await start("examples/sqs-app-messages.yaml");
    const sns = new SNSClient({
      endpoint: rt.sqsEndpoint,
      region: "us-east-1",
      credentials: { accessKeyId: "t", secretAccessKey: "t" },
    });
    after(() => sns.destroy());
    const { TopicArn } = await sns.send(new CreateTopicCommand({ Name: "usage" }));
    const queue = await sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: rt.ingestQueueUrl, AttributeNames: ["QueueArn"] }),
    );
    // No raw message delivery, SNS's default: each message arrives wrapped in a notification.
    await sns.send(new SubscribeCommand({ TopicArn, Protocol: "sqs", Endpoint: queue.Attributes?.QueueArn }));
    const snapshot = loadTrigger("sqs-storage-snapshot.json") as Record<string, unknown>;
    await sns.send(new PublishCommand({ TopicArn, Message: JSON.stringify(snapshot) }));
    await sns.send(
      new PublishCommand({
        TopicArn,
        Message: JSON.stringify({ ...snapshot, day: "sns-day", bytes: 1_000_000_000 }),
        MessageAttributes: { meterhook_source: { DataType: "String", StringValue: "storage" } },
      }),
    );
    const event = { id: "sns_evt_1", event_name: "api_requests", customer: "cus_Sns0001", value: 4 };
    await sns.send(new PublishCommand({ TopicArn, Message: JSON.stringify(event) }));
    await billed("cus_Tenant420001", "storage_gb_days", 735.0032);
    await billed("cus_Sns0001", "api_requests", 4);
    await settle();
    assert.equal(total("cus_Tenant420001", "storage_gb_days"), 735.0032);
    assert.deepEqual(await drainDeadLetters(sqs, rt.deadLetterQueueUrl), []);
  });
});
