import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { EMULATOR_DEFAULT_KEY, type StripeEmulator } from "../../local/stripe-emulator/server.js";
import { meterhookCli } from "../helpers/cli.js";
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

  test("a customer deleted in Stripe is refused by the emulator's checks as an unknown one", () => {
    assert.equal(emulator.ledger.customerExists("cus_Left"), false);
    assert.equal(emulator.ledger.customerExists("cus_A"), true);
  });
});
