import type { SQSClient } from "@aws-sdk/client-sqs";
import { awsClientConfig } from "./aws-clients.js";
import { createDynamoItemReader, createDynamoReplayLedger } from "./aws-dynamodb.js";
import { createAwsSecretReader } from "./aws-secrets.js";
import { type Config, required } from "./config.js";
import { type BatchResult, type ConsumerDeps, processBatch, type QueueMessage } from "./consumer.js";
import { CustomerResolver, staticTableLookup, stripeIdLookup } from "./customers.js";
import { summarizeDeadLetters } from "./dlq-summary.js";
import { TransientError } from "./errors.js";
import type { HttpRequest, HttpResponse } from "./http.js";
import { createIngestApi, type WebhookSources } from "./ingest-api.js";
import { createLogger, type Logger } from "./logger.js";
import type { StripeGet } from "./mapping/lookups.js";
import type { LoadedMapping } from "./mapping/runtime.js";
import { type Metrics, noMetrics } from "./metrics.js";
import { createSqsReader, createSqsSender, type SqsClientSource } from "./queue.js";
import { type ReplayOptions, type ReplayReport, replayDeadLetters } from "./replay.js";
import {
  apiKeysReloader,
  resolveSecrets,
  type SecretReader,
  stripeEventsSecrets,
  stripeKeyReloader,
} from "./secrets.js";
import { StripeClient } from "./stripe/client.js";
import { checkingCustomers } from "./stripe/customer-check.js";
import {
  type ErrorReport,
  publishErrorReports,
  ReportMetric,
  readErrorReport,
  readErrorReports,
  refusedIn,
} from "./stripe/error-reports.js";
import { createStripeEventReceiver } from "./stripe/event-notifications.js";
import { createCanceller } from "./stripe/meter-event-adjustments.js";
import { checkingMeters } from "./stripe/meters.js";
import { RateLimiter } from "./stripe/rate-limiter.js";
import { DEFAULT_RETRY, realRetryEnv } from "./stripe/retry-policy.js";
import type { MeterEventSubmitter } from "./stripe/submitter.js";
import type { HttpTransport } from "./stripe/transport.js";
import { createV1Submitter } from "./stripe/v1-meter-events.js";
import { createV2StreamSubmitter } from "./stripe/v2-meter-event-stream.js";

/**
 * Builds the pipeline's parts from config, once per cold start. Each entry point asks only for
 * what it uses, so the HTTP function needs no Stripe key and the consumer no API keys.
 */
export interface AppDeps {
  /** An SQS client, or a function that makes one (called once, on first use). */
  sqs?: SqsClientSource;
  logger?: Logger;
  metrics?: Metrics;
  /** Reads secrets that config points at (default: SSM / Secrets Manager through Powertools). */
  secretReader?: SecretReader;
  /** Sources given in code instead of METERHOOK_CONFIG. */
  mapping?: LoadedMapping;
  /** HTTP to Stripe and lookup services (default: undici, configured from config.stripe). */
  transport?: HttpTransport;
}

/** Makes the SQS client on first use (loading the AWS SDK only then). */
export function sqsClientFor(config: Config): () => Promise<SQSClient>;
export function sqsClientFor(config: Config, given?: SqsClientSource): SqsClientSource;
export function sqsClientFor(config: Config, given?: SqsClientSource): SqsClientSource {
  if (given) return given;
  // Memoised here, so that every queue a part writes to or reads from shares one client.
  let client: Promise<SQSClient> | undefined;
  return () => {
    client ??= import("@aws-sdk/client-sqs").then(
      ({ SQSClient }) =>
        new SQSClient(
          awsClientConfig({
            region: config.aws.region,
            endpoint: config.aws.sqsEndpoint,
            requestTimeoutMs: config.aws.requestTimeoutMs,
          }),
        ),
    );
    return client;
  };
}

/** Reads secrets from SSM and Secrets Manager as the functions do (the CLI's `send` too). */
export function secretReaderFor(config: Config, deps: AppDeps = {}): SecretReader {
  return (
    deps.secretReader ??
    createAwsSecretReader({
      region: config.aws.region,
      ssmEndpoint: config.aws.ssmEndpoint,
      secretsManagerEndpoint: config.aws.secretsManagerEndpoint,
      requestTimeoutMs: config.aws.requestTimeoutMs,
    })
  );
}

export interface IngestApi {
  handle(req: HttpRequest): Promise<HttpResponse>;
}

/** The mapping engine (YAML, JMESPath) is loaded only when a mapping is configured. */
const mappingRuntime = () => import("./mapping/runtime.js");

async function mappingFor(config: Config, deps: AppDeps): Promise<LoadedMapping | undefined> {
  if (deps.mapping) return deps.mapping;
  return config.mappingConfigFile ? (await mappingRuntime()).loadMapping(config.mappingConfigFile) : undefined;
}

export async function createIngestApiFromConfig(config: Config, deps: AppDeps = {}): Promise<IngestApi> {
  const reader = secretReaderFor(config, deps);
  const resolved = await resolveSecrets(config, reader, { apiKeys: true });
  const mapping = await mappingFor(config, deps);
  const runtime = mapping ? await mappingRuntime() : undefined;
  const webhooks: WebhookSources | undefined =
    mapping && runtime
      ? {
          sources: mapping.sources,
          secrets: await runtime.webhookSecrets(mapping, config.env, reader),
          // Read again as the API keys are: a secret changed in SSM needs no deploy.
          reloadSecrets: () => runtime.webhookSecrets(mapping, config.env, reader),
          secretsMaxAgeMs: config.secretsMaxAgeMs,
        }
      : undefined;
  const hasWebhooks = [...(mapping?.sources.values() ?? [])].some((s) => s.type === "webhook");
  return createIngestApi({
    apiKeys: hasWebhooks
      ? resolved.apiKeys
      : required(resolved.apiKeys, "METERHOOK_API_KEYS (or METERHOOK_API_KEYS_SSM_PARAMETER)"),
    reloadApiKeys: apiKeysReloader(config, reader),
    apiKeysMaxAgeMs: config.secretsMaxAgeMs,
    webhooks,
    ingestQueue: createSqsSender(
      sqsClientFor(config, deps.sqs),
      required(config.ingestQueueUrl, "METERHOOK_INGEST_QUEUE_URL"),
    ),
    logger: deps.logger ?? createLogger({ level: config.logLevel, base: { component: "http-api" } }),
    metrics: deps.metrics,
    maxBodyBytes: config.maxBodyBytes,
    maxEventsPerRequest: config.maxEventsPerRequest,
    eventsPerMessage: config.eventsPerMessage,
    valueRules: config.valueRules,
  });
}

export function createStripeClient(
  config: Config,
  transport: HttpTransport,
  logger: Logger,
  metrics: Metrics = noMetrics,
  reloadKey?: () => Promise<string>,
): StripeClient {
  const s = config.stripe;
  return new StripeClient(
    {
      apiKey: required(s.apiKey, "STRIPE_API_KEY (or STRIPE_API_KEY_SSM_PARAMETER)"),
      apiBase: s.apiBase,
      meterEventsBase: s.meterEventsBase,
      apiVersion: s.apiVersion,
      timeoutMs: s.timeoutMs,
      retry: { ...DEFAULT_RETRY, maxAttempts: s.maxAttempts },
      limiter: s.maxRequestsPerSecond ? new RateLimiter(s.maxRequestsPerSecond) : undefined,
      reloadKey,
    },
    transport,
    logger,
    realRetryEnv,
    metrics,
  );
}

export interface SubmitterOptions {
  /**
   * A replay's: customer checks wait for their turn under the rate (no invocation waits on a
   * replay), and a letter whose customer could not be read stays in the DLQ, never sent unchecked.
   */
  replaying?: boolean;
}

export function createSubmitter(
  config: Config,
  client: StripeClient,
  logger: Logger,
  metrics: Metrics,
  options: SubmitterOptions = {},
): MeterEventSubmitter {
  const s = config.stripe;
  const common = { concurrency: s.concurrency, stopMarginMs: config.stopMarginMs };
  const submitter =
    config.stripeApi === "v1"
      ? createV1Submitter(client, common)
      : createV2StreamSubmitter(client, { ...common, batchSize: s.streamBatchSize });
  const checked = config.meterCheck
    ? checkingMeters(submitter, client, logger, { ...config.meterCheck, metrics })
    : submitter;
  // Outside the meter check: it sees events under Stripe's default customer key.
  const c = config.customerCheck;
  return c
    ? checkingCustomers(checked, client, logger, {
        maxAgeMs: c.maxAgeMs,
        limiter: new RateLimiter(c.perSecond, Math.max(1, Math.ceil(c.perSecond))),
        waitForTurns: options.replaying,
        metrics,
      })
    : checked;
}

async function consumerMapping(
  mapping: LoadedMapping,
  deps: Parameters<Awaited<ReturnType<typeof mappingRuntime>>["customerResolvers"]>[1],
) {
  const runtime = await mappingRuntime();
  return runtime.toConsumerMapping(mapping, await runtime.customerResolvers(mapping, deps));
}

export interface Consumer {
  readonly deps: ConsumerDeps;
  process(messages: readonly QueueMessage[], deadline: number): Promise<BatchResult>;
  close(): Promise<void>;
}

/**
 * The HTTP client for Stripe and lookups. Imported here, not at the top: the HTTP API and
 * EventBridge functions never call Stripe. Pipelining is undici's (lib/stripe/wire.ts sends one
 * request per connection at a time).
 */
async function transportFor(config: Config): Promise<HttpTransport> {
  const { maxConnections, pipelining, httpClient } = config.stripe;
  if (httpClient === "undici" || pipelining > 1) {
    return (await import("./stripe/undici-transport.js")).createUndiciTransport({
      connections: maxConnections,
      pipelining,
    });
  }
  return (await import("./stripe/wire.js")).createWireTransport({ connections: maxConnections });
}

/** What every entry point that calls Stripe builds first: its key read, logger, HTTP client and Stripe client. */
async function stripeSide(config: Config, deps: AppDeps, component: string) {
  const reader = secretReaderFor(config, deps);
  const resolved = await resolveSecrets(config, reader, { stripeKey: true });
  const logger = deps.logger ?? createLogger({ level: config.logLevel, base: { component } });
  const metrics = deps.metrics ?? noMetrics;
  const transport = deps.transport ?? (await transportFor(config));
  // A key Stripe refuses is read again from its store: rolled keys need no deploy.
  const client = createStripeClient(resolved, transport, logger, metrics, stripeKeyReloader(config, reader));
  return { reader, resolved, logger, metrics, transport, client };
}

/** The pipeline's consumer side: customer resolution, Stripe submission, dead letters. */
export async function createConsumerFromConfig(
  config: Config,
  deps: AppDeps = {},
  options: SubmitterOptions = {},
): Promise<Consumer> {
  const { reader, resolved, logger, metrics, transport, client } = await stripeSide(config, deps, "consumer");
  const mapping = await mappingFor(config, deps);
  // The customer search lookup's GET. Stripe limits searches to 20 per second per account, apart
  // from (and within) its other limits: every attempt takes a turn under this instance's share.
  const searches = new RateLimiter(config.stripe.searchMaxRequestsPerSecond);
  const stripeGet: StripeGet = async (path, query, startBy = Number.POSITIVE_INFINITY) => {
    const v = await client.call({
      base: "api",
      method: "GET",
      path,
      query,
      deadline: Date.now() + config.stripe.timeoutMs * 2,
      limit: { limiter: searches, name: "STRIPE_SEARCH_MAX_REQUESTS_PER_SECOND", startBy },
    });
    if (v.kind === "retry" && v.notStarted) {
      throw new TransientError("customer_lookup_failed", `customer lookup not started: ${v.reason}`);
    }
    if (v.kind === "ok") return { status: 200, body: v.body };
    return v.kind === "retry" ? { error: v.reason } : { status: v.status, body: "" };
  };
  // One SQS client (made on first use) for the DLQ and, with pre-aggregation, the ingest queue.
  const sqs = sqsClientFor(config, deps.sqs);
  // Pre-aggregation cannot work without the ingest queue; packs' retries use it when it is known.
  const requeueUrl = config.aggregation
    ? required(config.ingestQueueUrl, "METERHOOK_INGEST_QUEUE_URL (METERHOOK_AGGREGATE requeues through it)")
    : config.ingestQueueUrl;
  const consumerDeps: ConsumerDeps = {
    resolver: new CustomerResolver([stripeIdLookup, staticTableLookup(config.customers)]),
    mapping: mapping
      ? await consumerMapping(mapping, {
          transport,
          stripeGet,
          getItem: createDynamoItemReader({
            region: config.aws.region,
            endpoint: config.aws.dynamodbEndpoint,
            requestTimeoutMs: config.aws.requestTimeoutMs,
          }),
          env: config.env,
          reader,
        })
      : undefined,
    submitter: createSubmitter(resolved, client, logger, metrics, options),
    canceller: createCanceller(client, { concurrency: config.stripe.concurrency, stopMarginMs: config.stopMarginMs }),
    deadLetterQueue: createSqsSender(sqs, required(config.deadLetterQueueUrl, "METERHOOK_DLQ_URL")),
    logger,
    metrics,
    maxAttempts: config.maxAttempts,
    cancelAttempts: config.cancelAttempts,
    stopMarginMs: config.stopMarginMs,
    lookupConcurrency: config.lookupConcurrency,
    valueRules: config.valueRules,
    aggregation: config.aggregation,
    // A combined event that fails goes back on the ingest queue as itself (lib/aggregation.ts),
    // and a pack's events to retry as a smaller pack (lib/pack.ts).
    requeue: requeueUrl ? createSqsSender(sqs, requeueUrl) : undefined,
    packRetryDelaySeconds: config.packRetryDelaySeconds,
    // What replays billed: former dead letters (a replay's, or SQS's redrive) are checked against it.
    ...(config.replayLedgerTable
      ? {
          replayLedger: createDynamoReplayLedger({
            region: config.aws.region,
            endpoint: config.aws.dynamodbEndpoint,
            requestTimeoutMs: config.aws.requestTimeoutMs,
            tableName: config.replayLedgerTable,
          }),
        }
      : {}),
  };
  return {
    deps: consumerDeps,
    async process(messages, deadline) {
      const result = await processBatch(messages, deadline, consumerDeps);
      logger.info("batch done", {
        messages: messages.length,
        billed: result.billed,
        ...(result.billedInPart ? { billedInPart: result.billedInPart } : {}),
        duplicates: result.duplicates,
        ...(result.ledger ? { ledger: result.ledger } : {}),
        requeued: result.requeued,
        ...(result.ignoredBySource ? { ignored: result.ignoredBySource } : {}),
        ...(result.cancelled > 0 ? { cancelled: result.cancelled } : {}),
        ...(result.alreadyCancelled > 0 ? { alreadyCancelled: result.alreadyCancelled } : {}),
        retried: result.retried,
        deadLettered: result.deadLettered,
      });
      return result;
    },
    close: () => transport.close(),
  };
}

/** Reads Stripe's asynchronous error reports (the stripe-reports function). */
export interface ErrorReportReader {
  /** Reads the reports Stripe created in (from, to], logs each and counts what they refused. */
  run(window: { from: number; to: number }, deadline: number): Promise<ErrorReport[]>;
  /** `POST /v1/stripe/events`: a thin event notification an event destination pushed. */
  receive(req: HttpRequest, deadline: number): Promise<HttpResponse>;
  close(): Promise<void>;
}

export async function createErrorReportReaderFromConfig(
  config: Config,
  deps: AppDeps = {},
  /** Told of each report a pushed notification named, once logged and counted (the local runtime's list). */
  onPushed: (report: ErrorReport) => void = () => {},
): Promise<ErrorReportReader> {
  const { reader, logger, metrics, transport, client } = await stripeSide(config, deps, "stripe-reports");
  const receiver = createStripeEventReceiver({
    ...stripeEventsSecrets(config, reader, {
      maxAgeMs: config.secretsMaxAgeMs,
      onReloadFailed: (err) =>
        logger.warn("reading the Stripe events secret again failed; the secret read before stays in use", {
          reason: err instanceof Error ? err.message : String(err),
        }),
    }),
    report: (id, deadline) => readErrorReport(client, id, deadline),
    publish: (report) => {
      publishErrorReports([report], logger, metrics);
      logger.info("Stripe error report pushed by the event destination", { eventId: report.eventId });
      onPushed(report);
    },
    failed: (code) => {
      metrics.count(ReportMetric.notificationsFailed, 1);
      metrics.count(ReportMetric.notificationsFailed, 1, { code });
    },
    logger,
  });
  return {
    receive: (req, deadline) => receiver.handle(req, deadline),
    async run(window, deadline) {
      const reports = await readErrorReports(client, window, deadline);
      publishErrorReports(reports, logger, metrics);
      // A line per run at `debug` when Stripe reported nothing: the reports themselves are at `error`.
      (reports.length > 0 ? logger.info : logger.debug)("Stripe error reports read", {
        from: new Date(window.from).toISOString(),
        to: new Date(window.to).toISOString(),
        reports: reports.length,
        refused: refusedIn(reports),
      });
      return reports;
    },
    close: () => transport.close(),
  };
}

/**
 * Runs `work` with a Stripe client on the consumer's key and settings, then closes its
 * connections: the CLI's checks against Stripe (`meterhook meters`, `meterhook customers`).
 */
export async function withStripeClient<T>(
  config: Config,
  work: (client: StripeClient) => Promise<T>,
  deps: AppDeps = {},
): Promise<T> {
  const { client, transport } = await stripeSide(config, deps, "cli");
  try {
    return await work(client);
  } finally {
    await transport.close();
  }
}

/** DLQ replay through the current pipeline (`npm run replay`, the dlq-replay function). */
/** What the DLQ holds (`meterhook dlq`), read without changing it. */
export function summarizeDlqFromConfig(config: Config, options: { limit: number }, deps: AppDeps = {}) {
  const sqs = sqsClientFor(config, deps.sqs);
  return summarizeDeadLetters(createSqsReader(sqs, required(config.deadLetterQueueUrl, "METERHOOK_DLQ_URL")), options);
}

export async function replayFromConfig(
  config: Config,
  options: ReplayOptions,
  deps: AppDeps = {},
): Promise<ReplayReport> {
  const sqs = sqsClientFor(config, deps.sqs);
  // Replayed letters are checked, however many customers they name: a letter dead-lettered
  // customer_not_in_stripe goes back to the DLQ if Stripe still lacks its customer, never unchecked.
  const consumer = await createConsumerFromConfig(config, { ...deps, sqs }, { replaying: true });
  try {
    const reader = createSqsReader(sqs, required(config.deadLetterQueueUrl, "METERHOOK_DLQ_URL"));
    return await replayDeadLetters(reader, consumer.deps, options);
  } finally {
    await consumer.close();
  }
}
