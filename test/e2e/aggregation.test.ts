import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { SQSClient } from "@aws-sdk/client-sqs";
import { type LocalRuntime, startLocalRuntime } from "../../local/runtime.js";
import { usageEvent } from "../helpers/factories.js";
import { queueDepth } from "../helpers/sqs.js";
import { waitFor } from "../helpers/wait.js";

// Pre-aggregation through the local runtime: fauxqs, the consumer, the Stripe emulator.

const runtimes: LocalRuntime[] = [];
after(async () => {
  for (const rt of runtimes) await rt.stop();
});

async function start(env: Record<string, string>) {
  const rt = await startLocalRuntime({
    env: { METERHOOK_LOG_LEVEL: "error", METERHOOK_AGGREGATE: JSON.stringify({ api_requests: "sum" }), ...env },
    visibilityTimeoutSeconds: 2,
  });
  runtimes.push(rt);
  const sqs = new SQSClient({
    endpoint: rt.sqsEndpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "a", secretAccessKey: "a" },
  });
  return { rt, sqs, emulator: rt.emulator as NonNullable<LocalRuntime["emulator"]> };
}

async function post(rt: LocalRuntime, events: Array<Record<string, unknown>>) {
  const res = await fetch(`${rt.gatewayUrl}/v1/events`, {
    method: "POST",
    headers: { authorization: `Bearer ${rt.apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({ events }),
  });
  assert.equal(res.status, 202);
}

/** 60 events over three customers, values 0.5 to 3, all in one minute. */
function workload(tag: string) {
  const customers = [`cus_${tag}A`, `cus_${tag}B`, `cus_${tag}C`];
  const ts = Math.floor(Date.now() / 60_000) * 60 - 60;
  const events = Array.from({ length: 60 }, (_, i) =>
    usageEvent({ customer: customers[i % 3], value: 0.5 * (1 + (i % 6)), timestamp: ts + (i % 50) }),
  );
  const expected = new Map(customers.map((c) => [c, 0]));
  for (const e of events)
    expected.set(e.customer as string, (expected.get(e.customer as string) ?? 0) + (e.value as number));
  return { events, expected };
}

function totals(emulator: NonNullable<LocalRuntime["emulator"]>, customers: Iterable<string>) {
  const all = emulator.ledger.summaries();
  return new Map([...customers].map((c) => [c, all.find((s) => s.customer === c)?.aggregated_value ?? 0]));
}

describe("pre-aggregation (METERHOOK_AGGREGATE)", () => {
  for (const api of ["v1", "v2"] as const) {
    test(`${api}: a customer's events in a batch become one meter event; totals are exact`, async () => {
      const { rt, sqs, emulator } = await start({ METERHOOK_STRIPE_API: api });
      const { events, expected } = workload(api);
      await post(rt, events);
      await waitFor(
        async () => {
          const t = totals(emulator, expected.keys());
          return [...expected].every(([c, v]) => t.get(c) === v) || undefined;
        },
        "the totals to reach the sums",
        30_000,
      );
      assert.equal(await queueDepth(sqs, rt.ingestQueueUrl), 0);
      assert.equal(await queueDepth(sqs, rt.deadLetterQueueUrl), 0);
      const recorded = emulator.ledger.events.filter((e) => expected.has(e.payload.stripe_customer_id ?? ""));
      // The local poller hands over at most 10 messages at a time: at most 3 combined events per batch.
      assert.ok(recorded.length < events.length / 2, `${recorded.length} meter events for ${events.length}`);
      assert.equal(new Set(recorded.map((e) => e.identifier)).size, recorded.length);
      sqs.destroy();
    });
  }
});
