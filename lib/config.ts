import { readFileSync } from "node:fs";
import * as z from "zod";
import type { AggregationRules } from "./aggregation.js";
import { DEFAULT_AWS_REQUEST_TIMEOUT_MS } from "./aws-clients.js";
import { ConfigError } from "./errors.js";
import { MAX_PACK_EVENTS } from "./pack.js";
import { registerSecret } from "./redact.js";
import { STRIPE_API_VERSION } from "./stripe/client.js";

/**
 * Every setting meterhook reads, from the environment, parsed once at cold start. This is the
 * only module that reads process.env. Unknown METERHOOK_* variables are refused so a typo in a
 * name fails start-up instead of silently using a default.
 */
const int = (def: number, min: number, max: number) => z.coerce.number().int().min(min).max(max).default(def);
const csv = z
  .string()
  .optional()
  .transform((s) =>
    (s ?? "")
      .split(",")
      .map((k) => k.trim())
      .filter(Boolean),
  );

export const EnvSchema = z.object({
  METERHOOK_API_KEYS: csv,
  METERHOOK_API_KEYS_SSM_PARAMETER: z.string().min(1).optional(),
  METERHOOK_API_KEYS_SECRET_ID: z.string().min(1).optional(),
  METERHOOK_INGEST_QUEUE_URL: z.string().url().optional(),
  METERHOOK_CONFIG: z.string().min(1).optional(),
  METERHOOK_DLQ_URL: z.string().url().optional(),
  // A DynamoDB table of what replays billed (lib/replay-ledger.ts); unset: replays keep no ledger.
  METERHOOK_REPLAY_LEDGER_TABLE: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{3,255}$/, "a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)")
    .optional(),
  METERHOOK_STRIPE_API: z.enum(["v1", "v2"]).default("v2"),
  METERHOOK_CUSTOMERS: z.string().optional(),
  METERHOOK_METER_VALUE_RULES: z.string().optional(),
  METERHOOK_AGGREGATE: z.string().optional(),
  METERHOOK_AGGREGATE_WINDOW_SECONDS: int(60, 1, 3600),
  METERHOOK_CUSTOMERS_FILE: z.string().optional(),
  METERHOOK_MAX_ATTEMPTS: int(5, 1, 1000),
  METERHOOK_CANCEL_ATTEMPTS: int(3, 1, 1000),
  METERHOOK_MAX_BODY_BYTES: int(1024 * 1024, 1024, 6 * 1024 * 1024),
  METERHOOK_MAX_EVENTS_PER_REQUEST: int(500, 1, 500),
  METERHOOK_EVENTS_PER_MESSAGE: int(1, 1, MAX_PACK_EVENTS),
  METERHOOK_PACK_RETRY_DELAY_SECONDS: int(360, 0, 900),
  METERHOOK_STOP_MARGIN_MS: int(2_000, 0, 60_000),
  METERHOOK_LOOKUP_CONCURRENCY: int(8, 1, 256),
  METERHOOK_LOG_LEVEL: z.enum(["debug", "info", "warn", "error"]).default("info"),
  // API keys and webhook secrets kept in a store are read again when this old (and on a key or
  // signature that matches none): rotation without a deploy.
  METERHOOK_SECRETS_MAX_AGE_SECONDS: int(300, 1, 86_400),
  // The stripe-reports function's schedule: each run reads the reports of one interval.
  METERHOOK_REPORTS_INTERVAL_MINUTES: int(5, 1, 1440),
  // Check each event_name against Stripe's active meters, and send each meter's payload keys.
  METERHOOK_METER_CHECK: z.enum(["on", "off"]).default("off"),
  METERHOOK_METERS_MAX_AGE_SECONDS: int(300, 10, 86_400),
  // Check each event's customer in Stripe (GET /v1/customers/{id}, remembered for the max age).
  METERHOOK_CUSTOMER_CHECK: z.enum(["on", "off"]).default("off"),
  METERHOOK_CUSTOMERS_MAX_AGE_SECONDS: int(3_600, 10, 7 * 86_400),
  // Trimmed as keys read from a store are: a key pasted or read from a file often ends in a newline.
  STRIPE_API_KEY: z.string().trim().optional(),
  STRIPE_API_KEY_SSM_PARAMETER: z.string().min(1).optional(),
  STRIPE_API_KEY_SECRET_ID: z.string().min(1).optional(),
  // The signing secrets (comma-separated, for a roll) of a Stripe event destination that pushes
  // thin events to POST /v1/stripe/events; or where one is stored.
  STRIPE_EVENTS_SECRET: csv,
  STRIPE_EVENTS_SECRET_SSM_PARAMETER: z.string().min(1).optional(),
  STRIPE_EVENTS_SECRET_SECRET_ID: z.string().min(1).optional(),
  STRIPE_API_BASE: z.string().url().default("https://api.stripe.com"),
  STRIPE_METER_EVENTS_BASE: z.string().url().default("https://meter-events.stripe.com"),
  STRIPE_API_VERSION: z.string().default(STRIPE_API_VERSION),
  STRIPE_TIMEOUT_MS: int(10_000, 100, 80_000),
  STRIPE_MAX_ATTEMPTS: int(3, 1, 10),
  STRIPE_MAX_CONNECTIONS: int(32, 1, 1024),
  STRIPE_PIPELINING: int(1, 1, 16),
  STRIPE_HTTP_CLIENT: z.enum(["wire", "undici"]).default("wire"),
  STRIPE_CONCURRENCY: int(8, 1, 256),
  STRIPE_STREAM_BATCH_SIZE: int(100, 1, 100),
  STRIPE_MAX_REQUESTS_PER_SECOND: z.coerce.number().positive().max(10_000).optional(),
  // Stripe allows 20 searches per second per account; 3 per instance keeps the stack's 5
  // consumer instances at 15, with room for the replay function and the app's own searches.
  STRIPE_SEARCH_MAX_REQUESTS_PER_SECOND: z.coerce.number().positive().max(10_000).default(3),
  // Customer checks share the account's read rate (100/s live, 25/s in test mode) with the app's
  // own calls: 2 per instance keeps the stack's 5 consumer instances at 10.
  STRIPE_CUSTOMER_CHECK_MAX_REQUESTS_PER_SECOND: z.coerce.number().positive().max(10_000).default(2),
  SQS_ENDPOINT: z.string().url().optional(),
  SSM_ENDPOINT: z.string().url().optional(),
  SECRETS_MANAGER_ENDPOINT: z.string().url().optional(),
  DYNAMODB_ENDPOINT: z.string().url().optional(),
  // Each AWS call's bound (SQS, DynamoDB, SSM, Secrets Manager): the SDK sets none (lib/aws-clients.ts).
  METERHOOK_AWS_REQUEST_TIMEOUT_MS: int(DEFAULT_AWS_REQUEST_TIMEOUT_MS, 100, 60_000),
  AWS_REGION: z.string().default("us-east-1"),
});

const KNOWN = new Set(Object.keys(EnvSchema.shape));

/** Where a secret lives on AWS: read at cold start, never put in the template or environment. */
export type SecretSource = { store: "ssm"; name: string } | { store: "secretsmanager"; name: string };

export interface Config {
  /** The mapping config file (YAML, JSON, or a JS/TS module of defineSource sources). */
  mappingConfigFile: string | undefined;
  /** The environment, for `{ env: NAME }` secret references in the mapping config. */
  env: Readonly<Record<string, string | undefined>>;
  apiKeys: readonly string[];
  apiKeysSource: SecretSource | undefined;
  ingestQueueUrl: string | undefined;
  deadLetterQueueUrl: string | undefined;
  /** The replay ledger's DynamoDB table (lib/replay-ledger.ts), if replays keep one. */
  replayLedgerTable: string | undefined;
  stripeApi: "v1" | "v2";
  customers: ReadonlyMap<string, string>;
  /** event_name → "positive" | "non-negative". */
  valueRules: ReadonlyMap<string, "positive" | "non-negative">;
  /** Pre-aggregation (off unless METERHOOK_AGGREGATE names meters). */
  aggregation: AggregationRules | undefined;
  maxAttempts: number;
  /** Deliveries of a cancellation Stripe refuses before it is dead-lettered (it may have overtaken its event). */
  cancelAttempts: number;
  maxBodyBytes: number;
  maxEventsPerRequest: number;
  /** Events the HTTP API puts in one ingest-queue message (lib/pack.ts); 1 = one per message. */
  eventsPerMessage: number;
  /** How long a pack's events to retry, queued again as a smaller pack, wait before delivery. */
  packRetryDelaySeconds: number;
  stopMarginMs: number;
  /** Customer lookups (HTTP, Stripe search) in flight at once per consumer invocation. */
  lookupConcurrency: number;
  logLevel: "debug" | "info" | "warn" | "error";
  /** Minutes of Stripe error reports each run of the stripe-reports function reads (its schedule's rate). */
  reportsIntervalMinutes: number;
  /** How old the HTTP API's API keys and webhook secrets may get before they are read again. */
  secretsMaxAgeMs: number;
  /**
   * The consumer checks events against Stripe's active meters (lib/stripe/meters.ts), read again
   * when `maxAgeMs` old; undefined when METERHOOK_METER_CHECK is off.
   */
  meterCheck: { maxAgeMs: number } | undefined;
  /**
   * The consumer checks each event's customer in Stripe (lib/stripe/customer-check.ts), again
   * when an answer is `maxAgeMs` old, at most `perSecond` checks a second; undefined when
   * METERHOOK_CUSTOMER_CHECK is off.
   */
  customerCheck: { maxAgeMs: number; perSecond: number } | undefined;
  stripe: {
    apiKey: string | undefined;
    apiKeySource: SecretSource | undefined;
    /** Signing secrets of the event destination that pushes Stripe's thin events (none: not set up). */
    eventsSecrets: string[];
    /** Where those are stored, read at the first notification rather than at cold start. */
    eventsSecretSource: SecretSource | undefined;
    apiBase: string;
    meterEventsBase: string;
    apiVersion: string;
    timeoutMs: number;
    maxAttempts: number;
    maxConnections: number;
    /** Requests sent on one connection before the first answer (1: no pipelining). */
    pipelining: number;
    /** HTTP client for Stripe and lookups: meterhook's own (lib/stripe/wire.ts) or undici. */
    httpClient: "wire" | "undici";
    concurrency: number;
    streamBatchSize: number;
    /** Client-side limit on Stripe requests per second, per process. */
    maxRequestsPerSecond: number | undefined;
    /** Client-side limit on Stripe customer searches per second, per process (within maxRequestsPerSecond). */
    searchMaxRequestsPerSecond: number;
  };
  aws: {
    region: string;
    /** Endpoint overrides (local runtime and tests); unset on AWS. */
    sqsEndpoint: string | undefined;
    ssmEndpoint: string | undefined;
    secretsManagerEndpoint: string | undefined;
    /** For the mapping config's `dynamodb` customer lookups and the replay ledger. */
    dynamodbEndpoint: string | undefined;
    /** Each AWS SDK request's bound (lib/aws-clients.ts). */
    requestTimeoutMs: number;
  };
}

const CustomerTableSchema = z.record(z.string().min(1), z.string().regex(/^cus_[A-Za-z0-9]+$/, "must be a cus_ id"));

function parseCustomers(inline: string | undefined, file: string | undefined): Map<string, string> {
  const table = new Map<string, string>();
  const add = (text: string, where: string) => {
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      throw new ConfigError(`${where} is not valid JSON`);
    }
    const parsed = CustomerTableSchema.safeParse(data);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ConfigError(`${where}: ${issue?.path.join(".") ?? ""} ${issue?.message ?? "invalid"}`.trim());
    }
    for (const [k, v] of Object.entries(parsed.data)) table.set(k, v);
  };
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new ConfigError(`METERHOOK_CUSTOMERS_FILE: cannot read ${file}: ${(err as Error).message}`);
    }
    add(text, "METERHOOK_CUSTOMERS_FILE");
  }
  if (inline) add(inline, "METERHOOK_CUSTOMERS");
  return table;
}

const ValueRulesSchema = z.record(z.string().min(1).max(100), z.enum(["positive", "non-negative", "any"]));

function parseValueRules(text: string | undefined): Map<string, "positive" | "non-negative"> {
  if (!text) return new Map();
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new ConfigError("METERHOOK_METER_VALUE_RULES is not valid JSON");
  }
  const parsed = ValueRulesSchema.safeParse(data);
  if (!parsed.success) {
    throw new ConfigError(
      `METERHOOK_METER_VALUE_RULES: ${parsed.error.issues[0]?.message} (values: positive, non-negative, any)`,
    );
  }
  return new Map(Object.entries(parsed.data).flatMap(([k, v]) => (v === "any" ? [] : [[k, v] as const])));
}

const AggregateSchema = z.record(z.string().min(1).max(100), z.enum(["sum", "count"]));

function parseAggregation(text: string | undefined, windowSeconds: number): AggregationRules | undefined {
  if (!text) return undefined;
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new ConfigError("METERHOOK_AGGREGATE is not valid JSON");
  }
  const parsed = AggregateSchema.safeParse(data);
  if (!parsed.success) {
    throw new ConfigError(`METERHOOK_AGGREGATE: ${parsed.error.issues[0]?.message} (values: sum, count)`);
  }
  const meters = new Map(Object.entries(parsed.data));
  return meters.size > 0 ? { meters, windowSeconds } : undefined;
}

function secretSource(name: string, ssm: string | undefined, secretId: string | undefined): SecretSource | undefined {
  if (ssm && secretId) throw new ConfigError(`set ${name}_SSM_PARAMETER or ${name}_SECRET_ID, not both`);
  if (ssm) return { store: "ssm", name: ssm };
  if (secretId) return { store: "secretsmanager", name: secretId };
  return undefined;
}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const unknown = Object.keys(env).filter((k) => k.startsWith("METERHOOK_") && !KNOWN.has(k));
  if (unknown.length > 0) throw new ConfigError(`unknown setting(s): ${unknown.join(", ")}`);
  const parsed = EnvSchema.safeParse(env);
  if (!parsed.success) {
    const msgs = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
    throw new ConfigError(`invalid settings: ${msgs.join("; ")}`);
  }
  const e = parsed.data;
  registerSecret(e.STRIPE_API_KEY);
  for (const k of e.METERHOOK_API_KEYS) registerSecret(k);
  for (const k of e.STRIPE_EVENTS_SECRET) registerSecret(k);
  return Object.freeze({
    mappingConfigFile: e.METERHOOK_CONFIG,
    env: Object.freeze({ ...env }),
    apiKeys: e.METERHOOK_API_KEYS,
    apiKeysSource: secretSource(
      "METERHOOK_API_KEYS",
      e.METERHOOK_API_KEYS_SSM_PARAMETER,
      e.METERHOOK_API_KEYS_SECRET_ID,
    ),
    ingestQueueUrl: e.METERHOOK_INGEST_QUEUE_URL,
    deadLetterQueueUrl: e.METERHOOK_DLQ_URL,
    replayLedgerTable: e.METERHOOK_REPLAY_LEDGER_TABLE,
    stripeApi: e.METERHOOK_STRIPE_API,
    customers: parseCustomers(e.METERHOOK_CUSTOMERS, e.METERHOOK_CUSTOMERS_FILE),
    valueRules: parseValueRules(e.METERHOOK_METER_VALUE_RULES),
    aggregation: parseAggregation(e.METERHOOK_AGGREGATE, e.METERHOOK_AGGREGATE_WINDOW_SECONDS),
    maxAttempts: e.METERHOOK_MAX_ATTEMPTS,
    cancelAttempts: e.METERHOOK_CANCEL_ATTEMPTS,
    maxBodyBytes: e.METERHOOK_MAX_BODY_BYTES,
    maxEventsPerRequest: e.METERHOOK_MAX_EVENTS_PER_REQUEST,
    eventsPerMessage: e.METERHOOK_EVENTS_PER_MESSAGE,
    packRetryDelaySeconds: e.METERHOOK_PACK_RETRY_DELAY_SECONDS,
    stopMarginMs: e.METERHOOK_STOP_MARGIN_MS,
    lookupConcurrency: e.METERHOOK_LOOKUP_CONCURRENCY,
    logLevel: e.METERHOOK_LOG_LEVEL,
    reportsIntervalMinutes: e.METERHOOK_REPORTS_INTERVAL_MINUTES,
    secretsMaxAgeMs: e.METERHOOK_SECRETS_MAX_AGE_SECONDS * 1000,
    meterCheck: e.METERHOOK_METER_CHECK === "on" ? { maxAgeMs: e.METERHOOK_METERS_MAX_AGE_SECONDS * 1000 } : undefined,
    customerCheck:
      e.METERHOOK_CUSTOMER_CHECK === "on"
        ? {
            maxAgeMs: e.METERHOOK_CUSTOMERS_MAX_AGE_SECONDS * 1000,
            perSecond: e.STRIPE_CUSTOMER_CHECK_MAX_REQUESTS_PER_SECOND,
          }
        : undefined,
    stripe: {
      apiKey: e.STRIPE_API_KEY,
      apiKeySource: secretSource("STRIPE_API_KEY", e.STRIPE_API_KEY_SSM_PARAMETER, e.STRIPE_API_KEY_SECRET_ID),
      eventsSecrets: e.STRIPE_EVENTS_SECRET,
      eventsSecretSource: secretSource(
        "STRIPE_EVENTS_SECRET",
        e.STRIPE_EVENTS_SECRET_SSM_PARAMETER,
        e.STRIPE_EVENTS_SECRET_SECRET_ID,
      ),
      apiBase: e.STRIPE_API_BASE,
      meterEventsBase: e.STRIPE_METER_EVENTS_BASE,
      apiVersion: e.STRIPE_API_VERSION,
      timeoutMs: e.STRIPE_TIMEOUT_MS,
      maxAttempts: e.STRIPE_MAX_ATTEMPTS,
      maxConnections: e.STRIPE_MAX_CONNECTIONS,
      pipelining: e.STRIPE_PIPELINING,
      httpClient: e.STRIPE_HTTP_CLIENT,
      concurrency: e.STRIPE_CONCURRENCY,
      streamBatchSize: e.STRIPE_STREAM_BATCH_SIZE,
      maxRequestsPerSecond: e.STRIPE_MAX_REQUESTS_PER_SECOND,
      searchMaxRequestsPerSecond: e.STRIPE_SEARCH_MAX_REQUESTS_PER_SECOND,
    },
    aws: {
      region: e.AWS_REGION,
      sqsEndpoint: e.SQS_ENDPOINT,
      ssmEndpoint: e.SSM_ENDPOINT,
      secretsManagerEndpoint: e.SECRETS_MANAGER_ENDPOINT,
      dynamodbEndpoint: e.DYNAMODB_ENDPOINT,
      requestTimeoutMs: e.METERHOOK_AWS_REQUEST_TIMEOUT_MS,
    },
  });
}

/** A setting a given entry point cannot run without. */
export function required<T>(value: T | undefined, name: string): T {
  if (value === undefined || (Array.isArray(value) && value.length === 0)) {
    throw new ConfigError(`${name} is required`);
  }
  return value;
}
