import assert from "node:assert/strict";
import { test } from "node:test";
import { CustomerResolver, staticTableLookup, stripeIdLookup } from "../../lib/customers.js";
import { CustomerNotFoundError, TransientError } from "../../lib/errors.js";

const resolver = new CustomerResolver([stripeIdLookup, staticTableLookup(new Map([["acct_1", "cus_one"]]))]);

test("a cus_ id is used as it is; others are looked up in the table", async () => {
  assert.equal(await resolver.resolve("cus_direct"), "cus_direct");
  assert.equal(await resolver.resolve("acct_1"), "cus_one");
});

test("an unmapped customer is a permanent customer_not_found", async () => {
  await assert.rejects(
    resolver.resolve("acct_2"),
    (e: unknown) => e instanceof CustomerNotFoundError && e.code === "customer_not_found" && !e.retryable,
  );
});

test("cus_ alone names no customer: customer_not_found here, not a refusal from Stripe later", async () => {
  await assert.rejects(resolver.resolve("cus_"), (e: unknown) => e instanceof CustomerNotFoundError);
  assert.throws(() => resolver.known("cus_"), CustomerNotFoundError);
});

test("a lookup that fails transiently surfaces as retryable", async () => {
  const flaky = new CustomerResolver([
    { name: "http", resolve: async () => Promise.reject(new TransientError("lookup_failed", "503")) },
  ]);
  await assert.rejects(flaky.resolve("acct_1"), (e: unknown) => e instanceof TransientError && e.retryable);
});
