import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { EMULATOR_DEFAULT_KEY, type StripeEmulator } from "../../local/stripe-emulator/server.js";
import { meterhookCli } from "../helpers/cli.js";
import { startEmulator } from "../helpers/stripe.js";

let emulator: StripeEmulator;
before(async () => {
  emulator = await startEmulator({
    meters: [{ event_name: "api_requests" }, { event_name: "tokens", customerKey: "account", valueKey: "units" }],
  });
});
after(() => emulator.stop());

/** `meterhook meters` as an operator runs it, with the consumer's settings. */
const meters = (args: string[]) =>
  meterhookCli(["meters", ...args], {
    STRIPE_API_KEY: EMULATOR_DEFAULT_KEY,
    STRIPE_API_BASE: emulator.url,
    METERHOOK_AGGREGATE: JSON.stringify({ tokens: "sum" }),
    METERHOOK_METER_VALUE_RULES: JSON.stringify({ seats: "positive" }),
  });

describe("meterhook meters", () => {
  test("lists Stripe's active meters and names each event_name the settings use that has none", async () => {
    const { code, stdout } = await meters(["examples/eventbridge-orders.yaml"]);
    assert.equal(code, 1);
    const tokens = emulator.ledger.meters.get("tokens")?.id as string;
    assert.match(stdout, /Stripe's active meters \(2\):/);
    assert.match(stdout, new RegExp(`tokens {2}${tokens} {2}\\(customer key account, value key units\\)`));
    assert.match(
      stdout,
      /items_ordered {2}NO ACTIVE METER {2}examples\/eventbridge-orders\.yaml: orders\/order-placed/,
    );
    assert.match(stdout, /seats {2}NO ACTIVE METER {2}METERHOOK_METER_VALUE_RULES/);
    assert.match(stdout, new RegExp(`tokens {2}ok \\(${tokens}\\) {2}METERHOOK_AGGREGATE`));
    assert.match(stdout, /2 event names have no active meter/);
  });

  test("exits 0 once every name has a meter", async () => {
    emulator.defineMeter({ event_name: "items_ordered" });
    emulator.defineMeter({ event_name: "seats", formula: "last" });
    const { code, stdout } = await meters(["examples/eventbridge-orders.yaml"]);
    assert.equal(code, 0, stdout);
    assert.doesNotMatch(stdout, /NO ACTIVE METER/);
  });
});
