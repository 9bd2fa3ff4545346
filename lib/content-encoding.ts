/**
 * Compressed request bodies (`Content-Encoding`) on the events API. Apps that send batches of up
 * to 500 events often gzip them, as they do for other event-ingest APIs. Webhooks are not inflated:
 * their senders sign the bytes they send, and each sender's scheme says which bytes those are.
 */

import type { Refusal } from "./http.js";

/** The codings the events API reads (RFC 9110 §8.4.1), and `x-gzip` as §8.4.1.3 asks. */
const CODINGS = new Set(["gzip", "x-gzip", "deflate", "br"]);
/** More than this many codings in one header is no client's doing. */
const MAX_CODINGS = 2;

/** The codings a `Content-Encoding` header lists, in the order they were applied; `identity` dropped. */
export function contentCodings(header: string | undefined): string[] {
  return (header ?? "")
    .split(",")
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== "" && c !== "identity");
}

/**
 * Why the events API will not read a body in these codings, or undefined when it can: a coding it
 * does not know (`415`), as before it read any.
 */
export function unreadableCodings(codings: readonly string[]): Refusal | undefined {
  const unknown = codings.find((c) => !CODINGS.has(c));
  if (unknown === undefined && codings.length <= MAX_CODINGS) return undefined;
  const what = unknown === undefined ? `${codings.length} codings` : unknown.slice(0, 40);
  return {
    status: 415,
    code: "unsupported_media_type",
    message: `Content-Encoding ${what} is not supported; send the JSON uncompressed, or as gzip, deflate or br`,
  };
}

/** A zlib stream's header (RFC 1950): what HTTP's `deflate` means; some clients send raw deflate. */
function isZlibHeader(body: Buffer): boolean {
  const cmf = body[0] ?? 0;
  const flg = body[1] ?? 0;
  return (cmf & 0x0f) === 8 && (cmf * 256 + flg) % 31 === 0;
}

/**
 * The body with its codings undone, last applied first, never larger than maxBytes (a few
 * kilobytes of gzip can inflate to gigabytes), or why it cannot be read: `413` past maxBytes,
 * `400 invalid_body` when the bytes are not in the coding named. zlib is loaded only here, so
 * an uncompressed request's cold start does not pay for it.
 */
export async function inflated(
  body: Buffer,
  codings: readonly string[],
  maxBytes: number,
): Promise<{ body: Buffer } | Refusal> {
  if (codings.length === 0) return { body };
  const zlib = await import("node:zlib");
  let bytes = body;
  for (const coding of [...codings].reverse()) {
    const options = { maxOutputLength: maxBytes };
    try {
      if (coding === "br") bytes = zlib.brotliDecompressSync(bytes, options);
      else if (coding === "deflate")
        bytes = isZlibHeader(bytes) ? zlib.inflateSync(bytes, options) : zlib.inflateRawSync(bytes, options);
      else bytes = zlib.gunzipSync(bytes, options);
    } catch (err) {
      if ((err as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") {
        return {
          status: 413,
          code: "payload_too_large",
          message: `body is larger than ${maxBytes} bytes once inflated`,
        };
      }
      return {
        status: 400,
        code: "invalid_body",
        message: `body is not valid ${coding} data (Content-Encoding): ${(err as Error).message.slice(0, 100)}`,
      };
    }
  }
  return { body: bytes };
}
