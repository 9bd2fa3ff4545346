import { randomUUID } from "node:crypto";
import type { APIGatewayProxyEventV2, SQSEvent, SQSRecord } from "aws-lambda";
import type { QueueMessage } from "../../lib/consumer.js";

let seq = 0;

/** A valid canonical usage event; override any field. */
export function usageEvent(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  seq++;
  return {
    id: `req_${process.pid}_${seq}_${randomUUID().slice(0, 8)}`,
    event_name: "api_requests",
    customer: "cus_NciAYcXfLnqBoz",
    value: 3,
    ...overrides,
  };
}

export function queueMessage(body: unknown, overrides: Partial<QueueMessage> = {}): QueueMessage {
  const now = Date.now();
  return {
    messageId: randomUUID(),
    body: typeof body === "string" ? body : JSON.stringify(body),
    receiveCount: 1,
    sentAt: now,
    firstReceivedAt: now,
    ...overrides,
  };
}

export function sqsRecord(body: unknown, attrs: Partial<SQSRecord["attributes"]> = {}): SQSRecord {
  const now = String(Date.now());
  return {
    messageId: randomUUID(),
    receiptHandle: randomUUID(),
    body: typeof body === "string" ? body : JSON.stringify(body),
    attributes: {
      ApproximateReceiveCount: "1",
      SentTimestamp: now,
      SenderId: "000000000000",
      ApproximateFirstReceiveTimestamp: now,
      ...attrs,
    },
    messageAttributes: {},
    md5OfBody: "",
    eventSource: "aws:sqs",
    eventSourceARN: "arn:aws:sqs:us-east-1:000000000000:meterhook-ingest",
    awsRegion: "us-east-1",
  };
}

export function sqsEvent(records: SQSRecord[]): SQSEvent {
  return { Records: records };
}

export function lambdaContext(remainingMs = 30_000) {
  const end = Date.now() + remainingMs;
  return { getRemainingTimeInMillis: () => end - Date.now() };
}

/** An API Gateway HTTP API (payload format 2.0) event. */
export function httpEvent(options: {
  method?: string;
  path?: string;
  body?: string | Buffer;
  headers?: Record<string, string>;
  base64?: boolean;
  stage?: string;
  /** The query string, without `?`. */
  query?: string;
}): APIGatewayProxyEventV2 {
  const body = options.body === undefined ? undefined : Buffer.from(options.body);
  const path = options.path ?? "/v1/events";
  return {
    version: "2.0",
    routeKey: "$default",
    rawPath: path,
    rawQueryString: options.query ?? "",
    headers: options.headers ?? {},
    ...(body ? { body: options.base64 ? body.toString("base64") : body.toString("utf8") } : {}),
    isBase64Encoded: Boolean(body && options.base64),
    requestContext: {
      accountId: "123456789012",
      apiId: "api",
      domainName: "api.example.com",
      domainPrefix: "api",
      http: {
        method: options.method ?? "POST",
        path,
        protocol: "HTTP/1.1",
        sourceIp: "203.0.113.9",
        userAgent: "test",
      },
      requestId: randomUUID(),
      routeKey: "$default",
      stage: options.stage ?? "$default",
      time: new Date().toUTCString(),
      timeEpoch: Date.now(),
    },
  };
}
