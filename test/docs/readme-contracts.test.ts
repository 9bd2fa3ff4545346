/**
 * The README is where users find meterhook's contracts: every dead-letter code the consumer can
 * write, every HTTP error code the API answers, every setting it reads, every metric it emits. These checks keep a new one from
 * shipping undocumented.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { EnvSchema } from "../../lib/config.js";
import { DeadLetterCode } from "../../lib/errors.js";
import { Metric } from "../../lib/metrics.js";
import { ReportMetric } from "../../lib/stripe/error-reports.js";

const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");

/** The first cells of the table rows in the section under `heading` (up to the next `## `). */
function firstCells(heading: string): string[] {
  const start = readme.indexOf(heading);
  assert.ok(start >= 0, `no section ${heading}`);
  const end = readme.indexOf("\n## ", start + heading.length);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/^\|\s*`([^`]+)`/gm)].map((m) => m[1] as string);
}

test("the README's dead-letter table has a row for every code", () => {
  const rows = firstCells("## Dead-letter queue");
  assert.ok(rows.length > 5, "the table was found");
  for (const code of Object.values(DeadLetterCode)) assert.ok(rows.includes(code), `no row for ${code}`);
});

test("the README names every environment variable meterhook reads", () => {
  for (const name of Object.keys(EnvSchema.shape))
    assert.ok(readme.includes(`\`${name}\``), `${name} is not in the README`);
});

test("the README names every metric meterhook emits", () => {
  for (const name of [...Object.values(Metric), ...Object.values(ReportMetric)]) {
    assert.ok(readme.includes(`\`${name}\``), `${name} is not in the README`);
  }
});

test("the README names every error code the HTTP API answers", () => {
  const lib = new URL("../../lib/", import.meta.url);
  const codes = new Set<string>();
  for (const file of readdirSync(lib, { recursive: true, encoding: "utf8" })) {
    if (!file.endsWith(".ts")) continue;
    const text = readFileSync(new URL(file, lib), "utf8");
    for (const m of text.matchAll(/httpError\(\s*\d{3},\s*"([a-z_]+)"/g)) codes.add(m[1] as string);
  }
  assert.ok(codes.size >= 8, "the codes were found");
  for (const code of codes) assert.ok(readme.includes(`\`${code}\``), `${code} is not in the README`);
});
