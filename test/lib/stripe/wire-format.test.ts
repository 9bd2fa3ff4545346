import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { MeterEvent } from "../../../lib/meter-event.js";
import { encodeV1Form } from "../../../lib/stripe/v1-meter-events.js";
import { streamBody } from "../../../lib/stripe/v2-meter-event-stream.js";

// Both bodies are built by hand for speed; these tests read them back the way a server would.

const awkward = [
  "plain_1",
  "with space",
  'quote " and \\ backslash',
  "a&b=c",
  "payload[x]",
  "naïve ☃ 🚀",
  "line\nbreak",
  "~._-",
  "",
  "lone \ud800 surrogate",
  "tab\tand\u0001control\u007f",
  "2026-11-27T05:00:00.000Z",
];

function events(): MeterEvent[] {
  return awkward.map((s, i) => ({
    event_name: i % 2 ? "api_requests" : s,
    identifier: `mh_${i}${s}`,
    timestamp: 1_795_000_000 + i,
    payload: { region: s, stripe_customer_id: `cus_${i}`, value: String(i * 1.5) },
  }));
}

describe("wire formats", () => {
  test("the v1 form decodes to the event, whatever its strings hold", () => {
    // A lone surrogate never reaches the encoder: validation refuses it (test/lib/meter-event.test.ts).
    const wellFormed = (e: MeterEvent) => Object.values(e.payload).every((v) => v.isWellFormed());
    for (const e of events().filter(wellFormed)) {
      const form = new URLSearchParams(encodeV1Form(e));
      assert.equal(form.get("event_name"), e.event_name);
      assert.equal(form.get("identifier"), e.identifier);
      assert.equal(form.get("timestamp"), String(e.timestamp));
      for (const [k, v] of Object.entries(e.payload)) assert.equal(form.get(`payload[${k}]`), v);
      assert.equal([...form.keys()].length, 3 + Object.keys(e.payload).length);
    }
  });

  test("the v2 stream body parses to the events, timestamps in ISO-8601", () => {
    const list = events();
    const body = JSON.parse(streamBody(list)) as { events: Array<Record<string, unknown>> };
    assert.deepEqual(
      body.events,
      list.map((e) => ({
        event_name: e.event_name,
        identifier: e.identifier,
        timestamp: new Date(e.timestamp * 1000).toISOString(),
        payload: e.payload,
      })),
    );
  });

  test("the v2 stream body is byte for byte what JSON.stringify writes for the events", () => {
    const list: MeterEvent[] = [
      ...events(),
      // Integer-like keys come first in JSON.stringify's order; an empty payload.
      {
        event_name: "e",
        identifier: "mh_x",
        timestamp: 0,
        payload: { z: "1", "10": "a", "2": "b", stripe_customer_id: "c" },
      },
      { event_name: "e", identifier: "mh_y", timestamp: 1_795_000_000, payload: {} },
      ...awkward.map((s, i) => ({
        event_name: s,
        identifier: s,
        timestamp: 1_795_000_100 + i,
        payload: { [s]: s, stripe_customer_id: s, value: s },
      })),
    ];
    // Twice: the second pass reads the strings the first one kept.
    for (let pass = 0; pass < 2; pass++) {
      assert.equal(
        streamBody(list),
        JSON.stringify({
          events: list.map((e) => ({
            event_name: e.event_name,
            identifier: e.identifier,
            timestamp: new Date(e.timestamp * 1000).toISOString(),
            payload: e.payload,
          })),
        }),
      );
    }
  });
});
