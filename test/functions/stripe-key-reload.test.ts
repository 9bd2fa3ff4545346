import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createConsumerFromConfig } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import { processBatch } from "../../lib/consumer.js";
import { createLogger } from "../../lib/logger.js";
import { EMULATOR_DEFAULT_KEY } from "../../local/stripe-emulator/server.js";
import { queueMessage, usageEvent } from "../helpers/factories.js";
import { startFakeSecretStores } from "../helpers/fake-secret-stores.js";
import { consumerEnv, usePipelineParts } from "../helpers/pipeline.js";
import { drainDeadLetters } from "../helpers/sqs.js";

const parts = usePipelineParts();
const PARAMETER = "/meterhook/test/stripe-api-key";
const ROLLED_KEY = "sk_test_rolledKey0000000001";
const ssm: Record<string, string> = {};
let stores: Awaited<ReturnType<typeof startFakeSecretStores>>;
before(async () => {
  stores = await startFakeSecretStores({ ssm });
});
after(() => stores.stop());

/** Reads of the key's parameter so far. */
const keyReads = () => stores.calls.filter((c) => c.name === PARAMETER).length;

/** A consumer whose Stripe key is in SSM (as the stack deploys it), and its log lines. */
async function consumerWithKeyInSsm(api: "v1" | "v2") {
  Object.assign(ssm, { [PARAMETER]: EMULATOR_DEFAULT_KEY });
  parts.emulator.setApiKeys([EMULATOR_DEFAULT_KEY]);
  const { STRIPE_API_KEY: _inline, ...env } = consumerEnv(parts, {
    STRIPE_API_KEY_SSM_PARAMETER: PARAMETER,
    SSM_ENDPOINT: stores.url,
    METERHOOK_STRIPE_API: api,
  });
  const lines: string[] = [];
  const consumer = await createConsumerFromConfig(loadConfig(env), {
    sqs: parts.queues.sqs,
    logger: createLogger({ write: (line) => lines.push(line) }),
  });
  return { consumer, lines };
}

const batch = (n: number, customer: string) =>
  Array.from({ length: n }, () => queueMessage(usageEvent({ customer, value: 2 })));
const totalFor = (customer: string) =>
  parts.emulator.ledger.summaries().find((s) => s.customer === customer)?.aggregated_value ?? 0;
const refused = () => parts.emulator.requests.filter((r) => r.status === 401).length;

describe("a Stripe key rolled while the consumer is warm", () => {
  test("v1: the key is read again from SSM once, and every event is billed with the new one", async () => {
    const { consumer, lines } = await consumerWithKeyInSsm("v1");
    const readsAtStart = keyReads();
    const first = await processBatch(batch(3, "cus_KeyRollV1a"), Date.now() + 30_000, consumer.deps);
    assert.equal(first.billed, 3);

    // Rolled in Stripe (the old key has expired) and the new one put in the parameter.
    parts.emulator.setApiKeys([ROLLED_KEY]);
    ssm[PARAMETER] = ROLLED_KEY;
    const refusedBefore = refused();
    const second = await processBatch(batch(20, "cus_KeyRollV1b"), Date.now() + 30_000, consumer.deps);
    await consumer.close();

    assert.equal(second.billed, 20);
    assert.deepEqual(second.deadLettered, {});
    assert.equal(totalFor("cus_KeyRollV1b"), 40);
    // The 8 calls in flight when the key expired were refused; they waited for one read.
    assert.ok(refused() - refusedBefore <= 8, `${refused() - refusedBefore} refused`);
    assert.equal(keyReads() - readsAtStart, 1);
    assert.deepEqual(await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl), []);
    assert.ok(lines.some((l) => l.includes("its store holds a new one")));
    assert.ok(!lines.some((l) => l.includes(ROLLED_KEY) || l.includes(EMULATOR_DEFAULT_KEY)), "no key in the logs");
  });

  test("a key Stripe refuses that SSM still holds dead-letters as before, without reading SSM per event", async () => {
    const { consumer } = await consumerWithKeyInSsm("v1");
    const readsAtStart = keyReads();
    parts.emulator.setApiKeys(["sk_test_someOtherKey0000001"]);
    const first = await processBatch(batch(4, "cus_KeyWrong"), Date.now() + 30_000, consumer.deps);
    const second = await processBatch(batch(4, "cus_KeyWrong"), Date.now() + 30_000, consumer.deps);
    await consumer.close();

    assert.deepEqual(first.deadLettered, { stripe_unauthorized: 4 });
    assert.deepEqual(second.deadLettered, { stripe_unauthorized: 4 });
    // One read when Stripe first refused it; the second batch comes within the 30 s between reads.
    assert.equal(keyReads() - readsAtStart, 1);
    const letters = await drainDeadLetters(parts.queues.sqs, parts.queues.deadLetterQueueUrl);
    assert.equal(letters.length, 8);
    assert.ok(letters.every((l) => l.error.code === "stripe_unauthorized"));
    assert.ok(!JSON.stringify(letters).includes(EMULATOR_DEFAULT_KEY), "no key in the dead letters");
  });

  for (const endSessions of [false, true]) {
    test(`v2: a new session is made with the new key (sessions of the old key ${endSessions ? "ended" : "expire"})`, async () => {
      const { consumer } = await consumerWithKeyInSsm("v2");
      const readsAtStart = keyReads();
      const first = await processBatch(batch(3, "cus_KeyRollV2a"), Date.now() + 30_000, consumer.deps);
      assert.equal(first.billed, 3);

      parts.emulator.setApiKeys([ROLLED_KEY], { endSessions });
      ssm[PARAMETER] = ROLLED_KEY;
      // Kept sessions run out in time, and the next one is made with the secret key.
      if (!endSessions) parts.emulator.expireSessions();
      const cus = `cus_KeyRollV2${endSessions ? "e" : "x"}`;
      const second = await processBatch(batch(250, cus), Date.now() + 30_000, consumer.deps);
      await consumer.close();

      assert.equal(second.billed, 250);
      assert.deepEqual(second.deadLettered, {});
      assert.equal(totalFor(cus), 500);
      assert.equal(keyReads() - readsAtStart, 1);
    });
  }
});
