import { readFileSync } from "node:fs";
import { isAbsolute, resolve as resolvePath } from "node:path";
import { pathToFileURL } from "node:url";
import type { SecretSource } from "../config.js";
import type { Mapping } from "../consumer.js";
import {
  type CustomerLookup,
  CustomerResolver,
  cachedLookup,
  staticTableLookup,
  stripeIdLookup,
} from "../customers.js";
import { ConfigError } from "../errors.js";
import { registerSecret } from "../redact.js";
import { readSecret, type SecretReader } from "../secrets.js";
import type { HttpTransport } from "../stripe/transport.js";
import { verifyTokensKey } from "../webhooks/handshakes.js";
import type { CustomerLookupConfig, SecretRef } from "./config-schema.js";
import { compileSource, mapTrigger, type Source } from "./engine.js";
import { readMappingConfig } from "./load.js";
import { dynamodbLookup, type GetItem, httpLookup, type StripeGet, stripeSearchLookup } from "./lookups.js";

/** A mapping as loaded at cold start: its sources, and the SQS default source. */
export interface LoadedMapping {
  sources: Map<string, Source>;
  defaultSqsSource?: string;
}

/** What a code config module (METERHOOK_CONFIG=./sources.ts) exports as default. */
export interface CodeMapping {
  sources: Source[];
  defaultSqsSource?: string;
}

/** METERHOOK_CONFIG's prefix for a code config bundled into the function (scripts/build.ts). */
export const BUNDLED_CONFIG_PREFIX = "bundled:";

/**
 * Loads METERHOOK_CONFIG: a YAML/JSON mapping config (validated; start-up fails listing every
 * problem with its path), or a JS/TS module whose default export is `{ sources: [defineSource(...)] }`:
 * imported from its file, or, deployed (`bundled:<path>`), the one the build put in the bundle.
 */
export async function loadMapping(file: string): Promise<LoadedMapping> {
  const bundled = file.startsWith(BUNDLED_CONFIG_PREFIX);
  if (bundled || /\.(m?js|ts)$/.test(file)) {
    const mod = (
      bundled
        ? await import("meterhook-code-config")
        : await import(pathToFileURL(isAbsolute(file) ? file : resolvePath(file)).href)
    ) as { default?: CodeMapping };
    const code = mod.default;
    if (!code || !Array.isArray(code.sources))
      throw new ConfigError(
        bundled && code === undefined
          ? `${file}: this bundle was built without a code mapping config (METERHOOK_BUNDLE_CONFIG; osls package sets it from mappingConfig)`
          : `${file}: default export must be { sources: [...] }`,
      );
    return { sources: new Map(code.sources.map((s) => [s.name, s])), defaultSqsSource: code.defaultSqsSource };
  }
  const { config, issues } = await readMappingConfig(file);
  if (!config) {
    throw new ConfigError(
      `METERHOOK_CONFIG ${file} is invalid:\n${issues.map((i) => `  ${i.path}: ${i.message}`).join("\n")}`,
    );
  }
  return {
    sources: new Map(Object.entries(config.sources).map(([name, s]) => [name, compileSource(name, s)])),
    defaultSqsSource: config.sqs?.defaultSource,
  };
}

/** Reads a secret reference: environment, SSM, Secrets Manager, or a literal (local use). */
export async function readSecretRef(
  ref: SecretRef,
  env: Record<string, string | undefined>,
  reader: SecretReader,
): Promise<string> {
  let value: string | undefined;
  if ("value" in ref) value = ref.value;
  else if ("env" in ref) {
    value = env[ref.env];
    if (!value) throw new ConfigError(`environment variable ${ref.env} (a secret of the mapping config) is not set`);
  } else {
    const source: SecretSource =
      "ssm" in ref ? { store: "ssm", name: ref.ssm } : { store: "secretsmanager", name: ref.secretsManager };
    value = await readSecret(reader, source, "webhook ");
  }
  registerSecret(value);
  return value;
}

/** The webhook secrets of every signed webhook source, read once per cold start. */
export async function webhookSecrets(
  mapping: LoadedMapping,
  env: Record<string, string | undefined>,
  reader: SecretReader,
): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const source of mapping.sources.values()) {
    if (source.type !== "webhook" || !("secrets" in source.auth)) continue;
    out.set(source.name, await Promise.all(source.auth.secrets.map((r) => readSecretRef(r, env, reader))));
    if (source.auth.scheme === "meta")
      out.set(
        verifyTokensKey(source.name),
        await Promise.all(source.auth.verifyTokens.map((r) => readSecretRef(r, env, reader))),
      );
  }
  return out;
}

function lookupFor(
  config: CustomerLookupConfig,
  deps: { transport: HttpTransport; stripeGet: StripeGet; getItem: GetItem; headers: Record<string, string> },
): CustomerLookup | undefined {
  switch (config.lookup) {
    case "event":
      return undefined;
    case "table": {
      const table = new Map(Object.entries(config.table));
      if (config.file) {
        try {
          for (const [k, v] of Object.entries(JSON.parse(readFileSync(config.file, "utf8")) as Record<string, string>))
            table.set(k, v);
        } catch (err) {
          throw new ConfigError(`customer table ${config.file}: ${(err as Error).message}`);
        }
      }
      return staticTableLookup(table);
    }
    case "http":
      return httpLookup(deps.transport, {
        url: config.url,
        headers: deps.headers,
        timeoutMs: config.timeoutMs,
        stripeIdPath: config.stripeIdPath,
      });
    case "dynamodb":
      return dynamodbLookup(deps.getItem, config);
    case "stripe-search":
      return stripeSearchLookup(deps.stripeGet, config.metadataKey);
  }
}

/** One customer resolver per source: `cus_` ids as they are, then its cached lookup. */
export async function customerResolvers(
  mapping: LoadedMapping,
  deps: {
    transport: HttpTransport;
    stripeGet: StripeGet;
    /** DynamoDB's GetItem, for `dynamodb` lookups (lib/aws-dynamodb.ts). */
    getItem: GetItem;
    env: Record<string, string | undefined>;
    reader: SecretReader;
  },
): Promise<Map<string, CustomerResolver>> {
  const out = new Map<string, CustomerResolver>();
  for (const source of mapping.sources.values()) {
    const c = source.customer;
    const headers: Record<string, string> = {};
    if (c.lookup === "http") {
      for (const [k, v] of Object.entries(c.headers))
        headers[k] = typeof v === "string" ? v : await readSecretRef(v, deps.env, deps.reader);
    }
    const lookup = lookupFor(c, { ...deps, headers });
    const lookups = lookup
      ? [
          stripeIdLookup,
          cachedLookup(lookup, { ttlMs: c.cacheTtlSeconds * 1000, negativeTtlMs: c.negativeCacheTtlSeconds * 1000 }),
        ]
      : [stripeIdLookup];
    out.set(source.name, new CustomerResolver(lookups, c.notFoundAttempts));
  }
  return out;
}

export function toConsumerMapping(mapping: LoadedMapping, resolvers: Map<string, CustomerResolver>): Mapping {
  return { sources: mapping.sources, resolvers, defaultSqsSource: mapping.defaultSqsSource, map: mapTrigger };
}
