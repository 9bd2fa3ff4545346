import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { promisify } from "node:util";
import { ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { INGEST_QUEUE_MEMORY_MB, lambdaYoungGenerationFlags } from "../../bench/stats.js";
import { createQueueHandler } from "../../functions/ingest-queue.js";
import { HTTP_ANSWER_WITHIN_MS } from "../../functions/stripe-reports.js";
import { emfDocuments } from "../../functions/support/observability.js";
import {
  createConsumerFromConfig,
  createErrorReportReaderFromConfig,
  createIngestApiFromConfig,
} from "../../lib/app.js";
import { LEDGER_EXPIRY, LEDGER_KEY } from "../../lib/aws-dynamodb.js";
import { CANCEL_FORMAT } from "../../lib/cancellation.js";
import { loadConfig } from "../../lib/config.js";
import type { DeadLetterBody } from "../../lib/dead-letter.js";
import { DLQ_RETENTION_SECONDS } from "../../lib/dlq-summary.js";
import { silentLogger } from "../../lib/logger.js";
import { AuthSchema } from "../../lib/mapping/config-schema.js";
import { Metric, MetricsRecorder } from "../../lib/metrics.js";
import { MAX_MESSAGE_BYTES } from "../../lib/queue.js";
import { STRIPE_SIGNATURE } from "../../lib/stripe/event-notifications.js";
import { signWebhook } from "../../lib/webhooks/sign.js";
import { BUDGET_KIB, COLD_START_BUDGET_KIB } from "../../scripts/bundle-budgets.js";
import { startTestDynamo } from "../helpers/dynamodb.js";
import { httpEvent, lambdaContext, sqsEvent, sqsRecord, usageEvent } from "../helpers/factories.js";
import { consumerEnv, type PipelineParts, startPipelineParts } from "../helpers/pipeline.js";
import { drain, queueDepth } from "../helpers/sqs.js";
import { zipEntries } from "../helpers/zip.js";

// biome-ignore lint/suspicious/noExplicitAny: CloudFormation JSON, asserted field by field
type Json = any;
let template: Json;
let resources: Record<string, Json>;
/** Each bundle's function in the template. */
const FUNCTIONS: Record<string, string> = {
  "http-api": "HttpApiLambdaFunction",
  "ingest-queue": "IngestQueueLambdaFunction",
  "dlq-replay": "DlqReplayLambdaFunction",
  "stripe-reports": "StripeReportsLambdaFunction",
  eventbridge: "EventBridgeLambdaFunction",
};
/** A function's environment as Lambda gives it: the template's strings (its Refs left out). */
const stringsOf = (vars: Record<string, Json>) =>
  Object.fromEntries(Object.entries(vars).filter(([, v]) => typeof v === "string")) as Record<string, string>;
const ofType = (type: string) => Object.entries(resources).filter(([, r]) => r.Type === type);
/** This process's environment without AWS credentials or settings: osls runs offline. */
function offlineEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith("AWS_")) delete env[k];
  return env;
}

before(async () => {
  // The real `osls package`, offline: no AWS account, no credentials. From a tree without
  // dist/, as after a fresh clone: the package step builds the bundles itself
  // (infra/build-plugin.cjs), so `osls deploy` never zips nothing; the bundle tests below run them.
  rmSync("dist", { recursive: true, force: true });
  await promisify(execFile)("npm", ["run", "package"], { env: offlineEnv(), maxBuffer: 16 * 1024 * 1024 });
  template = JSON.parse(readFileSync(".serverless/cloudformation-template-update-stack.json", "utf8"));
  resources = template.Resources;
});

/** An event the emulator accepted and then refused, in an error report ready to be read. */
function refusedAfterAccepting(parts: PipelineParts, name: string): void {
  parts.emulator.ledger.addError({
    code: "meter_event_customer_not_found",
    message: `Customer cus_${name}Gone was not found.`,
    identifier: `mh_${name}_refused`,
    event_name: "api_requests",
  });
  parts.emulator.errorReports.flush();
}

describe("packaged CloudFormation template", () => {
  test("the ingest queue redrives to the DLQ after more receives than the consumer's own attempts", () => {
    const ingest = resources.IngestQueue.Properties;
    assert.deepEqual(ingest.RedrivePolicy.deadLetterTargetArn, { "Fn::GetAtt": ["DeadLetterQueue", "Arn"] });
    const maxAttempts = Number(
      resources.IngestQueueLambdaFunction.Properties.Environment.Variables.METERHOOK_MAX_ATTEMPTS,
    );
    assert.ok(ingest.RedrivePolicy.maxReceiveCount > maxAttempts);
  });

  test("the DLQ keeps messages 14 days; both queues are encrypted", () => {
    assert.equal(resources.DeadLetterQueue.Properties.MessageRetentionPeriod, 1209600);
    for (const q of ["IngestQueue", "DeadLetterQueue"])
      assert.equal(resources[q].Properties.SqsManagedSseEnabled, true, q);
  });

  test("both queues take the largest message meterhook writes (MAX_MESSAGE_BYTES), not SQS's 256 KiB default", () => {
    for (const q of ["IngestQueue", "DeadLetterQueue"])
      assert.equal(resources[q].Properties.MaximumMessageSize, MAX_MESSAGE_BYTES, q);
  });

  test("the visibility timeout is at least six times the consumer's timeout", () => {
    assert.ok(
      resources.IngestQueue.Properties.VisibilityTimeout >= 6 * resources.IngestQueueLambdaFunction.Properties.Timeout,
    );
  });

  test("a pack's events to retry wait the ingest queue's visibility timeout, as other retries do", () => {
    assert.equal(
      Number(resources.IngestQueueLambdaFunction.Properties.Environment.Variables.METERHOOK_PACK_RETRY_DELAY_SECONDS),
      resources.IngestQueue.Properties.VisibilityTimeout,
    );
  });

  /**
   * The EMF document among `docs` that CloudWatch would file under `metric` (an alarm's Namespace,
   * MetricName and Dimensions): CloudWatch matches a metric by its whole dimension set, names and
   * values alike.
   */
  const emittedFor = (docs: Array<Record<string, Json>>, metric: Json) => {
    const wanted = Object.fromEntries(metric.Dimensions.map((d: Json) => [d.Name, d.Value]));
    return docs.find((d) => {
      const set = (d._aws as Json).CloudWatchMetrics[0];
      return (
        set.Namespace === metric.Namespace &&
        metric.MetricName in d &&
        JSON.stringify([...set.Dimensions[0]].sort()) === JSON.stringify(Object.keys(wanted).sort()) &&
        Object.entries(wanted).every(([k, v]) => d[k] === v)
      );
    });
  };

  test("an alarm fires on webhooks refused that a sender signed, on the very metrics the HTTP function emits for them", async () => {
    // The HTTP API as deployed refuses a webhook signed with another secret, and one signed too
    // long ago; the EMF documents it would print are what CloudWatch gets.
    const dir = mkdtempSync(join(tmpdir(), "mh-refused-"));
    const config = join(dir, "config.json");
    const auth = (scheme: string) => ({ scheme, secrets: [{ value: "the-secret-0001" }] });
    const rule = { name: "r", id: "body.id", customer: "body.c", emit: [{ event_name: "e" }] };
    writeFileSync(
      config,
      JSON.stringify({
        version: 1,
        sources: {
          github: { type: "webhook", auth: auth("github"), rules: [rule] },
          slack: { type: "webhook", auth: auth("slack"), rules: [rule] },
        },
      }),
    );
    const recorder = new MetricsRecorder();
    const api = await createIngestApiFromConfig(
      loadConfig({ METERHOOK_CONFIG: config, METERHOOK_INGEST_QUEUE_URL: "http://127.0.0.1:9/queue/unused" }),
      { logger: silentLogger, metrics: recorder },
    );
    const body = '{"id":"1","c":"cus_1"}';
    const post = (source: string, headers: Record<string, string>) =>
      api.handle({ method: "POST", path: `/v1/webhooks/${source}`, headers, body: Buffer.from(body), requestId: "r" });
    const forged = await post("github", signWebhook(AuthSchema.parse(auth("github")) as never, "another-secret", body));
    const stale = await post(
      "slack",
      signWebhook(AuthSchema.parse(auth("slack")) as never, "the-secret-0001", body, { timestamp: 1_700_000_000 }),
    );
    const signed = (b: string, headers: Record<string, string> = {}) =>
      api.handle({
        method: "POST",
        path: "/v1/webhooks/github",
        headers: { ...headers, ...signWebhook(AuthSchema.parse(auth("github")) as never, "the-secret-0001", b) },
        body: Buffer.from(b),
        requestId: "r",
      });
    const large = await signed(`{"pad":"${"x".repeat(1_100_000)}"}`);
    const compressed = await signed(body, { "content-encoding": "gzip" });
    // A sender set up under the wrong scheme: Stripe's header to a github source, and a v1
    // signature to a slack source (v0).
    const otherScheme = await post("github", signWebhook(AuthSchema.parse(auth("stripe")) as never, "s", body));
    const slackHeaders = signWebhook(AuthSchema.parse(auth("slack")) as never, "the-secret-0001", body);
    const otherFormat = await post("slack", {
      ...slackHeaders,
      "x-slack-signature": (slackHeaders["x-slack-signature"] as string).replace("v0=", "v1="),
    });
    assert.deepEqual(
      [forged, stale, large, compressed, otherScheme, otherFormat].map((r) => r.status),
      [401, 401, 413, 415, 401, 401],
    );
    const emitted = emfDocuments(recorder.drain(), "http-api", Date.now()).filter((d) => "WebhooksRejected" in d);

    const alarm = ofType("AWS::CloudWatch::Alarm")
      .map(([, a]) => a.Properties)
      .find((a) => a.AlarmName?.endsWith?.("-webhooks-refused"));
    assert.ok(alarm, "the alarm");
    assert.equal(alarm.Threshold, 1);
    const watched = alarm.Metrics.filter((m: Json) => m.MetricStat).map((m: Json) => m.MetricStat.Metric);
    assert.equal(watched.length, 4);
    for (const metric of watched) {
      const doc = emittedFor(emitted, metric);
      assert.ok(doc, `emitted: ${metric.MetricName} ${JSON.stringify(metric.Dimensions)}`);
      assert.equal(doc[metric.MetricName], 1);
    }

    // The wrong scheme's refusals, left out above, have their own alarm with a higher threshold.
    const unreadable = ofType("AWS::CloudWatch::Alarm")
      .map(([, a]) => a.Properties)
      .find((a) => a.AlarmName?.endsWith?.("-webhooks-unreadable"));
    assert.ok(unreadable, "the unreadable-signature alarm");
    assert.equal(unreadable.Threshold, 10);
    const codes = unreadable.Metrics.filter((m: Json) => m.MetricStat).map((m: Json) => {
      const doc = emittedFor(emitted, m.MetricStat.Metric);
      assert.ok(doc, `emitted: ${JSON.stringify(m.MetricStat.Metric.Dimensions)}`);
      return [doc.code, doc.WebhooksRejected];
    });
    assert.deepEqual(codes, [
      ["signature_missing", 1],
      ["signature_malformed", 1],
    ]);
  });

  test("an alarm fires on requests with an API key that matches none, on the metric the HTTP function emits for them", async () => {
    const recorder = new MetricsRecorder();
    const api = await createIngestApiFromConfig(
      loadConfig({
        METERHOOK_API_KEYS: "mh_current_key_0001",
        METERHOOK_INGEST_QUEUE_URL: "http://127.0.0.1:9/queue/unused",
      }),
      { logger: silentLogger, metrics: recorder },
    );
    const post = (authorization?: string) =>
      api.handle({
        method: "POST",
        path: "/v1/events",
        headers: { "content-type": "application/json", ...(authorization ? { authorization } : {}) },
        body: Buffer.from("{}"),
        requestId: "r",
      });
    const statuses = [
      (await post("Bearer mh_retired_key_0001")).status,
      (await post()).status, // a scanner without a key: not counted
      (await post("Basic dXNlcjpwYXNz")).status,
    ];
    assert.deepEqual(statuses, [401, 401, 401]);
    const docs = emfDocuments(recorder.drain(), "http-api", Date.now()).filter((d) => "ApiKeysRefused" in d);
    const alarm = ofType("AWS::CloudWatch::Alarm")
      .map(([, a]) => a.Properties)
      .find((a) => a.MetricName === "ApiKeysRefused");
    assert.ok(alarm, "the alarm");
    const doc = emittedFor(docs, alarm);
    assert.ok(doc, JSON.stringify(docs));
    assert.equal(doc.ApiKeysRefused, 1, "only the request that presented a key");
    assert.equal(alarm.Namespace, "meterhook");
    assert.equal(alarm.Threshold, 1);
  });

  test("an alarm on triggers no rule matched is off by default, and on the consumer's own EventsIgnored when a ceiling is set", () => {
    const ignored = resources.EventsIgnoredAlarm;
    assert.equal(ignored.Condition, "HasIgnoredAlarm");
    // The default param (0) makes the two sides the same text: the alarm is not created.
    const [left, right] = template.Conditions.HasIgnoredAlarm["Fn::Not"][0]["Fn::Equals"];
    assert.equal(typeof left, "string");
    assert.equal(left, right);
    assert.equal(ignored.Properties.MetricName, "EventsIgnored");
    assert.equal(ignored.Properties.Namespace, "meterhook");
    assert.deepEqual(ignored.Properties.Dimensions, [
      { Name: "service", Value: "meterhook" },
      { Name: "function", Value: "ingest-queue" },
    ]);
    assert.equal(ignored.Properties.Period, 3600);
  });

  test("the HTTP API is throttled below the account's limit, so a runaway client gets 429s, not a full queue", () => {
    const settings = resources.HttpApiStage.Properties.DefaultRouteSettings;
    assert.equal(settings.ThrottlingRateLimit, 1000);
    assert.equal(settings.ThrottlingBurstLimit, 2000);
    assert.equal(settings.DetailedMetricsEnabled, false, "the stage's own setting is kept");
  });

  test("the consumer reports partial batch failures, with bounded concurrency", () => {
    const esm = ofType("AWS::Lambda::EventSourceMapping")[0]?.[1];
    assert.deepEqual(esm.Properties.FunctionResponseTypes, ["ReportBatchItemFailures"]);
    assert.deepEqual(esm.Properties.EventSourceArn, { "Fn::GetAtt": ["IngestQueue", "Arn"] });
    assert.ok(esm.Properties.ScalingConfig.MaximumConcurrency >= 2);
  });

  test("a v2 consumer invocation takes one wave of full stream requests; a v1 one, 100 messages", async () => {
    const esm = ofType("AWS::Lambda::EventSourceMapping")[0]?.[1];
    // The stack sets neither STRIPE_CONCURRENCY nor STRIPE_STREAM_BATCH_SIZE: the defaults apply.
    const { stripe } = loadConfig({});
    assert.equal(esm.Properties.BatchSize, stripe.concurrency * stripe.streamBatchSize);
    // Above 10 messages, SQS event sources need a batching window.
    assert.ok(esm.Properties.MaximumBatchingWindowInSeconds >= 1);
    const { stdout } = await promisify(execFile)("npx", ["osls", "print", "--format", "json", "--param=stripeApi=v1"], {
      env: offlineEnv(),
      maxBuffer: 16 * 1024 * 1024,
    });
    assert.equal(JSON.parse(stdout).functions.ingestQueue.events[0].sqs.batchSize, 100);
  });

  test("the consumers' and the replay function's Stripe searches together stay under Stripe's 20 per second", () => {
    const esm = ofType("AWS::Lambda::EventSourceMapping")[0]?.[1];
    const perSecond = (fn: string) => {
      const env = resources[fn].Properties.Environment.Variables;
      return loadConfig({ STRIPE_SEARCH_MAX_REQUESTS_PER_SECOND: env.STRIPE_SEARCH_MAX_REQUESTS_PER_SECOND }).stripe
        .searchMaxRequestsPerSecond;
    };
    const consumers = esm.Properties.ScalingConfig.MaximumConcurrency * perSecond("IngestQueueLambdaFunction");
    // The replay function counted once: an operator invokes it, one replay at a time.
    assert.ok(consumers + perSecond("DlqReplayLambdaFunction") <= 20, `${consumers} + replay's`);
  });

  test("the consumers' and the replay function's Stripe requests together stay under v1's 1,000 per second", () => {
    const esm = ofType("AWS::Lambda::EventSourceMapping")[0]?.[1];
    const perSecond = (fn: string) => {
      const env = resources[fn].Properties.Environment.Variables;
      // Unset means no client-side limit at all, which this test must not pass.
      assert.ok(env.STRIPE_MAX_REQUESTS_PER_SECOND !== undefined, `${fn} sets STRIPE_MAX_REQUESTS_PER_SECOND`);
      return loadConfig({ STRIPE_MAX_REQUESTS_PER_SECOND: env.STRIPE_MAX_REQUESTS_PER_SECOND }).stripe
        .maxRequestsPerSecond as number;
    };
    const consumers = esm.Properties.ScalingConfig.MaximumConcurrency * perSecond("IngestQueueLambdaFunction");
    assert.ok(consumers + perSecond("DlqReplayLambdaFunction") <= 1000, `${consumers} + replay's`);
  });

  test("three attempts at an AWS call that never answers end before each function's timeout", () => {
    for (const fn of Object.values(FUNCTIONS)) {
      const { Timeout, Environment } = resources[fn].Properties;
      const bound = loadConfig({
        METERHOOK_AWS_REQUEST_TIMEOUT_MS: Environment.Variables.METERHOOK_AWS_REQUEST_TIMEOUT_MS,
      }).aws.requestTimeoutMs;
      // The AWS SDK's three attempts, and a second for its backoff between them and the answer.
      assert.ok(3 * bound + 1_000 <= Timeout * 1_000, `${fn}: 3 x ${bound} ms within ${Timeout} s`);
    }
  });

  test("every function runs on arm64 with a supported Node.js runtime", () => {
    const fns = ofType("AWS::Lambda::Function");
    assert.equal(fns.length, 5);
    for (const [name, fn] of fns) {
      assert.match(fn.Properties.Runtime, /^nodejs(22|24)\.x$/, name);
      assert.deepEqual(fn.Properties.Architectures, ["arm64"], name);
    }
  });

  test("npm run bench gives its clients the young generation of the ingest-queue function's memory", () => {
    // The Lambda runtime sizes V8's heap from the function's memory; the bench copies that.
    assert.equal(resources.IngestQueueLambdaFunction.Properties.MemorySize, INGEST_QUEUE_MEMORY_MB);
    assert.deepEqual(lambdaYoungGenerationFlags(512), ["--max-semi-space-size=25"]);
  });

  test("the dashboard graphs what the functions emit, under the dimensions they emit it with, and every alarm", async () => {
    const sub = resources.Dashboard.Properties.DashboardBody["Fn::Sub"] as string;
    const body = JSON.parse(
      sub
        .replace(/\$\{AWS::Region\}/g, "us-east-1")
        .replace(/\$\{AWS::AccountId\}/g, "123456789012")
        .replace(/\$\{AWS::Partition\}/g, "aws"),
    );
    assert.equal(resources.Dashboard.Properties.DashboardName, "meterhook-dev");

    // What the functions emit: the HTTP API, the consumer and the error report reader, run in
    // process on fauxqs and the emulator, through what makes each metric.
    const parts = await startPipelineParts();
    const docs: Array<Record<string, Json>> = [];
    try {
      const dir = mkdtempSync(join(tmpdir(), "mh-dashboard-"));
      const rule = { name: "r", when: "body.bill", id: "body.id", customer: "body.c", emit: [{ event_name: "e" }] };
      const auth = { scheme: "github", secrets: [{ value: "dashboard-secret-0001" }] };
      writeFileSync(
        join(dir, "config.json"),
        JSON.stringify({ version: 1, sources: { app: { type: "webhook", auth, rules: [rule], unmatched: "ignore" } } }),
      );
      const env = {
        ...consumerEnv(parts),
        METERHOOK_API_KEYS: "mh_dashboard_key_0001",
        METERHOOK_INGEST_QUEUE_URL: parts.queues.ingestQueueUrl,
        METERHOOK_CONFIG: join(dir, "config.json"),
      };
      const http = new MetricsRecorder();
      const api = await createIngestApiFromConfig(loadConfig(env), { logger: silentLogger, metrics: http });
      const post = (path: string, payload: string, headers: Record<string, string>) =>
        api.handle({ method: "POST", path, headers, body: Buffer.from(payload), requestId: "r" });
      const json = { "content-type": "application/json" };
      const key = { ...json, authorization: "Bearer mh_dashboard_key_0001" };
      const billed = usageEvent({ customer: "cus_dashboard", value: 2 });
      const statuses = [
        (await post("/v1/events", JSON.stringify({ events: [billed, { id: "bad" }] }), key)).status,
        (await post("/v1/events/cancel", JSON.stringify({ id: "old", event_name: "api_requests" }), key)).status,
        (await post("/v1/events", "{}", { ...json, authorization: "Bearer mh_retired_key" })).status,
      ];
      for (const [payload, secret] of [
        ['{"bill":false,"id":"w1","c":"cus_dashboard"}', "dashboard-secret-0001"],
        ['{"bill":true,"id":"w2","c":"cus_dashboard"}', "not-the-secret"],
      ] as const) {
        const signed = signWebhook(AuthSchema.parse(auth) as never, secret, payload);
        statuses.push((await post("/v1/webhooks/app", payload, { ...json, ...signed })).status);
      }
      assert.deepEqual(statuses, [202, 202, 401, 202, 401]);
      docs.push(...(emfDocuments(http.drain(), "http-api", Date.now()) as Array<Record<string, Json>>));

      // The queued event twice (SQS delivers at least once), an unmapped customer and the webhook
      // no rule bills; first with no time left (all retried), then billed. The cancellation, of
      // an event Stripe never had, is left out: it is retried until it fails (README).
      const queued = (await drain(parts.queues.sqs, parts.queues.ingestQueueUrl))
        .map((m) => m.body)
        .filter((b) => !b.includes(CANCEL_FORMAT));
      const event = queued.find((b) => b.includes("cus_dashboard") && !b.includes("trigger/")) as string;
      const batch = sqsEvent(
        [...queued, event, JSON.stringify(usageEvent({ customer: "acct_nobody" }))].map((b) => sqsRecord(b)),
      );
      const consumerMetrics = new MetricsRecorder();
      const consumer = createConsumerFromConfig(loadConfig(env), {
        sqs: parts.queues.sqs,
        logger: silentLogger,
        metrics: consumerMetrics,
      });
      const handle = createQueueHandler(() => consumer);
      assert.ok((await handle(batch, lambdaContext(1))).batchItemFailures.length > 0);
      assert.deepEqual(await handle(batch, lambdaContext(30_000)), { batchItemFailures: [] });
      await (await consumer).close();
      docs.push(...(emfDocuments(consumerMetrics.drain(), "ingest-queue", Date.now()) as Array<Record<string, Json>>));

      refusedAfterAccepting(parts, "dashboard");
      const reportMetrics = new MetricsRecorder();
      const reader = await createErrorReportReaderFromConfig(
        loadConfig({ ...env, STRIPE_EVENTS_SECRET: "whsec_dashboard_0001" }),
        { logger: silentLogger, metrics: reportMetrics },
      );
      await reader.run({ from: Date.now() - 3_600_000, to: Date.now() + 61_000 }, Date.now() + 30_000);
      // A pushed notification signed with a secret the destination no longer has.
      const note = JSON.stringify({ id: "evt_x", type: "v1.billing.meter.error_report_triggered" });
      const forged = signWebhook(STRIPE_SIGNATURE, "whsec_rolled_away", note);
      const pushed = await reader.receive(
        { method: "POST", path: "/v1/stripe/events", headers: forged, body: Buffer.from(note), requestId: "r" },
        Date.now() + 10_000,
      );
      assert.equal(pushed.status, 401);
      await reader.close();
      docs.push(...(emfDocuments(reportMetrics.drain(), "stripe-reports", Date.now()) as Array<Record<string, Json>>));
    } finally {
      await parts.stop();
    }

    const names = (type: string, property: string) => new Set(ofType(type).map(([, r]) => r.Properties[property]));
    const queues = names("AWS::SQS::Queue", "QueueName");
    const functions = names("AWS::Lambda::Function", "FunctionName");
    const graphed: string[] = [];
    for (const widget of body.widgets.filter((w: Json) => w.type === "metric")) {
      for (const row of widget.properties.metrics as Json[][]) {
        const [first] = row;
        if (typeof first === "object") {
          // SEARCH('{meterhook,<dimensions>} MetricName="X" function="f"', ...): X under exactly those.
          const m = /SEARCH\('\{meterhook,([\w,]+)\} MetricName="(\w+)" function="([\w-]+)"'/.exec(first.expression);
          assert.ok(m, first.expression);
          const [, dims, name, fn] = m as unknown as [string, string, string, string];
          const found = docs.find(
            (d) =>
              name in d &&
              d.function === fn &&
              JSON.stringify([...d._aws.CloudWatchMetrics[0].Dimensions[0]].sort()) ===
                JSON.stringify(dims.split(",").sort()),
          );
          assert.ok(found, `${widget.properties.title}: ${name} by ${dims} from ${fn}`);
          graphed.push(name);
          continue;
        }
        const [namespace, name, ...rest] = row as string[];
        const pairs = rest.filter((x) => typeof x === "string");
        const dimensions = [];
        for (let i = 0; i < pairs.length; i += 2) dimensions.push({ Name: pairs[i], Value: pairs[i + 1] });
        if (namespace === "meterhook") {
          const metric = { Namespace: namespace, MetricName: name, Dimensions: dimensions };
          assert.ok(emittedFor(docs, metric), `${widget.properties.title}: ${name} ${JSON.stringify(dimensions)}`);
          graphed.push(name as string);
        } else if (namespace === "AWS/SQS") assert.ok(queues.has(dimensions[0]?.Value), JSON.stringify(row));
        else if (namespace === "AWS/Lambda") assert.ok(functions.has(dimensions[0]?.Value), JSON.stringify(row));
        else assert.fail(`unexpected namespace in ${JSON.stringify(row)}`);
      }
    }
    for (const name of ["EventsBilled", "EventsDeadLettered", "EventsRetried", "StripeRequests", "WebhooksRejected"])
      assert.ok(graphed.includes(name), name);

    // Every alarm the stack always creates, and no other (the opt-in ones are left out).
    const [alarmWidget] = body.widgets.filter((w: Json) => w.type === "alarm");
    const shown = (alarmWidget.properties.alarms as string[]).map((arn) => arn.split(":alarm:")[1]).sort();
    const always = ofType("AWS::CloudWatch::Alarm")
      .filter(([, a]) => !a.Condition)
      .map(([, a]) => a.Properties.AlarmName)
      .sort();
    assert.deepEqual(shown, always);
  });

  test("alarms watch DLQ depth, backlog age, and consumer errors and throttles", () => {
    const alarms = ofType("AWS::CloudWatch::Alarm").map(([, a]) => a.Properties);
    const find = (metric: string, dim: unknown) =>
      alarms.find((a) => a.MetricName === metric && JSON.stringify(a.Dimensions[0].Value) === JSON.stringify(dim));
    assert.ok(find("ApproximateNumberOfMessagesVisible", { "Fn::GetAtt": ["DeadLetterQueue", "QueueName"] }));
    assert.ok(find("ApproximateAgeOfOldestMessage", { "Fn::GetAtt": ["IngestQueue", "QueueName"] }));
    assert.ok(find("Errors", { Ref: "IngestQueueLambdaFunction" }));
    assert.ok(find("Throttles", { Ref: "IngestQueueLambdaFunction" }));
  });

  test("an alarm fires while a dead letter still has three days or more before the DLQ's retention deletes it", () => {
    const alarm = ofType("AWS::CloudWatch::Alarm")
      .map(([, a]) => a.Properties)
      .find(
        (a) =>
          a.MetricName === "ApproximateAgeOfOldestMessage" &&
          JSON.stringify(a.Dimensions) ===
            JSON.stringify([{ Name: "QueueName", Value: { "Fn::GetAtt": ["DeadLetterQueue", "QueueName"] } }]),
      );
    assert.equal(alarm?.AlarmName, "meterhook-dev-dlq-letters-expiring");
    const retention = resources.DeadLetterQueue.Properties.MessageRetentionPeriod;
    // What `meterhook dlq` counts a letter's expiry from.
    assert.equal(retention, DLQ_RETENTION_SECONDS);
    // It fires once the age is past the threshold for one period: that must still leave three days.
    assert.ok(
      alarm.Threshold + alarm.Period * alarm.EvaluationPeriods <= retention - 3 * 86_400,
      String(alarm.Threshold),
    );
    // And not for a letter written today: the dlq-not-empty alarm is for that.
    assert.ok(alarm.Threshold >= 86_400);
    assert.equal(alarm.ComparisonOperator, "GreaterThanThreshold");
    assert.equal(alarm.Statistic, "Maximum");
  });

  test("IAM: one role per function, every statement scoped to named resources", () => {
    const roles = ofType("AWS::IAM::Role");
    for (const [, fn] of ofType("AWS::Lambda::Function")) {
      assert.ok(roles.some(([name]) => JSON.stringify(fn.Properties.Role).includes(name)));
    }
    for (const [roleName, role] of roles) {
      for (const policy of role.Properties.Policies ?? []) {
        for (const st of policy.PolicyDocument.Statement) {
          const resourcesOf = [st.Resource].flat();
          for (const r of resourcesOf) {
            assert.notEqual(r, "*", `${roleName}: ${JSON.stringify(st.Action)} on *`);
            // A wildcard only below a stage's own parameter path (webhook secrets), never broader.
            assert.doesNotMatch(
              JSON.stringify(r),
              /parameter\/\*|parameter\/meterhook\/\*/,
              `${roleName}: broad wildcard resource`,
            );
          }
        }
      }
    }
  });

  test("IAM: each function gets only what it uses", () => {
    const actions = (role: string) =>
      resources[role].Properties.Policies.flatMap((p: Json) =>
        p.PolicyDocument.Statement.flatMap((s: Json) => [s.Action].flat()),
      );
    assert.deepEqual([...new Set(actions("HttpApiRole"))].sort(), [
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "sqs:SendMessage",
      "ssm:GetParameter",
    ]);
    assert.ok(
      !JSON.stringify(resources.HttpApiRole).includes("stripe-api-key"),
      "the HTTP API cannot read the Stripe key",
    );
    assert.ok(!JSON.stringify(resources.IngestQueueRole).includes("api-keys"), "the consumer cannot read the API keys");
    // The consumer writes to the DLQ, and to its own queue for pre-aggregated events to retry.
    const sends = resources.IngestQueueRole.Properties.Policies.flatMap((p: Json) =>
      p.PolicyDocument.Statement.filter((s: Json) => [s.Action].flat().includes("sqs:SendMessage")),
    );
    assert.deepEqual(
      sends.flatMap((s: Json) => [s.Resource].flat()),
      [{ "Fn::GetAtt": ["DeadLetterQueue", "Arn"] }, { "Fn::GetAtt": ["IngestQueue", "Arn"] }],
    );
    const env = resources.IngestQueueLambdaFunction.Properties.Environment.Variables;
    assert.deepEqual(env.METERHOOK_INGEST_QUEUE_URL, { Ref: "IngestQueue" });
    assert.equal(env.METERHOOK_AGGREGATE, "", "pre-aggregation is off by default");
  });

  test("replays keep their ledger in a table of its own, whose items expire, that only the replay function and the consumer (for SQS's redrive) reach", () => {
    const table = resources.ReplayLedgerTable;
    assert.equal(table.Type, "AWS::DynamoDB::Table");
    // The names the ledger's code reads and writes.
    assert.deepEqual(table.Properties.KeySchema, [{ AttributeName: LEDGER_KEY, KeyType: "HASH" }]);
    assert.deepEqual(table.Properties.AttributeDefinitions, [{ AttributeName: LEDGER_KEY, AttributeType: "S" }]);
    assert.deepEqual(table.Properties.TimeToLiveSpecification, { AttributeName: LEDGER_EXPIRY, Enabled: true });
    assert.equal(table.Properties.BillingMode, "PAY_PER_REQUEST");
    assert.deepEqual(template.Outputs.ReplayLedgerTableName.Value, { Ref: "ReplayLedgerTable" });
    for (const [name, fn] of ofType("AWS::Lambda::Function")) {
      const table = fn.Properties.Environment.Variables.METERHOOK_REPLAY_LEDGER_TABLE;
      if (name === "DlqReplayLambdaFunction" || name === "IngestQueueLambdaFunction")
        assert.deepEqual(table, { Ref: "ReplayLedgerTable" }, name);
      else assert.equal(table, undefined, name);
    }
    const grants = ofType("AWS::IAM::Role").flatMap(([role, r]) =>
      (r.Properties.Policies ?? []).flatMap((p: Json) =>
        p.PolicyDocument.Statement.filter((s: Json) => JSON.stringify(s.Resource).includes("ReplayLedgerTable")).map(
          (s: Json) => [role, s.Action, s.Resource],
        ),
      ),
    );
    assert.deepEqual(grants, [
      [
        "IngestQueueRole",
        ["dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:PutItem", "dynamodb:DeleteItem"],
        { "Fn::GetAtt": ["ReplayLedgerTable", "Arn"] },
      ],
      [
        "DlqReplayRole",
        ["dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:PutItem", "dynamodb:DeleteItem"],
        { "Fn::GetAtt": ["ReplayLedgerTable", "Arn"] },
      ],
    ]);
  });

  test("IAM: each function may read exactly the tables and secrets the mapping config names for it", async () => {
    // The stage's own config names none: no such policy at all.
    assert.deepEqual(ofType("AWS::IAM::Policy"), []);
    const dir = mkdtempSync(join(tmpdir(), "mh-access-"));
    const configFile = join(dir, "meterhook.yaml");
    const rules = [
      "    rules:",
      "      - { name: r, id: body.id, customer: body.account, emit: [{ event_name: api_requests }] }",
    ];
    const sqs = (customer: string) => ["    type: sqs", `    customer: ${customer}`, ...rules];
    writeFileSync(
      configFile,
      [
        "version: 1",
        "sources:",
        "  a:",
        ...sqs("{ lookup: dynamodb, tableName: accounts, key: { account_id: '{customer}' } }"),
        "  b:",
        ...sqs("{ lookup: dynamodb, tableName: accounts, key: { id: '{customer}' } }"),
        "  c:",
        ...sqs("{ lookup: dynamodb, tableName: app, region: eu-west-1, key: { pk: 'A#{customer}', sk: B } }"),
        "  d:",
        ...sqs("{ lookup: table, table: { acct_1: cus_1 } }"),
        "  e:",
        ...sqs(
          "{ lookup: http, url: 'https://billing.example.com/{customer}', headers: { authorization: { ssm: /meterhook/dev/lookups/token }, x-key: { secretsManager: billing-lookup }, x-env: { env: LOOKUP_KEY } } }",
        ),
        "  gh:",
        "    type: webhook",
        "    auth: { scheme: github, secrets: [{ ssm: /other/github-secret }, { secretsManager: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:gh-AbCdEf' }] }",
        ...rules,
        "  wa:",
        "    type: webhook",
        "    auth: { scheme: meta, secrets: [{ env: META_SECRET }], verifyTokens: [{ ssm: /meterhook/dev/webhooks/meta-verify }] }",
        ...rules,
      ].join("\n"),
    );
    const policiesFor = async (mappingConfig: string) => {
      const { stdout } = await promisify(execFile)(
        "npx",
        ["osls", "print", "--format", "json", `--param=mappingConfig=${mappingConfig}`],
        { env: offlineEnv(), maxBuffer: 16 * 1024 * 1024 },
      );
      const printed = JSON.parse(stdout).resources.Resources as Record<string, Json>;
      return Object.fromEntries(Object.entries(printed).filter(([, r]) => r.Type === "AWS::IAM::Policy"));
    };
    const sub = (service: string, region: string, rest: string) => ({
      "Fn::Sub": `arn:\${AWS::Partition}:${service}:${region}:\${AWS::AccountId}:${rest}`,
    });
    const here = `\${AWS::Region}`;
    const policies = await policiesFor(configFile);
    assert.deepEqual(Object.keys(policies).sort(), ["CustomerLookupsReadPolicy", "WebhookSecretsReadPolicy"]);
    // The consumer's and the replay function's roles, and no other.
    const lookups = policies.CustomerLookupsReadPolicy.Properties;
    assert.deepEqual(lookups.Roles, [{ Ref: "IngestQueueRole" }, { Ref: "DlqReplayRole" }]);
    assert.ok(JSON.stringify(resources.IngestQueueLambdaFunction.Properties.Role).includes("IngestQueueRole"));
    assert.ok(JSON.stringify(resources.DlqReplayLambdaFunction.Properties.Role).includes("DlqReplayRole"));
    assert.deepEqual(lookups.PolicyDocument.Statement, [
      {
        Effect: "Allow",
        Action: "dynamodb:GetItem",
        Resource: [sub("dynamodb", here, "table/accounts"), sub("dynamodb", "eu-west-1", "table/app")],
      },
      {
        Effect: "Allow",
        Action: "ssm:GetParameter",
        Resource: [sub("ssm", here, "parameter/meterhook/dev/lookups/token")],
      },
      {
        Effect: "Allow",
        Action: "secretsmanager:GetSecretValue",
        Resource: [sub("secretsmanager", here, "secret:billing-lookup-??????")],
      },
    ]);
    // The HTTP API's role: the webhook sources' secrets and Verify Tokens kept in a store.
    const webhooks = policies.WebhookSecretsReadPolicy.Properties;
    assert.deepEqual(webhooks.Roles, [{ Ref: "HttpApiRole" }]);
    assert.deepEqual(webhooks.PolicyDocument.Statement, [
      {
        Effect: "Allow",
        Action: "ssm:GetParameter",
        Resource: [
          sub("ssm", here, "parameter/other/github-secret"),
          sub("ssm", here, "parameter/meterhook/dev/webhooks/meta-verify"),
        ],
      },
      {
        Effect: "Allow",
        Action: "secretsmanager:GetSecretValue",
        Resource: ["arn:aws:secretsmanager:us-east-1:123456789012:secret:gh-AbCdEf"],
      },
    ]);

    // A TypeScript config's sources, read as the functions will load them (bundled).
    const code = await policiesFor("test/fixtures/sources/dynamodb-sources.ts");
    assert.deepEqual(Object.keys(code), ["CustomerLookupsReadPolicy"]);
    assert.deepEqual(code.CustomerLookupsReadPolicy.Properties.PolicyDocument.Statement, [
      {
        Effect: "Allow",
        Action: "dynamodb:GetItem",
        Resource: [sub("dynamodb", here, "table/teams"), sub("dynamodb", "eu-west-1", "table/teams")],
      },
    ]);
  });

  /** An alarm on the consumer's own metric `name` (EMF: namespace meterhook, its dimensions), at the first one. */
  const assertConsumerAlarm = (name: string) => {
    const alarm = ofType("AWS::CloudWatch::Alarm")
      .map(([, a]) => a.Properties)
      .find((a) => a.MetricName === name);
    assert.equal(alarm?.Namespace, "meterhook", name);
    assert.deepEqual(alarm?.Dimensions, [
      { Name: "service", Value: "meterhook" },
      { Name: "function", Value: "ingest-queue" },
    ]);
    assert.equal(alarm?.Threshold, 1);
  };

  test("the consumer and the replay function check events against Stripe's meters; an alarm fires when the check is off", () => {
    for (const fn of ["IngestQueueLambdaFunction", "DlqReplayLambdaFunction"]) {
      const env = resources[fn].Properties.Environment.Variables;
      assert.ok(loadConfig({ METERHOOK_METER_CHECK: env.METERHOOK_METER_CHECK }).meterCheck, fn);
    }
    assertConsumerAlarm("EventsUnchecked");
  });

  test("the consumer and the replay function check each event's customer in Stripe, 2 reads a second per instance; an alarm fires when the check is off", () => {
    for (const fn of ["IngestQueueLambdaFunction", "DlqReplayLambdaFunction"]) {
      const env = resources[fn].Properties.Environment.Variables;
      const config = loadConfig({
        METERHOOK_CUSTOMER_CHECK: env.METERHOOK_CUSTOMER_CHECK,
        STRIPE_CUSTOMER_CHECK_MAX_REQUESTS_PER_SECOND: String(env.STRIPE_CUSTOMER_CHECK_MAX_REQUESTS_PER_SECOND),
      });
      assert.deepEqual(config.customerCheck, { maxAgeMs: 3_600_000, perSecond: 2 }, fn);
    }
    assertConsumerAlarm("EventsCustomerCheckOff");
  });

  test("an alarm fires when the replay ledger cannot record what Stripe billed, or the consumer cannot read it", () => {
    const alarm = ofType("AWS::CloudWatch::Alarm")
      .map(([, a]) => a.Properties)
      .find((a) => a.AlarmName?.endsWith?.("-replay-ledger-faults"));
    assert.ok(alarm, "the alarm");
    assert.equal(alarm.Threshold, 1);
    const watched = alarm.Metrics.filter((m: Json) => m.MetricStat).map((m: Json) => {
      const { Namespace, MetricName, Dimensions } = m.MetricStat.Metric;
      assert.equal(Namespace, "meterhook");
      const dims = Object.fromEntries(Dimensions.map((d: Json) => [d.Name, d.Value]));
      assert.deepEqual(Object.keys(dims), ["service", "function"]);
      assert.equal(m.MetricStat.Stat, "Sum");
      return `${MetricName} ${dims.function}`;
    });
    assert.deepEqual(watched, [
      `${Metric.replayLedgerUnrecorded} ingest-queue`,
      `${Metric.replayLedgerUnrecorded} dlq-replay`,
      `${Metric.replayLedgerUnavailable} ingest-queue`,
    ]);
    const [expression] = alarm.Metrics.filter((m: Json) => m.ReturnData);
    assert.match(expression.Expression, /^FILL\(\w+, 0\)( \+ FILL\(\w+, 0\)){2}$/);
  });

  test("the HTTP API gets METERHOOK_EVENTS_PER_MESSAGE from the eventsPerMessage param, 1 (no packs) by default", () => {
    const env = resources.HttpApiLambdaFunction.Properties.Environment.Variables;
    assert.equal(String(env.METERHOOK_EVENTS_PER_MESSAGE), "1");
  });

  test("no secret value is in the template or the environment; secrets are parameter names", () => {
    const text = JSON.stringify(template);
    assert.doesNotMatch(text, /sk_(live|test)_|rk_(live|test)_|whsec_|mh_local_dev_key/);
    for (const [name, fn] of ofType("AWS::Lambda::Function")) {
      const vars = Object.keys(fn.Properties.Environment?.Variables ?? {});
      assert.ok(!vars.includes("STRIPE_API_KEY") && !vars.includes("METERHOOK_API_KEYS"), name);
    }
    assert.equal(
      resources.IngestQueueLambdaFunction.Properties.Environment.Variables.STRIPE_API_KEY_SSM_PARAMETER,
      "/meterhook/dev/stripe-api-key",
    );
    // Each function's settings load as they are: no empty Secrets Manager id beside the SSM parameter.
    for (const [name, fn] of ofType("AWS::Lambda::Function")) {
      const vars = fn.Properties.Environment?.Variables ?? {};
      assert.ok(!Object.keys(vars).some((k) => k.endsWith("_SECRET_ID")), name);
      assert.doesNotThrow(() => loadConfig(stringsOf(vars)), name);
    }
  });

  test("IAM: a key kept in Secrets Manager replaces the SSM parameter, KMS keys may decrypt secrets, and each function waits for its role's policies", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mh-keys-"));
    const kmsKey = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    await promisify(execFile)(
      "npx",
      [
        "osls",
        "package",
        "--package",
        dir,
        "--param=stripeKeySecretId=meterhook/prod/stripe",
        "--param=apiKeysSecretId=arn:aws:secretsmanager:eu-west-1:123456789012:secret:api-keys-AbCdEf",
        "--param=stripeEventsSecretId=meterhook/prod/stripe-events",
        `--param=secretsKmsKeyArns=${kmsKey}`,
        "--param=mappingConfig=test/fixtures/sources/dynamodb-sources.ts",
      ],
      { env: offlineEnv(), maxBuffer: 16 * 1024 * 1024 },
    );
    const packaged = JSON.parse(readFileSync(join(dir, "cloudformation-template-update-stack.json"), "utf8"))
      .Resources as Record<string, Json>;
    const envOf = (fn: string) => packaged[`${fn}LambdaFunction`].Properties.Environment.Variables;
    const storeReads = (role: string) =>
      packaged[role].Properties.Policies.flatMap((p: Json) => p.PolicyDocument.Statement).filter((st: Json) =>
        /ssm:|secretsmanager:/.test(JSON.stringify(st.Action)),
      );
    const stripeSecret = {
      Effect: "Allow",
      Action: "secretsmanager:GetSecretValue",
      Resource: [
        {
          "Fn::Sub": `arn:\${AWS::Partition}:secretsmanager:\${AWS::Region}:\${AWS::AccountId}:secret:meterhook/prod/stripe-??????`,
        },
      ],
    };
    for (const fn of ["IngestQueue", "DlqReplay", "StripeReports"]) {
      const env = envOf(fn);
      assert.equal(env.STRIPE_API_KEY_SECRET_ID, "meterhook/prod/stripe", fn);
      assert.equal(env.STRIPE_API_KEY_SSM_PARAMETER, undefined, fn);
      // The function reads the key from Secrets Manager, and may read nothing else of the kind.
      assert.deepEqual(loadConfig(stringsOf(env)).stripe.apiKeySource, {
        store: "secretsmanager",
        name: "meterhook/prod/stripe",
      });
      // The stripe-reports function may read the signing secret of a Stripe event destination too,
      // from Secrets Manager as well since the stripeEventsSecretId param is set.
      const eventsSecret = {
        Effect: "Allow",
        Action: "secretsmanager:GetSecretValue",
        Resource: [
          {
            "Fn::Sub": `arn:\${AWS::Partition}:secretsmanager:\${AWS::Region}:\${AWS::AccountId}:secret:meterhook/prod/stripe-events-??????`,
          },
        ],
      };
      assert.deepEqual(
        storeReads(`${fn}Role`),
        fn === "StripeReports" ? [stripeSecret, eventsSecret] : [stripeSecret],
        fn,
      );
    }
    const reports = envOf("StripeReports");
    assert.equal(reports.STRIPE_EVENTS_SECRET_SSM_PARAMETER, undefined);
    assert.deepEqual(loadConfig(stringsOf(reports)).stripe.eventsSecretSource, {
      store: "secretsmanager",
      name: "meterhook/prod/stripe-events",
    });
    const http = envOf("HttpApi");
    assert.equal(http.METERHOOK_API_KEYS_SSM_PARAMETER, undefined);
    assert.equal(loadConfig(stringsOf(http)).apiKeysSource?.store, "secretsmanager");
    assert.deepEqual(storeReads("HttpApiRole")[0], {
      Effect: "Allow",
      Action: "secretsmanager:GetSecretValue",
      Resource: ["arn:aws:secretsmanager:eu-west-1:123456789012:secret:api-keys-AbCdEf"],
    });
    assert.ok(!JSON.stringify(packaged.HttpApiRole).includes("stripe"), "the HTTP API cannot read the Stripe key");

    // Every function that reads a secret may decrypt with the KMS key, only through SSM or Secrets Manager.
    const kms = packaged.SecretsKmsDecryptPolicy.Properties;
    assert.deepEqual(kms.Roles.map((r: Json) => r.Ref).sort(), [
      "DlqReplayRole",
      "HttpApiRole",
      "IngestQueueRole",
      "StripeReportsRole",
    ]);
    assert.deepEqual(kms.PolicyDocument.Statement, [
      {
        Effect: "Allow",
        Action: "kms:Decrypt",
        Resource: [kmsKey],
        Condition: { StringLike: { "kms:ViaService": ["ssm.*.amazonaws.com", "secretsmanager.*.amazonaws.com"] } },
      },
    ]);
    // CloudFormation creates a function only once its role's policies exist: on a first deploy
    // the consumer never runs before it may read the lookups' table.
    const dependsOn = (fn: string) =>
      packaged[`${fn}LambdaFunction`].DependsOn.filter((d: string) => d.endsWith("Policy"));
    assert.deepEqual(dependsOn("IngestQueue"), ["CustomerLookupsReadPolicy", "SecretsKmsDecryptPolicy"]);
    assert.deepEqual(dependsOn("DlqReplay"), ["CustomerLookupsReadPolicy", "SecretsKmsDecryptPolicy"]);
    assert.deepEqual(dependsOn("HttpApi"), ["SecretsKmsDecryptPolicy"]);
    assert.deepEqual(dependsOn("EventBridge"), []);

    // A KMS alias or key id would allow nothing: the package step refuses it.
    await assert.rejects(
      promisify(execFile)("npx", ["osls", "print", "--param=secretsKmsKeyArns=alias/meterhook"], {
        env: offlineEnv(),
        maxBuffer: 16 * 1024 * 1024,
      }),
      (err: Error & { stdout?: string; stderr?: string }) => {
        assert.match(`${err.stdout}${err.stderr}`, /secretsKmsKeyArns: alias\/meterhook is not a KMS key ARN/);
        return true;
      },
    );
    rmSync(dir, { recursive: true, force: true });
  });

  test("the stripe-reports function reads Stripe's error reports on a schedule, one interval a run, and alarms", () => {
    const fn = resources.StripeReportsLambdaFunction.Properties;
    const rule = ofType("AWS::Events::Rule").find(([, r]) =>
      JSON.stringify(r.Properties.Targets).includes("StripeReportsLambdaFunction"),
    )?.[1];
    const minutes = Number(fn.Environment.Variables.METERHOOK_REPORTS_INTERVAL_MINUTES);
    // Consecutive runs read consecutive windows only if each reads what the schedule's rate spans.
    assert.equal(rule?.Properties.ScheduleExpression, `rate(${minutes} minutes)`);
    assert.equal(loadConfig({ METERHOOK_REPORTS_INTERVAL_MINUTES: String(minutes) }).reportsIntervalMinutes, minutes);
    assert.equal(fn.Environment.Variables.STRIPE_API_KEY_SSM_PARAMETER, "/meterhook/dev/stripe-api-key");
    const alarms = ofType("AWS::CloudWatch::Alarm").map(([, a]) => a.Properties);
    const refused = alarms.find((a) => a.MetricName === "StripeRefusedEvents");
    assert.equal(refused?.Namespace, "meterhook");
    assert.deepEqual(refused?.Dimensions, [
      { Name: "service", Value: "meterhook" },
      { Name: "function", Value: "stripe-reports" },
    ]);
    assert.ok(
      alarms.find((a) => a.MetricName === "Errors" && a.Dimensions[0].Value.Ref === "StripeReportsLambdaFunction"),
    );
    const actions = resources.StripeReportsRole.Properties.Policies.flatMap((p: Json) =>
      p.PolicyDocument.Statement.flatMap((st: Json) => [st.Action].flat()),
    );
    assert.deepEqual(actions.sort(), [
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
      "sqs:ReceiveMessage",
      "sqs:SendMessage",
      "ssm:GetParameter",
      "ssm:GetParameter",
    ]);
  });

  test("a stripe-reports run that fails every retry goes to the reports-missed queue, which runs it again", () => {
    const missed = { "Fn::GetAtt": ["ReportsMissedQueue", "Arn"] };
    const invokeConfig = ofType("AWS::Lambda::EventInvokeConfig").find(
      ([, c]) => c.Properties.FunctionName.Ref === "StripeReportsLambdaFunction",
    )?.[1].Properties;
    assert.equal(invokeConfig?.MaximumRetryAttempts, 2);
    assert.deepEqual(invokeConfig?.DestinationConfig, { OnFailure: { Destination: missed } });
    const trigger = ofType("AWS::Lambda::EventSourceMapping").find(([, m]) =>
      JSON.stringify(m.Properties.EventSourceArn).includes("ReportsMissedQueue"),
    )?.[1].Properties;
    assert.deepEqual(trigger?.FunctionName, { "Fn::GetAtt": ["StripeReportsLambdaFunction", "Arn"] });
    assert.deepEqual(trigger?.FunctionResponseTypes, ["ReportBatchItemFailures"]);
    const queue = resources.ReportsMissedQueue.Properties;
    // Lambda refuses an SQS trigger whose queue hides a message for less than the function's timeout.
    assert.ok(queue.VisibilityTimeout >= resources.StripeReportsLambdaFunction.Properties.Timeout);
    assert.equal(queue.MessageRetentionPeriod, 1_209_600);
    const tlsOnly = resources.QueuesTlsOnlyPolicy.Properties;
    assert.ok(tlsOnly.Queues.some((q: Json) => q.Ref === "ReportsMissedQueue"));
    const alarm = ofType("AWS::CloudWatch::Alarm")
      .map(([, a]) => a.Properties)
      .find(
        (a) =>
          a.MetricName === "ApproximateAgeOfOldestMessage" &&
          JSON.stringify(a.Dimensions).includes("ReportsMissedQueue"),
      );
    assert.equal(alarm?.Threshold, 3600);
  });

  test("an EventBridge rule targets the EventBridge function", () => {
    // The one rule with an event pattern (the other is the stripe-reports function's schedule).
    const rules = ofType("AWS::Events::Rule").filter(([, r]) => r.Properties.EventPattern);
    assert.equal(rules.length, 1);
    const target = rules[0]?.[1].Properties.Targets[0];
    assert.deepEqual(target.Arn, { "Fn::GetAtt": ["EventBridgeLambdaFunction", "Arn"] });
    assert.ok(Array.isArray(rules[0]?.[1].Properties.EventPattern.source));
    assert.deepEqual(
      target.DeadLetterConfig.Arn,
      { "Fn::GetAtt": ["DeadLetterQueue", "Arn"] },
      "undeliverable events go to the DLQ",
    );
  });

  test("SNS topics and EventBridge rules of the account, and no one else's, may deliver to the ingest queue", () => {
    const statements = resources.QueuesTlsOnlyPolicy.Properties.PolicyDocument.Statement as Json[];
    for (const service of ["sns.amazonaws.com", "events.amazonaws.com"]) {
      const toIngest = statements.filter(
        (s) => s.Principal?.Service === service && s.Resource?.["Fn::GetAtt"]?.[0] === "IngestQueue",
      );
      assert.equal(toIngest.length, 1, service);
      assert.deepEqual([toIngest[0]?.Effect, toIngest[0]?.Action], ["Allow", "sqs:SendMessage"], service);
      assert.deepEqual(
        toIngest[0]?.Condition,
        { StringEquals: { "aws:SourceAccount": { Ref: "AWS::AccountId" } } },
        service,
      );
    }
  });

  test("the mapping config is bundled with every function that maps or authenticates", () => {
    for (const fn of ["HttpApiLambdaFunction", "IngestQueueLambdaFunction", "DlqReplayLambdaFunction"]) {
      assert.equal(resources[fn].Properties.Environment.Variables.METERHOOK_CONFIG, "config/meterhook.yaml", fn);
    }
  });

  test("the HTTP API routes the events API, webhooks (GET for Meta's subscription check) and GET /v1/health", () => {
    const routes = ofType("AWS::ApiGatewayV2::Route")
      .map(([, r]) => r.Properties.RouteKey)
      .sort();
    assert.deepEqual(routes, [
      "GET /v1/health",
      "GET /v1/webhooks/{source}",
      "POST /v1/events",
      "POST /v1/events/cancel",
      "POST /v1/stripe/events",
      "POST /v1/webhooks/{source}",
    ]);
  });

  test("POST /v1/stripe/events goes to the stripe-reports function, which may read the event destination's secret; the schedule can be turned off", async () => {
    const route = ofType("AWS::ApiGatewayV2::Route").find(
      ([, r]) => r.Properties.RouteKey === "POST /v1/stripe/events",
    )?.[1];
    const integrationId = route?.Properties.Target["Fn::Join"][1][1].Ref as string;
    assert.match(JSON.stringify(resources[integrationId].Properties.IntegrationUri), /StripeReportsLambdaFunction/);
    const fn = resources.StripeReportsLambdaFunction.Properties;
    const parameter = fn.Environment.Variables.STRIPE_EVENTS_SECRET_SSM_PARAMETER;
    assert.equal(parameter, "/meterhook/dev/stripe-events-secret");
    const reads = resources.StripeReportsRole.Properties.Policies.flatMap(
      (p: Json) => p.PolicyDocument.Statement,
    ).filter((st: Json) => st.Action === "ssm:GetParameter" && JSON.stringify(st.Resource).includes(parameter));
    assert.equal(reads.length, 1);
    // API Gateway gives up on an integration after 30 s: the notification's answer comes before.
    assert.ok(HTTP_ANSWER_WITHIN_MS < 30_000);
    const rule = ofType("AWS::Events::Rule").find(([, r]) =>
      JSON.stringify(r.Properties.Targets).includes("StripeReportsLambdaFunction"),
    )?.[1];
    assert.equal(rule?.Properties.State, "ENABLED");
    const alarm = ofType("AWS::CloudWatch::Alarm").find(
      ([, a]) => a.Properties.MetricName === "StripeNotificationsFailed",
    )?.[1].Properties;
    assert.deepEqual([alarm?.Threshold, alarm?.Dimensions[1]], [1, { Name: "function", Value: "stripe-reports" }]);
    const { stdout } = await promisify(execFile)(
      "npx",
      ["osls", "print", "--format", "json", "--param=stripeReportsSchedule=false"],
      { env: offlineEnv(), maxBuffer: 16 * 1024 * 1024 },
    );
    const events = JSON.parse(stdout).functions.stripeReports.events as Json[];
    assert.equal(events.find((e) => e.schedule)?.schedule.enabled, false);
  });
});

describe("bundles", () => {
  test("each handler bundle is within its size budget", () => {
    const sizes = JSON.parse(readFileSync("dist/sizes.json", "utf8")) as Record<string, number>;
    assert.deepEqual(Object.keys(sizes).sort(), Object.keys(BUDGET_KIB).sort());
    for (const [name, kib] of Object.entries(sizes))
      assert.ok(kib <= (BUDGET_KIB[name] as number), `${name}: ${kib} KiB`);
    const cold = JSON.parse(readFileSync("dist/cold-start-sizes.json", "utf8")) as Record<string, number>;
    assert.deepEqual(Object.keys(cold).sort(), Object.keys(COLD_START_BUDGET_KIB).sort());
    for (const [name, kib] of Object.entries(cold)) {
      assert.ok(kib > 0 && kib <= (sizes[name] as number), `${name}: ${kib} KiB at cold start`);
      assert.ok(kib <= (COLD_START_BUDGET_KIB[name] as number), `${name}: ${kib} KiB loaded at cold start`);
    }
  });

  test("a TypeScript mapping config is bundled into the functions by the package step; the bundled consumer maps with it", async () => {
    // The package step's plugin, as osls runs it, building into a directory of this test's own.
    const fixture = "test/fixtures/sources/code-sources.ts";
    const functions: Record<string, { environment: Record<string, string> }> = {
      ingestQueue: { environment: { METERHOOK_CONFIG: fixture } },
      eventBridge: { environment: {} },
    };
    const BuildPlugin = createRequire(import.meta.url)("../../infra/build-plugin.cjs");
    const plugin = new BuildPlugin({ serviceDir: process.cwd(), service: { functions } });
    const outDir = mkdtempSync(join(tmpdir(), "mh-code-config-"));
    process.env.METERHOOK_BUILD_DIR = outDir;
    try {
      await plugin.hooks["before:package:createDeploymentArtifacts"]();
    } finally {
      delete process.env.METERHOOK_BUILD_DIR;
    }
    assert.equal(functions.ingestQueue?.environment.METERHOOK_CONFIG, `bundled:${fixture}`);
    assert.deepEqual(functions.eventBridge?.environment, {});
    // The config (zod imported as `* as z`) keeps each function within meterhook's own budgets.
    const cold = JSON.parse(readFileSync(join(outDir, "cold-start-sizes.json"), "utf8")) as Record<string, number>;
    for (const [name, kib] of Object.entries(cold)) {
      assert.ok(kib > 50 && kib <= (COLD_START_BUDGET_KIB[name] as number), `${name}: ${kib} KiB at cold start`);
    }

    const parts = await startPipelineParts();
    try {
      // Plain Node, as on Lambda: it cannot import the .ts file, only the bundled copy.
      const child = spawn(process.execPath, ["test/infra/run-bundle.mjs", "ingest-queue", "30"], {
        env: {
          ...process.env,
          ...consumerEnv(parts),
          METERHOOK_CONFIG: functions.ingestQueue?.environment.METERHOOK_CONFIG as string,
          BUNDLE_DIR: outDir,
          METERHOOK_LOG_LEVEL: "error",
          AWS_REGION: "us-east-1",
        },
      });
      let out = "";
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
      });
      let err = "";
      child.stderr.on("data", (d: Buffer) => {
        err += d.toString();
      });
      child.stdin.end(
        JSON.stringify(
          sqsEvent([
            sqsRecord({ job: "job-bundled-1", team: "team-1", seconds: 150 }),
            // Fails the source's zod schema: mapping_failed, the same error class the consumer checks.
            sqsRecord({ job: "job-bundled-2", team: "team-1" }),
          ]),
        ),
      );
      const [code] = await once(child, "exit");
      assert.equal(code, 0, `${out}\n${err}`);
      assert.deepEqual(JSON.parse(out.trim().split("\n").at(-1) as string), { batchItemFailures: [] });
      assert.deepEqual(
        parts.emulator.ledger.summaries().map((t) => [t.customer, t.event_name, t.aggregated_value]),
        [["cus_Team1", "compute_minutes", 2.5]],
      );
      const letters = (await drain(parts.queues.sqs, parts.queues.deadLetterQueueUrl)).map(
        (m) => JSON.parse(m.body) as DeadLetterBody,
      );
      assert.deepEqual(
        letters.map((l) => l.error.code),
        ["mapping_failed"],
      );
      assert.match(letters[0]?.error.message ?? "", /body does not match the source's schema: seconds/);
    } finally {
      await parts.stop();
    }
  });

  test("the JSON files a config's table lookups read are packaged with each function that loads the config; a missing file or env secret stops the package", async () => {
    // Inside the service (osls packages only files below it), in a directory git ignores.
    mkdirSync(".scratch", { recursive: true });
    const dir = mkdtempSync(join(process.cwd(), ".scratch", "tables-"));
    try {
      const configFile = join(dir, "meterhook.yaml");
      const tableFile = join(dir, "teams.json");
      writeFileSync(tableFile, JSON.stringify({ "team-1": "cus_Team1" }));
      const rel = (p: string) => p.slice(process.cwd().length + 1);
      writeFileSync(
        configFile,
        [
          "version: 1",
          "sources:",
          "  jobs:",
          "    type: sqs",
          `    customer: { lookup: table, file: ${rel(tableFile)} }`,
          "    rules:",
          "      - { name: r, id: body.id, customer: body.team, emit: [{ event_name: jobs }] }",
        ].join("\n"),
      );
      await promisify(execFile)("npx", ["osls", "package", `--param=mappingConfig=${rel(configFile)}`], {
        env: offlineEnv(),
        maxBuffer: 16 * 1024 * 1024,
      });
      for (const fn of ["ingestQueue", "dlqReplay", "httpApi"]) {
        const entries = zipEntries(`.serverless/${fn}.zip`);
        assert.ok(entries.includes(rel(tableFile)), `${fn}: ${entries.filter((e) => !e.startsWith("dist/"))}`);
        assert.ok(entries.includes(rel(configFile)), fn);
      }
      // A function that loads no mapping config does not carry it.
      assert.ok(!zipEntries(".serverless/stripeReports.zip").includes(rel(tableFile)));

      // A file the config names that does not exist stops the package step, naming it.
      writeFileSync(configFile, readFileSync(configFile, "utf8").replace("teams.json", "gone.json"));
      await assert.rejects(
        promisify(execFile)("npx", ["osls", "package", `--param=mappingConfig=${rel(configFile)}`], {
          env: offlineEnv(),
          maxBuffer: 16 * 1024 * 1024,
        }),
        (err: Error & { stdout?: string; stderr?: string }) => {
          assert.match(`${err.stdout}${err.stderr}`, /gone\.json, which a table lookup of .* reads, does not exist/);
          return true;
        },
      );
      // So does a secret the config reads from an environment variable the function lacks.
      await assert.rejects(
        promisify(execFile)("npx", ["osls", "package", "--param=mappingConfig=examples/github-ci-minutes.yaml"], {
          env: offlineEnv(),
          maxBuffer: 16 * 1024 * 1024,
        }),
        (err: Error & { stdout?: string; stderr?: string }) => {
          assert.match(
            `${err.stdout}${err.stderr}`,
            /reads the secret \{ env: GITHUB_WEBHOOK_SECRET \}, which is not in the httpApi function's environment/,
          );
          return true;
        },
      );
      // So does a customers file or mapping config that is not there.
      for (const [param, file] of [
        ["customersFile", "config/no-such-customers.json"],
        ["mappingConfig", "config/no-such-config.yaml"],
      ]) {
        await assert.rejects(
          promisify(execFile)("npx", ["osls", "package", `--param=${param}=${file}`], {
            env: offlineEnv(),
            maxBuffer: 16 * 1024 * 1024,
          }),
          (err: Error & { stdout?: string; stderr?: string }) => {
            assert.ok(
              `${err.stdout}${err.stderr}`.includes(`${file}, the ${param} param`),
              `${err.stdout}${err.stderr}`,
            );
            return true;
          },
        );
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a bundled function's own errors keep their names, which Lambda reports as errorType", async () => {
    // A setting the consumer refuses: its cold start fails with meterhook's ConfigError.
    process.env.METERHOOK_MAX_ATTEMPTS = "many";
    try {
      const mod = await import(`${process.cwd()}/dist/ingest-queue/index.mjs?config-error`);
      await assert.rejects(mod.handler(sqsEvent([]), lambdaContext()), (err: Error & { code?: string }) => {
        assert.equal(err.name, "ConfigError");
        assert.equal(err.code, "invalid_config");
        assert.match(err.message, /METERHOOK_MAX_ATTEMPTS/);
        return true;
      });
    } finally {
      delete process.env.METERHOOK_MAX_ATTEMPTS;
    }
  });

  test("the bundled HTTP handler loads and answers, as Lambda would run it", async () => {
    process.env.METERHOOK_API_KEYS = "bundle-test-key";
    process.env.METERHOOK_INGEST_QUEUE_URL = "http://127.0.0.1:9/q";
    const mod = await import(`${process.cwd()}/dist/http-api/index.mjs`);
    const res = await mod.handler({
      rawPath: "/v1/health",
      headers: {},
      requestContext: { http: { method: "GET" }, requestId: "r1", stage: "$default" },
    });
    assert.equal(res.statusCode, 200);
    const bad = await mod.handler({
      rawPath: "/v1/events",
      headers: { "content-type": "application/json" },
      body: "{}",
      requestContext: { http: { method: "POST" }, requestId: "r2", stage: "$default" },
    });
    assert.equal(bad.statusCode, 401);
  });

  test("the bundled functions, run as Lambda runs them, carry events through fauxqs to the emulator", async () => {
    const parts = await startPipelineParts();
    try {
      // The stack's meter check, against the meters this Stripe has.
      for (const event_name of ["api_requests", "storage_gb_days"]) parts.emulator.defineMeter({ event_name });
      const env = {
        ...process.env,
        ...consumerEnv(parts),
        METERHOOK_API_KEYS: "bundle-test-key",
        METERHOOK_INGEST_QUEUE_URL: parts.queues.ingestQueueUrl,
        METERHOOK_LOG_LEVEL: "error",
        METERHOOK_METER_CHECK: "on",
        METERHOOK_CUSTOMER_CHECK: "on",
        AWS_REGION: "us-east-1",
      };
      const run = async (name: string, event: unknown, extra: Record<string, string> = {}, timeLeft?: number) => {
        // With the time left the function's timeout gives it, as Lambda's context would.
        const timeout = timeLeft ?? resources[FUNCTIONS[name] as string].Properties.Timeout;
        const child = spawn(process.execPath, ["test/infra/run-bundle.mjs", name, String(timeout)], {
          env: { ...env, ...extra },
        });
        let out = "";
        child.stdout.on("data", (d: Buffer) => {
          out += d.toString();
        });
        child.stdin.end(JSON.stringify(event));
        const [code] = await once(child, "exit");
        assert.equal(code, 0, `${name} exited with ${code}: ${out}`);
        const lines = out.trim().split("\n");
        printed.set(name, lines.slice(0, -1));
        return JSON.parse(lines.at(-1) as string);
      };
      // What each function printed before its answer, by name: the last run's.
      const printed = new Map<string, string[]>();
      const billed = usageEvent({ customer: "cus_bundle", value: 5 });
      const unmapped = usageEvent({ customer: "acct_nobody" });
      const unmetered = usageEvent({ customer: "cus_bundle", event_name: "not_a_meter" });
      const res = await run(
        "http-api",
        httpEvent({
          body: JSON.stringify({ events: [billed, unmapped, unmetered] }),
          headers: { authorization: "Bearer bundle-test-key", "content-type": "application/json" },
        }),
      );
      assert.equal(res.statusCode, 202, res.body);
      const got = await parts.queues.sqs.send(
        new ReceiveMessageCommand({ QueueUrl: parts.queues.ingestQueueUrl, MaxNumberOfMessages: 10 }),
      );
      assert.equal(got.Messages?.length, 3);
      const batch = await run("ingest-queue", sqsEvent((got.Messages ?? []).map((m) => sqsRecord(m.Body))));
      assert.deepEqual(batch, { batchItemFailures: [] });
      const totals = async () => {
        const res = await fetch(`${parts.emulator.url}/v1/billing/meters/summaries`);
        const body = (await res.json()) as { data: Array<{ customer: string; aggregated_value: number }> };
        return body.data.map((s) => [s.customer, s.aggregated_value]).sort();
      };
      assert.deepEqual(await totals(), [["cus_bundle", 5]]);
      const peek = await parts.queues.sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: parts.queues.deadLetterQueueUrl,
          MaxNumberOfMessages: 10,
          VisibilityTimeout: 0,
        }),
      );
      const letters = (peek.Messages ?? []).map((m) => JSON.parse(m.Body ?? "") as DeadLetterBody);
      assert.deepEqual(letters.map((l) => [l.error.code, (l.event as { id?: string }).id]).sort(), [
        ["customer_not_found", unmapped.id],
        ["meter_not_found", unmetered.id],
      ]);

      // The customer is mapped and the meter made now: the replay function bills both and deletes them.
      parts.emulator.defineMeter({ event_name: "not_a_meter" });
      // ...but not when invoked with too little time left to settle a batch before Lambda ends it.
      const late = await run("dlq-replay", { limit: 10 }, { METERHOOK_CUSTOMERS: '{"acct_nobody":"cus_later"}' }, 20);
      assert.deepEqual([late.examined, late.stoppedForTime], [0, true]);
      const report = await run("dlq-replay", { limit: 10 }, { METERHOOK_CUSTOMERS: '{"acct_nobody":"cus_later"}' });
      assert.deepEqual(report, {
        dryRun: false,
        examined: 2,
        billed: 2,
        cancelled: 0,
        deadLettered: {},
        leftUntouched: 0,
        pastDedupeWindow: 0,
      });
      assert.deepEqual(await totals(), [
        ["cus_bundle", 3],
        ["cus_bundle", 5],
        ["cus_later", 3],
      ]);
      // Its metrics, as the consumer's, under its own name.
      const replayed = (printed.get("dlq-replay") ?? [])
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l))
        .find((d) => "EventsBilled" in d);
      assert.deepEqual([replayed?.function, replayed?.EventsReceived, replayed?.EventsBilled], ["dlq-replay", 2, 2]);
      assert.equal(await queueDepth(parts.queues.sqs, parts.queues.deadLetterQueueUrl), 0);
      // The bundle takes the operator's go-ahead for letters past Stripe's duplicate window.
      // ...and a list of the codes to replay, which it reports on.
      const empty = await run("dlq-replay", {
        limit: 10,
        dryRun: true,
        afterDedupeWindow: true,
        codes: ["customer_not_found"],
      });
      assert.deepEqual(empty, {
        dryRun: true,
        examined: 0,
        billed: 0,
        cancelled: 0,
        deadLettered: {},
        leftUntouched: 0,
        pastDedupeWindow: 0,
        notSelected: 0,
      });

      // An EventBridge event is queued as a trigger for the consumer to map.
      const answer = await run("eventbridge", {
        version: "0",
        id: "eb-bundle-1",
        "detail-type": "Invoice Paid",
        source: "app.billing",
        account: "000000000000",
        time: new Date().toISOString(),
        region: "us-east-1",
        resources: [],
        detail: { account: "acct_1", amount: 2 },
      });
      assert.equal(answer, null);
      const queued = await parts.queues.sqs.send(
        new ReceiveMessageCommand({ QueueUrl: parts.queues.ingestQueueUrl, MaxNumberOfMessages: 10 }),
      );
      assert.deepEqual(
        (queued.Messages ?? []).map((m) => {
          const t = JSON.parse(m.Body ?? "") as { meterhook?: string; kind?: string };
          return [t.meterhook, t.kind];
        }),
        [["trigger/1", "eventbridge"]],
      );

      // Stripe's error reports: an event Stripe refused after accepting it, read by the scheduled function.
      refusedAfterAccepting(parts, "bundle");
      const scheduled = new Date(Date.now() + 61_000).toISOString();
      const read = await run("stripe-reports", { time: scheduled });
      assert.deepEqual([read.reports, read.refused], [1, 1]);
      // The same function reading a failed run's window from the reports-missed queue's trigger.
      const lists = () => parts.emulator.requests.filter((r) => r.path === "/v2/core/events").length;
      const listedBefore = lists();
      const record = { requestContext: { condition: "RetriesExhausted" }, requestPayload: { time: scheduled } };
      const missed = await run("stripe-reports", sqsEvent([sqsRecord(JSON.stringify(record))]));
      assert.deepEqual(missed, { batchItemFailures: [] });
      assert.equal(lists() - listedBefore, 2, "the window read again, one list per report type");

      // With a YAML mapping config: the consumer loads the mapping engine and YAML parser chunks.
      const snapshot = { type: "storage.snapshot", tenant: "tenant-42", day: "2026-11-25", bytes: 2_500_000_000 };
      const mapped = await run("ingest-queue", sqsEvent([sqsRecord(JSON.stringify(snapshot))]), {
        METERHOOK_CONFIG: "examples/sqs-app-messages.yaml",
      });
      assert.deepEqual(mapped, { batchItemFailures: [] });

      // A dynamodb customer lookup: the consumer loads the DynamoDB client's chunk and reads the item.
      const dynamo = await startTestDynamo();
      try {
        await dynamo.createTable("accounts", ["account_id"]);
        await dynamo.put("accounts", { account_id: { S: "acct_bundle" }, stripe_customer_id: { S: "cus_fromtable" } });
        const dynamoConfig = join(mkdtempSync(join(tmpdir(), "mh-bundle-dynamo-")), "meterhook.yaml");
        writeFileSync(
          dynamoConfig,
          [
            "version: 1",
            "sqs: { defaultSource: usage }",
            "sources:",
            "  usage:",
            "    type: sqs",
            "    customer: { lookup: dynamodb, tableName: accounts, key: { account_id: '{customer}' } }",
            "    rules:",
            "      - { name: r, id: body.id, customer: body.account, emit: [{ event_name: api_requests, value: body.n }] }",
          ].join("\n"),
        );
        const looked = await run("ingest-queue", sqsEvent([sqsRecord({ id: "dyn-1", account: "acct_bundle", n: 4 })]), {
          METERHOOK_CONFIG: dynamoConfig,
          DYNAMODB_ENDPOINT: dynamo.endpoint,
        });
        assert.deepEqual(looked, { batchItemFailures: [] });
      } finally {
        await dynamo.stop();
      }
      assert.deepEqual(await totals(), [
        ["cus_Tenant420001", 2.5],
        ["cus_bundle", 3],
        ["cus_bundle", 5],
        ["cus_fromtable", 4],
        ["cus_later", 3],
      ]);

      // A cancellation through the bundled HTTP API and consumer takes the first event out of the totals.
      const cancel = await run(
        "http-api",
        httpEvent({
          path: "/v1/events/cancel",
          body: JSON.stringify({ id: billed.id, event_name: "api_requests" }),
          headers: { authorization: "Bearer bundle-test-key", "content-type": "application/json" },
        }),
      );
      assert.equal(cancel.statusCode, 202, cancel.body);
      const cancels = await parts.queues.sqs.send(
        new ReceiveMessageCommand({ QueueUrl: parts.queues.ingestQueueUrl, MaxNumberOfMessages: 10 }),
      );
      // Only the cancellation: the EventBridge trigger received above may be visible again by now.
      const cancelMessages = (cancels.Messages ?? []).filter((m) => m.Body?.includes('"cancel/1"'));
      assert.equal(cancelMessages.length, 1);
      const cancelled = await run("ingest-queue", sqsEvent(cancelMessages.map((m) => sqsRecord(m.Body))));
      assert.deepEqual(cancelled, { batchItemFailures: [] });
      assert.deepEqual(await totals(), [
        ["cus_Tenant420001", 2.5],
        ["cus_bundle", 0],
        ["cus_bundle", 3],
        ["cus_fromtable", 4],
        ["cus_later", 3],
      ]);
    } finally {
      await parts.stop();
    }
  });
});
