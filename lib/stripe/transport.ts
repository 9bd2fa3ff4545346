/**
 * What the Stripe client and the HTTP lookups need from HTTP, kept apart from the two clients
 * that provide it (lib/stripe/wire.ts, the default, and lib/stripe/undici-transport.ts), so that
 * loading one does not load the other.
 */

/** A header name: an HTTP token (RFC 9110), in requests and in answers alike. */
export const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/**
 * A request header value both clients send: nothing that would end a line or the header block
 * (request splitting). The mapping config checks lookup headers against the same two rules.
 */
export const HEADER_VALUE = /^[^\r\n\0]*$/;

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

/** A response body larger than this is refused: Stripe's answers are a few KiB. */
export const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

/** Thrown when a request outlives its `timeoutMs`; named as fetch names its timeouts. */
export class RequestTimeoutError extends Error {
  override readonly name = "TimeoutError";
  constructor(ms: number) {
    super(`no complete answer within ${ms} ms`);
  }
}

/**
 * `make(url)`, remembered for up to 256 URLs: parsing a URL per request shows in a profile, and
 * the endpoints meterhook calls are few (a lookup URL with a query per customer is not kept past
 * the cap).
 */
export function perUrl<T>(make: (href: string) => T): (href: string) => T {
  const known = new Map<string, T>();
  return (href) => {
    let t = known.get(href);
    if (t === undefined) {
      t = make(href);
      if (known.size < 256) known.set(href, t);
    }
    return t;
  };
}
