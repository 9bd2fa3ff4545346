import type { Dispatcher } from "undici";
// undici's index also loads fetch, WebSocket, cookies and EventSource, about two thirds of its
// import time; a cold start needs only the Agent (BENCHMARKS.md, "Cold start"). undici has no
// "exports" map, so this file is public by Node's rules; the transport tests fail if it moves.
import Agent from "undici/lib/dispatcher/agent.js";
import { type HttpResponse, type HttpTransport, MAX_RESPONSE_BYTES, perUrl, RequestTimeoutError } from "./transport.js";

const expire = (c: ResponseCollector) => c.expire();

/**
 * Collects one response through undici's dispatch handler API. Compared with `request()` this
 * skips a Readable body stream and an AbortSignal per request; together they were two thirds of
 * the client's CPU per v1 call (bench/HISTORY.md). One deadline bounds the whole exchange: time
 * queued for a connection, connecting, sending, and receiving.
 */
class ResponseCollector implements Dispatcher.DispatchHandler {
  /** Bounds the whole exchange; cleared once it settles. */
  private readonly timer: NodeJS.Timeout;
  private controller: Dispatcher.DispatchController | undefined;
  private status = 0;
  private headers: Record<string, string> = {};
  /** The body's first chunk; most answers are one. */
  private first: Buffer | undefined;
  private rest: Buffer[] | undefined;
  private bytes = 0;
  private settled = false;
  private failure: Error | undefined;

  constructor(
    private readonly timeoutMs: number,
    private readonly resolve: (res: HttpResponse) => void,
    private readonly reject: (err: Error) => void,
  ) {
    this.timer = setTimeout(expire, timeoutMs, this);
  }

  expire(): void {
    this.fail(new RequestTimeoutError(this.timeoutMs));
  }

  /** Settles now, and aborts the exchange if it started (or as soon as it starts). */
  private fail(err: Error): void {
    this.failure ??= err;
    this.controller?.abort(err);
    if (this.settle()) this.reject(err);
  }

  /** True the first time: the caller then resolves or rejects. */
  private settle(): boolean {
    if (this.settled) return false;
    this.settled = true;
    clearTimeout(this.timer);
    return true;
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.failure) controller.abort(this.failure);
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    this.status = statusCode;
    // undici gives header names lower-cased (test/lib/stripe/transport.test.ts holds it to that),
    // in an object of this response's own: kept, with repeated headers joined.
    for (const k in headers) {
      const v = headers[k];
      if (Array.isArray(v)) headers[k] = v.join(", ");
      else if (v === undefined) delete headers[k];
    }
    this.headers = headers as Record<string, string>;
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.bytes += chunk.length;
    if (this.bytes > MAX_RESPONSE_BYTES) {
      this.fail(new Error(`response body larger than ${MAX_RESPONSE_BYTES} bytes`));
      return;
    }
    if (this.first === undefined) this.first = chunk;
    else if (this.rest === undefined) this.rest = [chunk];
    else this.rest.push(chunk);
  }

  onResponseEnd(): void {
    const body =
      this.rest === undefined
        ? (this.first?.toString("utf8") ?? "")
        : Buffer.concat([this.first as Buffer, ...this.rest]).toString("utf8");
    if (this.settle()) this.resolve({ status: this.status, headers: this.headers, body });
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.settle()) this.reject(err);
  }
}

/**
 * undici with a keep-alive pool per origin: a warm Lambda reuses its TLS connections to Stripe
 * across invocations instead of paying a handshake per call. `pipelining` > 1 sends several
 * requests on one connection before the first answer (every Stripe call here is idempotent: v1
 * carries an Idempotency-Key, v2 events carry identifiers).
 */
export function createUndiciTransport(
  options: { connections?: number; connectTimeoutMs?: number; pipelining?: number } = {},
): HttpTransport {
  const agent = new Agent({
    connections: options.connections ?? 32,
    pipelining: options.pipelining ?? 1,
    keepAliveTimeout: 30_000,
    keepAliveMaxTimeout: 60_000,
    connect: { timeout: options.connectTimeoutMs ?? 5_000 },
  });
  const pipelined = (options.pipelining ?? 1) > 1;
  const target = perUrl((href) => {
    const u = new URL(href);
    return { origin: u.origin, path: u.pathname + u.search };
  });
  return {
    send(req) {
      const { origin, path } = target(req.url);
      return new Promise<HttpResponse>((resolve, reject) => {
        const handler = new ResponseCollector(req.timeoutMs, resolve, reject);
        agent.dispatch(
          {
            origin,
            path,
            method: req.method,
            headers: req.headers,
            body: req.body,
            headersTimeout: req.timeoutMs,
            bodyTimeout: req.timeoutMs,
            // undici pipelines only requests it may resend; ours are (see above).
            idempotent: pipelined || req.method === "GET",
            blocking: false,
          },
          handler,
        );
      });
    },
    close: () => agent.close(),
  };
}
