import { createApiKeyCheck } from "./api-keys.js";
import { InvalidEventError } from "./errors.js";
import { type HttpRequest, type HttpResponse, httpError, json } from "./http.js";
import type { Logger } from "./logger.js";
import { validateUsageEvent } from "./meter-event.js";
import { Metric, type Metrics, noMetrics } from "./metrics.js";
import type { QueueSender } from "./queue.js";
import { parseUsageEvent, toCanonicalJson, type UsageEvent } from "./usage-event.js";

export interface IngestApiDeps {
  apiKeys: readonly string[];
  ingestQueue: QueueSender;
  logger: Logger;
  maxBodyBytes: number;
  maxEventsPerRequest: number;
  metrics?: Metrics;
  now?: () => number;
}

export interface Rejection {
  index: number;
  id?: string;
  code: string;
  message: string;
}

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;.*)?$/i;

function rejectionOf(item: unknown, index: number, err: unknown): Rejection {
  const id = (item as { id?: unknown } | null)?.id;
  const base = { index, ...(typeof id === "string" ? { id: id.slice(0, 255) } : {}) };
  if (err instanceof InvalidEventError) return { ...base, code: err.code, message: err.message };
  throw err;
}

/**
 * `POST /v1/events` and `GET /v1/health`: authenticate, parse, validate each event against our
 * schema and Stripe's rules, and write the accepted ones durably to the ingest queue before
 * answering 202. Mapping to Stripe customers and submission happen in the queue consumer.
 */
export function createIngestApi(deps: IngestApiDeps): { handle(req: HttpRequest): Promise<HttpResponse> } {
  const authorized = createApiKeyCheck(deps.apiKeys);
  const now = deps.now ?? Date.now;
  const metrics = deps.metrics ?? noMetrics;

  const postEvents = async (req: HttpRequest): Promise<HttpResponse> => {
    const rid = req.requestId;
    if (!authorized(req.headers.authorization)) {
      return httpError(
        401,
        "unauthorized",
        "missing or invalid API key (Authorization: Bearer <key>)",
        rid,
        {},
        {
          "www-authenticate": 'Bearer realm="meterhook"',
        },
      );
    }
    if (req.body.length > deps.maxBodyBytes) {
      return httpError(413, "payload_too_large", `body is larger than ${deps.maxBodyBytes} bytes`, rid);
    }
    if (!JSON_TYPE.test(req.headers["content-type"] ?? "")) {
      return httpError(415, "unsupported_media_type", "Content-Type must be application/json", rid);
    }
    let body: unknown;
    try {
      body = JSON.parse(req.body.toString("utf8"));
    } catch {
      return httpError(400, "invalid_json", "body is not valid JSON", rid);
    }
    const batch = body !== null && typeof body === "object" && !Array.isArray(body) && "events" in body;
    const items: unknown = batch ? (body as { events: unknown }).events : [body];
    if (!Array.isArray(items) || items.length === 0) {
      return httpError(400, "invalid_body", 'body must be one event or { "events": [ ...at least one event ] }', rid);
    }
    if (items.length > deps.maxEventsPerRequest) {
      return httpError(400, "too_many_events", `at most ${deps.maxEventsPerRequest} events per request`, rid);
    }

    const receivedAt = now() / 1000;
    const accepted: UsageEvent[] = [];
    const rejected: Rejection[] = [];
    items.forEach((item, index) => {
      try {
        const event = parseUsageEvent(item, receivedAt);
        validateUsageEvent(event, receivedAt);
        accepted.push(event);
      } catch (err) {
        rejected.push(rejectionOf(item, index, err));
      }
    });
    metrics.count(Metric.eventsRejected, rejected.length);
    if (accepted.length === 0) {
      const first = rejected[0] as Rejection;
      return httpError(
        400,
        batch ? "all_events_rejected" : first.code,
        batch ? "no event in the request is valid" : first.message,
        rid,
        {
          accepted: [],
          rejected,
        },
      );
    }

    const { failed } = await deps.ingestQueue.send(
      accepted.map((e, i) => ({ key: String(i), body: JSON.stringify(toCanonicalJson(e)) })),
    );
    if (failed.length > 0) {
      deps.logger.error("enqueue failed", { requestId: rid, failed: failed.length, of: accepted.length });
      return httpError(
        503,
        "enqueue_failed",
        "could not queue every event; retry the same request (events are deduplicated by id)",
        rid,
        {},
        { "retry-after": "1" },
      );
    }
    metrics.count(Metric.eventsAccepted, accepted.length);
    deps.logger.info("events accepted", { requestId: rid, accepted: accepted.length, rejected: rejected.length });
    return json(202, { accepted: accepted.map((e) => e.id), rejected, requestId: rid });
  };

  return {
    async handle(req) {
      const route = req.path.replace(/\/+$/, "") || "/";
      try {
        if (route === "/v1/health") {
          return req.method === "GET" || req.method === "HEAD"
            ? json(200, { status: "ok" })
            : httpError(405, "method_not_allowed", "use GET", req.requestId, {}, { allow: "GET" });
        }
        if (route === "/v1/events") {
          return req.method === "POST"
            ? await postEvents(req)
            : httpError(405, "method_not_allowed", "use POST", req.requestId, {}, { allow: "POST" });
        }
        return httpError(404, "not_found", `no route ${req.method} ${route}`.slice(0, 200), req.requestId);
      } catch (err) {
        // Details stay in the logs; the caller gets a request id to quote.
        deps.logger.error("unhandled error", { requestId: req.requestId, error: err });
        return httpError(500, "internal_error", "internal error", req.requestId);
      }
    },
  };
}
