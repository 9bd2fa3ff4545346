import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { loadConfig, required } from "../../lib/config.js";
import { ConfigError } from "../../lib/errors.js";

describe("loadConfig", () => {
  test("defaults: v2 stream, Stripe's public hosts, 5 attempts, 1 MiB bodies", () => {
    const c = loadConfig({});
    assert.equal(c.stripeApi, "v2");
    assert.equal(c.stripe.apiBase, "https://api.stripe.com");
    assert.equal(c.stripe.meterEventsBase, "https://meter-events.stripe.com");
    assert.equal(c.maxAttempts, 5);
    assert.equal(c.maxBodyBytes, 1024 * 1024);
    assert.deepEqual(c.apiKeys, []);
  });

  test("the Stripe key loses the whitespace around it, as a key read from a store does", () => {
    assert.equal(loadConfig({ STRIPE_API_KEY: " sk_test_fromFile0001\n" }).stripe.apiKey, "sk_test_fromFile0001");
  });

  test("API keys are comma-separated, blanks dropped", () => {
    assert.deepEqual(loadConfig({ METERHOOK_API_KEYS: " a1234567, ,b1234567 " }).apiKeys, ["a1234567", "b1234567"]);
  });

  test("an unknown METERHOOK_ setting fails start-up, naming it", () => {
    assert.throws(
      () => loadConfig({ METERHOOK_API_KEY: "x" }),
      (e: unknown) => e instanceof ConfigError && /METERHOOK_API_KEY\b/.test(e.message),
    );
  });

  test("an invalid value fails start-up, naming the setting", () => {
    assert.throws(() => loadConfig({ METERHOOK_STRIPE_API: "v3" }), /METERHOOK_STRIPE_API/);
    assert.throws(() => loadConfig({ STRIPE_STREAM_BATCH_SIZE: "101" }), /STRIPE_STREAM_BATCH_SIZE/);
    assert.throws(() => loadConfig({ STRIPE_API_BASE: "not a url" }), /STRIPE_API_BASE/);
    // An ARN or a blank where the replay ledger's table name goes: refused, not a ledger never read.
    assert.throws(
      () => loadConfig({ METERHOOK_REPLAY_LEDGER_TABLE: "arn:aws:dynamodb:us-east-1:1:table/x" }),
      /METERHOOK_REPLAY_LEDGER_TABLE/,
    );
    assert.throws(() => loadConfig({ METERHOOK_REPLAY_LEDGER_TABLE: "" }), /METERHOOK_REPLAY_LEDGER_TABLE/);
    assert.equal(
      loadConfig({ METERHOOK_REPLAY_LEDGER_TABLE: "meterhook-prod-replay-ledger" }).replayLedgerTable,
      "meterhook-prod-replay-ledger",
    );
  });

  test("customer table from a file and inline JSON; inline wins", () => {
    const dir = mkdtempSync(join(tmpdir(), "mh-"));
    const file = join(dir, "customers.json");
    writeFileSync(file, JSON.stringify({ acct_1: "cus_file1", acct_2: "cus_file2" }));
    const c = loadConfig({ METERHOOK_CUSTOMERS_FILE: file, METERHOOK_CUSTOMERS: '{"acct_2":"cus_inline"}' });
    assert.deepEqual(Object.fromEntries(c.customers), { acct_1: "cus_file1", acct_2: "cus_inline" });
  });

  test("a bad customer table fails start-up", () => {
    assert.throws(() => loadConfig({ METERHOOK_CUSTOMERS: "{" }), /METERHOOK_CUSTOMERS is not valid JSON/);
    assert.throws(() => loadConfig({ METERHOOK_CUSTOMERS: '{"a":"acct_x"}' }), /cus_/);
    assert.throws(() => loadConfig({ METERHOOK_CUSTOMERS_FILE: "/nonexistent.json" }), /cannot read/);
  });

  test("meter value rules", () => {
    const c = loadConfig({ METERHOOK_METER_VALUE_RULES: '{"api_requests":"positive","credits":"any"}' });
    assert.deepEqual(Object.fromEntries(c.valueRules), { api_requests: "positive" });
    assert.throws(() => loadConfig({ METERHOOK_METER_VALUE_RULES: '{"a":"big"}' }), /METERHOOK_METER_VALUE_RULES/);
  });

  test("pre-aggregation is off by default; METERHOOK_AGGREGATE names meters and their formula", () => {
    assert.equal(loadConfig({}).aggregation, undefined);
    assert.equal(loadConfig({ METERHOOK_AGGREGATE: "" }).aggregation, undefined);
    const c = loadConfig({ METERHOOK_AGGREGATE: '{"api_requests":"sum","messages":"count"}' });
    assert.deepEqual(Object.fromEntries(c.aggregation?.meters ?? []), { api_requests: "sum", messages: "count" });
    assert.equal(c.aggregation?.windowSeconds, 60);
    assert.equal(
      loadConfig({ METERHOOK_AGGREGATE: '{"a":"sum"}', METERHOOK_AGGREGATE_WINDOW_SECONDS: "3600" }).aggregation
        ?.windowSeconds,
      3600,
    );
    assert.throws(() => loadConfig({ METERHOOK_AGGREGATE: '{"a":"last"}' }), /METERHOOK_AGGREGATE.*sum, count/);
    assert.throws(() => loadConfig({ METERHOOK_AGGREGATE: "api_requests" }), /not valid JSON/);
    assert.throws(() => loadConfig({ METERHOOK_AGGREGATE_WINDOW_SECONDS: "0" }), /METERHOOK_AGGREGATE_WINDOW_SECONDS/);
    assert.equal(loadConfig({}).stripe.pipelining, 1);
    assert.equal(loadConfig({ STRIPE_PIPELINING: "4" }).stripe.pipelining, 4);
    assert.equal(loadConfig({}).stripe.httpClient, "wire");
    assert.equal(loadConfig({ STRIPE_HTTP_CLIENT: "undici" }).stripe.httpClient, "undici");
    assert.throws(() => loadConfig({ STRIPE_HTTP_CLIENT: "fetch" }), /STRIPE_HTTP_CLIENT/);
  });

  test("the meter check is off unless METERHOOK_METER_CHECK=on; its meters are read again every 300 s by default", () => {
    assert.equal(loadConfig({}).meterCheck, undefined);
    assert.equal(loadConfig({ METERHOOK_METER_CHECK: "off" }).meterCheck, undefined);
    assert.deepEqual(loadConfig({ METERHOOK_METER_CHECK: "on" }).meterCheck, { maxAgeMs: 300_000 });
    assert.deepEqual(loadConfig({ METERHOOK_METER_CHECK: "on", METERHOOK_METERS_MAX_AGE_SECONDS: "60" }).meterCheck, {
      maxAgeMs: 60_000,
    });
    assert.throws(() => loadConfig({ METERHOOK_METER_CHECK: "yes" }), /METERHOOK_METER_CHECK/);
    assert.throws(() => loadConfig({ METERHOOK_METERS_MAX_AGE_SECONDS: "5" }), /METERHOOK_METERS_MAX_AGE_SECONDS/);
  });

  test("the customer check is off unless METERHOOK_CUSTOMER_CHECK=on; an answer stands 3,600 s, and 2 checks a second by default", () => {
    assert.equal(loadConfig({}).customerCheck, undefined);
    assert.equal(loadConfig({ METERHOOK_CUSTOMER_CHECK: "off" }).customerCheck, undefined);
    assert.deepEqual(loadConfig({ METERHOOK_CUSTOMER_CHECK: "on" }).customerCheck, {
      maxAgeMs: 3_600_000,
      perSecond: 2,
    });
    assert.deepEqual(
      loadConfig({
        METERHOOK_CUSTOMER_CHECK: "on",
        METERHOOK_CUSTOMERS_MAX_AGE_SECONDS: "60",
        STRIPE_CUSTOMER_CHECK_MAX_REQUESTS_PER_SECOND: "0.5",
      }).customerCheck,
      { maxAgeMs: 60_000, perSecond: 0.5 },
    );
    assert.throws(() => loadConfig({ METERHOOK_CUSTOMER_CHECK: "yes" }), /METERHOOK_CUSTOMER_CHECK/);
    assert.throws(
      () => loadConfig({ METERHOOK_CUSTOMERS_MAX_AGE_SECONDS: "5" }),
      /METERHOOK_CUSTOMERS_MAX_AGE_SECONDS/,
    );
    assert.throws(
      () => loadConfig({ STRIPE_CUSTOMER_CHECK_MAX_REQUESTS_PER_SECOND: "0" }),
      /STRIPE_CUSTOMER_CHECK_MAX_REQUESTS_PER_SECOND/,
    );
  });

  test("required() names the missing setting", () => {
    assert.throws(() => required(undefined, "STRIPE_API_KEY"), /STRIPE_API_KEY is required/);
    assert.throws(() => required([], "METERHOOK_API_KEYS"), /METERHOOK_API_KEYS/);
  });
});
