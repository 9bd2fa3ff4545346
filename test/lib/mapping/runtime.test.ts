import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createAwsSecretReader } from "../../../lib/aws-secrets.js";
import { ConfigError } from "../../../lib/errors.js";
import { loadMapping, readSecretRef, webhookSecrets } from "../../../lib/mapping/runtime.js";
import { startFakeSecretStores } from "../../helpers/fake-secret-stores.js";

let stores: Awaited<ReturnType<typeof startFakeSecretStores>>;
before(async () => {
  stores = await startFakeSecretStores({
    ssm: {
      "/meterhook/test/webhooks/github": "gh-secret-from-ssm",
      // Written from a file with its newline: trimmed, as the Stripe key and API keys are.
      "/meterhook/test/webhooks/newline": "gh-secret-from-file\n",
    },
    secrets: {
      "meterhook/test/usage": "whsec_c2VjcmV0LWZyb20tc20=",
      "meterhook/test/usage-pairs": '{"secret":"whsec_c2VjcmV0LWluLXBhaXJz"}',
    },
  });
});
after(() => stores.stop());
const reader = () =>
  createAwsSecretReader({ region: "us-east-1", ssmEndpoint: stores.url, secretsManagerEndpoint: stores.url });

test("a TypeScript module of defineSource sources loads as the mapping config", async () => {
  const mapping = await loadMapping("test/fixtures/sources/code-sources.ts");
  assert.deepEqual([...mapping.sources.keys()], ["jobs"]);
  assert.equal(mapping.defaultSqsSource, "jobs");
});

test("an invalid config file fails start-up listing every problem", async () => {
  await assert.rejects(loadMapping("test/fixtures/sources/does-not-exist.yaml"), /cannot read/);
});

test("webhook secrets come from env, SSM and Secrets Manager", async () => {
  assert.equal(await readSecretRef({ ssm: "/meterhook/test/webhooks/github" }, {}, reader()), "gh-secret-from-ssm");
  assert.equal(
    await readSecretRef({ secretsManager: "meterhook/test/usage" }, {}, reader()),
    "whsec_c2VjcmV0LWZyb20tc20=",
  );
  assert.equal(await readSecretRef({ env: "GH" }, { GH: "from-env" }, reader()), "from-env");
  assert.equal(await readSecretRef({ ssm: "/meterhook/test/webhooks/newline" }, {}, reader()), "gh-secret-from-file");
  await assert.rejects(readSecretRef({ env: "MISSING" }, {}, reader()), /MISSING/);
  await assert.rejects(
    readSecretRef({ secretsManager: "meterhook/test/usage-pairs" }, {}, reader()),
    (e: unknown) =>
      e instanceof ConfigError &&
      /webhook secret meterhook\/test\/usage-pairs: the secret holds JSON key\/value pairs/.test(e.message) &&
      !e.message.includes("whsec_c2VjcmV0LWluLXBhaXJz"),
  );
  await assert.rejects(
    readSecretRef({ ssm: "/meterhook/test/webhooks/missing" }, {}, reader()),
    (e: unknown) => e instanceof ConfigError && e.message.includes("/meterhook/test/webhooks/missing"),
  );
  const mapping = await loadMapping("examples/standard-webhooks.yaml");
  const secrets = await webhookSecrets(
    mapping,
    { USAGE_WEBHOOK_SECRET: "whsec_a", USAGE_WEBHOOK_SECRET_PREVIOUS: "whsec_b" },
    reader(),
  );
  assert.deepEqual(secrets.get("usage-service"), ["whsec_a", "whsec_b"]);
});
