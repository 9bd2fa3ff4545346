import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { z } from "zod";
import { cancelledIdentifier, parseCancellation } from "../../../lib/cancellation.js";
import { DeadLetterCode, InvalidEventError } from "../../../lib/errors.js";
import { SourceSchema } from "../../../lib/mapping/config-schema.js";
import { defineSource } from "../../../lib/mapping/define-source.js";
import { compileSource, MAX_EACH_ITEMS, MappingError, mapTrigger, type Trigger } from "../../../lib/mapping/engine.js";
import { meterEventIdentifier, toMeterEvent } from "../../../lib/meter-event.js";

const NOW_MS = 1_795_000_000_000;
const trigger = (body: unknown, headers: Record<string, string> = {}): Trigger => ({
  source: "app",
  headers,
  body,
  receivedAt: NOW_MS,
});
const source = (rules: unknown, extra: Record<string, unknown> = {}) =>
  compileSource("app", SourceSchema.parse({ type: "sqs", rules, ...extra }));
const events = (s: ReturnType<typeof source>, t: Trigger) => {
  const out = mapTrigger(s, t);
  assert.equal(out.kind, "events");
  return out.kind === "events" ? out.events : [];
};

describe("rules", () => {
  test("select by header and by field values", () => {
    const s = source([
      {
        name: "pushes",
        when: "headers.\"x-event\" == 'push'",
        id: "body.id",
        customer: "body.c",
        emit: [{ event_name: "pushes" }],
      },
      {
        name: "big",
        when: "body.size > `100`",
        id: "body.id",
        customer: "body.c",
        emit: [{ event_name: "big_things" }],
      },
    ]);
    assert.deepEqual(
      events(s, trigger({ id: "1", c: "cus_1", size: 500 }, { "x-event": "push" })).map((e) => e.event_name),
      ["pushes", "big_things"],
    );
    assert.deepEqual(
      events(s, trigger({ id: "1", c: "cus_1", size: 5 }, { "x-event": "push" })).map((e) => e.event_name),
      ["pushes"],
    );
    assert.equal(mapTrigger(s, trigger({ id: "1", c: "cus_1", size: 5 }, { "x-event": "pull" })).kind, "unmatched");
  });

  /** Each emit's value, by event_name, for one trigger body of a one-rule source. */
  const valuesOf = (emit: Array<{ event_name: string; value?: string }>, body: Record<string, unknown>) =>
    Object.fromEntries(
      events(
        source([{ name: "r", id: "body.id", customer: "body.c", emit }]),
        trigger({ id: "x", c: "cus_1", ...body }),
      ).map((e) => [e.event_name, e.value]),
    );

  test("constants, counting, sums over arrays and unit conversions", () => {
    const emit = [
      { event_name: "calls" },
      { event_name: "flat", value: "`2.5`" },
      { event_name: "items", value: "sum(body.items[].qty)" },
      { event_name: "lines", value: "length(body.items)" },
      { event_name: "seconds", value: "divide(body.duration_ms, `1000`)" },
      { event_name: "gb", value: "divide(body.bytes, `1000000000`)" },
      { event_name: "minutes", value: "round_to(divide(seconds_between(body.start, body.end), `60`), `1`)" },
    ];
    const body = {
      items: [{ qty: 2 }, { qty: 5 }],
      duration_ms: 1500,
      bytes: 2_500_000_000,
      start: "2026-11-20T10:00:00Z",
      end: "2026-11-20T10:07:30Z",
    };
    assert.deepEqual(valuesOf(emit, body), {
      calls: 1,
      flat: 2.5,
      items: 7,
      lines: 2,
      seconds: 1.5,
      gb: 2.5,
      minutes: 7.5,
    });
  });

  test("computed values are the decimals a person would write, to Stripe's 15 significant digits", () => {
    const emit = [
      { event_name: "minutes", value: "divide(seconds_between(body.start, body.end), `60`)" },
      { event_name: "latency", value: "seconds_between(body.sent, body.done)" },
      { event_name: "unix", value: "seconds_between(body.sent_unix, body.done_unix)" },
      { event_name: "tax", value: "multiply(body.amount, `3`)" },
      { event_name: "sum", value: "sum(body.parts)" },
      { event_name: "cents", value: "round_to(body.price, `2`)" },
      { event_name: "refund", value: "round_to(body.refund, `0`)" },
      { event_name: "given", value: "body.third" },
      { event_name: "count", value: "body.count" },
    ];
    const body = {
      start: "2026-11-20T10:00:00Z",
      end: "2026-11-20T10:01:40Z",
      sent: "2026-11-20T10:00:00.100Z",
      done: "2026-11-20T10:00:00.223Z",
      sent_unix: 1_795_000_000.1,
      done_unix: 1_795_000_001.3,
      amount: 0.1,
      parts: [0.1, 0.2],
      price: 1.005,
      refund: -2.5,
      third: 1 / 3,
      count: 123_456_789_012_345,
    };
    const values = valuesOf(emit, body);
    assert.deepEqual(values, {
      minutes: 1.66666666666667,
      latency: 0.123,
      unix: 1.2,
      tax: 0.3,
      sum: 0.3,
      cents: 1.01,
      refund: -3,
      given: 0.333333333333333,
      count: 123_456_789_012_345,
    });
    for (const value of Object.values(values))
      assert.doesNotThrow(() =>
        toMeterEvent(
          { id: "x", event_name: "e", customer: "cus_1", value, timestamp: NOW_MS / 1000, properties: {} },
          "cus_1",
          NOW_MS / 1000,
        ),
      );
  });

  test("copies properties, takes the timestamp from the event, else the time received", () => {
    const s = source([
      {
        name: "r",
        id: "body.id",
        customer: "body.c",
        timestamp: "body.at",
        emit: [{ event_name: "e", properties: { region: "body.region", n: "`3`" } }],
      },
    ]);
    const [withTime] = events(s, trigger({ id: "1", c: "cus_1", at: "2026-11-26T12:00:00Z", region: "eu" }));
    assert.equal(withTime?.timestamp, Date.parse("2026-11-26T12:00:00Z") / 1000);
    assert.deepEqual({ ...withTime?.properties }, { region: "eu", n: 3 });
    const [noTime] = events(s, trigger({ id: "1", c: "cus_1", region: "eu" }));
    assert.equal(noTime?.timestamp, NOW_MS / 1000);
  });

  test("Unix seconds written as text, as headers carry them, are a timestamp; text that is neither is refused", () => {
    const s = source([
      {
        name: "r",
        id: "body.id",
        customer: "body.c",
        timestamp: 'headers."webhook-timestamp"',
        emit: [{ event_name: "e" }],
      },
    ]);
    const at = (ts: string) => events(s, trigger({ id: "1", c: "cus_1" }, { "webhook-timestamp": ts }))[0]?.timestamp;
    assert.equal(at("1794999940"), 1_794_999_940);
    assert.equal(at("1794999940.75"), 1_794_999_940);
    // Milliseconds as text get the same answer as milliseconds as a number.
    const [ms] = events(s, trigger({ id: "1", c: "cus_1" }, { "webhook-timestamp": "1794999940000" }));
    assert.throws(
      () => toMeterEvent(ms as never, "cus_1", NOW_MS / 1000),
      (x: unknown) =>
        x instanceof InvalidEventError && x.code === "timestamp_out_of_range" && /milliseconds/.test(x.message),
    );
    for (const text of ["Sun, 29 Nov 2026 08:00:00 GMT", "2026-11-29 08:00:00", "-1794999940", "1e9"]) {
      assert.throws(
        () => at(text),
        (x: unknown) => x instanceof InvalidEventError && x.code === "invalid_event" && /as a number/.test(x.message),
        text,
      );
    }
  });
});

describe("JSON held as text", () => {
  test("powertools_json() reads a field that holds JSON, as Slack's interactivity payload; text that is not JSON is null", () => {
    // Slack posts a button press as a form whose one field, payload, is JSON.
    const s = source([
      {
        name: "approved",
        when: "powertools_json(body.payload).actions[0].action_id == 'approve'",
        id: "powertools_json(body.payload).trigger_id",
        customer: "powertools_json(body.payload).team.id",
        emit: [{ event_name: "approvals" }],
      },
    ]);
    const press = (action: string) => ({
      payload: JSON.stringify({
        type: "block_actions",
        trigger_id: "701.22.ab",
        team: { id: "cus_Team1" },
        actions: [{ action_id: action }],
      }),
    });
    const [event] = events(s, trigger(press("approve")));
    assert.deepEqual([event?.id, event?.customer, event?.event_name], ["701.22.ab", "cus_Team1", "approvals"]);
    assert.equal(mapTrigger(s, trigger(press("reject"))).kind, "unmatched");
    // Text that is not JSON reads as null, as a missing field does: a `when` over it is false,
    // and an id read from it fails the trigger.
    assert.equal(mapTrigger(s, trigger({ payload: "{not json" })).kind, "unmatched");
    const noWhen = source([
      { name: "r", id: "powertools_json(body.payload).trigger_id", customer: "'cus_1'", emit: [{ event_name: "e" }] },
    ]);
    assert.throws(() => mapTrigger(noWhen, trigger({ payload: "{not json" })), /trigger_id/);
  });
});

describe("each: a rule over every element of an array", () => {
  const s = source(
    [
      {
        name: "records",
        each: "body.records",
        when: "item.kind == 'call'",
        id: "item.id",
        customer: "item.c",
        emit: [{ event_name: "calls", value: "item.n", properties: { batch: "body.batch", at: "to_string(index)" } }],
      },
    ],
    { unmatched: "dead-letter" },
  );
  const records = (...r: Array<Record<string, unknown>>) => trigger({ batch: "b1", records: r });

  test("each element that passes `when` is one event, with item, index and the trigger in view", () => {
    const got = events(
      s,
      records(
        { id: "r1", kind: "call", c: "cus_1", n: 5 },
        { id: "r2", kind: "login", c: "cus_1" },
        { id: "r3", kind: "call", c: "cus_2", n: 7 },
      ),
    );
    assert.deepEqual(
      got.map((e) => [e.id, e.customer, e.value, { ...e.properties }]),
      [
        ["r1", "cus_1", 5, { batch: "b1", at: "0" }],
        ["r3", "cus_2", 7, { batch: "b1", at: "2" }],
      ],
    );
    assert.notEqual(
      meterEventIdentifier("r1", "calls", got[0]?.identifierPart),
      meterEventIdentifier("r3", "calls", got[1]?.identifierPart),
    );
    assert.equal(mapTrigger(s, records()).kind, "unmatched", "an empty array makes nothing");
  });

  test("an exact repeat is sent once; a repeated id with other contents fails the trigger naming both items", () => {
    const plain = source([
      {
        name: "records",
        each: "body.records",
        id: "item.id",
        customer: "item.c",
        emit: [{ event_name: "calls", value: "item.n" }],
      },
    ]);
    const r1 = { id: "r1", kind: "call", c: "cus_1", n: 5 };
    assert.equal(events(plain, records(r1, { ...r1 })).length, 1);
    // Here the copy's index, which a property shows, differs: not the same event.
    assert.throws(() => mapTrigger(s, records(r1, { ...r1 })), MappingError);
    assert.throws(
      () => mapTrigger(plain, records(r1, { id: "r2", kind: "call", c: "cus_1", n: 1 }, { ...r1, n: 6 })),
      (e: unknown) =>
        e instanceof MappingError &&
        /records item 2, calls: id "r1" repeats records item 0's with other contents/.test(e.message),
    );
  });

  test("not an array, too many elements, or a bad field in one element fails the trigger, naming the element", () => {
    assert.throws(
      () => mapTrigger(s, trigger({ records: { id: "r1" } })),
      (e: unknown) =>
        e instanceof MappingError &&
        /each \(expression `body\.records`\) gave \{"id":"r1"\}; expected an array/.test(e.message),
    );
    const many = Array.from({ length: MAX_EACH_ITEMS + 1 }, (_, i) => ({
      id: `r${i}`,
      kind: "call",
      c: "cus_1",
      n: 1,
    }));
    assert.throws(
      () => mapTrigger(s, records(...many)),
      (e: unknown) => e instanceof MappingError && /gave 501 items; at most 500/.test(e.message),
    );
    assert.equal(events(s, records(...many.slice(0, MAX_EACH_ITEMS))).length, MAX_EACH_ITEMS);
    assert.throws(
      () =>
        mapTrigger(s, records({ id: "r1", kind: "call", c: "cus_1", n: 5 }, { id: "r2", kind: "call", c: "cus_1" })),
      (e: unknown) =>
        e instanceof MappingError &&
        /^records item 1, calls: value \(expression `item\.n`\) gave nothing/.test(e.message),
    );
  });

  test("a code source's two events with one id and other contents fail the trigger too", () => {
    const code = defineSource({
      name: "app",
      type: "sqs",
      schema: z.object({ id: z.string() }),
      map: (b) => [
        { event_name: "e", value: 1, id: b.id, customer: "cus_1" },
        { event_name: "e", value: 2, id: b.id, customer: "cus_1" },
      ],
    });
    assert.throws(
      () => mapTrigger(code, trigger({ id: "x" })),
      (e: unknown) => e instanceof MappingError && /id "x" repeats/.test(e.message),
    );
  });
});

describe("fan-out identifiers", () => {
  const s = source([
    {
      name: "llm",
      id: "body.request_id",
      customer: "body.c",
      emit: [
        { event_name: "input_tokens", value: "body.usage.input" },
        { event_name: "output_tokens", value: "body.usage.output" },
      ],
    },
  ]);
  const body = { request_id: "req_1", c: "cus_1", usage: { input: 10, output: 4 } };

  test("each meter event of a trigger has its own identifier, the same on every delivery", () => {
    const first = events(s, trigger(body)).map((e) => toMeterEvent(e, "cus_1", NOW_MS / 1000).identifier);
    const again = events(s, { ...trigger(structuredClone(body)), receivedAt: NOW_MS + 60_000 }).map(
      (e) => toMeterEvent(e, "cus_1", NOW_MS / 1000).identifier,
    );
    assert.equal(new Set(first).size, 2);
    assert.deepEqual(again, first);
  });

  test("the same id in another source or rule gives other identifiers", () => {
    const other = compileSource(
      "other",
      SourceSchema.parse({
        type: "sqs",
        rules: [
          {
            name: "llm",
            id: "body.request_id",
            customer: "body.c",
            emit: [{ event_name: "input_tokens", value: "body.usage.input" }],
          },
        ],
      }),
    );
    const a = toMeterEvent(events(s, trigger(body))[0] as never, "cus_1", NOW_MS / 1000).identifier;
    const b = toMeterEvent(events(other, trigger(body))[0] as never, "cus_1", NOW_MS / 1000).identifier;
    assert.notEqual(a, b);
  });

  test("a cancellation naming the id, event_name, source and rule names that event's identifier", () => {
    const made = events(s, trigger(body)).map((e) => toMeterEvent(e, "cus_1", NOW_MS / 1000).identifier);
    const named = ["input_tokens", "output_tokens"].map((event_name) =>
      cancelledIdentifier(parseCancellation({ id: "req_1", event_name, source: "app", rule: "llm" })),
    );
    assert.deepEqual(named, made);
    assert.notEqual(cancelledIdentifier(parseCancellation({ id: "req_1", event_name: "input_tokens" })), made[0]);
  });
});

describe("failures", () => {
  const s = source([{ name: "r", id: "body.id", customer: "body.c", emit: [{ event_name: "e", value: "body.n" }] }]);
  const failure = (body: unknown) => {
    try {
      mapTrigger(s, trigger(body));
    } catch (err) {
      return err as Error & { code?: string };
    }
    return undefined;
  };

  test("an id number past 2^53, where JSON has lost its last digits, is mapping_failed, also through to_string()", () => {
    // Two 64-bit snowflake ids that JSON.parse makes one number: billing both would lose one.
    const [a, b] = [JSON.parse("1795000000000000123"), JSON.parse("1795000000000000124")];
    assert.equal(a, b);
    const err = failure({ id: a, c: "cus_1", n: 1 });
    assert.ok(err instanceof MappingError);
    assert.match(err.message, /id \(expression `body\.id`\) gave 1795000000000000000; expected .*2\^53/);
    assert.equal(events(s, trigger({ id: 2 ** 53 - 1, c: "cus_1", n: 1 }))[0]?.id, "9007199254740991");
    assert.equal(events(s, trigger({ id: 12.5, c: "cus_1", n: 1 }))[0]?.id, "12.5");
    const viaText = source([{ name: "r", id: "to_string(body.id)", customer: "body.c", emit: [{ event_name: "e" }] }]);
    assert.throws(
      () => mapTrigger(viaText, trigger({ id: a, c: "cus_1" })),
      (e: unknown) => e instanceof MappingError && /to_string\(\).*number past 2\^53/.test(e.message),
    );
    assert.equal(events(viaText, trigger({ id: 29679449, c: "cus_1" }))[0]?.id, "29679449");
    const canceller = source([{ name: "undo", id: "body.id", cancel: [{ event_name: "e", rule: "r" }] }]);
    assert.throws(
      () => mapTrigger(canceller, trigger({ id: a })),
      (e: unknown) => e instanceof MappingError && /2\^53/.test(e.message),
    );
  });

  test("a missing field is mapping_failed naming the expression", () => {
    const err = failure({ id: "1", c: "cus_1" });
    assert.ok(err instanceof MappingError);
    assert.equal(err.code, DeadLetterCode.mappingFailed);
    assert.match(err.message, /value \(expression `body\.n`\) gave nothing \(missing field\?\); expected a number/);
  });

  test('a customer must be text or a whole number: an account id 42 is looked up as "42"', () => {
    const s = source([{ name: "r", id: "body.id", customer: "body.c", emit: [{ event_name: "e" }] }]);
    assert.equal(events(s, trigger({ id: "1", c: 42 }))[0]?.customer, "42");
    for (const c of [4.2, true, "", { id: 42 }]) {
      assert.throws(
        () => mapTrigger(s, trigger({ id: "1", c })),
        (e: unknown) => e instanceof MappingError && /customer \(expression `body\.c`\)/.test(e.message),
        JSON.stringify(c),
      );
    }
  });

  test("a non-numeric value is mapping_failed; a number written as text is told to_number()", () => {
    assert.match(
      failure({ id: "1", c: "cus_1", n: "12" })?.message ?? "",
      /gave "12"; expected a number \(text: `to_number\(body\.n\)` reads it as a number\)$/,
    );
    assert.match(failure({ id: "1", c: "cus_1", n: "twelve" })?.message ?? "", /gave "twelve"; expected a number$/);
  });

  test("a function given the wrong type is mapping_failed with the expression", () => {
    const t = source([
      { name: "r", id: "body.id", customer: "body.c", emit: [{ event_name: "e", value: "divide(body.n, `60`)" }] },
    ]);
    assert.throws(
      () => mapTrigger(t, trigger({ id: "1", c: "cus_1" })),
      (e: unknown) => e instanceof MappingError && /divide\(body\.n/.test(e.message),
    );
  });

  test("a produced event that breaks Stripe's rules keeps its own code", () => {
    const t = source([{ name: "r", id: "body.id", customer: "body.c", emit: [{ event_name: "e", value: "body.n" }] }]);
    // An integer's digits are counts: one too long for Stripe is refused, not rounded.
    const [e] = events(t, trigger({ id: "1", c: "cus_1", n: 1_234_567_890_123_456 }));
    assert.throws(
      () => toMeterEvent(e as never, "cus_1", NOW_MS / 1000),
      (x: unknown) => x instanceof InvalidEventError && x.code === "invalid_value",
    );
  });
});

describe("defineSource", () => {
  test("a code source and the equivalent config source make the same events", () => {
    const config = source([
      {
        name: "code",
        id: "body.request_id",
        customer: "body.c",
        emit: [{ event_name: "input_tokens", value: "body.usage.input" }],
      },
    ]);
    const code = defineSource({
      name: "app",
      type: "sqs",
      schema: z.object({ request_id: z.string(), c: z.string(), usage: z.object({ input: z.number() }) }),
      map: (b) => [{ event_name: "input_tokens", value: b.usage.input, id: b.request_id, customer: b.c }],
    });
    const body = { request_id: "req_9", c: "cus_1", usage: { input: 12 } };
    assert.deepEqual(events(code, trigger(body)), events(config, trigger(body)));
  });

  test("a body that fails the schema is mapping_failed with the path", () => {
    const code = defineSource({
      name: "app",
      type: "sqs",
      schema: z.object({ usage: z.object({ input: z.number() }) }),
      map: () => [],
    });
    assert.throws(
      () => mapTrigger(code, trigger({ usage: { input: "x" } })),
      (e: unknown) => e instanceof MappingError && /usage\.input/.test(e.message),
    );
  });

  test("a code source cancels the events it made, and canonical events, by their ids", () => {
    const code = defineSource({
      name: "app",
      type: "sqs",
      schema: z.object({ kind: z.string(), id: z.string(), c: z.string().optional() }),
      map: (b) =>
        b.kind === "use"
          ? [{ event_name: "calls", value: 1, id: b.id, customer: b.c ?? "" }]
          : [
              { cancel: true, event_name: "calls", id: b.id, rule: "code" },
              { cancel: true, event_name: "calls", id: "req_app_1" },
            ],
    });
    const [made] = events(code, trigger({ kind: "use", id: "u1", c: "cus_1" }));
    const out = mapTrigger(code, trigger({ kind: "undo", id: "u1" }));
    assert.ok(out.kind === "events");
    assert.deepEqual(out.events, []);
    assert.deepEqual(
      out.cancels.map((t) => t.identifier),
      [toMeterEvent(made as never, "cus_1", NOW_MS / 1000).identifier, meterEventIdentifier("req_app_1", "calls")],
    );
  });

  test("an empty result is unmatched", () => {
    const code = defineSource({ name: "app", type: "sqs", schema: z.unknown(), map: () => [] });
    assert.equal(mapTrigger(code, trigger({})).kind, "unmatched");
  });
});
