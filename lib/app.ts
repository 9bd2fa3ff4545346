import { SQSClient } from "@aws-sdk/client-sqs";
import { type Config, required } from "./config.js";
import { type BatchResult, processBatch, type QueueMessage } from "./consumer.js";
import { CustomerResolver, staticTableLookup, stripeIdLookup } from "./customers.js";
import type { HttpRequest, HttpResponse } from "./http.js";
import { createIngestApi } from "./ingest-api.js";
import { createLogger, type Logger } from "./logger.js";
import { createSqsSender } from "./queue.js";
import { StripeClient } from "./stripe/client.js";
import { DEFAULT_RETRY } from "./stripe/retry-policy.js";
import type { MeterEventSubmitter } from "./stripe/submitter.js";
import { createUndiciTransport, type HttpTransport } from "./stripe/transport.js";
import { createV1Submitter } from "./stripe/v1-meter-events.js";
import { createV2StreamSubmitter } from "./stripe/v2-meter-event-stream.js";

/**
 * Builds the pipeline's parts from config. Each entry point asks only for what it uses, so the
 * HTTP function needs no Stripe key and the consumer needs no API keys.
 */
export function createSqsClient(config: Config): SQSClient {
  return new SQSClient({
    region: config.sqs.region,
    ...(config.sqs.endpoint
      ? { endpoint: config.sqs.endpoint, credentials: { accessKeyId: "local", secretAccessKey: "local" } }
      : {}),
  });
}

export interface IngestApi {
  handle(req: HttpRequest): Promise<HttpResponse>;
}

export function createIngestApiFromConfig(config: Config, deps: { sqs?: SQSClient; logger?: Logger } = {}): IngestApi {
  const logger = deps.logger ?? createLogger({ level: config.logLevel, base: { component: "ingest-api" } });
  return createIngestApi({
    apiKeys: required(config.apiKeys, "METERHOOK_API_KEYS"),
    ingestQueue: createSqsSender(
      deps.sqs ?? createSqsClient(config),
      required(config.ingestQueueUrl, "METERHOOK_INGEST_QUEUE_URL"),
    ),
    logger,
    maxBodyBytes: config.maxBodyBytes,
    maxEventsPerRequest: config.maxEventsPerRequest,
  });
}

export function createSubmitter(config: Config, transport: HttpTransport, logger: Logger): MeterEventSubmitter {
  const s = config.stripe;
  const client = new StripeClient(
    {
      apiKey: required(s.apiKey, "STRIPE_API_KEY"),
      apiBase: s.apiBase,
      meterEventsBase: s.meterEventsBase,
      apiVersion: s.apiVersion,
      timeoutMs: s.timeoutMs,
      retry: { ...DEFAULT_RETRY, maxAttempts: s.maxAttempts },
    },
    transport,
    logger,
  );
  const common = { concurrency: s.concurrency, stopMarginMs: config.stopMarginMs };
  return config.stripeApi === "v1"
    ? createV1Submitter(client, common)
    : createV2StreamSubmitter(client, { ...common, batchSize: s.streamBatchSize });
}

export interface Consumer {
  process(messages: readonly QueueMessage[], deadline: number): Promise<BatchResult>;
  close(): Promise<void>;
}

export function createConsumerFromConfig(config: Config, deps: { sqs?: SQSClient; logger?: Logger } = {}): Consumer {
  const logger = deps.logger ?? createLogger({ level: config.logLevel, base: { component: "consumer" } });
  const transport = createUndiciTransport({ connections: config.stripe.maxConnections });
  const submitter = createSubmitter(config, transport, logger);
  const consumerDeps = {
    resolver: new CustomerResolver([stripeIdLookup, staticTableLookup(config.customers)]),
    submitter,
    deadLetterQueue: createSqsSender(
      deps.sqs ?? createSqsClient(config),
      required(config.deadLetterQueueUrl, "METERHOOK_DLQ_URL"),
    ),
    logger,
    maxAttempts: config.maxAttempts,
    stopMarginMs: config.stopMarginMs,
  };
  return {
    async process(messages, deadline) {
      const result = await processBatch(messages, deadline, consumerDeps);
      logger.info("batch done", {
        messages: messages.length,
        billed: result.billed,
        duplicates: result.duplicates,
        retried: result.retried,
        deadLettered: result.deadLettered,
      });
      return result;
    },
    close: () => transport.close(),
  };
}
