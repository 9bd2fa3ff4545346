import { Agent, request } from "undici";

export interface HttpRequest {
  method: "GET" | "POST";
  url: string;
  headers: Record<string, string>;
  body?: string;
  timeoutMs: number;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** What the Stripe client needs from HTTP: one request, one response or a thrown network error. */
export interface HttpTransport {
  send(req: HttpRequest): Promise<HttpResponse>;
  close(): Promise<void>;
}

/**
 * undici with a keep-alive pool per origin: a warm Lambda reuses its TLS connections to Stripe
 * across invocations instead of paying a handshake per call.
 */
export function createUndiciTransport(
  options: { connections?: number; connectTimeoutMs?: number } = {},
): HttpTransport {
  const agent = new Agent({
    connections: options.connections ?? 32,
    keepAliveTimeout: 30_000,
    keepAliveMaxTimeout: 60_000,
    connect: { timeout: options.connectTimeoutMs ?? 5_000 },
  });
  return {
    async send(req) {
      const res = await request(req.url, {
        dispatcher: agent,
        method: req.method,
        headers: req.headers,
        body: req.body,
        headersTimeout: req.timeoutMs,
        bodyTimeout: req.timeoutMs,
        // Bounds the whole exchange, connection included.
        signal: AbortSignal.timeout(req.timeoutMs),
      });
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(res.headers)) {
        if (v !== undefined) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : v;
      }
      return { status: res.statusCode, headers, body: await res.body.text() };
    },
    close: () => agent.close(),
  };
}
