import { redact } from "../redact.js";
import type { HttpResponse } from "./transport.js";

/**
 * The one place that decides what a Stripe answer means and whether to try again
 * (shared/stripe/METER_API.md §9, §11).
 */
export type Verdict =
  | { kind: "ok"; duplicate: boolean; requestId?: string; body: string }
  | {
      kind: "retry";
      reason: string;
      status?: number;
      requestId?: string;
      retryAfterMs?: number;
      /** The v2 session token expired: get a new one and resend at once. */
      sessionExpired?: boolean;
      /** No answer after the request may have reached Stripe: it may have been applied. */
      ambiguous?: boolean;
      /** Not sent: a rate limit had no turn before the call's start-by time (StripeCall.limit). */
      notStarted?: boolean;
    }
  | {
      kind: "permanent";
      code: "stripe_rejected" | "stripe_unauthorized";
      reason: string;
      status: number;
      requestId?: string;
    };

export interface RetryOptions {
  /** Attempts within one invocation; further retries happen through the queue. */
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** A Retry-After longer than this is not waited for here: the message goes back to the queue. */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY: RetryOptions = {
  maxAttempts: 3,
  baseDelayMs: 500,
  maxDelayMs: 5_000,
  maxRetryAfterMs: 20_000,
};

interface StripeErrorBody {
  error?: { type?: string; code?: string; message?: string };
}

function parseError(body: string): StripeErrorBody["error"] {
  try {
    const parsed = JSON.parse(body) as StripeErrorBody;
    return parsed && typeof parsed === "object" ? parsed.error : undefined;
  } catch {
    return undefined;
  }
}

/** Retry-After in seconds or as an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | undefined {
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs);
}

function describe(res: HttpResponse, err: StripeErrorBody["error"]): string {
  const what = [err?.type, err?.code].filter(Boolean).join("/");
  const text = err?.message ? `: ${err.message}` : "";
  return redact(`Stripe answered ${res.status}${what ? ` ${what}` : ""}${text}`);
}

/** Stripe's answer when the identifier was used before: the event is already recorded. */
export function isDuplicateIdentifier(res: HttpResponse, err: StripeErrorBody["error"]): boolean {
  if (res.status !== 400 || !err) return false;
  return (
    err.code === "duplicate_meter_event" || (err.message ?? "").startsWith("An event already exists with identifier")
  );
}

export function classifyResponse(res: HttpResponse, nowMs: number): Verdict {
  const requestId = res.headers["request-id"];
  if (res.status >= 200 && res.status < 300) return { kind: "ok", duplicate: false, requestId, body: res.body };
  const err = parseError(res.body);
  if (isDuplicateIdentifier(res, err)) return { kind: "ok", duplicate: true, requestId, body: res.body };
  const reason = describe(res, err);
  if (res.status === 401 && err?.code === "billing_meter_event_session_expired") {
    return { kind: "retry", reason, status: 401, requestId, sessionExpired: true };
  }
  const shouldRetry = res.headers["stripe-should-retry"];
  const retryAfterMs = parseRetryAfter(res.headers["retry-after"], nowMs);
  if (shouldRetry === "false") {
    return { kind: "permanent", code: "stripe_rejected", reason, status: res.status, requestId };
  }
  if (shouldRetry === "true" || res.status === 409 || res.status === 429 || res.status >= 500) {
    return { kind: "retry", reason, status: res.status, requestId, retryAfterMs };
  }
  const code = res.status === 401 || res.status === 403 ? "stripe_unauthorized" : "stripe_rejected";
  return { kind: "permanent", code, reason, status: res.status, requestId };
}

/** No answer at all (refused, reset, timed out): unless refused, the request may have been applied. */
export function classifyNetworkError(err: unknown): Verdict {
  const e = err as { name?: string; code?: string; message?: string; cause?: { code?: string } };
  const what = e?.name === "TimeoutError" ? "timed out" : (e?.code ?? e?.name ?? "failed");
  const refused = e?.code === "ECONNREFUSED" || e?.cause?.code === "ECONNREFUSED";
  return {
    kind: "retry",
    reason: redact(`request to Stripe ${what}: ${e?.message ?? String(err)}`),
    ambiguous: !refused,
  };
}

/** Capped exponential backoff with jitter in [50%, 100%] of the step, as stripe-node does. */
export function backoffDelayMs(
  retryIndex: number,
  opts: Pick<RetryOptions, "baseDelayMs" | "maxDelayMs">,
  random: () => number,
): number {
  const step = Math.min(opts.baseDelayMs * 2 ** retryIndex, opts.maxDelayMs);
  return Math.max(opts.baseDelayMs / 2, step * (0.5 + 0.5 * random()));
}

export interface RetryEnv {
  now: () => number;
  sleep: (ms: number) => Promise<void>;
  random: () => number;
}

export const realRetryEnv: RetryEnv = {
  now: Date.now,
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  random: Math.random,
};

/**
 * Runs `attempt` until it succeeds, fails permanently, runs out of attempts, or would run past
 * `deadline` (epoch ms). The caller fixes the identifier and idempotency key before the first
 * attempt, so every retry is the same request.
 */
export async function withRetries(
  attempt: (timeoutMs: number) => Promise<Verdict>,
  opts: RetryOptions & { timeoutMs: number },
  deadline: number,
  env: RetryEnv = realRetryEnv,
): Promise<Verdict> {
  let last: Verdict | undefined;
  let ambiguous = false;
  for (let n = 0; n < opts.maxAttempts; n++) {
    const left = deadline - env.now();
    if (left < 250) break;
    last = await attempt(Math.min(opts.timeoutMs, left));
    if (last.kind === "permanent" && last.code === "stripe_rejected" && ambiguous) {
      // An earlier attempt of this same request may have been applied: a rejection now does not
      // prove the event is unbilled, so it must not be dead-lettered. Try again later, when
      // Stripe answers with the event's real state (e.g. "already exists").
      return {
        kind: "retry",
        reason: `${last.reason} (after an attempt whose outcome is unknown)`,
        status: last.status,
        requestId: last.requestId,
      };
    }
    if (last.kind !== "retry") return last;
    // A later attempt would only come later still. Not started only if nothing was sent before.
    if (last.notStarted) return n === 0 ? last : { ...last, notStarted: false };
    ambiguous ||= last.ambiguous === true;
    if (n === opts.maxAttempts - 1) break;
    if (last.sessionExpired) continue;
    if (last.retryAfterMs !== undefined && last.retryAfterMs > opts.maxRetryAfterMs) break;
    const delay = Math.max(backoffDelayMs(n, opts, env.random), last.retryAfterMs ?? 0);
    if (env.now() + delay + 250 > deadline) break;
    await env.sleep(delay);
  }
  return last ?? { kind: "retry", reason: "no time left before the invocation deadline" };
}
