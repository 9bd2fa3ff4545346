import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { secretReaderFor } from "../../lib/app.js";
import { createAwsSecretReader } from "../../lib/aws-secrets.js";
import { loadConfig } from "../../lib/config.js";
import { ConfigError } from "../../lib/errors.js";
import { redact } from "../../lib/redact.js";
import { resolveSecrets } from "../../lib/secrets.js";
import { startFakeSecretStores } from "../helpers/fake-secret-stores.js";
import { startSilentServer } from "../helpers/silent-server.js";

let stores: Awaited<ReturnType<typeof startFakeSecretStores>>;
before(async () => {
  stores = await startFakeSecretStores({
    ssm: {
      "/meterhook/test/stripe-api-key": "sk_test_fromSsm0001",
      "/meterhook/test/api-keys": "key-one-0001, key-two-0002",
    },
    secrets: {
      "meterhook/test/stripe": "sk_test_fromSecretsManager",
      // As the console stores a secret by default: key/value pairs.
      "meterhook/test/stripe-pairs": '{"STRIPE_API_KEY":"sk_test_inPairs0001"}',
    },
  });
});
after(() => stores.stop());

const reader = () =>
  createAwsSecretReader({ region: "us-east-1", ssmEndpoint: stores.url, secretsManagerEndpoint: stores.url });

test("reads the Stripe key and the API keys from SSM SecureStrings, decrypted", async () => {
  const config = loadConfig({
    STRIPE_API_KEY_SSM_PARAMETER: "/meterhook/test/stripe-api-key",
    METERHOOK_API_KEYS_SSM_PARAMETER: "/meterhook/test/api-keys",
  });
  const resolved = await resolveSecrets(config, reader(), { apiKeys: true, stripeKey: true });
  assert.equal(resolved.stripe.apiKey, "sk_test_fromSsm0001");
  assert.deepEqual(resolved.apiKeys, ["key-one-0001", "key-two-0002"]);
  assert.ok(stores.calls.every((c) => c.target !== "AmazonSSM.GetParameter" || c.decrypt === true));
  assert.equal(redact("x key-two-0002 y"), "x [REDACTED] y", "loaded secrets are redacted from then on");
});

test("reads from Secrets Manager", async () => {
  const config = loadConfig({ STRIPE_API_KEY_SECRET_ID: "meterhook/test/stripe" });
  const resolved = await resolveSecrets(config, reader(), { stripeKey: true });
  assert.equal(resolved.stripe.apiKey, "sk_test_fromSecretsManager");
});

test("a Secrets Manager secret of key/value pairs fails start-up saying so, without the value", async () => {
  const config = loadConfig({ STRIPE_API_KEY_SECRET_ID: "meterhook/test/stripe-pairs" });
  await assert.rejects(resolveSecrets(config, reader(), { stripeKey: true }), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.match(e.message, /meterhook\/test\/stripe-pairs: the secret holds JSON key\/value pairs/);
    assert.doesNotMatch(e.message, /sk_test_inPairs0001/);
    return true;
  });
});

test("only what an entry point needs is read", async () => {
  const before = stores.calls.length;
  const config = loadConfig({ STRIPE_API_KEY_SSM_PARAMETER: "/meterhook/test/stripe-api-key" });
  await resolveSecrets(config, reader(), { apiKeys: true });
  assert.equal(stores.calls.length, before);
});

test("a missing parameter fails start-up naming it, without any value", async () => {
  const config = loadConfig({ STRIPE_API_KEY_SSM_PARAMETER: "/meterhook/test/missing" });
  await assert.rejects(resolveSecrets(config, reader(), { stripeKey: true }), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.match(e.message, /\/meterhook\/test\/missing/);
    return true;
  });
});

test("a store that never answers fails start-up at the AWS request timeout, naming the secret", {
  timeout: 30_000,
}, async () => {
  const silent = await startSilentServer();
  try {
    const config = loadConfig({
      STRIPE_API_KEY_SSM_PARAMETER: "/meterhook/test/stripe-api-key",
      SSM_ENDPOINT: silent.endpoint,
      METERHOOK_AWS_REQUEST_TIMEOUT_MS: "200",
    });
    await assert.rejects(
      resolveSecrets(config, secretReaderFor(config), { stripeKey: true }),
      /\/meterhook\/test\/stripe-api-key.*200 ms requestTimeout/,
    );
    assert.ok(silent.connections() >= 1);
  } finally {
    await silent.stop();
  }
});

test("both stores for one secret is a configuration error", () => {
  assert.throws(() => loadConfig({ STRIPE_API_KEY_SSM_PARAMETER: "/a", STRIPE_API_KEY_SECRET_ID: "b" }), /not both/);
});
