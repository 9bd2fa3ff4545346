import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { INGEST_QUEUE, localQueueUrl, localSqsEndpoint } from "../../local/defaults.js";
import { type LocalRuntime, startLocalRuntime } from "../../local/runtime.js";
import { meterhookCli } from "../helpers/cli.js";
import { loadTrigger } from "../helpers/fixtures.js";
import { waitFor } from "../helpers/wait.js";

const dir = mkdtempSync(join(tmpdir(), "mh-send-"));
const sample = (name: string, text: string) => {
  const file = join(dir, name);
  writeFileSync(file, `${text}\n`);
  return file;
};

describe("meterhook send", () => {
  const secrets = { GITHUB_WEBHOOK_SECRET: "gh-send-secret-0001", TWILIO_AUTH_TOKEN: "twilio-send-token-0001" };
  const config = join(dir, "senders.yaml");
  let rt: LocalRuntime;
  const total = (customer: string) =>
    rt.emulator?.ledger.summaries().find((s) => s.customer === customer)?.aggregated_value;

  before(async () => {
    // Two example sources in one config: GitHub's (a header in the rule) and Twilio's (a form,
    // signed with the public URL and the query).
    const sources = ["examples/github-ci-minutes.yaml", "examples/twilio-sms.yaml"]
      .map((f) => readFileSync(f, "utf8").split("\nsources:\n")[1])
      .join("");
    writeFileSync(config, `version: 1\nsources:\n${sources}`);
    rt = await startLocalRuntime({
      env: { METERHOOK_LOG_LEVEL: "error", METERHOOK_CONFIG: config, ...secrets },
      visibilityTimeoutSeconds: 1,
    });
  });
  after(() => rt?.stop());

  test("signs a webhook as GitHub does, with the secret the config names, and the gateway bills it", async () => {
    const { code, stdout } = await meterhookCli(
      [
        "send",
        config,
        "github",
        // Its times moved to a minute ago: Stripe takes events of the last 35 days only.
        sample("job.json", JSON.stringify(loadTrigger("github-workflow-job-completed.json"))),
        "--url",
        rt.gatewayUrl,
        "--header",
        "X-GitHub-Event: workflow_job",
      ],
      secrets,
    );
    assert.equal(code, 0, stdout);
    assert.match(stdout, /^202 \{"received":true/);
    await waitFor(() => total("cus_OctoOrg0001") === 7.5 || undefined, "the job billed");
  });

  test("a form with a query, signed over the URL Twilio would call; another secret is refused, exit 1", async () => {
    const form = sample(
      "delivered.txt",
      "MessageSid=SM00000000000000000000000000000009&MessageStatus=delivered&To=%2B15558675310&ToCountry=US",
    );
    const args = [
      "send",
      config,
      "twilio-sms",
      form,
      "--url",
      `${rt.gatewayUrl}/`,
      "--query",
      "account=acct_sms_1",
      "--content-type",
      "application/x-www-form-urlencoded",
    ];
    const sent = await meterhookCli(args, secrets);
    assert.equal(sent.code, 0, sent.stdout);
    await waitFor(() => total("cus_SmsTenant0001") === 1 || undefined, "the message billed");

    const forged = await meterhookCli(args, { ...secrets, TWILIO_AUTH_TOKEN: "not-the-token" });
    assert.equal(forged.code, 1);
    assert.match(forged.stdout, /^401 .*signature_mismatch/);
  });

  test("an unknown source, a secret not set, or nothing listening at the URL fails with exit 1", async () => {
    const body = "test/fixtures/triggers/github-workflow-job-completed.json";
    const unknown = await meterhookCli(["send", config, "gitlab", body, "--url", rt.gatewayUrl], secrets);
    assert.equal(unknown.code, 1);
    const unset = await meterhookCli(["send", config, "github", body, "--url", rt.gatewayUrl], {
      GITHUB_WEBHOOK_SECRET: "",
    });
    assert.equal(unset.code, 1);
    assert.equal(unset.stdout, "");
    // Nothing listening there: an error, not an answer.
    const closed = await meterhookCli(["send", config, "github", body, "--url", "http://127.0.0.1:9"], secrets);
    assert.deepEqual([closed.code, closed.stdout], [1, ""]);
  });
});

test("an sqs source's trigger is put on the ingest queue, named for its source, and billed (the DynamoDB example)", async () => {
  const rt = await startLocalRuntime({
    env: { METERHOOK_LOG_LEVEL: "error", METERHOOK_CONFIG: "examples/dynamodb-accounts.yaml" },
    dynamodbItems: "examples/dynamodb-accounts.items.json",
    visibilityTimeoutSeconds: 1,
  });
  try {
    const job = sample(
      "job-finished.json",
      JSON.stringify({ type: "job.finished", job_id: "job_77", account_id: 1001, seconds: 90 }),
    );
    // The queue `send` uses by default is where the local runtime's fauxqs puts it, on its port.
    const port = Number(new URL(rt.sqsEndpoint).port);
    assert.deepEqual([rt.sqsEndpoint, rt.ingestQueueUrl], [localSqsEndpoint(port), localQueueUrl(INGEST_QUEUE, port)]);
    const queue = { METERHOOK_INGEST_QUEUE_URL: rt.ingestQueueUrl, SQS_ENDPOINT: rt.sqsEndpoint };
    const { code, stdout } = await meterhookCli(["send", "examples/dynamodb-accounts.yaml", "jobs", job], queue);
    assert.equal(code, 0, stdout);
    assert.match(stdout, /^queued [\w-]+ on http:\/\/sqs\.us-east-1\.localhost:\d+\/000000000000\/meterhook-ingest\n$/);
    await waitFor(
      () =>
        rt.emulator?.ledger.summaries().find((s) => s.customer === "cus_NciAYcXfLnqBoz")?.aggregated_value === 90 ||
        undefined,
      "the job billed",
    );
    // Nothing listening there: an error naming the queue, exit 1.
    const closed = await meterhookCli(["send", "examples/dynamodb-accounts.yaml", "jobs", job], {
      METERHOOK_INGEST_QUEUE_URL: rt.ingestQueueUrl,
      SQS_ENDPOINT: "http://127.0.0.1:9",
    });
    assert.deepEqual([closed.code, closed.stdout], [1, ""]);
    assert.match(
      closed.stderr,
      /cannot send to http:\/\/sqs\.us-east-1\.localhost:\d+\/000000000000\/meterhook-ingest/,
    );
  } finally {
    await rt.stop();
  }
});

test("an eventbridge source's event is put on the ingest queue as a rule's SQS target delivers it, and billed; one its match does not take is refused", async () => {
  const rt = await startLocalRuntime({
    env: { METERHOOK_LOG_LEVEL: "error", METERHOOK_CONFIG: "examples/eventbridge-orders.yaml" },
    emulator: { customers: [{ id: "cus_acme42", metadata: { account_id: "acct_42" } }] },
    visibilityTimeoutSeconds: 1,
  });
  try {
    const queue = { METERHOOK_INGEST_QUEUE_URL: rt.ingestQueueUrl, SQS_ENDPOINT: rt.sqsEndpoint };
    const event = loadTrigger("eventbridge-order-placed.json") as Record<string, unknown>;
    const order = sample("order.json", JSON.stringify(event));
    const { code, stdout } = await meterhookCli(["send", "examples/eventbridge-orders.yaml", "orders", order], queue);
    assert.equal(code, 0, stdout);
    assert.match(stdout, /^queued [\w-]+ on /);
    await waitFor(
      () =>
        rt.emulator?.ledger.summaries().find((s) => s.customer === "cus_acme42")?.aggregated_value === 5 || undefined,
      "the order billed",
    );
    // Another bus's event, and a body that is no EventBridge event: refused before any queue.
    const other = sample("other.json", JSON.stringify({ ...event, source: "com.acme.billing" }));
    const refused = await meterhookCli(["send", "examples/eventbridge-orders.yaml", "orders", other], queue);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /the event's source and detail-type are not what "orders" matches/);
    const plain = sample("plain.json", JSON.stringify({ orderId: "ord_1" }));
    const notEvent = await meterhookCli(["send", "examples/eventbridge-orders.yaml", "orders", plain], queue);
    assert.equal(notEvent.code, 1);
    assert.match(notEvent.stderr, /send an EventBridge event \(source, detail-type, detail\)/);
  } finally {
    await rt.stop();
  }
});
