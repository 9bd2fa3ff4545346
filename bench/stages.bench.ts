/**
 * `npm run bench:stages`: the consumer's per-event stages measured hot, one at a time, on 2,000
 * canonical events (UUID ids) passed over again and again: each stage's fastest pass of
 * BENCH_ROUNDS (100). A floor for each stage, not what it costs inside the pipeline, where the
 * process idles between batches and its caches are cold when it wakes (HISTORY.md).
 */
import { type MeterEvent, meterEventIdentifier, toMeterEvent, validateUsageEvent } from "../lib/meter-event.js";
import { streamBody } from "../lib/stripe/v2-meter-event-stream.js";
import { parsePlainEventJson, parseUsageEvent, toCanonicalJson, type UsageEvent } from "../lib/usage-event.js";
import { records } from "./pipeline-clients.js";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 100);
const EVENTS = 2000;
const now = Math.floor(Date.now() / 1000);
// The bodies `npm run bench` queues: canonical events with UUID ids, 200 customers.
const bodies = records(EVENTS).map((m) => m.body);
const usage = bodies.map((b) => parsePlainEventJson(b, now) as UsageEvent);
// The same events as the ingest API queues them: timestamps as ISO-8601 text (toCanonicalJson).
const queuedBodies = usage.map((e) => JSON.stringify(toCanonicalJson(e)));
// And with two properties, which the consumer reads through JSON.parse and parseUsageEvent.
const propertyBodies = usage.map((e) =>
  JSON.stringify(toCanonicalJson({ ...e, properties: { region: "eu-west-1", tier: "pro" } })),
);
const meterEvents = usage.map((e, i) => toMeterEvent(e, `cus_bench${i % 200}`, now));
// The same events with two properties, parsed and made into meter events.
const propertyUsage = propertyBodies.map((b) => parseUsageEvent(JSON.parse(b), now));
const propertyEvents = propertyUsage.map((e, i) => toMeterEvent(e, `cus_bench${i % 200}`, now));
// The same events spread over five seconds, out of order, as a batch from a standard queue comes.
const spreadEvents = meterEvents.map((e, i) => ({ ...e, timestamp: now - ((i * 7919) % 5) }));

/** The v2 stream bodies of `events` in batches of 100: their total length. */
function streamBodies(events: readonly MeterEvent[]): number {
  let sum = 0;
  for (let i = 0; i < events.length; i += 100) sum += streamBody(events.slice(i, i + 100)).length;
  return sum;
}

/** Each stage does one pass over the events and returns something that depends on all of them. */
const stages: Record<string, () => number> = {
  "read the body (parsePlainEventJson)": () => {
    let sum = 0;
    for (const b of bodies) sum += (parsePlainEventJson(b, now) as UsageEvent).value;
    return sum;
  },
  "read the body, ISO timestamp as the ingest API queues it": () => {
    let sum = 0;
    for (const b of queuedBodies) sum += (parsePlainEventJson(b, now) as UsageEvent).timestamp;
    return sum;
  },
  "read a body with two properties (JSON.parse, parseUsageEvent)": () => {
    let sum = 0;
    for (const b of propertyBodies) sum += parseUsageEvent(JSON.parse(b), now).timestamp;
    return sum;
  },
  "identifier (SHA-256)": () => {
    let sum = 0;
    for (const e of usage) sum += meterEventIdentifier(e.id, e.event_name).length;
    return sum;
  },
  "meter event, identifier included (toMeterEvent)": () => {
    let sum = 0;
    for (const e of usage) sum += toMeterEvent(e, "cus_bench1", now).identifier.length;
    return sum;
  },
  "meter event with two properties (toMeterEvent)": () => {
    let sum = 0;
    for (const e of propertyUsage) sum += toMeterEvent(e, "cus_bench1", now).identifier.length;
    return sum;
  },
  "the HTTP API's check of an event (validateUsageEvent)": () => {
    for (const e of usage) validateUsageEvent(e, now);
    return usage.length;
  },
  "v2 stream body (streamBody, batches of 100)": () => streamBodies(meterEvents),
  "v2 stream body, events over five seconds out of order": () => streamBodies(spreadEvents),
  "v2 stream body, two properties per event": () => streamBodies(propertyEvents),
  "duplicate check (a Map by identifier)": () => {
    const seen = new Map<string, number>();
    meterEvents.forEach((e: MeterEvent, i) => {
      if (seen.get(e.identifier) === undefined) seen.set(e.identifier, i);
    });
    return seen.size;
  },
};

const fastest: Record<string, number> = {};
let sink = 0;
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, pass] of Object.entries(stages)) {
    const t0 = process.hrtime.bigint();
    sink += pass();
    const ns = Number(process.hrtime.bigint() - t0) / EVENTS;
    fastest[name] = Math.min(fastest[name] ?? Number.POSITIVE_INFINITY, ns);
  }
}
console.log(`meterhook consumer stages, hot: ${EVENTS} events, fastest of ${ROUNDS} passes, Node ${process.version}`);
console.log("| stage | ns per event |");
console.log("|---|---:|");
for (const [name, ns] of Object.entries(fastest)) console.log(`| ${name} | ${ns.toFixed(0)} |`);
if (sink === 0) throw new Error("no work was done");
