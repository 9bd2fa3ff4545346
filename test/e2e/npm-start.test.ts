import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, test } from "node:test";
import { SQSClient } from "@aws-sdk/client-sqs";
import { STRIPE_SIGNATURE } from "../../lib/stripe/event-notifications.js";
import { verifySignature } from "../../lib/webhooks/signatures.js";
import { EMULATOR_DEFAULT_KEY, StripeEmulator } from "../../local/stripe-emulator/server.js";
import { drainDeadLetters } from "../helpers/sqs.js";
import { waitFor } from "../helpers/wait.js";

const children: ChildProcess[] = [];
after(() => {
  for (const child of children) {
    try {
      if (child.pid) process.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
});

/** `npm start` on free ports (so the test runs beside a developer's own), once its banner is out. */
async function npmStart(extra: Record<string, string> = {}) {
  const child = spawn("npm", ["start", "--silent"], {
    env: { ...process.env, PORT: "0", SQS_PORT: "0", STRIPE_EMULATOR_PORT: "0", METERHOOK_API_KEYS: "", ...extra },
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    out += d;
  });
  const exited = new Promise<string>((resolve) => child.on("exit", (code, signal) => resolve(String(code ?? signal))));
  await waitFor(() => out.includes("Ctrl-C to stop."), `the start-up banner; got:\n${out}`, 30_000);
  const curl =
    /curl -sS -X POST (\S+) -H 'Authorization: Bearer (\S+)' -H 'Content-Type: application\/json' -d '(.+)'/.exec(out);
  const summaries = /curl -sS (\S+\/v1\/billing\/meters\/summaries)/.exec(out);
  // The "see it billed" line comes only with the embedded emulator (no STRIPE_API_BASE).
  assert.ok(curl && (summaries || extra.STRIPE_API_BASE), `banner without the sample commands:\n${out}`);
  const [, url, key, body] = curl as unknown as [string, string, string, string];
  const post = (event: unknown, path = url) =>
    fetch(path, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: typeof event === "string" ? event : JSON.stringify(event),
    });
  const billed = (sample: { customer: string; value: number }) =>
    waitFor(async () => {
      const data = (await (await fetch(summaries?.[1] as string)).json()) as {
        data: Array<{ customer: string; event_name: string; aggregated_value: number }>;
      };
      return data.data.find((s) => s.customer === sample.customer && s.aggregated_value === sample.value);
    }, "the sample to be billed");
  return { child, out: () => out, exited, url, body, post, billed };
}

test("`npm start` serves the sample event it prints, end to end, and stops cleanly on Ctrl-C", async () => {
  const rt = await npmStart();
  const res = await rt.post(rt.body);
  assert.equal(res.status, 202);
  const sample = JSON.parse(rt.body);
  assert.equal((await rt.billed(sample)).event_name, sample.event_name);
  // README's cancellation of the sample, to the route beside the one the banner prints.
  const cancel = await rt.post({ id: sample.id, event_name: sample.event_name }, `${rt.url}/cancel`);
  assert.equal(cancel.status, 202);
  await rt.billed({ ...sample, value: 0 });

  // Ctrl-C signals the whole foreground process group: npm and meterhook under it.
  process.kill(-(rt.child.pid as number), "SIGINT");
  assert.match(await rt.exited, /^(0|SIGINT)$/);
  await waitFor(() => /\nstopped/.test(rt.out()) || undefined, `meterhook to report it stopped; got:\n${rt.out()}`);
});

/**
 * The addresses sockets listen on at `port`, as the kernel lists them (Linux's /proc/net/tcp and
 * tcp6): "127.0.0.1", "::1", or "0.0.0.0" / "::" for every interface. Read, not probed, so that
 * the test sends nothing beyond loopback.
 */
function listeningAddresses(port: number): string[] {
  const out: string[] = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    if (!existsSync(file)) continue;
    for (const line of readFileSync(file, "utf8").split("\n").slice(1)) {
      const [, local, , state] = line.trim().split(/\s+/);
      if (state !== "0A" || !local) continue; // 0A: LISTEN
      const [ip, hexPort] = local.split(":") as [string, string];
      if (Number.parseInt(hexPort, 16) !== port) continue;
      if (ip === "0100007F") out.push("127.0.0.1");
      else if (ip === "00000000") out.push("0.0.0.0");
      else if (ip === "00000000000000000000000001000000") out.push("::1");
      else if (/^0+$/.test(ip)) out.push("::");
      else out.push(ip);
    }
  }
  return out;
}

test("every server `npm start` runs listens on loopback only", {
  skip: !existsSync("/proc/net/tcp") && "needs Linux's /proc/net/tcp",
}, async () => {
  const rt = await npmStart();
  const ports = [
    /API gateway +http:\/\/127\.0\.0\.1:(\d+)/,
    /SQS \(fauxqs\) +http:\/\/127\.0\.0\.1:(\d+)/,
    /Stripe emulator +http:\/\/127\.0\.0\.1:(\d+)/,
  ].map((re) => Number(re.exec(rt.out())?.[1]));
  for (const port of ports) {
    assert.ok(port > 0, `the banner names each server's port:\n${rt.out()}`);
    assert.deepEqual(listeningAddresses(port), ["127.0.0.1"], `port ${port}`);
  }
});

test("with STRIPE_API_BASE set, `npm start` starts no Stripe emulator and bills the Stripe it names", async () => {
  const stripe = new StripeEmulator();
  const base = await stripe.start(0);
  try {
    const rt = await npmStart({
      STRIPE_API_BASE: base,
      STRIPE_METER_EVENTS_BASE: base,
      STRIPE_API_KEY: EMULATOR_DEFAULT_KEY,
    });
    assert.match(rt.out(), new RegExp(`\\n  Stripe {10}${base}\\n`));
    assert.doesNotMatch(rt.out(), /Stripe emulator/);
    assert.equal((await rt.post(rt.body)).status, 202);
    const sample = JSON.parse(rt.body);
    await waitFor(
      () =>
        stripe.ledger.summaries().find((s) => s.customer === sample.customer && s.aggregated_value === sample.value),
      "the sample to be billed at the named Stripe",
    );
  } finally {
    await stripe.stop();
  }
});

test("with STRIPE_EMULATOR_METERS and METERHOOK_METER_CHECK=on, an event for another meter is dead-lettered meter_not_found", async () => {
  const rt = await npmStart({ STRIPE_EMULATOR_METERS: "api_requests", METERHOOK_METER_CHECK: "on" });
  assert.match(rt.out(), /meters {8}api_requests \(STRIPE_EMULATOR_METERS\)/);
  const sample = JSON.parse(rt.body);
  const typo = { ...sample, id: "req_typo", event_name: "api_request" };
  assert.equal((await rt.post({ events: [sample, typo] })).status, 202);
  await rt.billed(sample);

  const endpoint = /SQS \(fauxqs\) +(\S+)/.exec(rt.out())?.[1] as string;
  const dlq = /dead letters +(\S+)/.exec(rt.out())?.[1] as string;
  const sqs = new SQSClient({ endpoint, region: "us-east-1", credentials: { accessKeyId: "l", secretAccessKey: "l" } });
  try {
    const letter = await waitFor(async () => (await drainDeadLetters(sqs, dlq))[0], "the typo's dead letter");
    assert.equal(letter.error.code, "meter_not_found");
    // The event as the HTTP API queued it: with the time it was received.
    assert.deepEqual({ ...(letter.event as object), timestamp: undefined }, { ...typo, timestamp: undefined });
  } finally {
    sqs.destroy();
    process.kill(-(rt.child.pid as number), "SIGINT");
    await rt.exited;
  }
});

test("with STRIPE_EMULATOR_CUSTOMERS and METERHOOK_CUSTOMER_CHECK=on, an event for another customer is dead-lettered customer_not_in_stripe", async () => {
  const sample = { customer: "cus_NciAYcXfLnqBoz" };
  const rt = await npmStart({ STRIPE_EMULATOR_CUSTOMERS: sample.customer, METERHOOK_CUSTOMER_CHECK: "on" });
  assert.match(rt.out(), /customers {5}cus_NciAYcXfLnqBoz \(STRIPE_EMULATOR_CUSTOMERS\)/);
  const event = JSON.parse(rt.body);
  assert.equal(event.customer, sample.customer);
  const stranger = { ...event, id: "req_stranger", customer: "cus_NotAtThisStripe" };
  assert.equal((await rt.post({ events: [event, stranger] })).status, 202);
  await rt.billed(event);

  const endpoint = /SQS \(fauxqs\) +(\S+)/.exec(rt.out())?.[1] as string;
  const dlq = /dead letters +(\S+)/.exec(rt.out())?.[1] as string;
  const sqs = new SQSClient({ endpoint, region: "us-east-1", credentials: { accessKeyId: "l", secretAccessKey: "l" } });
  try {
    const letter = await waitFor(async () => (await drainDeadLetters(sqs, dlq))[0], "the stranger's dead letter");
    assert.equal(letter.error.code, "customer_not_in_stripe");
    assert.match(letter.error.message, /Stripe has no customer cus_NotAtThisStripe/);
  } finally {
    sqs.destroy();
    process.kill(-(rt.child.pid as number), "SIGINT");
    await rt.exited;
  }
});

test("with STRIPE_EMULATOR_EVENT_DESTINATION, an event Stripe accepts and then refuses is pushed there as a signed thin notification", async () => {
  const pushed: Array<{ body: Buffer; signature: string }> = [];
  const receiver = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    pushed.push({ body: Buffer.concat(chunks), signature: String(req.headers["stripe-signature"]) });
    res.writeHead(200).end();
  });
  await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
  const destination = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/stripe/events`;
  const rt = await npmStart({
    STRIPE_EMULATOR_CUSTOMERS: "cus_NciAYcXfLnqBoz",
    STRIPE_EMULATOR_EVENT_DESTINATION: destination,
  });
  try {
    assert.match(rt.out(), new RegExp(`error reports pushed to ${destination}, signed with whsec_meterhook_local`));
    const stranger = { ...JSON.parse(rt.body), id: "req_pushed", customer: "cus_NotAtThisStripe" };
    assert.equal((await rt.post(stranger)).status, 202);
    const [first] = await waitFor(() => (pushed.length > 0 ? pushed : undefined), "the report's notification");
    const note = JSON.parse(first?.body.toString() ?? "{}");
    assert.equal(note.type, "v1.billing.meter.error_report_triggered");
    assert.equal(note.data, undefined, "thin: no data");
    const check = verifySignature(
      STRIPE_SIGNATURE,
      ["whsec_meterhook_local"],
      { "stripe-signature": first?.signature },
      first?.body ?? Buffer.alloc(0),
      Math.floor(Date.now() / 1000),
    );
    assert.ok(check.ok);
    // Fetched by its id, the event holds the refusal, naming the identifier meterhook sent.
    const events = /Stripe emulator (\S+)/.exec(rt.out())?.[1] as string;
    const full = (await (
      await fetch(`${events}/v2/core/events/${note.id}`, {
        headers: { authorization: `Bearer ${EMULATOR_DEFAULT_KEY}` },
      })
    ).json()) as { data: { reason: { error_types: Array<{ code: string }> } } };
    assert.equal(full.data.reason.error_types[0]?.code, "meter_event_customer_not_found");
  } finally {
    process.kill(-(rt.child.pid as number), "SIGINT");
    await rt.exited;
    receiver.close();
  }
});
