import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { EMULATOR_DEFAULT_KEY, type StripeEmulator } from "../../local/stripe-emulator/server.js";
import { meterhookCli } from "../helpers/cli.js";
import { startTestDynamo } from "../helpers/dynamodb.js";
import { startEmulator } from "../helpers/stripe.js";

let emulator: StripeEmulator;
before(async () => {
  emulator = await startEmulator({ customers: ["cus_A", "cus_Tenant420001", "cus_Left"] });
  emulator.deleteCustomer("cus_Left");
});
after(() => emulator.stop());

/** `meterhook customers` as an operator runs it, with the consumer's settings. */
const customers = (table: Record<string, string>, args: string[]) =>
  meterhookCli(["customers", ...args], {
    STRIPE_API_KEY: EMULATOR_DEFAULT_KEY,
    STRIPE_API_BASE: emulator.url,
    METERHOOK_CUSTOMERS: JSON.stringify(table),
  });

describe("meterhook customers", () => {
  test("names each table entry whose customer Stripe does not have, or has deleted", async () => {
    const { code, stdout } = await customers({ acct_a: "cus_A", acct_typo: "cus_Typo", acct_left: "cus_Left" }, [
      "examples/sqs-app-messages.yaml",
    ]);
    assert.equal(code, 1, stdout);
    assert.match(stdout, /4 table entries, 4 Stripe customers checked/);
    assert.match(stdout, /acct_typo -> cus_Typo {2}NOT IN STRIPE {2}METERHOOK_CUSTOMERS\(_FILE\)/);
    assert.match(stdout, /acct_left -> cus_Left {2}DELETED IN STRIPE/);
    assert.doesNotMatch(stdout, /acct_a ->|tenant-42 ->/);
    assert.match(stdout, /2 entries name customers Stripe does not have/);
    // One request per distinct customer.
    assert.equal(emulator.requests.filter((r) => r.path.startsWith("/v1/customers/cus_")).length, 4);
  });

  test("exits 0 when Stripe has them all, the mapping config's table included", async () => {
    const { code, stdout } = await customers({ acct_a: "cus_A" }, ["examples/sqs-app-messages.yaml"]);
    assert.equal(code, 0, stdout);
    assert.match(stdout, /2 table entries, 2 Stripe customers checked/);
  });

  test("reads the tables of the mapping config's dynamodb lookups, and names their items that hold no cus_ id", async () => {
    const dynamo = await startTestDynamo();
    try {
      await dynamo.createTable("accounts", ["account_id"]);
      await dynamo.put("accounts", { account_id: { S: "acct_ok" }, stripe_customer_id: { S: "cus_A" } });
      await dynamo.put("accounts", { account_id: { S: "acct_typo" }, stripe_customer_id: { S: "cus_Typo" } });
      await dynamo.put("accounts", { account_id: { S: "acct_name" }, stripe_customer_id: { S: "Acme Inc" } });
      await dynamo.put("accounts", { account_id: { S: "acct_free" }, plan: { S: "free" } });
      // A single-table design: only BILLING items under ACCOUNT# keys are the lookup's.
      await dynamo.createTable("app", ["pk", "sk"]);
      await dynamo.put("app", {
        pk: { S: "ACCOUNT#acct_9" },
        sk: { S: "BILLING" },
        billing: { M: { id: { S: "cus_Left" } } },
      });
      await dynamo.put("app", {
        pk: { S: "ACCOUNT#acct_9" },
        sk: { S: "PROFILE" },
        billing: { M: { id: { S: "x" } } },
      });
      await dynamo.put("app", {
        pk: { S: "ORDER#2026-000123" },
        sk: { S: "BILLING" },
        billing: { M: { id: { S: "y" } } },
      });
      // Accounts keyed by a number, as an app's own numeric ids.
      await dynamo.createTable("orgs", ["org_id"], ["N"]);
      await dynamo.put("orgs", { org_id: { N: "42" }, stripe_customer_id: { S: "cus_Typo" } });
      // A key that holds the account twice; an item whose two halves differ is not the lookup's.
      await dynamo.createTable("tenants", ["pk"]);
      await dynamo.put("tenants", { pk: { S: "TENANT#acct_7#ACCOUNT#acct_7" }, stripe_customer_id: { S: "cus_Typo" } });
      await dynamo.put("tenants", { pk: { S: "TENANT#acct_7#ACCOUNT#acct_8" }, stripe_customer_id: { S: "cus_Z" } });
      const dir = mkdtempSync(join(tmpdir(), "mh-customers-"));
      const config = join(dir, "meterhook.yaml");
      const rules = [
        "    rules:",
        "      - { name: r, id: body.id, customer: body.account, emit: [{ event_name: api_requests }] }",
      ];
      writeFileSync(
        config,
        [
          "version: 1",
          "sources:",
          "  a:",
          "    type: sqs",
          "    customer: { lookup: dynamodb, tableName: accounts, key: { account_id: '{customer}' } }",
          ...rules,
          "  b:",
          "    type: sqs",
          "    customer: { lookup: dynamodb, tableName: app, key: { pk: 'ACCOUNT#{customer}', sk: BILLING }, stripeIdAttribute: billing.id }",
          ...rules,
          "  c:",
          "    type: sqs",
          "    customer: { lookup: dynamodb, tableName: orgs, key: { org_id: { N: '{customer}' } } }",
          ...rules,
          "  d:",
          "    type: sqs",
          "    customer: { lookup: dynamodb, tableName: tenants, key: { pk: 'TENANT#{customer}#ACCOUNT#{customer}' } }",
          ...rules,
        ].join("\n"),
      );

      const { code, stdout } = await meterhookCli(["customers", config], {
        STRIPE_API_KEY: EMULATOR_DEFAULT_KEY,
        STRIPE_API_BASE: emulator.url,
        DYNAMODB_ENDPOINT: dynamo.endpoint,
      });

      assert.equal(code, 1, stdout);
      assert.match(stdout, /5 table entries, 3 Stripe customers checked/);
      assert.match(stdout, /acct_7 -> cus_Typo {2}NOT IN STRIPE {2}.*: d \(DynamoDB table tenants\)/);
      assert.match(stdout, /42 -> cus_Typo {2}NOT IN STRIPE {2}.*: c \(DynamoDB table orgs\)/);
      assert.match(stdout, /acct_typo -> cus_Typo {2}NOT IN STRIPE {2}.*: a \(DynamoDB table accounts\)/);
      assert.match(stdout, /acct_9 -> cus_Left {2}DELETED IN STRIPE {2}.*: b \(DynamoDB table app\)/);
      assert.match(stdout, /acct_name -> \{"S":"Acme Inc"\} {2}NOT A CUSTOMER ID/);
      assert.match(stdout, /1 DynamoDB item holds no cus_ id/);
      // Not the lookup's items: an account without the attribute, other entities of the single table.
      assert.doesNotMatch(stdout, /acct_free|acct_ok ->|ORDER|"x"|"y"|cus_Z/);
    } finally {
      await dynamo.stop();
    }
  });

  test("a customer deleted in Stripe is refused by the emulator's checks as an unknown one", () => {
    assert.equal(emulator.ledger.customerExists("cus_Left"), false);
    assert.equal(emulator.ledger.customerExists("cus_A"), true);
  });
});
