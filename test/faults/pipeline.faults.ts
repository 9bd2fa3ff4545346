/**
 * Fault-injection end to end: the whole pipeline (HTTP entry, ingest queue on fauxqs, consumer,
 * Stripe client) against a Stripe emulator that misbehaves on a seeded schedule, then a ledger
 * check that every event sent is billed exactly once, or dead-lettered with the right code, or
 * rejected at the HTTP entry, and never two of these; and that every cancellation an app sends
 * is made at Stripe or dead-lettered, never lost.
 *
 *   npm run test:faults                      5 seeds x 10,000 events (CI)
 *   FAULT_SEEDS=7 npm run test:faults        replay one seed
 *   npm run soak                             more seeds, more events (scripts/soak.sh)
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, test } from "node:test";
import { SendMessageBatchCommand, SQSClient } from "@aws-sdk/client-sqs";
import { meterEventIdentifier } from "../../lib/meter-event.js";
import { type LocalRuntime, startLocalRuntime } from "../../local/runtime.js";
import type { Fault, FaultContext } from "../../local/stripe-emulator/server.js";
import { drain, queueDepth } from "../helpers/sqs.js";
import { waitFor } from "../helpers/wait.js";

const SEEDS = (process.env.FAULT_SEEDS ?? "1,2,3,4,5").split(",").map(Number);
const EVENTS = Number(process.env.FAULT_EVENTS ?? 10_000);
const FAULT_RATE = Number(process.env.FAULT_RATE ?? 0.2);

/** mulberry32: a small seeded PRNG, so a failing seed replays exactly. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Expect = { kind: "billed" } | { kind: "dlq"; code: string } | { kind: "http"; code: string };
interface Planned {
  id: string;
  expect: Expect;
  via: "http" | "sqs" | "sqs-raw";
  body: unknown;
}

const DAY = 86_400;
const TRANSIENT: Array<[string, (r: () => number) => Fault]> = [
  ["500", () => ({ path: "", respond: { status: 500 } })],
  ["502", () => ({ path: "", respond: { status: 502 } })],
  ["503", () => ({ path: "", respond: { status: 503 } })],
  [
    "429 Retry-After",
    (r) => ({ path: "", respond: { status: 429, headers: { "retry-after": r() < 0.5 ? "0" : "1" } } }),
  ],
  ["429", () => ({ path: "", respond: { status: 429 } })],
  [
    "409 too_many_concurrent_requests",
    () => ({
      path: "",
      respond: { status: 409, body: { error: { code: "too_many_concurrent_requests", message: "busy" } } },
    }),
  ],
  [
    "Stripe-Should-Retry: true",
    () => ({ path: "", respond: { status: 400, headers: { "stripe-should-retry": "true" } } }),
  ],
  ["accept then drop", () => ({ path: "", action: "accept-then-drop" })],
  ["accept then an answer that is not HTTP", () => ({ path: "", action: "accept-then-garble" })],
  ["stall past timeout", () => ({ path: "", delayMs: 700 })],
  ["connection reset", () => ({ path: "", action: "reset" })],
  ["session expired", () => ({ path: "", action: "expire-session" })],
];

function plan(seed: number, n: number): Planned[] {
  const r = prng(seed);
  const now = Math.floor(Date.now() / 1000);
  const out: Planned[] = [];
  const valid: Planned[] = [];
  for (let i = 0; out.length < n; i++) {
    const id = `s${seed}-e${i}`;
    const x = r();
    const base = {
      id,
      event_name: r() < 0.7 ? "api_requests" : "tokens",
      customer: r() < 0.7 ? `cus_f${Math.floor(r() * 40)}` : "acct_known",
      value: r() < 0.8 ? 1 + Math.floor(r() * 100) : Math.round(r() * 1000) / 100,
      // Out of order: anywhere in the last 20 days.
      timestamp: now - Math.floor(r() * 20 * DAY),
      properties: { src: id },
    };
    if (x < 0.76) {
      const p: Planned = { id, expect: { kind: "billed" }, via: "http", body: base };
      out.push(p);
      valid.push(p);
    } else if (x < 0.78) {
      // An event_name Stripe has no meter for: the meter check dead-letters it, never sent.
      out.push({
        id,
        expect: { kind: "dlq", code: "meter_not_found" },
        via: "http",
        body: { ...base, event_name: "unmetered" },
      });
    } else if (x < 0.83) {
      out.push({
        id,
        expect: { kind: "dlq", code: "customer_not_found" },
        via: "http",
        body: { ...base, customer: `acct_missing${i % 7}` },
      });
    } else if (x < 0.88) {
      const bad: Array<[Record<string, unknown>, string]> = [
        [{ ...base, value: 0.1 + 0.2 }, "invalid_value"],
        [{ ...base, timestamp: now + 3600 }, "timestamp_out_of_range"],
        [{ ...base, timestamp: now - 40 * DAY }, "timestamp_out_of_range"],
        [{ ...base, event_name: undefined }, "invalid_event"],
        [{ ...base, valeu: 3 }, "invalid_event"],
      ];
      const [body, code] = bad[Math.floor(r() * bad.length)] as [Record<string, unknown>, string];
      out.push({ id, expect: { kind: "http", code }, via: "http", body });
    } else if (x < 0.93) {
      const y = r();
      if (y < 0.5) {
        const p: Planned = { id, expect: { kind: "billed" }, via: "sqs", body: base };
        out.push(p);
        valid.push(p);
      } else if (y < 0.75)
        out.push({ id, expect: { kind: "dlq", code: "invalid_message" }, via: "sqs-raw", body: `{"not json": ${id}` });
      else
        out.push({
          id,
          expect: { kind: "dlq", code: "invalid_event" },
          via: "sqs",
          body: { ...base, event_name: "x".repeat(101) },
        });
    } else if (valid.length > 0) {
      // The app sends an event again (a retry on its side): same id, same payload.
      const again = valid[Math.floor(r() * valid.length)] as Planned;
      out.push({ ...again, via: r() < 0.8 ? "http" : "sqs" });
    }
  }
  return out;
}

interface Ledger {
  seed: number;
  sent: number;
  uniqueIds: number;
  billed: number;
  /** Distinct ids with exactly one kind of outcome. */
  accounted: number;
  /** Extra copies of dead letters (at-least-once delivery). */
  dlqCopies: number;
  dlq: Record<string, number>;
  /** Cancellations sent, made at Stripe, and dead-lettered (distinct ids). */
  cancels: number;
  cancelled: number;
  cancelsDeadLettered: number;
  /** Cancellation requests Stripe refused: most were sent before their event, and were retried. */
  cancelsRefused: number;
  http: Record<string, number>;
  faults: Record<string, number>;
  stripeRequests: number;
  /** The customer check's reads (GET /v1/customers/{id}), faulted like the rest. */
  customerReads: number;
  seconds: number;
}

const runtimes: LocalRuntime[] = [];
after(async () => {
  for (const rt of runtimes) await rt.stop();
});

async function run(seed: number, api: "v1" | "v2", packed: boolean): Promise<Ledger> {
  const started = Date.now();
  const r = prng(seed * 7919);
  let dlqDownUntil = 0;
  // About one valid event in 400 is one Stripe refuses for good.
  const poisoned = (identifier: string) =>
    createHash("sha256").update(`${seed}:${identifier}`).digest()[0] === 7 && identifier.charCodeAt(5) % 2 === 0;
  const faults: Record<string, number> = {};
  const rt = await startLocalRuntime({
    env: {
      METERHOOK_LOG_LEVEL: process.env.FAULT_LOG_LEVEL ?? "error",
      METERHOOK_STRIPE_API: api,
      METERHOOK_CUSTOMERS: JSON.stringify({ acct_known: "cus_known" }),
      METERHOOK_MAX_ATTEMPTS: "100",
      STRIPE_TIMEOUT_MS: "400",
      STRIPE_MAX_ATTEMPTS: "3",
      STRIPE_CONCURRENCY: "8",
      METERHOOK_STOP_MARGIN_MS: "500",
      // Packed: the HTTP API writes up to 100 events per ingest-queue message.
      METERHOOK_EVENTS_PER_MESSAGE: packed ? "100" : "1",
      // As the stack runs: events checked against Stripe's meters, under faults too.
      METERHOOK_METER_CHECK: "on",
      // And each customer read from Stripe first, its reads under the same faults: a failed read
      // must never keep a valid event from being billed once.
      METERHOOK_CUSTOMER_CHECK: "on",
      // A cancellation may be sent before its event: it waits for it as long as a fault may.
      METERHOOK_CANCEL_ATTEMPTS: "100",
    },
    // Stripe's meters, no more: "tokens" reads its own payload keys, which the check sends.
    emulator: {
      meters: [{ event_name: "api_requests" }, { event_name: "tokens", customerKey: "account", valueKey: "units" }],
    },
    // Short Lambda timeout so stalls make invocations run out of time mid-batch; visibility
    // well above it, as in production; the redrive backstop far above METERHOOK_MAX_ATTEMPTS.
    functionTimeoutMs: 2_500,
    visibilityTimeoutSeconds: 4,
    maxReceiveCount: 1000,
    pollers: api === "v1" ? 5 : 3,
    // Now and then a processed message is not deleted: SQS delivers it again.
    skipDelete: () => r() < 0.02,
    // For two seconds, every write to the DLQ fails (the SDK call throws).
    sqsFault: ({ command, queueUrl }) => {
      if (Date.now() >= dlqDownUntil || command !== "SendMessageBatchCommand" || !queueUrl?.endsWith("/meterhook-dlq"))
        return undefined;
      faults["DLQ write failed"] = (faults["DLQ write failed"] ?? 0) + 1;
      return Object.assign(new Error("DLQ unavailable (injected)"), { name: "ServiceUnavailable" });
    },
  });
  runtimes.push(rt);
  const emulator = rt.emulator;
  assert.ok(emulator);
  emulator.setFaultPolicy((req: FaultContext) => {
    // Faults on meter events, on listing the meters (the meter check's reads) and on reading
    // customers (the customer check's).
    const checkRead = req.path === "/v1/billing/meters" || req.path.startsWith("/v1/customers/");
    if (!req.path.includes("meter_event") && !checkRead) return undefined;
    // A permanent refusal is about content: every request carrying a poisoned event is refused,
    // as long as Stripe does not have it (a real Stripe answers "already exists" then).
    if (req.identifiers.some((i) => poisoned(i) && !req.isRecorded(i))) {
      faults["Stripe-Should-Retry: false"] = (faults["Stripe-Should-Retry: false"] ?? 0) + 1;
      return { path: req.path, respond: { status: 500, headers: { "stripe-should-retry": "false" } } };
    }
    if (r() >= FAULT_RATE) return undefined;
    const [name, make] = TRANSIENT[Math.floor(r() * TRANSIENT.length)] as (typeof TRANSIENT)[number];
    faults[name] = (faults[name] ?? 0) + 1;
    return { ...make(r), path: req.path };
  });

  const planned = plan(seed, EVENTS);
  // About one event in 30 that Stripe will bill is cancelled by the app, at a random moment of
  // the sending: often before its event is queued, so the cancellation overtakes it.
  const cancelIds = [
    ...new Set(
      planned
        .filter((p) => p.expect.kind === "billed")
        .filter((p) => !poisoned(meterEventIdentifier(p.id, (p.body as { event_name: string }).event_name)))
        .map((p) => p.id),
    ),
  ].filter(() => r() < 1 / 30);
  const eventNameOf = new Map(planned.map((p) => [p.id, (p.body as { event_name?: string }).event_name ?? ""]));
  const sqs = new SQSClient({
    endpoint: rt.sqsEndpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "f", secretAccessKey: "f" },
  });
  const httpRejected = new Map<string, string>();

  // Send: HTTP requests of up to 100 events (some single), SQS batches of 10; 4 at a time.
  const httpItems = planned.filter((p) => p.via === "http");
  const sqsItems = planned.filter((p) => p.via !== "http");
  const httpChunks: Planned[][] = [];
  for (let i = 0; i < httpItems.length; ) {
    const size = r() < 0.1 ? 1 : 100;
    httpChunks.push(httpItems.slice(i, i + size));
    i += size;
  }
  const sendHttp = async (chunk: Planned[]) => {
    const body = chunk.length === 1 ? chunk[0]?.body : { events: chunk.map((p) => p.body) };
    for (let attempt = 0; ; attempt++) {
      const res = await fetch(`${rt.gatewayUrl}/v1/events`, {
        method: "POST",
        headers: { authorization: `Bearer ${rt.apiKey}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      const json = (await res.json()) as {
        rejected?: Array<{ index: number; code: string }>;
        error?: { code: string };
      };
      if (res.status === 503 && attempt < 5) continue; // the documented client behaviour: resend
      if (chunk.length === 1 && res.status === 400) httpRejected.set(chunk[0]?.id as string, json.error?.code ?? "?");
      for (const rej of json.rejected ?? []) httpRejected.set(chunk[rej.index]?.id as string, rej.code);
      return;
    }
  };
  const sendCancels = async (ids: string[]) => {
    const body = { events: ids.map((id) => ({ id, event_name: eventNameOf.get(id) })) };
    for (let attempt = 0; ; attempt++) {
      const res = await fetch(`${rt.gatewayUrl}/v1/events/cancel`, {
        method: "POST",
        headers: { authorization: `Bearer ${rt.apiKey}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      await res.arrayBuffer();
      if (res.status === 503 && attempt < 5) continue;
      assert.equal(res.status, 202, `cancellations answered ${res.status}`);
      return;
    }
  };
  const sendSqs = async (chunk: Planned[]) => {
    await sqs.send(
      new SendMessageBatchCommand({
        QueueUrl: rt.ingestQueueUrl,
        Entries: chunk.map((p, i) => ({
          Id: String(i),
          MessageBody: typeof p.body === "string" ? p.body : JSON.stringify(p.body),
        })),
      }),
    );
  };
  const jobs: Array<() => Promise<void>> = [
    ...httpChunks.map((c) => () => sendHttp(c)),
    ...Array.from(
      { length: Math.ceil(sqsItems.length / 10) },
      (_, i) => () => sendSqs(sqsItems.slice(i * 10, i * 10 + 10)),
    ),
  ];
  for (let i = 0; i < cancelIds.length; i += 10) {
    const ids = cancelIds.slice(i, i + 10);
    jobs.splice(Math.floor(r() * (jobs.length + 1)), 0, () => sendCancels(ids));
  }
  let next = 0;
  let dlqOutage = false;
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (next < jobs.length) {
        const job = jobs[next++] as () => Promise<void>;
        // Once, a third of the way in, the DLQ goes away for two seconds: its sends fail.
        if (!dlqOutage && next > jobs.length / 3) {
          dlqOutage = true;
          dlqDownUntil = Date.now() + 2_000;
          faults["DLQ unavailable for 2 s"] = 1;
        }
        await job();
      }
    }),
  );

  // Done when the ingest queue is empty twice in a row (nothing visible, nothing in flight).
  let empty = 0;
  await waitFor(
    async () => {
      empty = (await queueDepth(sqs, rt.ingestQueueUrl)) === 0 ? empty + 1 : 0;
      return empty >= 2 || undefined;
    },
    "the ingest queue to drain",
    15 * 60_000,
  );
  emulator.setFaultPolicy(undefined);

  // The ledger.
  const billedBySrc = new Map<string, number>();
  const billedByIdentifier = new Map<string, number>();
  for (const e of emulator.ledger.events) {
    const src = e.payload.src as string;
    billedBySrc.set(src, (billedBySrc.get(src) ?? 0) + 1);
    billedByIdentifier.set(e.identifier, (billedByIdentifier.get(e.identifier) ?? 0) + 1);
  }
  const dead = new Map<string, string[]>();
  const cancelLetters = new Map<string, string[]>();
  for (const m of await drain(sqs, rt.deadLetterQueueUrl)) {
    const body = JSON.parse(m.body) as { event?: unknown; error?: { code: string; message: string } };
    const event = body.event;
    const cancel = event as { meterhook?: string; id?: string } | undefined;
    if (cancel?.meterhook === "cancel/1") {
      const id = cancel.id ?? "?";
      cancelLetters.set(id, [...(cancelLetters.get(id) ?? []), `${body.error?.code}: ${body.error?.message}`]);
      continue;
    }
    const id = typeof event === "string" ? /s\d+-e\d+/.exec(event)?.[0] : (event as { id?: string } | undefined)?.id;
    const code = body.error?.code ?? "redriven (no envelope)";
    dead.set(id ?? "?", [...(dead.get(id ?? "?") ?? []), code]);
  }
  sqs.destroy();

  const byId = new Map<string, Expect>();
  for (const p of planned) {
    const body = p.body as { event_name?: string };
    const refused = p.expect.kind === "billed" && poisoned(meterEventIdentifier(p.id, body.event_name ?? ""));
    byId.set(p.id, refused ? { kind: "dlq", code: "stripe_rejected" } : p.expect);
  }
  const problems: string[] = [];
  for (const [id, expect] of byId) {
    const billed = billedBySrc.get(id) ?? 0;
    const letters = dead.get(id) ?? [];
    const rejected = httpRejected.get(id);
    const outcomes = (billed > 0 ? 1 : 0) + (letters.length > 0 ? 1 : 0) + (rejected ? 1 : 0);
    if (billed > 1) problems.push(`${id} billed ${billed} times`);
    // SQS delivers at least once, so a dead letter may be written twice (a message whose
    // delete failed is delivered again); every copy must carry the same reason.
    if (new Set(letters).size > 1) problems.push(`${id} dead-lettered with different codes: ${letters.join(", ")}`);
    if (outcomes !== 1)
      problems.push(
        `${id}: billed ${billed}, dead-lettered ${letters.join("+") || "no"}, rejected ${rejected ?? "no"}`,
      );
    if (expect.kind === "billed" && billed !== 1) problems.push(`${id} should be billed`);
    if (expect.kind === "dlq" && letters[0] !== expect.code)
      problems.push(`${id} should be dead-lettered ${expect.code}, got ${letters[0]}`);
    if (expect.kind === "http" && rejected !== expect.code)
      problems.push(`${id} should be rejected ${expect.code}, got ${rejected}`);
  }
  for (const [identifier, count] of billedByIdentifier)
    if (count > 1) problems.push(`identifier ${identifier} counted ${count} times`);
  for (const id of dead.keys()) if (!byId.has(id)) problems.push(`unknown dead letter ${id}`);
  // Each cancellation: cancelled at Stripe, or dead-lettered cancel_rejected; never neither, never both.
  const cancelSet = new Set(cancelIds);
  const named = new Set(cancelIds.map((id) => meterEventIdentifier(id, eventNameOf.get(id) ?? "")));
  let cancelled = 0;
  for (const id of cancelIds) {
    const identifier = meterEventIdentifier(id, eventNameOf.get(id) ?? "");
    const done = emulator.ledger.cancelled.has(identifier);
    const letters = cancelLetters.get(id) ?? [];
    if (done) cancelled++;
    if (done === letters.length > 0)
      problems.push(
        `cancellation of ${id}: ${done ? "cancelled and" : "neither cancelled nor"} dead-lettered ${letters.join(" | ")}`,
      );
    if (letters.some((l) => !l.startsWith("cancel_rejected: ")))
      problems.push(`cancellation of ${id} dead-lettered ${letters.join(" | ")}`);
  }
  for (const identifier of emulator.ledger.cancelled)
    if (!named.has(identifier)) problems.push(`identifier ${identifier} cancelled, but no cancellation named it`);
  for (const id of cancelLetters.keys()) if (!cancelSet.has(id)) problems.push(`unknown cancellation letter ${id}`);
  assert.deepEqual(problems.slice(0, 20), [], `seed ${seed}: ${problems.length} ledger problems`);

  const count = (m: Map<string, string>) => {
    const out: Record<string, number> = {};
    for (const v of m.values()) out[v] = (out[v] ?? 0) + 1;
    return out;
  };
  // Distinct ids per code (copies of a dead letter count once).
  const dlqCodes: Record<string, number> = {};
  for (const codes of dead.values()) {
    const c = codes[0] as string;
    dlqCodes[c] = (dlqCodes[c] ?? 0) + 1;
  }
  return {
    seed,
    sent: planned.length,
    uniqueIds: byId.size,
    billed: billedBySrc.size,
    dlqCopies: [...dead.values()].reduce((n, codes) => n + codes.length - 1, 0),
    accounted: [...byId.keys()].filter(
      (id) => (billedBySrc.has(id) ? 1 : 0) + (dead.has(id) ? 1 : 0) + (httpRejected.has(id) ? 1 : 0) === 1,
    ).length,
    dlq: dlqCodes,
    cancels: cancelIds.length,
    cancelled,
    cancelsDeadLettered: cancelLetters.size,
    cancelsRefused: emulator.requests.filter(
      (q) => q.path === "/v1/billing/meter_event_adjustments" && q.status === 400,
    ).length,
    http: count(httpRejected),
    faults,
    stripeRequests: emulator.requests.filter((q) => q.path.includes("meter_event")).length,
    customerReads: emulator.requests.filter((q) => q.path.startsWith("/v1/customers/")).length,
    seconds: Math.round((Date.now() - started) / 100) / 10,
  };
}

function table(ledgers: Ledger[]): string {
  const keys = (pick: (l: Ledger) => Record<string, number>) =>
    [...new Set(ledgers.flatMap((l) => Object.keys(pick(l))))].sort();
  const rows: Array<[string, (l: Ledger) => number | string]> = [
    ["events sent (with resends)", (l) => l.sent],
    ["distinct event ids", (l) => l.uniqueIds],
    ["billed (distinct ids, each once)", (l) => l.billed],
    ...keys((l) => l.dlq).map((k): [string, (l: Ledger) => number] => [`dead-lettered: ${k}`, (l) => l.dlq[k] ?? 0]),
    ...keys((l) => l.http).map((k): [string, (l: Ledger) => number] => [
      `rejected at HTTP: ${k}`,
      (l) => l.http[k] ?? 0,
    ]),
    ["ids with exactly one outcome (billed, dead-lettered or rejected)", (l) => l.accounted],
    ["cancellations sent (for billed events)", (l) => l.cancels],
    ["cancelled at Stripe", (l) => l.cancelled],
    ["cancellations dead-lettered cancel_rejected", (l) => l.cancelsDeadLettered],
    [
      "cancel requests Stripe refused (sent before their event, or again after it was cancelled)",
      (l) => l.cancelsRefused,
    ],
    ["dead-letter copies (a message delivered again after its letter was written)", (l) => l.dlqCopies],
    ["Stripe meter requests", (l) => l.stripeRequests],
    ["customer reads (the customer check)", (l) => l.customerReads],
    ...keys((l) => l.faults).map((k): [string, (l: Ledger) => number] => [`fault: ${k}`, (l) => l.faults[k] ?? 0]),
    ["seconds", (l) => l.seconds],
  ];
  const head = `| ledger | ${ledgers.map((l) => `seed ${l.seed}`).join(" | ")} |`;
  const sep = `|---|${ledgers.map(() => "---:").join("|")}|`;
  return [head, sep, ...rows.map(([name, f]) => `| ${name} | ${ledgers.map(f).join(" | ")} |`)].join("\n");
}

const ledgers: Ledger[] = [];
for (const seed of SEEDS) {
  // Odd seeds on the v2 stream (the default), even seeds on v1. Seeds 3-99 (CI's 3-5) have the
  // HTTP API pack events (METERHOOK_EVENTS_PER_MESSAGE=100), so both APIs run both ways; from
  // 100 on (the soak) pairs of seeds alternate, 100-101 packed, 102-103 not, and so on.
  const api = seed % 2 === 1 ? "v2" : "v1";
  const packed = seed >= 100 ? Math.floor(seed / 2) % 2 === 0 : seed >= 3;
  test(`seed ${seed} (${api}${packed ? ", packed" : ""}): ${EVENTS} events through faults, each billed once or dead-lettered with its reason`, {
    timeout: 20 * 60_000,
  }, async () => {
    ledgers.push(await run(seed, api, packed));
  });
}
after(() => {
  if (ledgers.length > 0) console.log(`\n${table(ledgers)}\n`);
});
