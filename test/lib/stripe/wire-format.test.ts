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
    for (const e of events()) {
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

  test("v2 timestamps stay right when seconds interleave and share a cache slot", () => {
    // Seconds 64 apart share a slot of the ISO cache; order as a standard queue may deliver them.
    const base = 1_795_000_000;
    const seconds = [0, 64, 0, 1, 65, 128, 1, 0, 63, 127, 2 ** 31 - base, 2 ** 31 - base + 64, 64].map((d) => base + d);
    const list = seconds.map((timestamp, i) => ({ ...(events()[0] as MeterEvent), identifier: `mh_t${i}`, timestamp }));
    for (let pass = 0; pass < 2; pass++) {
      const body = JSON.parse(streamBody(list)) as { events: Array<{ timestamp: string }> };
      assert.deepEqual(
        body.events.map((e) => e.timestamp),
        seconds.map((s) => new Date(s * 1000).toISOString()),
      );
    }
  });
});
