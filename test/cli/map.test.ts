import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { meterEventIdentifier } from "../../lib/meter-event.js";
import type { Preview, RefusedPreview } from "../../lib/preview.js";
import { meterhookCli } from "../helpers/cli.js";

const dir = mkdtempSync(join(tmpdir(), "mh-map-"));
/** A sample trigger in a file, as a user saves one from their sender's logs. */
function sample(name: string, content: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, `${typeof content === "string" ? content : JSON.stringify(content, null, 2)}\n`);
  return file;
}
async function map(args: string[]): Promise<{ code: number; preview: Preview | RefusedPreview }> {
  const { code, stdout } = await meterhookCli(["map", ...args], {});
  return { code, preview: JSON.parse(stdout) as Preview | RefusedPreview };
}
const now = () => Math.floor(Date.now() / 1000);

describe("meterhook map", () => {
  test("a Slack mention becomes the meter event the consumer would send, its customer from the table", async () => {
    const at = now() - 60;
    const mention = sample("mention.json", {
      team_id: "T0001WORKSPACE",
      event: { type: "app_mention", channel: "C0001" },
      type: "event_callback",
      event_id: "Ev0001MENTION",
      event_time: at,
    });
    const { code, preview } = await map(["examples/slack-app.yaml", "slack", mention]);
    assert.equal(code, 0);
    assert.deepEqual(preview, {
      outcome: "events",
      events: [
        {
          meterEvent: {
            event_name: "bot_mentions",
            identifier: meterEventIdentifier("Ev0001MENTION", "bot_mentions", "slack/bot-mentioned"),
            timestamp: at,
            payload: { channel: "C0001", stripe_customer_id: "cus_SlackTeam0001", value: "1" },
          },
        },
      ],
    });
  });

  test("a form with the URL's query (Twilio), read as the webhook handler queues it", async () => {
    const callback = sample("callback.txt", "MessageSid=SM0001&MessageStatus=delivered&AccountSid=AC0001&ToCountry=US");
    const args = [
      "examples/twilio-sms.yaml",
      "twilio-sms",
      callback,
      "--content-type",
      "application/x-www-form-urlencoded",
    ];
    const { code, preview } = await map([...args, "--query", "account=acct_sms_1"]);
    assert.equal(code, 0);
    const [event] = preview.outcome === "events" ? preview.events : [];
    assert.ok(event && "meterEvent" in event, JSON.stringify(preview));
    assert.equal(event.meterEvent.payload.stripe_customer_id, "cus_SmsTenant0001");
    assert.equal(event.meterEvent.payload.to_country, "US");

    const other = await map([...args, "--query", "account=acct_unknown"]);
    assert.equal(other.code, 1, "an event that would be dead-lettered");
    const [refused] = other.preview.outcome === "events" ? other.preview.events : [];
    assert.ok(refused && "refused" in refused);
    assert.equal(refused.refused.code, "customer_not_found");
  });

  test("a trigger no rule matches is ignored; a mapping failure is the dead letter's code", async () => {
    const sent = sample("sent.txt", "MessageSid=SM0002&MessageStatus=sent");
    const ignored = await map([
      "examples/twilio-sms.yaml",
      "twilio-sms",
      sent,
      "--content-type",
      "application/x-www-form-urlencoded",
    ]);
    assert.equal(ignored.code, 0);
    assert.equal(ignored.preview.outcome, "ignored");

    const noId = sample("no-id.json", {
      type: "event_callback",
      team_id: "T0001WORKSPACE",
      event: { type: "app_mention" },
    });
    const failed = await map(["examples/slack-app.yaml", "slack", noId]);
    assert.equal(failed.code, 1);
    assert.equal(failed.preview.outcome, "dead-letter");
    assert.ok(failed.preview.outcome === "dead-letter" && failed.preview.code === "mapping_failed");
  });

  test("an app's message is read with its message attributes as headers (--header)", async () => {
    const config = join(dir, "attrs.json");
    writeFileSync(
      config,
      JSON.stringify({
        version: 1,
        sources: {
          jobs: {
            type: "sqs",
            rules: [
              {
                name: "done",
                when: "headers.Kind == 'done'",
                id: "body.job",
                customer: "body.customer",
                emit: [{ event_name: "jobs_done" }],
              },
            ],
          },
        },
      }),
    );
    // Saved by an editor that writes a byte order mark first, as the consumer reads it.
    const job = sample("job.json", `\ufeff${JSON.stringify({ job: "job-1", customer: "cus_Jobs0001" })}`);
    const done = await map([config, "jobs", job, "--header", "Kind: done"]);
    assert.equal(done.code, 0);
    const [event] = done.preview.outcome === "events" ? done.preview.events : [];
    assert.ok(event && "meterEvent" in event);
    assert.equal(event.meterEvent.identifier, meterEventIdentifier("job-1", "jobs_done", "jobs/done"));
    assert.equal((await map([config, "jobs", job, "--header", "Kind: started"])).preview.outcome, "ignored");
  });

  test("a source with an http lookup maps without the lookup's header secret set: nothing is sent", async () => {
    const call = sample("llm-call.json", {
      object: "llm.completion",
      request_id: "req_0001",
      workspace_id: "ws_42",
      created: now() - 60,
      model: "gpt-x",
      usage: { input_tokens: 1200, output_tokens: 300 },
    });
    const { code, stdout } = await meterhookCli(["map", "examples/llm-usage.yaml", "llm", call], {
      BILLING_SERVICE_TOKEN: undefined,
    });
    assert.equal(code, 0, stdout);
    const preview = JSON.parse(stdout) as Preview;
    const lookups =
      preview.outcome === "events" ? preview.events.map((e) => "customerLookup" in e && e.customerLookup) : [];
    assert.ok(lookups.length > 0 && lookups.every((l) => l === "http"), stdout);
  });

  test("a customer read over the network is left to run time; an unknown source is named", async () => {
    const { code, preview } = await map([
      "examples/eventbridge-orders.yaml",
      "orders",
      "test/fixtures/triggers/eventbridge-order-placed.json",
    ]);
    assert.equal(code, 0);
    const [event] = preview.outcome === "events" ? preview.events : [];
    assert.ok(event && "customerLookup" in event);
    assert.equal(event.customerLookup, "stripe-search");
    assert.equal(event.usage.customer, "acct_42");

    const unknown = await map(["examples/slack-app.yaml", "slak", sample("x.json", {})]);
    assert.equal(unknown.code, 1);
    assert.deepEqual(unknown.preview, {
      outcome: "dead-letter",
      code: "unknown_source",
      message: 'no source "slak" (slack)',
    });
  });

  test("a webhook the HTTP side would refuse, too large or compressed, is shown refused with its answer", async () => {
    const mention = { type: "event_callback", team_id: "T0001WORKSPACE", event_id: "Ev1", event: {} };
    const over = await meterhookCli(
      ["map", "examples/slack-app.yaml", "slack", sample("big.json", { ...mention, pad: "x".repeat(2048) })],
      { METERHOOK_MAX_BODY_BYTES: "1024" },
    );
    assert.equal(over.code, 1);
    assert.deepEqual(JSON.parse(over.stdout), {
      outcome: "refused",
      status: 413,
      code: "payload_too_large",
      message: "body is larger than 1024 bytes",
    });
    // Within the limit, but each quote doubles once escaped into its queue message.
    const quoted = sample("quoted.json", { ...mention, pad: '"'.repeat(600_000) });
    const escaped = await map(["examples/slack-app.yaml", "slack", quoted]);
    assert.equal(escaped.code, 1);
    assert.equal(escaped.preview.outcome === "refused" && escaped.preview.code, "payload_too_large");
    const gzip = await map([
      "examples/slack-app.yaml",
      "slack",
      sample("m.json", mention),
      "--header",
      "Content-Encoding: gzip",
    ]);
    assert.equal(gzip.code, 1);
    assert.equal(gzip.preview.outcome === "refused" && gzip.preview.status, 415);
  });
});
