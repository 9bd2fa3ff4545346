import assert from "node:assert/strict";
import { test } from "node:test";
import { medianInterval, verdict } from "../../bench/stats.js";

// How `npm run bench` judges a goal from its rounds (BENCHMARKS.md, "Where we stand").

test("a goal is met or not only when the whole interval is on one side of it", () => {
  const atMost1 = { op: "<=", value: 1 } as const;
  assert.equal(verdict([0.9, 0.98], atMost1), "met");
  assert.equal(verdict([0.9, 1.0], atMost1), "met", "the goal's own value meets it");
  assert.equal(verdict([0.94, 1.07], atMost1), "at the line");
  assert.equal(verdict([1.03, 1.16], atMost1), "not met");
  const atLeast3 = { op: ">=", value: 3 } as const;
  assert.equal(verdict([3.72, 4.17], atLeast3), "met");
  assert.equal(verdict([2.9, 3.1], atLeast3), "at the line");
  assert.equal(verdict([2.5, 2.9], atLeast3), "not met");
});

test("the rounds' median interval needs five rounds, holds the median, and is the same for the same rounds", () => {
  assert.equal(medianInterval([1, 1.1, 0.9, 1.2]), undefined);
  const rounds = [1.02, 0.95, 1.1, 0.99, 1.05, 0.97, 1.01, 1.08, 0.93, 1.04, 1.0];
  const interval = medianInterval(rounds);
  assert.ok(interval);
  const [low, high] = interval;
  assert.ok(low <= 1.01 && 1.01 <= high, `median 1.01 in ${low}-${high}`);
  assert.ok(low >= Math.min(...rounds) && high <= Math.max(...rounds));
  assert.deepEqual(medianInterval(rounds), interval);
});
