import { createHmac } from "node:crypto";
import { formFields, withoutBom } from "../triggers.js";
import { matchesToken } from "./signatures.js";

/**
 * The checks Slack and Zoom make that a URL is their endpoint: Slack's `url_verification` when
 * the Request URL is saved, Zoom's `endpoint.url_validation` then and every 72 hours. Neither
 * sends events to a URL that fails it. They are answered at once and never queued.
 *
 * Only a request whose signature verified gets here: Zoom's answer is an HMAC, with the secret,
 * of a token the request chooses, so answering anyone would sign any text they sent, such as
 * the `v0:{timestamp}:{body}` of a forged event.
 */
export type Handshake = { kind: "answer"; body: Record<string, string> } | { kind: "invalid"; message: string };

/** Longer than any token either sends; it keeps an answer small. */
const MAX_TOKEN_CHARS = 1024;

/**
 * The answer to a handshake, `invalid` for one without its token, or undefined for any other
 * request (an event). `secret` is the one that signed the request.
 */
export function handshakeOf(scheme: "slack" | "zoom", body: Buffer, secret: string): Handshake | undefined {
  // Most requests are events: only a body naming the handshake is parsed here.
  const marker = scheme === "slack" ? "url_verification" : "endpoint.url_validation";
  if (!body.includes(marker)) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(withoutBom(body.toString("utf8")));
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null) return undefined;
  const fields = parsed as Record<string, unknown>;
  if (scheme === "slack") {
    if (fields.type !== marker) return undefined;
    const challenge = token(fields.challenge);
    if (challenge === undefined) return { kind: "invalid", message: "url_verification has no challenge string" };
    return { kind: "answer", body: { challenge } };
  }
  if (fields.event !== marker) return undefined;
  const payload = fields.payload as Record<string, unknown> | null | undefined;
  const plainToken = token(typeof payload === "object" && payload !== null ? payload.plainToken : undefined);
  if (plainToken === undefined)
    return { kind: "invalid", message: "endpoint.url_validation has no payload.plainToken string" };
  const encryptedToken = createHmac("sha256", secret).update(plainToken).digest("hex");
  return { kind: "answer", body: { plainToken, encryptedToken } };
}

/**
 * Slack's SSL check of a slash command's URL: a form of `ssl_check=1` and a `token`, which Slack
 * does not sign. It carries nothing to bill and is answered 200 before any signature check, but
 * only in exactly that shape: a body with any other field (an event's `payload`) is an event,
 * and must be signed like one (Slack's Bolt once let `ssl_check=1` carry an unsigned event).
 */
export function isSlackSslCheck(body: Buffer): boolean {
  if (body.length > 512 || !body.includes("ssl_check=1")) return false;
  const fields = formFields(body.toString("utf8"));
  return fields.ssl_check === "1" && Object.keys(fields).every((k) => k === "ssl_check" || k === "token");
}

const token = (v: unknown) => (typeof v === "string" && v.length > 0 && v.length <= MAX_TOKEN_CHARS ? v : undefined);

/**
 * Where a `meta` source's Verify Tokens are kept beside its secrets: a key no source name can be
 * (names are lower-case letters, digits and `-`).
 */
export const verifyTokensKey = (source: string) => `${source} verifyTokens`;

/** What Meta's challenge may be: it sends digits; nothing else is echoed back. */
const CHALLENGE = /^[A-Za-z0-9._~-]{1,256}$/;

/**
 * Meta's subscription check, a GET when the Callback URL or Verify Token is saved in the App
 * Dashboard: `hub.mode=subscribe`, `hub.verify_token` (the Verify Token) and `hub.challenge`,
 * which is answered as it is. Unlike the POSTs, it is not signed: the token is the check.
 */
export function metaSubscription(
  query: string,
  verifyTokens: readonly string[],
): { kind: "answer"; challenge: string } | { kind: "invalid"; message: string } | { kind: "mismatch" } {
  const params = new URLSearchParams(query);
  const token = params.get("hub.verify_token");
  const challenge = params.get("hub.challenge");
  if (params.get("hub.mode") !== "subscribe" || !token || challenge === null)
    return { kind: "invalid", message: "expected hub.mode=subscribe, hub.verify_token and hub.challenge" };
  if (!CHALLENGE.test(challenge))
    return { kind: "invalid", message: "hub.challenge must be 1-256 letters, digits or ._~-" };
  return matchesToken(verifyTokens, token) ? { kind: "answer", challenge } : { kind: "mismatch" };
}
