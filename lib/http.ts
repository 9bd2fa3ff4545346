/** The HTTP shapes lib/ works with; functions/ and local/ translate to and from them. */
export interface HttpRequest {
  method: string;
  path: string;
  /** Lower-case names. */
  headers: Record<string, string | undefined>;
  body: Buffer;
  requestId: string;
  /** The query string as it arrived, without `?` (signed by Twilio's scheme). */
  query?: string;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** An error answer's `error.code` (httpError), for metrics; not sent. */
  code?: string;
}

/** A request refused whole, before anything is queued: the status and error code it is answered with. */
export interface Refusal {
  status: number;
  code: string;
  message: string;
}

export function json(status: number, body: unknown, headers: Record<string, string> = {}): HttpResponse {
  return { status, headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) };
}

/** A client error: a stable `code` the caller can branch on and a message for a person. */
export function httpError(
  status: number,
  code: string,
  message: string,
  requestId: string,
  extra: Record<string, unknown> = {},
  headers: Record<string, string> = {},
): HttpResponse {
  return { ...json(status, { error: { code, message }, requestId, ...extra }, headers), code };
}
