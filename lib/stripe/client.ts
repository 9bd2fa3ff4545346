import { randomUUID } from "node:crypto";
import type { Logger } from "../logger.js";
import { Metric, type Metrics, noMetrics } from "../metrics.js";
import { redact } from "../redact.js";
import { type Reloading, reloading } from "../reloading.js";
import type { RateLimiter } from "./rate-limiter.js";
import {
  classifyNetworkError,
  classifyResponse,
  DEFAULT_RETRY,
  type RetryEnv,
  type RetryOptions,
  realRetryEnv,
  type Verdict,
  withRetries,
} from "./retry-policy.js";
import type { HttpTransport } from "./transport.js";

/** The API version every request is pinned to, so a dashboard upgrade cannot change behaviour. */
export const STRIPE_API_VERSION = "2026-09-30.endive";
const USER_AGENT = "meterhook/0.1";

export interface StripeClientConfig {
  apiKey: string;
  apiBase: string;
  meterEventsBase: string;
  apiVersion: string;
  timeoutMs: number;
  retry: RetryOptions;
  /** Client-side request rate limit (all Stripe requests of this process); none when unset. */
  limiter?: RateLimiter;
  /**
   * Reads the secret key again from its store (SSM, Secrets Manager), when Stripe refuses it: a
   * key rolled in Stripe and replaced in the store is taken up by warm Lambdas without a deploy.
   */
  reloadKey?: () => Promise<string>;
  /** At most one such read per this many ms (a wrong key must not read the store per request). */
  keyReloadIntervalMs: number;
}

export interface StripeCall {
  base: "api" | "meterEvents";
  path: string;
  /** GET (with `query`) or POST (with `body`); POST by default. */
  method?: "GET" | "POST";
  query?: Record<string, string>;
  /** Form-encoded (v1) or JSON (v2) body, already serialised. */
  body?: string;
  contentType?: "application/x-www-form-urlencoded" | "application/json";
  /** Replaces the secret key (the v2 stream authenticates with a session token). */
  auth?: BearerSource;
  deadline: number;
  /**
   * The endpoint's own limit besides the client's (Stripe's customer search: 20 per second),
   * taken by every attempt, retries included. An attempt whose turn would come after `startBy`
   * is not sent, and the call ends there (`notStarted`). `name` is the setting that sets it.
   */
  limit?: { limiter: RateLimiter; name: string; startBy: number };
}

/** Supplies a bearer token per attempt, and hears when Stripe says it expired. */
export interface BearerSource {
  /** A token, or the verdict of failing to get one. */
  token(deadline: number): Promise<string | Verdict>;
  expired(token: string): void;
}

/**
 * Low-level Stripe caller: headers, one idempotency key per logical call (fixed before the first
 * attempt, reused by every retry), and the retry policy. Knows nothing of meter events.
 */
export class StripeClient {
  readonly config: StripeClientConfig;
  constructor(
    config: Partial<StripeClientConfig> & { apiKey: string },
    private readonly transport: HttpTransport,
    private readonly logger: Logger,
    private readonly env: RetryEnv = realRetryEnv,
    private readonly metrics: Metrics = noMetrics,
  ) {
    this.config = {
      apiBase: "https://api.stripe.com",
      meterEventsBase: "https://meter-events.stripe.com",
      apiVersion: STRIPE_API_VERSION,
      timeoutMs: 10_000,
      retry: DEFAULT_RETRY,
      keyReloadIntervalMs: 30_000,
      ...config,
    };
    const reloadKey = this.config.reloadKey;
    this.key = reloading(
      this.config.apiKey,
      async () => {
        const key = reloadKey ? await reloadKey() : this.key.current();
        if (key === this.key.current())
          this.logger.warn("Stripe refused the secret key, and its store holds the same key");
        else
          this.logger.info("Stripe refused the secret key; its store holds a new one, which requests use from now on");
        return key;
      },
      {
        missIntervalMs: this.config.keyReloadIntervalMs,
        // The first refusal reads the store whenever it comes, even just after a cold start's read.
        readAt: Number.NEGATIVE_INFINITY,
        now: () => this.env.now(),
        onReloadFailed: (err) =>
          this.logger.warn("Stripe refused the secret key, and reading it again failed", {
            reason: redact(err instanceof Error ? err.message : String(err)),
          }),
      },
    );
    this.retryOptions = { ...this.config.retry, timeoutMs: this.config.timeoutMs };
  }

  /** URLs by path, per base: those without a query are few (one per endpoint) and kept. */
  private readonly urls = { api: new Map<string, string>(), meterEvents: new Map<string, string>() };

  private urlFor(call: StripeCall): string {
    const base = call.base === "api" ? this.config.apiBase : this.config.meterEventsBase;
    if (call.query) {
      const u = new URL(call.path, base);
      for (const [k, v] of Object.entries(call.query)) u.searchParams.set(k, v);
      return u.toString();
    }
    const known = this.urls[call.base];
    let url = known.get(call.path);
    if (url === undefined) {
      url = new URL(call.path, base).toString();
      if (known.size < 64) known.set(call.path, url);
    }
    return url;
  }

  /**
   * The secret key in use: config.apiKey, or what reloadKey read since (lib/reloading.ts: one read
   * shared by every request refused meanwhile, at most one per keyReloadIntervalMs).
   */
  private readonly key: Reloading<string>;
  /** `Bearer <key>` for the secret key, built once per key: a header value per call is garbage to collect. */
  private keyAuthorization = { token: "", header: "" };
  /** The last session token's header value (the v2 stream sends the same token for minutes). */
  private lastBearer = { token: "", header: "" };
  private readonly retryOptions: RetryOptions & { timeoutMs: number };

  private authorization(bearer: string): string {
    if (bearer === this.key.current()) {
      if (this.keyAuthorization.token !== bearer) this.keyAuthorization = { token: bearer, header: `Bearer ${bearer}` };
      return this.keyAuthorization.header;
    }
    if (this.lastBearer.token !== bearer) this.lastBearer = { token: bearer, header: `Bearer ${bearer}` };
    return this.lastBearer.header;
  }

  /** Sends the call, retrying as the policy says, and returns the final verdict. */
  call(call: StripeCall): Promise<Verdict> {
    // Fixed before the first attempt: every retry is the same request.
    const url = this.urlFor(call);
    const idempotencyKey = nextIdempotencyKey();
    return withRetries(
      (timeoutMs) => this.sendOnce(call, url, idempotencyKey, timeoutMs),
      this.retryOptions,
      call.deadline,
      this.env,
    );
  }

  /**
   * One attempt of a call. When Stripe refuses its credentials, the attempt is made once more if
   * that may help (see reauthenticate): it is the same request, so it is not a retry.
   */
  private async sendOnce(
    call: StripeCall,
    url: string,
    idempotencyKey: string,
    timeoutMs: number,
    reauthenticated = false,
  ): Promise<Verdict> {
    if (call.limit && !(await call.limit.limiter.acquire(Math.min(call.limit.startBy, call.deadline - 250)))) {
      return {
        kind: "retry",
        reason: `no turn under ${call.limit.name} before the time it had to start`,
        notStarted: true,
      };
    }
    if (this.config.limiter && !(await this.config.limiter.acquire(call.deadline - 250))) {
      return { kind: "retry", reason: "not sent: the client-side rate limit left no time before the deadline" };
    }
    const bearer = call.auth ? await call.auth.token(call.deadline) : this.key.current();
    if (typeof bearer !== "string") return bearer;
    const verdict = await this.send(call, url, idempotencyKey, timeoutMs, bearer);
    if (
      verdict.kind === "permanent" &&
      verdict.code === "stripe_unauthorized" &&
      !reauthenticated &&
      (await this.reauthenticate(call, bearer))
    ) {
      return this.sendOnce(call, url, idempotencyKey, timeoutMs, true);
    }
    return verdict;
  }

  /**
   * After Stripe refused `bearer`: true when another attempt may succeed. A session token is
   * dropped, so that a new session is made with the current key. The secret key is read again
   * from its store (one read for every request refused meanwhile), and helps if it changed.
   */
  private async reauthenticate(call: StripeCall, bearer: string): Promise<boolean> {
    if (call.auth) {
      call.auth.expired(bearer);
      return true;
    }
    return (await this.currentKey(bearer)) !== bearer;
  }

  /** The secret key to use after Stripe refused `refused`: the current one, read again if it is that one. */
  private async currentKey(refused: string): Promise<string> {
    const key = this.key.current();
    if (key !== refused || !this.config.reloadKey) return key;
    return (await this.key.afterMiss()) ?? key;
  }

  /** One request with `bearer`, its answer classified, logged and counted. */
  private async send(
    call: StripeCall,
    url: string,
    idempotencyKey: string,
    timeoutMs: number,
    bearer: string,
  ): Promise<Verdict> {
    const method = call.method ?? "POST";
    const started = this.env.now();
    try {
      const res = await this.transport.send({
        method,
        url,
        timeoutMs,
        body: call.body,
        headers:
          method === "POST"
            ? {
                authorization: this.authorization(bearer),
                "stripe-version": this.config.apiVersion,
                "user-agent": USER_AGENT,
                "content-type": call.contentType ?? "application/json",
                "idempotency-key": idempotencyKey,
              }
            : {
                authorization: this.authorization(bearer),
                "stripe-version": this.config.apiVersion,
                "user-agent": USER_AGENT,
              },
      });
      const verdict = classifyResponse(res, this.env.now());
      if (verdict.kind === "retry" && verdict.sessionExpired) call.auth?.expired(bearer);
      const ms = this.env.now() - started;
      this.metrics.timing(Metric.stripeLatency, ms);
      this.metrics.count(Metric.stripeRequests, 1, statusDimension(res.status));
      const fields = {
        path: call.path,
        status: res.status,
        stripeRequestId: res.headers["request-id"],
        verdict: verdict.kind,
        ms,
      };
      // Any answer but a 2xx gets a line at `info` with its request id, which is what Stripe
      // support asks for. A 2xx only at `debug`: in v1 that was a line per event, a write and
      // CloudWatch ingestion each (bench/HISTORY.md); the StripeRequests metric counts them.
      if (res.status < 300) this.logger.debug("stripe request", fields);
      else this.logger.info("stripe request", fields);
      return verdict;
    } catch (err) {
      const verdict = classifyNetworkError(err);
      this.metrics.count(Metric.stripeRequests, 1, statusDimension("network_error"));
      this.logger.warn("stripe request failed", {
        path: call.path,
        reason: verdict.kind === "retry" ? verdict.reason : "",
      });
      return verdict;
    }
  }
}

/**
 * Idempotency keys: a random prefix per process and a counter, as unique as a UUID per call and
 * a fraction of its cost (a UUID's text is built from 20 pieces: half a kilobyte per call).
 */
const KEY_PREFIX = `mh-${randomUUID()}-`;
let keyCounter = 0;
export const nextIdempotencyKey = (): string => KEY_PREFIX + String(++keyCounter);

/** Metric dimensions per status, shared: the same few objects for every request. */
const statusDimensions = new Map<number | string, Record<string, string>>();
function statusDimension(status: number | string): Record<string, string> {
  let d = statusDimensions.get(status);
  if (!d) {
    d = Object.freeze({ status: String(status) });
    if (statusDimensions.size < 100) statusDimensions.set(status, d);
  }
  return d;
}
