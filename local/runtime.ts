import { SQSClient } from "@aws-sdk/client-sqs";
import { createHttpHandler } from "../functions/http-api.js";
import { createQueueHandler } from "../functions/ingest-queue.js";
import { createReportsHandler, HTTP_ANSWER_WITHIN_MS } from "../functions/stripe-reports.js";
import { createConsumerFromConfig, createErrorReportReaderFromConfig, createIngestApiFromConfig } from "../lib/app.js";
import { loadConfig } from "../lib/config.js";
import { ConfigError } from "../lib/errors.js";
import { createLogger } from "../lib/logger.js";
import { loadMapping } from "../lib/mapping/runtime.js";
import type { ErrorReport } from "../lib/stripe/error-reports.js";
import { STRIPE_EVENTS_PATH } from "../lib/stripe/event-notifications.js";
import { type LookupTable, lookupTables, readItems, startLocalDynamo } from "./dynamodb.js";
import { startGateway } from "./gateway.js";
import { startPoller } from "./poller.js";
import { type LocalQueues, startLocalQueues } from "./queues.js";
import { EMULATOR_DEFAULT_KEY, type EmulatorOptions, StripeEmulator } from "./stripe-emulator/server.js";

export const LOCAL_API_KEY = "mh_local_dev_key";

export interface LocalRuntimeOptions {
  /** The environment meterhook reads its settings from (default: process.env). */
  env?: Record<string, string | undefined>;
  port?: number;
  sqsPort?: number;
  stripeEmulatorPort?: number;
  /** The local DynamoDB's port, when the mapping config's `dynamodb` lookups need one. */
  dynamodbPort?: number;
  /** A JSON file of items to put in the local DynamoDB's tables (README "Customer lookups"). */
  dynamodbItems?: string;
  emulator?: EmulatorOptions;
  visibilityTimeoutSeconds?: number;
  maxReceiveCount?: number;
  functionTimeoutMs?: number;
  /** Consumer batch size (Lambda's event source mapping batch size; SQS hands out 10 per receive). */
  batchSize?: number;
  /** Concurrent consumer invocations (pollers), like the event source mapping's concurrency. */
  pollers?: number;
  /**
   * Fault injection for tests: called before every SQS call of the pipeline (the real SDK client,
   * through its middleware stack); an error returned is thrown as if the call had failed.
   */
  sqsFault?: (call: { command: string; queueUrl?: string }) => Error | undefined;
  /** Fault injection for tests: see startPoller. */
  skipDelete?: (messageId: string) => boolean;
  /** How often Stripe's error reports are read, as the stripe-reports function does on AWS (10 s). */
  reportsEveryMs?: number;
  quiet?: boolean;
}

export interface LocalRuntime {
  gatewayUrl: string;
  sqsEndpoint: string;
  ingestQueueUrl: string;
  deadLetterQueueUrl: string;
  queues: LocalQueues;
  stripeApiBase: string;
  /** Present when the embedded Stripe emulator runs (STRIPE_API_BASE unset). */
  emulator: StripeEmulator | undefined;
  /**
   * Present when a local DynamoDB runs: the mapping config has `dynamodb` lookups and
   * DYNAMODB_ENDPOINT is unset. Its tables are the lookups', made empty, then given the items.
   */
  dynamodb: { endpoint: string; tables: LookupTable[]; items: number } | undefined;
  apiKey: string;
  usingDefaultApiKey: boolean;
  /** Sources of the mapping config (METERHOOK_CONFIG), by type. */
  sources: Array<{ name: string; type: string }>;
  /** Stripe's error reports read so far (each also logged at `error`). */
  stripeReports: ErrorReport[];
  /** Whether they come pushed to POST /v1/stripe/events (STRIPE_EVENTS_SECRET set) rather than read each interval. */
  reportsPushed: boolean;
  stop(): Promise<void>;
}

/**
 * The whole pipeline on one machine: fauxqs for SQS, the Stripe emulator (unless STRIPE_API_BASE
 * points elsewhere), the HTTP gateway in front of the API handler, and a poller feeding the
 * ingest queue to the consumer handler. The handlers are the same code Lambda runs.
 */
export async function startLocalRuntime(options: LocalRuntimeOptions = {}): Promise<LocalRuntime> {
  const env = { ...(options.env ?? process.env) };
  const queues = await startLocalQueues({
    port: options.sqsPort,
    visibilityTimeoutSeconds: options.visibilityTimeoutSeconds ?? 10,
    maxReceiveCount: options.maxReceiveCount,
  });
  // What is started so far, stopped in reverse by stop(), or if a later part cannot start (a
  // secret the mapping config names is not set): nothing is left holding ports or the process open.
  const undo: Array<() => Promise<void>> = [() => queues.stop()];
  let emulator: StripeEmulator | undefined;
  try {
    if (!env.STRIPE_API_BASE) {
      const started = new StripeEmulator(options.emulator);
      const url = await started.start(options.stripeEmulatorPort ?? 0);
      emulator = started;
      undo.push(() => started.stop());
      env.STRIPE_API_BASE = url;
      env.STRIPE_METER_EVENTS_BASE = url;
      env.STRIPE_API_KEY ??= EMULATOR_DEFAULT_KEY;
    }
    const usingDefaultApiKey = !env.METERHOOK_API_KEYS;
    env.METERHOOK_API_KEYS ||= LOCAL_API_KEY;
    env.METERHOOK_INGEST_QUEUE_URL = queues.ingestQueueUrl;
    env.METERHOOK_DLQ_URL = queues.deadLetterQueueUrl;
    env.SQS_ENDPOINT = queues.endpoint;
    // A pack's events to retry wait as long as any other retry: the visibility timeout.
    env.METERHOOK_PACK_RETRY_DELAY_SECONDS ??= String(options.visibilityTimeoutSeconds ?? 10);
    if (options.quiet) env.METERHOOK_LOG_LEVEL ??= "error";

    // The mapping first: its `dynamodb` lookups decide whether the settings get a local DynamoDB.
    const mapping = env.METERHOOK_CONFIG ? await loadMapping(env.METERHOOK_CONFIG) : undefined;
    // The app's own tables, in memory, as dynalite serves them: a lookup's table on AWS is not
    // the local run's to read.
    let dynamodb: LocalRuntime["dynamodb"];
    const tables = lookupTables(mapping?.sources.values() ?? []);
    if (tables.length > 0 && !env.DYNAMODB_ENDPOINT) {
      const local = await startLocalDynamo(options.dynamodbPort ?? 0);
      undo.push(() => local.stop());
      for (const table of tables) await local.createTable(table);
      const items = options.dynamodbItems ? readItems(options.dynamodbItems) : [];
      for (const { table, item } of items) {
        if (!tables.some((t) => t.name === table))
          throw new ConfigError(
            `DYNAMODB_ITEMS: ${table} is not a table of the mapping config's dynamodb lookups (${tables.map((t) => t.name).join(", ")})`,
          );
        await local.put(table, item);
      }
      dynamodb = { endpoint: local.endpoint, tables, items: items.length };
      env.DYNAMODB_ENDPOINT = local.endpoint;
    } else if (options.dynamodbItems) {
      throw new ConfigError(
        "DYNAMODB_ITEMS fills the local DynamoDB, which runs only for a mapping config with dynamodb lookups and DYNAMODB_ENDPOINT unset",
      );
    }
    const config = loadConfig(env);
    const sqs = new SQSClient({
      region: config.aws.region,
      endpoint: queues.endpoint,
      credentials: { accessKeyId: "local", secretAccessKey: "local" },
    });
    const sqsFault = options.sqsFault;
    if (sqsFault) {
      sqs.middlewareStack.add(
        (next, context) => async (args) => {
          const err = sqsFault({
            command: context.commandName ?? "",
            queueUrl: (args.input as { QueueUrl?: string }).QueueUrl,
          });
          if (err) throw err;
          return next(args);
        },
        { step: "initialize", name: "meterhookFaultInjection" },
      );
    }
    undo.push(async () => sqs.destroy());
    const consumer = await createConsumerFromConfig(config, { sqs, mapping });
    undo.push(() => consumer.close());
    const api = await createIngestApiFromConfig(config, { sqs, mapping });
    // Stripe's error reports, read as the stripe-reports function reads them on AWS: pushed to
    // POST /v1/stripe/events by an event destination when STRIPE_EVENTS_SECRET is set, otherwise
    // each interval from where the last read ended.
    const stripeReports: ErrorReport[] = [];
    const reportReader = await createErrorReportReaderFromConfig(config, {}, (r) => stripeReports.push(r));
    undo.push(() => reportReader.close());
    const reportsHandler = createReportsHandler(async () => ({ reader: reportReader, intervalMs: 10_000 }));
    const httpHandler = createHttpHandler(async () => api);
    const gateway = await startGateway(
      (event) =>
        event.rawPath === STRIPE_EVENTS_PATH
          ? reportsHandler(event, { getRemainingTimeInMillis: () => HTTP_ANSWER_WITHIN_MS })
          : httpHandler(event),
      options.port ?? 0,
    );
    const pushed = config.stripe.eventsSecrets.length > 0 || config.stripe.eventsSecretSource !== undefined;
    const [eventsSecret] = config.stripe.eventsSecrets;
    // The embedded Stripe pushes its reports here, as a destination set up in Stripe would.
    if (emulator && eventsSecret && !options.emulator?.eventDestinations?.length) {
      emulator.eventDeliveries.add({ url: `${gateway.url}${STRIPE_EVENTS_PATH}`, secret: eventsSecret });
    }
    undo.push(async () => {
      await new Promise<void>((resolve) => gateway.server.close(() => resolve()));
      gateway.server.closeAllConnections();
    });
    const log = createLogger({ level: config.logLevel, base: { component: "local" } });
    const pollers = Array.from({ length: options.pollers ?? 1 }, () =>
      startPoller({
        sqs,
        queueUrl: queues.ingestQueueUrl,
        handler: createQueueHandler(async () => consumer),
        functionTimeoutMs: options.functionTimeoutMs ?? 30_000,
        batchSize: options.batchSize,
        skipDelete: options.skipDelete,
        onError: (error) => log.error("consumer invocation failed", { error }),
      }),
    );
    undo.push(() => Promise.all(pollers.map((p) => p.stop())).then(() => {}));

    let readUpTo = Date.now();
    let reading: Promise<void> | undefined;
    const readReports = () => {
      const to = Date.now();
      reading ??= reportReader
        .run({ from: readUpTo, to }, to + 10_000)
        .then((found) => {
          stripeReports.push(...found);
          readUpTo = to;
        })
        .catch((error) => log.error("reading Stripe's error reports failed", { error }))
        .finally(() => {
          reading = undefined;
        });
    };
    // Pushed reports are not read again on a schedule too: each would be logged and counted twice.
    const reportTimer = pushed ? undefined : setInterval(readReports, options.reportsEveryMs ?? 10_000);
    reportTimer?.unref();

    return {
      gatewayUrl: gateway.url,
      sqsEndpoint: queues.endpoint,
      ingestQueueUrl: queues.ingestQueueUrl,
      deadLetterQueueUrl: queues.deadLetterQueueUrl,
      queues,
      stripeApiBase: config.stripe.apiBase,
      emulator,
      dynamodb,
      apiKey: config.apiKeys[0] as string,
      usingDefaultApiKey,
      sources: [...(mapping?.sources.values() ?? [])].map((s) => ({ name: s.name, type: s.type })),
      stripeReports,
      reportsPushed: pushed,
      async stop() {
        clearInterval(reportTimer);
        await reading;
        // Each part in the reverse of the order it started: the same steps as a failed start.
        for (const stopPart of [...undo].reverse()) await stopPart();
      },
    };
  } catch (err) {
    for (const stop of [...undo].reverse()) await stop().catch(() => {});
    throw err;
  }
}
