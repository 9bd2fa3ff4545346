import { createApiKeyCheck, createReloadingApiKeyCheck } from "./api-keys.js";
import { cancelMessageBody, parseCancellation } from "./cancellation.js";
import { contentCodings, inflated, unreadableCodings } from "./content-encoding.js";
import { InvalidEventError, MeterhookError } from "./errors.js";
import { type HttpRequest, type HttpResponse, httpError, json, type Refusal } from "./http.js";
import type { Logger } from "./logger.js";
import type { Source } from "./mapping/engine.js";
import { sameUsage, type ValueRules, validateUsageEvent } from "./meter-event.js";
import { Metric, type Metrics, noMetrics } from "./metrics.js";
import { packBodies } from "./pack.js";
import { MAX_BODY_BYTES, type QueueSender, sendableBody } from "./queue.js";
import { reloading } from "./reloading.js";
import { CORRELATION_ATTRIBUTE, type TriggerMessage, webhookTrigger, withoutBom } from "./triggers.js";
import { parseUsageEvent, toCanonicalJson, type UsageEvent } from "./usage-event.js";
import { handshakeOf, isSlackSslCheck, metaSubscription, verifyTokensKey } from "./webhooks/handshakes.js";
import { verifySignature } from "./webhooks/signatures.js";

/** Signed webhook sources this API accepts at POST /v1/webhooks/{source}. */
export interface WebhookSources {
  sources: ReadonlyMap<string, Source>;
  /** Secrets per source, read at cold start. */
  secrets: ReadonlyMap<string, readonly string[]>;
  /**
   * Reads every source's secrets again (lib/reloading.ts): when they are `secretsMaxAgeMs` old,
   * and after a signature matched none of them, so a secret changed in its store needs no deploy.
   */
  reloadSecrets?: () => Promise<ReadonlyMap<string, readonly string[]>>;
  secretsMaxAgeMs?: number;
}

export interface IngestApiDeps {
  apiKeys: readonly string[];
  /**
   * Reads the API keys again from their store (see createReloadingApiKeyCheck), when they are
   * kept in one; `apiKeysMaxAgeMs` is how old they may get before that.
   */
  reloadApiKeys?: () => Promise<readonly string[]>;
  apiKeysMaxAgeMs?: number;
  webhooks?: WebhookSources;
  ingestQueue: QueueSender;
  logger: Logger;
  maxBodyBytes: number;
  maxEventsPerRequest: number;
  /** Events per ingest-queue message (lib/pack.ts); default 1, one message per event. */
  eventsPerMessage?: number;
  valueRules?: ValueRules;
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

/** A batch item that repeats an earlier item's event with other contents (see postEvents). */
class DuplicateIdError extends MeterhookError {
  override name = "DuplicateIdError";
  constructor(message: string) {
    super("duplicate_id", message);
  }
}

function rejectionOf(item: unknown, index: number, err: unknown): Rejection {
  const id = (item as { id?: unknown } | null)?.id;
  const base = { index, ...(typeof id === "string" ? { id: id.slice(0, 255) } : {}) };
  if (err instanceof InvalidEventError || err instanceof DuplicateIdError)
    return { ...base, code: err.code, message: err.message };
  throw err;
}

/** Why a webhook is refused before its signature is read, or undefined: its size or its encoding. */
export function webhookBodyRefusal(
  headers: Record<string, string | undefined>,
  bytes: number,
  maxBodyBytes: number,
): Refusal | undefined {
  if (bytes > maxBodyBytes)
    return { status: 413, code: "payload_too_large", message: `body is larger than ${maxBodyBytes} bytes` };
  const compressed = compressedBody(headers);
  return compressed ? { status: 415, code: "unsupported_media_type", message: compressed } : undefined;
}

/**
 * A webhook's trigger as its queue message, or why it cannot be one: wrapped in its trigger, a
 * body within maxBodyBytes can still outgrow a queue message (JSON escapes, headers), and SQS
 * would refuse it on every resend.
 */
export function queuedWebhook(trigger: TriggerMessage): { message: string; refusal?: Refusal } {
  // Escaped here as the sender would (it then finds nothing to escape), to measure it.
  const message = sendableBody(JSON.stringify(trigger));
  const bytes = Buffer.byteLength(message);
  if (bytes <= MAX_BODY_BYTES) return { message };
  const why = `the webhook takes ${bytes} bytes once queued with its headers, over the ${MAX_BODY_BYTES} a queue message holds`;
  return { message, refusal: { status: 413, code: "payload_too_large", message: why } };
}

/**
 * Why a compressed webhook is refused (`415 unsupported_media_type`), or undefined for one that
 * is not: its signature covers the bytes its sender chose, and read as they are they would be
 * mangled text matching no rule (with `unmatched: ignore`, acknowledged and never billed).
 */
function compressedBody(headers: Record<string, string | undefined>): string | undefined {
  const codings = contentCodings(headers["content-encoding"]);
  if (codings.length === 0) return undefined;
  return `Content-Encoding ${codings.join(", ").slice(0, 40)} is not supported on webhooks; send the body uncompressed`;
}

/**
 * `POST /v1/events`, `POST /v1/events/cancel` and `GET /v1/health`: authenticate, parse, validate
 * each event (or cancellation) against our schema and Stripe's rules, and write the accepted ones
 * durably to the ingest queue before answering 202. Mapping to Stripe customers, submission and
 * cancelling happen in the queue consumer.
 */
export function createIngestApi(deps: IngestApiDeps): { handle(req: HttpRequest): Promise<HttpResponse> } {
  const now = deps.now ?? Date.now;
  const fixedCheck = createApiKeyCheck(deps.apiKeys);
  // A failed read of a secret store keeps what was read before; it is logged, never fatal.
  const reloadFailed = (what: string) => (err: unknown) =>
    deps.logger.warn(`reading the ${what} again failed; the ${what} read before stay in use`, {
      reason: err instanceof Error ? err.message : String(err),
    });
  const authorized = deps.reloadApiKeys
    ? createReloadingApiKeyCheck(deps.apiKeys, deps.reloadApiKeys, {
        maxAgeMs: deps.apiKeysMaxAgeMs ?? 300_000,
        now,
        onReloadFailed: reloadFailed("API keys"),
      })
    : async (authorization: string | undefined) => fixedCheck(authorization);
  /**
   * The key check, counting a Bearer key that matches none (ApiKeysRefused): an app still on a
   * retired key loses the usage it sends unless it handles the 401. Requests without a key
   * (scanners) are not counted there.
   */
  const keyAccepted = async (authorization: string | undefined): Promise<boolean> => {
    const ok = await authorized(authorization);
    if (!ok && /^Bearer\s+\S/i.test(authorization ?? "")) metrics.count(Metric.apiKeysRefused, 1);
    return ok;
  };
  const webhooks = deps.webhooks;
  const webhookSecrets = webhooks?.reloadSecrets
    ? reloading(webhooks.secrets, webhooks.reloadSecrets, {
        maxAgeMs: webhooks.secretsMaxAgeMs ?? 300_000,
        now,
        onReloadFailed: reloadFailed("webhook secrets"),
      })
    : undefined;
  /** Every source's secrets (and Verify Tokens) as they stand: read again when they are old. */
  const webhookSecretsNow = async () => (webhookSecrets ? webhookSecrets.get() : webhooks?.secrets);
  const metrics = deps.metrics ?? noMetrics;

  /**
   * What `POST /v1/events` and `POST /v1/events/cancel` check before reading any item: the key,
   * the size, the type, JSON, and 1 to maxEventsPerRequest items (one, or `{"events": [...]}`).
   */
  const readItems = async (req: HttpRequest): Promise<{ items: unknown[]; batch: boolean } | HttpResponse> => {
    const rid = req.requestId;
    if (!(await keyAccepted(req.headers.authorization))) {
      return httpError(
        401,
        "unauthorized",
        "missing or invalid API key (Authorization: Bearer <key>)",
        rid,
        {},
        { "www-authenticate": 'Bearer realm="meterhook"' },
      );
    }
    if (req.body.length > deps.maxBodyBytes) {
      return httpError(413, "payload_too_large", `body is larger than ${deps.maxBodyBytes} bytes`, rid);
    }
    if (!JSON_TYPE.test(req.headers["content-type"] ?? "")) {
      return httpError(415, "unsupported_media_type", "Content-Type must be application/json", rid);
    }
    const codings = contentCodings(req.headers["content-encoding"]);
    const decoded = unreadableCodings(codings) ?? (await inflated(req.body, codings, deps.maxBodyBytes));
    if (!("body" in decoded)) return httpError(decoded.status, decoded.code, decoded.message, rid);
    let body: unknown;
    try {
      body = JSON.parse(withoutBom(decoded.body.toString("utf8")));
    } catch {
      return httpError(400, "invalid_json", "body is not valid JSON", rid);
    }
    const batch = body !== null && typeof body === "object" && !Array.isArray(body) && "events" in body;
    const items: unknown = batch ? (body as { events: unknown }).events : [body];
    if (!Array.isArray(items) || items.length === 0) {
      return httpError(400, "invalid_body", 'body must be one event or { "events": [ ...at least one event ] }', rid);
    }
    // As in an event, a key meterhook does not read is refused rather than ignored: a
    // `"dryRun": true` or an event's own fields beside `events` would otherwise bill unnoticed.
    const others = batch ? Object.keys(body as object).filter((k) => k !== "events") : [];
    if (others.length > 0) {
      return httpError(
        400,
        "invalid_body",
        `a batch body has the one key "events"; unknown: ${others.slice(0, 5).join(", ").slice(0, 200)}`,
        rid,
      );
    }
    if (items.length > deps.maxEventsPerRequest) {
      return httpError(400, "too_many_events", `at most ${deps.maxEventsPerRequest} events per request`, rid);
    }
    return { items, batch };
  };

  /**
   * Each item parsed by `parse`, the valid ones written to the ingest queue as `bodies` makes
   * them, and the answer: 202 with what was accepted and rejected, 400 when nothing was valid,
   * 503 when the queue did not take them all.
   */
  const acceptItems = async <T extends { id: string }>(
    req: HttpRequest,
    what: string,
    parse: (item: unknown, receivedAt: number, index: number) => T,
    bodies: (accepted: T[]) => string[],
    done: (accepted: number, rejected: number) => void,
  ): Promise<HttpResponse> => {
    const rid = req.requestId;
    const read = await readItems(req);
    if (!("items" in read)) return read;
    const receivedAt = now() / 1000;
    const accepted: T[] = [];
    const rejected: Rejection[] = [];
    read.items.forEach((item, index) => {
      try {
        accepted.push(parse(item, receivedAt, index));
      } catch (err) {
        rejected.push(rejectionOf(item, index, err));
      }
    });
    metrics.count(Metric.eventsRejected, rejected.length);
    if (accepted.length === 0) {
      const first = rejected[0] as Rejection;
      return httpError(
        400,
        read.batch ? "all_events_rejected" : first.code,
        read.batch ? `no ${what} in the request is valid` : first.message,
        rid,
        {
          accepted: [],
          rejected,
        },
      );
    }
    const messages = bodies(accepted);
    const { failed } = await deps.ingestQueue.send(
      messages.map((body, i) => ({ key: String(i), body, attributes: { [CORRELATION_ATTRIBUTE]: rid } })),
    );
    if (failed.length > 0) {
      deps.logger.error("enqueue failed", {
        requestId: rid,
        failed: failed.length,
        of: messages.length,
        [`${what}s`]: accepted.length,
      });
      return httpError(
        503,
        "enqueue_failed",
        `could not queue every ${what}; retry the same request (${what}s are deduplicated by id)`,
        rid,
        {},
        { "retry-after": "1" },
      );
    }
    done(accepted.length, rejected.length);
    return json(202, { accepted: accepted.map((e) => e.id), rejected, requestId: rid });
  };

  const postEvents = (req: HttpRequest): Promise<HttpResponse> => {
    // Stripe bills an identifier once, and it is made from id and event_name alone. An exact
    // repeat in one request (a client's retry folded into its batch) is harmless and accepted; a
    // repeat with other contents would be accepted and then never billed: refused instead.
    const seen = new Map<string, { index: number; event: UsageEvent }>();
    return acceptItems(
      req,
      "event",
      (item, receivedAt, index) => {
        const event = parseUsageEvent(item, receivedAt);
        validateUsageEvent(event, receivedAt, deps.valueRules);
        const body = JSON.stringify(toCanonicalJson(event));
        // Ids and names hold no control characters, so a newline cannot join two pairs alike.
        const key = `${event.event_name}\n${event.id}`;
        const first = seen.get(key);
        if (first === undefined) seen.set(key, { index, event });
        else if (!sameUsage(first.event, event)) {
          throw new DuplicateIdError(
            `id "${event.id.slice(0, 100)}" with event_name "${event.event_name}" is at index ${first.index} of this request with other contents; Stripe would bill only one of them`,
          );
        }
        return { id: event.id, body };
      },
      (accepted) =>
        packBodies(
          accepted.map((e) => e.body),
          deps.eventsPerMessage ?? 1,
        ),
      (accepted, rejected) => {
        metrics.count(Metric.eventsAccepted, accepted);
        deps.logger.info("events accepted", { requestId: req.requestId, accepted, rejected });
      },
    );
  };

  /** `POST /v1/events/cancel`: cancellations queued as events are, sent by the consumer. */
  const postCancel = (req: HttpRequest): Promise<HttpResponse> =>
    acceptItems(
      req,
      "cancellation",
      (item) => parseCancellation(item),
      (accepted) => accepted.map(cancelMessageBody),
      (accepted, rejected) => {
        metrics.count(Metric.cancellationsAccepted, accepted);
        deps.logger.info("cancellations accepted", { requestId: req.requestId, accepted, rejected });
      },
    );

  /**
   * `POST /v1/webhooks/{source}`: verify the signature on the raw bytes, queue the raw trigger,
   * answer at once. Mapping happens in the consumer, so a fixed config can map it again later.
   */
  /**
   * A refused webhook reaches neither the queue nor the DLQ, and a sender may not send it again:
   * each refusal is counted by code and logged, where an alarm can see it.
   */
  const webhookRefusal =
    (rid: string, name: string) =>
    (status: number, code: string, message: string, line?: string): HttpResponse => {
      metrics.count(Metric.webhooksRejected, 1, { code });
      // Signature refusals keep the line they always had: log filters may look for it.
      line ??= code.startsWith("signature_") ? "webhook signature rejected" : "webhook refused";
      deps.logger.warn(line, { requestId: rid, source: name.slice(0, 64), code });
      return httpError(status, code, message, rid);
    };

  const postWebhook = async (req: HttpRequest, name: string): Promise<HttpResponse> => {
    const rid = req.requestId;
    const refuse = webhookRefusal(rid, name);
    const source = deps.webhooks?.sources.get(name);
    if (source?.type !== "webhook") return refuse(404, "unknown_source", `no webhook source "${name.slice(0, 64)}"`);
    const unreadable = webhookBodyRefusal(req.headers, req.body.length, deps.maxBodyBytes);
    if (unreadable) return refuse(unreadable.status, unreadable.code, unreadable.message);
    const auth = source.auth;
    if (auth.scheme === "slack" && isSlackSslCheck(req.body)) {
      deps.logger.info("webhook handshake answered", { requestId: rid, source: name, check: "ssl_check" });
      return json(200, {});
    }
    if (auth.scheme === "api-key") {
      if (!(await keyAccepted(req.headers.authorization))) {
        return refuse(401, "unauthorized", "missing or invalid API key (Authorization: Bearer <key>)");
      }
    } else if (auth.scheme !== "none") {
      let secrets = (await webhookSecretsNow())?.get(name) ?? [];
      const verify = () => verifySignature(auth, secrets, req.headers, req.body, Math.floor(now() / 1000), req.query);
      let verdict = verify();
      if (!verdict.ok && verdict.code === "signature_mismatch" && webhookSecrets) {
        // Perhaps signed with a secret changed in its store since it was read.
        const fresh = await webhookSecrets.afterMiss();
        if (fresh) {
          secrets = fresh.get(name) ?? [];
          verdict = verify();
        }
      }
      if (!verdict.ok) return refuse(401, verdict.code, verdict.message);
      const signer = verdict.secret === undefined ? undefined : secrets[verdict.secret];
      if ((auth.scheme === "slack" || auth.scheme === "zoom") && signer !== undefined) {
        const handshake = handshakeOf(auth.scheme, req.body, signer);
        if (handshake?.kind === "answer") {
          deps.logger.info("webhook handshake answered", { requestId: rid, source: name });
          return json(200, handshake.body);
        }
        if (handshake) return refuse(400, "invalid_handshake", handshake.message);
      }
    }
    const trigger = webhookTrigger(
      name,
      now(),
      { headers: req.headers, query: req.query, body: req.body.toString("utf8") },
      // A token scheme's header is the secret itself: it must not reach the queue or the DLQ.
      auth.scheme === "token" ? auth.header : undefined,
    );
    const { message, refusal: tooLarge } = queuedWebhook(trigger);
    if (tooLarge) return refuse(tooLarge.status, tooLarge.code, tooLarge.message);
    const { failed } = await deps.ingestQueue.send([
      { key: "0", body: message, attributes: { [CORRELATION_ATTRIBUTE]: rid } },
    ]);
    if (failed.length > 0) {
      deps.logger.error("enqueue failed", { requestId: rid, source: name });
      return httpError(
        503,
        "enqueue_failed",
        "could not queue the webhook; send it again",
        rid,
        {},
        { "retry-after": "1" },
      );
    }
    metrics.count(Metric.webhooksAccepted, 1, { source: name });
    deps.logger.info("webhook accepted", { requestId: rid, source: name });
    return json(202, { received: true, requestId: rid });
  };

  /**
   * `GET /v1/webhooks/{source}`: Meta's subscription check for a `meta` source, answered with
   * its `hub.challenge` when its `hub.verify_token` is one of the source's Verify Tokens.
   */
  const getWebhook = async (req: HttpRequest, name: string): Promise<HttpResponse> => {
    const rid = req.requestId;
    // Counted and logged as a POST's refusals are: Meta stops delivering to a Callback URL it
    // cannot verify, so a Verify Token set on one side only must show.
    const refuse = webhookRefusal(rid, name);
    const source = deps.webhooks?.sources.get(name);
    if (source?.type !== "webhook") return refuse(404, "unknown_source", `no webhook source "${name.slice(0, 64)}"`);
    if (source.auth.scheme !== "meta")
      return httpError(405, "method_not_allowed", "use POST", rid, {}, { allow: "POST" });
    const key = verifyTokensKey(name);
    let check = metaSubscription(req.query ?? "", (await webhookSecretsNow())?.get(key) ?? []);
    if (check.kind === "mismatch" && webhookSecrets) {
      // Perhaps a token changed in its store since it was read.
      const fresh = await webhookSecrets.afterMiss();
      if (fresh) check = metaSubscription(req.query ?? "", fresh.get(key) ?? []);
    }
    if (check.kind === "invalid")
      return refuse(400, "invalid_handshake", check.message, "webhook subscription check refused");
    if (check.kind === "mismatch") {
      return refuse(
        403,
        "verify_token_mismatch",
        "hub.verify_token is not a configured Verify Token",
        "webhook subscription check refused",
      );
    }
    deps.logger.info("webhook handshake answered", { requestId: rid, source: name });
    return {
      status: 200,
      headers: { "content-type": "text/plain; charset=utf-8", "x-content-type-options": "nosniff" },
      body: check.challenge,
    };
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
        if (route === "/v1/events" || route === "/v1/events/cancel") {
          if (req.method !== "POST")
            return httpError(405, "method_not_allowed", "use POST", req.requestId, {}, { allow: "POST" });
          const res = route === "/v1/events" ? await postEvents(req) : await postCancel(req);
          // A request refused whole (key, size, type, JSON, shape): the app has the answer, and
          // the count shows, say, a key rotated on one side only.
          if (res.status >= 400) metrics.count(Metric.requestsRejected, 1, { code: res.code ?? String(res.status) });
          return res;
        }
        const webhook = /^\/v1\/webhooks\/([^/]+)$/.exec(route);
        if (webhook) {
          if (req.method === "POST") return await postWebhook(req, safeDecode(webhook[1] as string));
          if (req.method === "GET") return await getWebhook(req, safeDecode(webhook[1] as string));
          return httpError(405, "method_not_allowed", "use POST", req.requestId, {}, { allow: "POST" });
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

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
