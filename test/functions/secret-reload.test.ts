import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { createHttpHandler } from "../../functions/http-api.js";
import { createReloadingApiKeyCheck } from "../../lib/api-keys.js";
import { createIngestApiFromConfig } from "../../lib/app.js";
import { createAwsSecretReader } from "../../lib/aws-secrets.js";
import { loadConfig } from "../../lib/config.js";
import { silentLogger } from "../../lib/logger.js";
import { redact } from "../../lib/redact.js";
import { apiKeysReloader } from "../../lib/secrets.js";
import { httpEvent, usageEvent } from "../helpers/factories.js";
import { startFakeSecretStores } from "../helpers/fake-secret-stores.js";
import { startTestQueues, type TestQueues } from "../helpers/sqs.js";

const PARAMETER = "/meterhook/test/api-keys";
const ssm: Record<string, string> = {};
let stores: Awaited<ReturnType<typeof startFakeSecretStores>>;
let queues: TestQueues;
before(async () => {
  stores = await startFakeSecretStores({ ssm });
  queues = await startTestQueues();
});
after(async () => {
  await stores.stop();
  await queues.stop();
});

const reads = () => stores.calls.filter((c) => c.name === PARAMETER).length;
const env = (extra: Record<string, string> = {}) =>
  loadConfig({
    METERHOOK_API_KEYS_SSM_PARAMETER: PARAMETER,
    SSM_ENDPOINT: stores.url,
    METERHOOK_INGEST_QUEUE_URL: queues.ingestQueueUrl,
    SQS_ENDPOINT: queues.endpoint,
    ...extra,
  });

describe("the HTTP API's secrets kept in SSM are read again: rotation without a deploy", () => {
  test("a new key works once it is in the store; a removed one stops within the keys' maximum age", async () => {
    ssm[PARAMETER] = "mh_key_old_0001";
    let clock = 1_000_000;
    const warnings: unknown[] = [];
    const reload = apiKeysReloader(env(), createAwsSecretReader({ region: "us-east-1", ssmEndpoint: stores.url }));
    assert.ok(reload);
    const check = createReloadingApiKeyCheck(["mh_key_old_0001"], reload, {
      maxAgeMs: 300_000,
      now: () => clock,
      onReloadFailed: (err) => warnings.push(err),
    });
    const start = reads();
    ssm[PARAMETER] = "mh_key_old_0001,mh_key_new_0002";

    // Within 30 s of the last read, an unknown key reads nothing (guesses cannot flood the store).
    clock += 10_000;
    assert.equal(await check("Bearer mh_key_new_0002"), false);
    assert.equal(reads() - start, 0);
    // Later, it reads the store once, and the new key is taken.
    clock += 21_000;
    assert.equal(await check("Bearer mh_key_new_0002"), true);
    assert.equal(reads() - start, 1);
    assert.equal(redact("x mh_key_new_0002 y"), "x [REDACTED] y", "keys read again are redacted too");
    clock += 1_000;
    const guesses = await Promise.all(Array.from({ length: 20 }, (_, i) => check(`Bearer mh_guess_${i}`)));
    assert.ok(guesses.every((ok) => !ok));
    assert.equal(reads() - start, 1);

    // The old key removed: once the keys are older than their maximum age, it stops working.
    ssm[PARAMETER] = "mh_key_new_0002";
    assert.equal(await check("Bearer mh_key_old_0001"), true);
    clock += 300_000;
    assert.equal(await check("Bearer mh_key_old_0001"), false);
    assert.equal(reads() - start, 2);

    // A store that cannot be read keeps the keys read before.
    delete ssm[PARAMETER];
    clock += 300_000;
    assert.equal(await check("Bearer mh_key_new_0002"), true);
    assert.equal(warnings.length, 1);
    assert.match(String((warnings[0] as Error).message), /\/meterhook\/test\/api-keys/);
  });

  test("through the HTTP handler: a key removed from the store gets 401 after METERHOOK_SECRETS_MAX_AGE_SECONDS", async () => {
    ssm[PARAMETER] = "mh_http_key_a001,mh_http_key_b002";
    const api = await createIngestApiFromConfig(env({ METERHOOK_SECRETS_MAX_AGE_SECONDS: "1" }), {
      sqs: queues.sqs,
      logger: silentLogger,
    });
    const handler = createHttpHandler(async () => api);
    const post = async (key: string) =>
      (
        await handler(
          httpEvent({
            body: JSON.stringify(usageEvent()),
            headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          }),
        )
      ).statusCode;

    assert.equal(await post("mh_http_key_a001"), 202);
    ssm[PARAMETER] = "mh_http_key_b002";
    await new Promise((r) => setTimeout(r, 1_100));
    assert.equal(await post("mh_http_key_a001"), 401);
    assert.equal(await post("mh_http_key_b002"), 202);
  });

  test("a webhook secret changed in SSM is taken within METERHOOK_SECRETS_MAX_AGE_SECONDS", async () => {
    const secretParameter = "/meterhook/test/webhooks/github";
    ssm[secretParameter] = "gh-secret-before-0001";
    ssm[PARAMETER] = "mh_http_key_a001";
    const dir = mkdtempSync(join(tmpdir(), "meterhook-secrets-"));
    const config = join(dir, "meterhook.yaml");
    writeFileSync(
      config,
      `version: 1
sources:
  github:
    type: webhook
    auth:
      scheme: github
      secrets:
        - ssm: ${secretParameter}
    customer:
      lookup: table
      table:
        octo-org: cus_OctoOrg0001
    rules:
      - name: any
        when: "body.id != null"
        id: body.id
        customer: body.org
        emit:
          - event_name: ci_minutes
            value: "\`1\`"
`,
    );
    const api = await createIngestApiFromConfig(
      env({ METERHOOK_SECRETS_MAX_AGE_SECONDS: "1", METERHOOK_CONFIG: config }),
      { sqs: queues.sqs, logger: silentLogger },
    );
    const handler = createHttpHandler(async () => api);
    const deliver = async (secret: string) => {
      const body = JSON.stringify({ id: `delivery-${Math.random()}`, org: "octo-org" });
      const signature = `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
      const res = await handler(
        httpEvent({
          path: "/v1/webhooks/github",
          body,
          headers: { "content-type": "application/json", "x-hub-signature-256": signature },
        }),
      );
      return res.statusCode;
    };

    assert.equal(await deliver("gh-secret-before-0001"), 202);
    ssm[secretParameter] = "gh-secret-after-0002";
    await new Promise((r) => setTimeout(r, 1_100));
    assert.equal(await deliver("gh-secret-after-0002"), 202);
    assert.equal(await deliver("gh-secret-before-0001"), 401);
    assert.equal(redact("x gh-secret-after-0002 y"), "x [REDACTED] y");
  });
});
