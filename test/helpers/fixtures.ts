import { readFileSync } from "node:fs";
import { join } from "node:path";

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
const TIME_KEYS = new Set(["created", "timestamp"]);

/**
 * A captured trigger payload from test/fixtures/triggers/, with every time in it moved by the
 * same amount so that the latest is `latestAgoSeconds` before now: Stripe refuses events older
 * than 35 days, and the durations inside the payload (job run times) are kept.
 */
export function loadTrigger(name: string, latestAgoSeconds = 60): Record<string, unknown> {
  const data = JSON.parse(readFileSync(join("test", "fixtures", "triggers", name), "utf8"));
  let latest = 0;
  const visit = (v: unknown, key: string | undefined, f: (x: unknown, key?: string) => unknown): unknown => {
    if (Array.isArray(v)) return v.map((x) => visit(x, undefined, f));
    if (v && typeof v === "object") {
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, visit(x, k, f)]));
    }
    return f(v, key);
  };
  const seconds = (x: unknown, key?: string): number | undefined => {
    if (typeof x === "string" && ISO.test(x)) return Date.parse(x) / 1000;
    if (typeof x === "number" && key && TIME_KEYS.has(key) && x > 1.5e9 && x < 2.5e9) return x;
    return undefined;
  };
  visit(data, undefined, (x, key) => {
    const s = seconds(x, key);
    if (s !== undefined) latest = Math.max(latest, s);
    return x;
  });
  const shift = Math.floor(Date.now() / 1000) - latestAgoSeconds - latest;
  return visit(data, undefined, (x, key) => {
    const s = seconds(x, key);
    if (s === undefined) return x;
    return typeof x === "number" ? x + shift : new Date((s + shift) * 1000).toISOString().replace(".000Z", "Z");
  }) as Record<string, unknown>;
}
