import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { InvalidEventError } from "../../lib/errors.js";
import {
  parsePlainEventJson,
  parseUsageEvent,
  parseUsageEventWithSchema,
  toCanonicalJson,
} from "../../lib/usage-event.js";

// parseUsageEvent checks the common shape by hand and leaves the rest to the zod schema. These
// tests hold the two to the same answer for every input: a value, or an error with the same code
// and message.

const NOW = 1_795_000_000;
const base = { id: "req_8f2c", event_name: "api_requests", customer: "acct_42", value: 3, timestamp: NOW - 60 };

const tricky: unknown[] = [
  "",
  "x",
  "a".repeat(100),
  "a".repeat(101),
  "a".repeat(255),
  "a".repeat(256),
  "tab\there",
  "nul\u0000",
  "del\u007f",
  "naïve ☃ 🚀",
  "2026-11-26T12:00:00Z",
  "2026-11-26T12:00:00",
  0,
  -1,
  1.5,
  1e300,
  -0,
  Number.MAX_SAFE_INTEGER + 2,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  true,
  null,
  [],
  ["a"],
  {},
  { nested: 1 },
];

function outcome(parse: typeof parseUsageEvent, input: unknown) {
  try {
    const e = parse(input, NOW + 0.5);
    // Properties come back as a null-prototype object on both paths: wire keys never touch Object.prototype.
    return {
      ok: { ...e, properties: { ...e.properties } },
      nullPrototype: Object.getPrototypeOf(e.properties) === null,
    };
  } catch (err) {
    assert.ok(err instanceof InvalidEventError, `unexpected ${String(err)}`);
    return { error: { code: err.code, message: err.message } };
  }
}

function inputs(): unknown[] {
  const out: unknown[] = [base, { id: "a", event_name: "b", customer: "c" }];
  for (const key of ["id", "event_name", "customer", "value", "timestamp"]) {
    for (const v of tricky) out.push({ ...base, [key]: v });
    const without: Record<string, unknown> = { ...base };
    delete without[key];
    out.push(without);
  }
  out.push({ ...base, properties: { region: "eu" } }, { ...base, properties: {} }, { ...base, extra: 1 });
  // Properties: every key and value rule at and around its limit, and shapes that are not flat.
  const keys = ["region", "", "k".repeat(100), "k".repeat(101), "constructor", "prototype", "a[b", "a]", "tab\tkey"];
  keys.push("nul\u0000", "\ud800", "naïve ☃", "0", "10", "-1", "value", "stripe_customer_id");
  for (const k of keys) out.push({ ...base, properties: { [k]: "x" } });
  for (const v of tricky) out.push({ ...base, properties: { region: v } });
  out.push({ ...base, properties: { note: "v".repeat(100) } }, { ...base, properties: { note: "v".repeat(101) } });
  out.push({ ...base, properties: { note: "" } }, { ...base, properties: { note: "ctl\u0001" } });
  const many = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`p${i}`, i]));
  out.push({ ...base, properties: many(50) }, { ...base, properties: many(51) });
  out.push({ ...base, properties: { b: 1, 2: "two", 1: "one", a: "x" } });
  out.push({ ...base, properties: null }, { ...base, properties: [] }, { ...base, properties: ["a"] });
  out.push({ ...base, properties: "text" }, { ...base, properties: 5 }, { ...base, properties: undefined });
  out.push({ ...base, properties: Object.assign(Object.create(null), { region: "eu" }) });
  out.push({ ...base, properties: Object.assign(Object.create({ inherited: "x" }), { region: "eu" }) });
  out.push({ ...base, properties: new Map([["region", "eu"]]) });
  out.push(JSON.parse(`{"id":"x","event_name":"y","customer":"z","properties":{"__proto__":"p"}}`));
  out.push(JSON.parse(`{"id":"x","event_name":"y","customer":"z","properties":{"a":1,"a":"again"}}`));
  out.push({ ...base, value: "3", properties: { region: "eu" } }, { ...base, id: "", properties: { region: "eu" } });
  out.push(JSON.parse(`{"id":"x","event_name":"y","customer":"z","__proto__":{"polluted":1}}`));
  out.push(null, undefined, "text", 42, [base], Object.assign(Object.create({ inherited: 1 }), base));
  const corpus = JSON.parse(readFileSync("test/fixtures/hostile-inputs.json", "utf8")) as Array<{ body?: unknown }>;
  for (const entry of corpus) {
    if (typeof entry.body !== "string") continue;
    try {
      const parsed = JSON.parse(entry.body) as unknown;
      out.push(...(Array.isArray(parsed) ? parsed : [parsed]));
    } catch {
      // not JSON: never reaches parseUsageEvent
    }
  }
  return out;
}

describe("parseUsageEvent's fast path", () => {
  test("answers exactly as the zod schema does, for every input tried", () => {
    const all = inputs();
    assert.ok(all.length > 150, `only ${all.length} inputs`);
    for (const input of all) {
      assert.deepEqual(
        outcome(parseUsageEvent, input),
        outcome(parseUsageEventWithSchema, input),
        `differs for ${JSON.stringify(input)?.slice(0, 120)}`,
      );
    }
  });

  test("accepts the common shape and refuses what the schema refuses", () => {
    assert.equal(parseUsageEvent(base, NOW).customer, "acct_42");
    assert.throws(() => parseUsageEvent({ ...base, id: "" }, NOW), InvalidEventError);
    assert.throws(() => parseUsageEvent({ ...base, extra: 1 }, NOW), /unknown field/);
  });
});

/** The general path for a message body: JSON.parse, then parseUsageEvent (undefined: not JSON). */
function general(text: string) {
  let input: unknown;
  try {
    input = JSON.parse(text);
  } catch {
    return undefined;
  }
  return outcome(parseUsageEvent, input);
}

/** Texts near the plain shape: as written, respaced, escaped, reordered, repeated, cut. */
function texts(): string[] {
  const out: string[] = [];
  for (const input of inputs()) {
    const text = JSON.stringify(input);
    if (text === undefined) continue;
    out.push(text, JSON.stringify(input, null, 1), text.replace(/"id":/, '"i\\u0064":'));
  }
  out.push(
    JSON.stringify(toCanonicalJson(parseUsageEvent(base, NOW))),
    '{"id":"a","event_name":"b","customer":"c","id":"d"}',
    '{"id":"a","event_name":"b","customer":"c","value":1e3}',
    '{"id":"a","event_name":"b","customer":"c","value":01}',
    '{"id":"a","event_name":"b","customer":"c","value":-0}',
    '{"id":"a","event_name":"b","customer":"c","value":1.}',
    '{"id":"a","event_name":"b","customer":"c","value":.5}',
    '{"id":"a","event_name":"b","customer":"c","value":-2.250}',
    '{"id":"a","event_name":"b","customer":"c","value":12345678901234567890}',
    '{"id":"a","event_name":"b","customer":"c","value":999999999999999}',
    '{"id":"a","event_name":"b","customer":"c","value":-999999999999999}',
    '{"id":"a","event_name":"b","customer":"c","value":9007199254740993}',
    '{"id":"a","event_name":"b","customer":"c","value":0.1}',
    '{"id":"a","event_name":"b","customer":"c","value":-1000000000000000}',
    '{"id":"a","event_name":"b","customer":"c","value":100000000000000,"timestamp":1795771525}',
    '{"id":"a","event_name":"bb","customer":"c","value":-7}',
    '{"id":"a","event_name":"bc","customer":"c","value":-0.0}',
    '{"id":"a","event_name":"b","customer":"c","value":true}',
    '{"id":"a","event_name":"b","customer":"c","value":null}',
    '{"id":"a","event_name":"b","customer":"c","timestamp":-5}',
    '{"id":"a","event_name":"b","customer":"c","timestamp":"2026-02-30T00:00:00Z"}',
    '{"id":"a","event_name":"b","customer":"c","timestamp":"yesterday"}',
    '{"id":"a","event_name":"b","customer":"c",}',
    '{"id":"a","event_name":"b","customer":"c"}}',
    '{"id":"a","event_name":"b","customer":"c"',
    '{"id":"a\tb","event_name":"b","customer":"c"}',
    '{"id":"a\u007f","event_name":"b","customer":"c"}',
    '{"id":"\ud800","event_name":"b","customer":"c"}',
    '{"id":"a","event_name":"b","customer":"c","":1}',
    '{"id":"a","event_name":"b","customer":"c","valu":1}',
    '{"id":"a","event_name":"b","customer":"c","values":1}',
    '{"id""a","event_name":"b","customer":"c"}',
    "{}",
    "[]",
    "",
  );
  return out;
}

describe("parsePlainEventJson: reading a canonical event without JSON.parse", () => {
  test("answers as JSON.parse and parseUsageEvent do, or leaves the text to them", () => {
    let read = 0;
    const check = (text: string) => {
      const fast = parsePlainEventJson(text, NOW + 0.5);
      if (fast === undefined) return;
      read++;
      assert.deepEqual(
        {
          ok: { ...fast, properties: { ...fast.properties } },
          nullPrototype: Object.getPrototypeOf(fast.properties) === null,
        },
        general(text),
        `differs for ${text}`,
      );
    };
    const all = texts();
    for (const text of all) check(text);
    assert.ok(read > 40, `read only ${read} of ${all.length} texts`);
    // Every text with one character changed, added or removed, from a few plain ones.
    const seeds = [
      JSON.stringify(base),
      '{"id":"a","event_name":"b","customer":"c","value":-1.5,"timestamp":"2026-11-26T12:00:00Z"}',
    ];
    const alphabet = [
      '"',
      "\\",
      ",",
      ":",
      "{",
      "}",
      "-",
      ".",
      "0",
      "7",
      "e",
      " ",
      "\u0000",
      "\u007f",
      "a",
      "\ud800",
      "é",
      "5",
    ];
    for (const seed of seeds) {
      for (let i = 0; i <= seed.length; i++) {
        check(seed.slice(0, i) + seed.slice(i + 1));
        for (const c of alphabet) {
          check(seed.slice(0, i) + c + seed.slice(i + 1));
          check(seed.slice(0, i) + c + seed.slice(i));
        }
      }
    }
  });

  test("reads what the ingest API writes, and the plain shape apps send", () => {
    const queued = JSON.stringify(toCanonicalJson(parseUsageEvent(base, NOW)));
    assert.equal(parsePlainEventJson(queued, NOW)?.timestamp, NOW - 60);
    assert.equal(parsePlainEventJson(JSON.stringify(base), NOW)?.value, 3);
    assert.equal(parsePlainEventJson('{"id":"a","event_name":"b","customer":"c"}', NOW + 0.9)?.timestamp, NOW);
    assert.equal(parsePlainEventJson(JSON.stringify({ ...base, properties: { a: 1 } }), NOW), undefined);
  });

  test("an ISO-8601 timestamp reads as Date.parse reads it, on both paths, whatever its digits", () => {
    // The form the ingest API queues is read digit by digit; Date.parse is the reference.
    const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i;
    const expected = (ts: string) =>
      ISO.test(ts) && !Number.isNaN(Date.parse(ts)) ? Math.floor(Date.parse(ts) / 1000) : undefined;
    const stamps = new Set<string>([
      "2026-11-26T12:00:00Z",
      "2026-11-26T12:00:00.000Z",
      "2026-11-26T12:00:00.999Z",
      "2026-11-26t12:00:00.000z",
      "2026-11-26T12:00:00.0Z",
      "2026-11-26T12:00:00.0000Z",
      "2026-11-26T12:00Z",
      "2026-11-26T13:00:00.000+01:00",
      "1970-01-01T00:00:00.000Z",
      "1969-12-31T23:59:59.500Z",
      "0099-06-01T00:00:00.000Z",
      "9999-12-31T23:59:59.999Z",
      "2026-11-26 12:00:00.000Z",
      "2026/11/26T12:00:00.000Z",
      "+02026-11-26T12:00:00Z",
      "2026-11-26T12:00:00.00aZ",
      "2026-11-26T12:00:00,000Z",
    ]);
    // Every field at and around its limits, in both lengths the digit reader takes.
    const fields: Array<[number, string[]]> = [
      [5, ["00", "01", "02", "09", "10", "12", "13", "1a", "99"]],
      [8, ["00", "01", "28", "29", "30", "31", "32", "-1", "99"]],
      [11, ["00", "23", "24", "25", "99"]],
      [14, ["00", "59", "60"]],
      [17, ["00", "59", "60", "61"]],
    ];
    for (const year of ["1970", "2000", "2023", "2024", "2100", "2400", "1900", "0000", "20x6"]) {
      for (const [at, values] of fields) {
        for (const v of values) {
          for (const stamp of [`${year}-02-28T12:30:45.678Z`, `${year}-04-15T12:30:45Z`]) {
            stamps.add(stamp.slice(0, at) + v + stamp.slice(at + 2));
          }
        }
      }
    }
    for (const ts of stamps) {
      const want = expected(ts);
      for (const read of [parseUsageEvent, parseUsageEventWithSchema]) {
        const got = outcome(read, { ...base, timestamp: ts });
        if (want === undefined) assert.equal(got.error?.code, "invalid_event", ts);
        else assert.equal(got.ok?.timestamp, want, ts);
      }
      const text = JSON.stringify({ ...base, timestamp: ts });
      const plain = parsePlainEventJson(text, NOW);
      assert.equal(plain?.timestamp, want, ts);
    }
  });
});
