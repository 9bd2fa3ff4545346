import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { createConsumerFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import { processBatch } from "../../lib/consumer.js";
import { createLogger, silentLogger } from "../../lib/logger.js";
import { readMappingConfig } from "../../lib/mapping/load.js";
import { SOURCE_ATTRIBUTE } from "../../lib/triggers.js";
import { startTestDynamo, type TestDynamo } from "../helpers/dynamodb.js";
import { queueMessage } from "../helpers/factories.js";
import { consumerEnv, usePipelineParts } from "../helpers/pipeline.js";
import { drainDeadLetters } from "../helpers/sqs.js";

const parts = usePipelineParts();
let dynamo: TestDynamo;
before(async () => {
  dynamo = await startTestDynamo();
  // The app's accounts, one item per account.
  await dynamo.createTable("accounts", ["account_id"]);
  await dynamo.put("accounts", { account_id: { S: "acct_1" }, stripe_customer_id: { S: "cus_dyn1" } });
  await dynamo.put("accounts", { account_id: { S: "acct_2" }, stripe_customer_id: { S: "cus_dyn2" } });
  await dynamo.put("accounts", { account_id: { S: "acct_bad" }, stripe_customer_id: { S: "acme-inc" } });
  await dynamo.put("accounts", { account_id: { S: "acct_unbilled" }, plan: { S: "free" } });
  // A single-table design: the billing item of an account under its own sort key.
  await dynamo.createTable("app", ["pk", "sk"]);
  await dynamo.put("app", {
    pk: { S: "ACCOUNT#acct_9" },
    sk: { S: "BILLING" },
    billing: { M: { stripe: { S: "cus_dyn9" }, plan: { S: "pro" } } },
  });
  await dynamo.put("app", { pk: { S: "ACCOUNT#acct_9" }, sk: { S: "PROFILE" }, billing: { M: {} } });
  // An app whose accounts have numeric ids, each with its plans under a numeric sort key.
  await dynamo.createTable("orgs", ["org_id", "version"], ["N", "N"]);
  await dynamo.put("orgs", { org_id: { N: "42" }, version: { N: "0" }, stripe_customer_id: { S: "cus_org42" } });
  await dynamo.put("orgs", { org_id: { N: "42" }, version: { N: "1" }, stripe_customer_id: { S: "cus_old" } });
});
after(() => dynamo.stop());

const dir = mkdtempSync(join(tmpdir(), "mh-dynamodb-"));
/** A mapping config of one SQS source, `{"id", "account", "n"}`, with this customer lookup. */
function configWith(customer: string): string {
  const file = join(dir, `config-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(
    file,
    [
      "version: 1",
      "sources:",
      "  usage:",
      "    type: sqs",
      `    customer: ${customer}`,
      "    rules:",
      "      - name: usage",
      "        id: body.id",
      "        customer: body.account",
      "        emit:",
      "          - event_name: api_requests",
      "            value: body.n",
    ].join("\n"),
  );
  return file;
}

const consumerWith = (configFile: string, env: Record<string, string> = {}) =>
  createConsumerFromConfig(
    loadConfig(consumerEnv(parts, { METERHOOK_CONFIG: configFile, DYNAMODB_ENDPOINT: dynamo.endpoint, ...env })),
    { sqs: parts.queues.sqs, logger: silentLogger },
  );
const usage = (id: string, account: string, n = 1) =>
  queueMessage({ id, account, n }, { attributes: { [SOURCE_ATTRIBUTE]: "usage" } });
const total = (customer: string) =>
  parts.emulator.ledger.summaries().find((s) => s.customer === customer)?.aggregated_value ?? 0;

describe("the dynamodb customer lookup", () => {
  test("bills each account to the cus_ id of its item; no item, or no id in it, is dead-lettered customer_not_found", async () => {
    const consumer = await consumerWith(
      configWith("{ lookup: dynamodb, tableName: accounts, key: { account_id: '{customer}' } }"),
    );
    const messages = [
      usage("u1", "acct_1", 3),
      usage("u2", "acct_2", 4),
      usage("u3", "acct_1", 5),
      usage("u4", "acct_nobody"),
      usage("u5", "acct_bad"),
      usage("u6", "acct_unbilled"),
    ];

    const result = await processBatch(messages, Date.now() + 30_000, consumer.deps);
    await consumer.close();

    assert.equal(result.billed, 3);
    assert.deepEqual(result.failedMessageIds, []);
    assert.equal(total("cus_dyn1"), 8);
    assert.equal(total("cus_dyn2"), 4);
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    const why = Object.fromEntries(letters.map((l) => [(l.event as { id: string }).id, l.error]));
    assert.deepEqual(Object.keys(why).sort(), ["u4", "u5", "u6"]);
    for (const e of Object.values(why)) assert.equal(e.code, "customer_not_found");
    assert.match(why.u4?.message ?? "", /no Stripe customer is mapped for customer "acct_nobody"/);
    assert.match(why.u5?.message ?? "", /`stripe_customer_id` is \{"S":"acme-inc"\}, not a string cus_ id/);
    assert.match(why.u6?.message ?? "", /customer "acct_unbilled"$/);
  });

  test("reads a composite key and an attribute inside a map (a single-table design)", async () => {
    const consumer = await consumerWith(
      configWith(
        "{ lookup: dynamodb, tableName: app, region: eu-west-1, key: { pk: 'ACCOUNT#{customer}', sk: BILLING }, stripeIdAttribute: billing.stripe, consistentRead: true }",
      ),
    );

    const result = await processBatch([usage("s1", "acct_9", 7)], Date.now() + 30_000, consumer.deps);
    await consumer.close();

    assert.equal(result.billed, 1);
    assert.equal(total("cus_dyn9"), 7);
  });

  test("reads number key attributes: the customer value as a number; one that is not a number is dead-lettered customer_not_found", async () => {
    const consumer = await consumerWith(
      configWith("{ lookup: dynamodb, tableName: orgs, key: { org_id: { N: '{customer}' }, version: { N: '0' } } }"),
    );

    const result = await processBatch(
      [
        usage("n1", "42", 2),
        // The app's JSON may carry the id as a number.
        queueMessage({ id: "n2", account: 42, n: 3 }, { attributes: { [SOURCE_ATTRIBUTE]: "usage" } }),
        usage("n3", "43"),
        usage("n4", "org-42"),
      ],
      Date.now() + 30_000,
      consumer.deps,
    );
    await consumer.close();

    assert.equal(result.billed, 2);
    assert.deepEqual(result.failedMessageIds, []);
    assert.equal(total("cus_org42"), 5);
    assert.equal(total("cus_old"), 0);
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    const why = Object.fromEntries(letters.map((l) => [(l.event as { id: string }).id, l.error]));
    assert.deepEqual(Object.keys(why).sort(), ["n3", "n4"]);
    assert.equal(why.n3?.code, "customer_not_found");
    assert.equal(why.n4?.code, "customer_not_found");
    assert.match(why.n4?.message ?? "", /customer "org-42": the table's key `org_id` is a number, and this is not one/);
  });

  test("answers are cached per instance: an item changed within cacheTtlSeconds is read again only after it", async () => {
    await dynamo.put("accounts", { account_id: { S: "acct_c" }, stripe_customer_id: { S: "cus_before" } });
    const consumer = await consumerWith(
      configWith("{ lookup: dynamodb, tableName: accounts, key: { account_id: '{customer}' }, cacheTtlSeconds: 300 }"),
    );

    await processBatch([usage("c1", "acct_c", 1)], Date.now() + 30_000, consumer.deps);
    await dynamo.put("accounts", { account_id: { S: "acct_c" }, stripe_customer_id: { S: "cus_after" } });
    await processBatch([usage("c2", "acct_c", 2)], Date.now() + 30_000, consumer.deps);
    await consumer.close();
    // A new instance reads the item as it is now.
    const fresh = await consumerWith(
      configWith("{ lookup: dynamodb, tableName: accounts, key: { account_id: '{customer}' } }"),
    );
    await processBatch([usage("c3", "acct_c", 4)], Date.now() + 30_000, fresh.deps);
    await fresh.close();

    assert.equal(total("cus_before"), 3);
    assert.equal(total("cus_after"), 4);
  });

  /** One message through a consumer of this lookup: whether it is retried, and the reason logged. */
  async function retryReason(customer: string, env: Record<string, string> = {}) {
    const consumer = await consumerWith(configWith(customer), env);
    const lines: string[] = [];
    const message = usage(`r-${Math.random()}`, "acct_1");
    const result = await processBatch([message], Date.now() + 30_000, {
      ...consumer.deps,
      logger: createLogger({ write: (line) => lines.push(line) }),
    });
    await consumer.close();
    const retried = lines.map((l) => JSON.parse(l)).find((l) => l.message === "event will be retried");
    return { retried: result.failedMessageIds.includes(message.messageId), reason: String(retried?.reason) };
  }

  test("a table that cannot be read retries the message, with DynamoDB's error as the reason", async () => {
    const { retried, reason } = await retryReason(
      "{ lookup: dynamodb, tableName: no_such_table, key: { account_id: '{customer}' } }",
    );
    assert.ok(retried);
    assert.match(reason, /customer lookup failed: DynamoDB ResourceNotFoundException/);
  });

  test("a DynamoDB that does not answer within timeoutMs retries the message", async () => {
    // Takes connections and never answers.
    const sockets: Socket[] = [];
    const silent = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()));
    const port = (silent.address() as { port: number }).port;

    const { retried, reason } = await retryReason(
      "{ lookup: dynamodb, tableName: accounts, key: { account_id: '{customer}' }, timeoutMs: 300 }",
      { DYNAMODB_ENDPOINT: `http://127.0.0.1:${port}` },
    );
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => silent.close(() => r()));

    assert.ok(retried);
    assert.match(reason, /customer lookup failed: DynamoDB /);
  });

  test("a lookup the config cannot use is refused at load, with its path", async () => {
    const problems = async (customer: string) =>
      (await readMappingConfig(configWith(customer))).issues.map((i) => `${i.path}: ${i.message}`).join("\n");

    assert.match(
      await problems("{ lookup: dynamodb, tableName: accounts, key: { account_id: fixed } }"),
      /sources\.usage\.customer\.key: a key value must contain \{customer\}/,
    );
    assert.match(
      await problems("{ lookup: dynamodb, tableName: 'a/b', key: { account_id: '{customer}' } }"),
      /sources\.usage\.customer\.tableName: a table name/,
    );
    assert.match(
      await problems("{ lookup: dynamodb, tableName: t1, key: { a: '{customer}', b: x, c: y } }"),
      /one or two key attributes/,
    );
    assert.match(
      await problems("{ lookup: dynamodb, tableName: t1, key: { a: { N: 'ORG#{customer}' } } }"),
      /sources\.usage\.customer\.key\.a\.N: \{customer\}, or a number/,
    );
  });
});
