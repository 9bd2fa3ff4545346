import { readFileSync } from "node:fs";
import type * as z from "zod";
import { type MappingConfig, MappingConfigSchema } from "./config-schema.js";
import { checkExpression } from "./expressions.js";

export interface ConfigIssue {
  /** Where in the file, e.g. `sources.github.rules[0].emit[1].value`. */
  path: string;
  message: string;
}

function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || "(root)";
}

/** Checks zod cannot express: expressions compile, references resolve, rules are unambiguous. */
function semanticIssues(config: MappingConfig): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const expr = (path: string, e: string | undefined) => {
    const problem = e === undefined ? undefined : checkExpression(e);
    if (problem) issues.push({ path, message: problem });
  };
  for (const [name, source] of Object.entries(config.sources)) {
    const at = `sources.${name}`;
    if (source.type === "webhook" && source.auth.scheme === "none") {
      issues.push({ path: `${at}.auth`, message: "a webhook source needs a signature scheme or api-key" });
    }
    if (source.type !== "webhook" && source.auth.scheme !== "none") {
      issues.push({ path: `${at}.auth`, message: `${source.type} sources are authenticated by AWS: use scheme none` });
    }
    if (source.type === "eventbridge" && !source.match?.source && !source.match?.detailType) {
      issues.push({ path: `${at}.match`, message: "an eventbridge source needs match.source or match.detailType" });
    }
    if (source.customer.lookup === "http") expr(`${at}.customer.stripeIdPath`, source.customer.stripeIdPath);
    const ruleNames = new Set<string>();
    source.rules.forEach((rule, r) => {
      const rat = `${at}.rules[${r}]`;
      if (ruleNames.has(rule.name)) issues.push({ path: `${rat}.name`, message: `duplicate rule name "${rule.name}"` });
      ruleNames.add(rule.name);
      for (const k of ["each", "when", "id", "customer", "timestamp"] as const) expr(`${rat}.${k}`, rule[k]);
      if (rule.each !== undefined) {
        // Every item would get the same identifier, and Stripe would keep one of them.
        const ids = [...(rule.emit ?? []), ...(rule.cancel ?? [])].map((x) => x.id ?? rule.id);
        if (ids.some((id) => id !== undefined && !/\b(item|index)\b/.test(id)))
          issues.push({ path: `${rat}.id`, message: "with each, an id must tell the items apart: use item or index" });
        // Position 0 of every batch would share one identifier: Stripe would drop all but the first.
        else if (ids.some((id) => id !== undefined && !/\bitem\b/.test(id) && !/\b(body|headers|query)\b/.test(id)))
          issues.push({
            path: `${rat}.id`,
            message: "index alone repeats in every trigger: join it with the trigger's own id (body.batch_id)",
          });
      }
      const names = new Set<string>();
      rule.cancel?.forEach((c, i) => {
        const cat = `${rat}.cancel[${i}]`;
        expr(`${cat}.id`, c.id);
        if (!(c.id ?? rule.id))
          issues.push({ path: `${cat}.id`, message: "an id expression is required (here or on the rule)" });
        if (c.rule === undefined) return;
        const made = config.sources[c.source ?? name]?.rules.find((other) => other.name === c.rule);
        if (!made?.emit?.some((e) => e.event_name === c.event_name)) {
          issues.push({
            path: `${cat}.rule`,
            message: `no rule "${c.rule}" of source "${c.source ?? name}" emits "${c.event_name}"`,
          });
        }
      });
      rule.emit?.forEach((emit, i) => {
        const eat = `${rat}.emit[${i}]`;
        if (names.has(emit.event_name)) {
          issues.push({
            path: `${eat}.event_name`,
            message: "each emit of a rule needs its own event_name (it is part of the identifier)",
          });
        }
        names.add(emit.event_name);
        for (const k of ["value", "id", "customer", "timestamp"] as const) expr(`${eat}.${k}`, emit[k]);
        for (const [p, e] of Object.entries(emit.properties ?? {})) expr(`${eat}.properties.${p}`, e);
        if (!(emit.id ?? rule.id))
          issues.push({ path: `${eat}.id`, message: "an id expression is required (here or on the rule)" });
        if (!(emit.customer ?? rule.customer)) {
          issues.push({ path: `${eat}.customer`, message: "a customer expression is required (here or on the rule)" });
        }
      });
    });
  }
  const def = config.sqs?.defaultSource;
  if (def !== undefined && config.sources[def]?.type !== "sqs") {
    issues.push({ path: "sqs.defaultSource", message: `"${def}" is not an sqs source of this config` });
  }
  return issues;
}

/** Validates parsed config data; answers every problem with its path. */
export function validateMappingConfig(data: unknown): { config?: MappingConfig; issues: ConfigIssue[] } {
  // jitless: zod would otherwise generate (eval) a fast path per object schema, worth it for
  // schemas parsed many times, not for one config parsed once at cold start.
  const parsed = MappingConfigSchema.safeParse(data, { jitless: true });
  if (!parsed.success) {
    return {
      issues: parsed.error.issues.map((i: z.core.$ZodIssue) => ({ path: formatPath(i.path), message: i.message })),
    };
  }
  const issues = semanticIssues(parsed.data);
  return issues.length > 0 ? { issues } : { config: parsed.data, issues: [] };
}

/**
 * Reads a YAML or JSON mapping config file. A `.json` file is read by `JSON.parse`, and the YAML
 * parser is not loaded at all: it is most of what a mapping config adds to a cold start.
 */
export async function readMappingConfig(file: string): Promise<{ config?: MappingConfig; issues: ConfigIssue[] }> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    return { issues: [{ path: "(file)", message: `cannot read ${file}: ${(err as Error).message}` }] };
  }
  let data: unknown;
  const json = file.endsWith(".json");
  try {
    data = json ? JSON.parse(text) : (await import("./yaml.js")).parseYaml(text);
  } catch (err) {
    return {
      issues: [{ path: "(file)", message: `not valid ${json ? "JSON" : "YAML/JSON"}: ${(err as Error).message}` }],
    };
  }
  return validateMappingConfig(data);
}
