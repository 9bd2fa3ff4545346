import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { parse as parseQuery, stringify as stringifyQuery } from "node:querystring";
import type { Auth } from "../mapping/config-schema.js";
import { formFields } from "../triggers.js";

/**
 * Webhook signature schemes, verified on the raw body bytes. Every comparison is constant-time;
 * every configured secret is tried (several are accepted during a rotation).
 */
export type SignatureFailure = "signature_missing" | "signature_malformed" | "signature_expired" | "signature_mismatch";
export type VerifyResult =
  /** `secret`: the index of the secret that signed, where a handshake answers with it (Zoom's). */
  { ok: true; secret?: number } | { ok: false; code: SignatureFailure; message: string };

type SignedAuth = Exclude<Auth, { scheme: "api-key" } | { scheme: "none" }>;

const fail = (code: SignatureFailure, message: string): VerifyResult => ({ ok: false, code, message });

const hmac = (key: Buffer | string, ...parts: Array<string | Buffer>) => {
  const h = createHmac("sha256", key);
  for (const p of parts) h.update(p);
  return h.digest();
};

/** True if any candidate equals the expected digest; every candidate is compared in full. */
function anyEqual(expected: Buffer[], candidates: Buffer[]): boolean {
  let ok = false;
  for (const e of expected) for (const c of candidates) ok = (c.length === e.length && timingSafeEqual(c, e)) || ok;
  return ok;
}

/** True if `given` is one of `tokens`, compared as digests: of equal length, in the same time. */
export function matchesToken(tokens: readonly string[], given: string): boolean {
  const digest = (s: string) => createHash("sha256").update(s).digest();
  return anyEqual(tokens.map(digest), [digest(given)]);
}

/** Standard Webhooks secrets are `whsec_` + base64 of the key bytes. */
export function standardWebhooksKey(secret: string): Buffer {
  return Buffer.from(secret.startsWith("whsec_") ? secret.slice(6) : secret, "base64");
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** The length of each generic HMAC's digest. */
const DIGEST_BYTES = { sha1: 20, sha256: 32, sha512: 64 } as const;

/** What Slack and Zoom sign: `v0:{timestamp}:{body}`. */
export const v0SignedText = (timestamp: string, body: Buffer | string) =>
  Buffer.concat([Buffer.from(`v0:${timestamp}:`), Buffer.from(body)]);

/** Slack's and Zoom's headers, which differ only in name. */
const V0_HEADERS = {
  slack: { signature: "X-Slack-Signature", timestamp: "X-Slack-Request-Timestamp" },
  zoom: { signature: "x-zm-signature", timestamp: "x-zm-request-timestamp" },
} as const;

/**
 * Slack's and Zoom's scheme: `v0=` and the hex HMAC-SHA256 of `v0:{timestamp}:{body}`, the
 * timestamp in Unix seconds within the tolerance either way. It gives the index of the secret
 * that signed: Zoom's URL validation is answered with that secret.
 */
function verifyV0(
  names: (typeof V0_HEADERS)[keyof typeof V0_HEADERS],
  toleranceSeconds: number,
  secrets: readonly string[],
  headers: Record<string, string | undefined>,
  body: Buffer,
  nowSeconds: number,
): VerifyResult {
  const sig = headers[names.signature.toLowerCase()];
  const ts = headers[names.timestamp.toLowerCase()];
  if (!sig || !ts) return fail("signature_missing", `${names.signature} and ${names.timestamp} headers are required`);
  if (!/^\d{1,12}$/.test(ts)) return fail("signature_malformed", `${names.timestamp} is not Unix seconds`);
  if (!/^v0=[0-9a-f]{64}$/i.test(sig)) return fail("signature_malformed", `${names.signature} must be v0=<hex>`);
  const text = v0SignedText(ts, body);
  const given = [Buffer.from(sig.slice(3), "hex")];
  // Every secret is compared, the first that matches kept: the time does not tell which.
  let signer = -1;
  secrets.forEach((s, i) => {
    if (anyEqual([hmac(s, text)], given) && signer === -1) signer = i;
  });
  if (signer === -1) return fail("signature_mismatch", "no signature matches a configured secret");
  if (Math.abs(nowSeconds - Number(ts)) > toleranceSeconds)
    return fail("signature_expired", `${names.timestamp} is more than ${toleranceSeconds} s from now`);
  return { ok: true, secret: signer };
}

/**
 * What Twilio signs: the URL it called with its query, then, unless the query carries
 * `bodySHA256`, each form field's name and value, without separators, in name order (a repeated
 * field's distinct values in order), as Twilio's helper libraries build it.
 */
export function twilioSignedText(url: string, query: string, body: Buffer): string {
  const hashed = new URLSearchParams(query).has("bodySHA256");
  return withQuery(url, query) + (hashed ? "" : twilioFields(body));
}

const withQuery = (url: string, query: string) => (query ? `${url}?${query}` : url);

/** The form's fields as Twilio appends them, read as meterhook reads any form (lib/triggers.ts). */
function twilioFields(body: Buffer): string {
  const fields = formFields(body.toString("utf8"));
  let text = "";
  for (const name of Object.keys(fields).sort()) {
    for (const v of [...new Set([fields[name] ?? []].flat())].sort()) text += name + v;
  }
  return text;
}

/** The URL with its default port written and left out: Twilio may sign either. */
function withAndWithoutPort(url: string): string[] {
  const m = /^(https?):\/\/([^/:?#]+)(:\d+)?(.*)$/.exec(url);
  if (!m) return [url];
  const [, scheme, host, port, rest] = m;
  const standard = scheme === "https" ? ":443" : ":80";
  if (port === undefined) return [url, `${scheme}://${host}${standard}${rest}`];
  return port === standard ? [url, `${scheme}://${host}${rest}`] : [url];
}

/**
 * What twilio-node also tries when the URL as received matches nothing, "for back ends that
 * signed an escaped form": the URL as `new URL()` normalizes it, and that with Node's legacy
 * querystring encoding, each with and without its port.
 */
function twilioEscapedForms(url: string): string[] {
  let normalized: string;
  try {
    normalized = new URL(url).toString();
  } catch {
    return [];
  }
  const legacy = (u: string) => {
    const at = u.indexOf("?");
    return at === -1 || at === u.length - 1 ? u : u.slice(0, at + 1) + stringifyQuery(parseQuery(u.slice(at + 1)));
  };
  const forms = withAndWithoutPort(normalized);
  return [...forms, ...forms.map(legacy)];
}

/** Zendesk's timestamp header: ISO 8601 in UTC, as `2021-03-25T05:09:27Z`. */
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;

/**
 * The URL HubSpot signs: the one it called, with the query as received and, as its v3 rules
 * say, these twelve escapes decoded (and no others).
 */
export function hubspotSignedUrl(url: string, query: string): string {
  return withQuery(url, query).replace(/%(3A|2F|3F|40|21|24|27|28|29|2A|2C|3B)/gi, (_, hex: string) =>
    String.fromCharCode(Number.parseInt(hex, 16)),
  );
}

/**
 * A header of `key=value` pairs (Stripe's `t=..,v1=..`, Paddle's `ts=..;h1=..`): the timestamp,
 * and every signature under `signatureKey`, as a rotation sends one per secret.
 */
function timestampAndSignatures(header: string, separator: string, timestampKey: string, signatureKey: string) {
  let ts: string | undefined;
  const signatures: string[] = [];
  for (const item of header.split(separator)) {
    const at = item.indexOf("=");
    if (at === -1) continue;
    const key = item.slice(0, at).trim();
    const value = item.slice(at + 1).trim();
    if (key === timestampKey) ts = value;
    else if (key === signatureKey && value) signatures.push(value);
  }
  return { ts, signatures };
}

export function verifySignature(
  auth: SignedAuth,
  secrets: readonly string[],
  headers: Record<string, string | undefined>,
  body: Buffer,
  nowSeconds: number,
  /** The request's query string, without `?`: Twilio signs it. */
  query = "",
): VerifyResult {
  switch (auth.scheme) {
    case "standard-webhooks": {
      // Svix, which senders such as Clerk and Resend use, sends the same three headers named
      // svix-*, unless the sender pays to rename them webhook-*: all three come from one family.
      const family =
        headers["webhook-signature"] === undefined && headers["svix-signature"] !== undefined ? "svix" : "webhook";
      const id = headers[`${family}-id`];
      const ts = headers[`${family}-timestamp`];
      const sig = headers[`${family}-signature`];
      if (!id || !ts || !sig)
        return fail(
          "signature_missing",
          "webhook-id, webhook-timestamp and webhook-signature headers (or Svix's svix-*) are required",
        );
      if (!/^\d{1,12}$/.test(ts)) return fail("signature_malformed", `${family}-timestamp is not Unix seconds`);
      const candidates = sig
        .split(" ")
        .filter((p) => p.startsWith("v1,"))
        .map((p) => p.slice(3));
      if (candidates.length === 0 || !candidates.every((c) => BASE64.test(c))) {
        return fail("signature_malformed", `${family}-signature has no v1,<base64> signature`);
      }
      const expected = secrets.map((s) => hmac(standardWebhooksKey(s), `${id}.${ts}.`, body));
      if (
        !anyEqual(
          expected,
          candidates.map((c) => Buffer.from(c, "base64")),
        )
      ) {
        return fail("signature_mismatch", "no signature matches a configured secret");
      }
      if (Math.abs(nowSeconds - Number(ts)) > auth.toleranceSeconds) {
        return fail("signature_expired", `${family}-timestamp is more than ${auth.toleranceSeconds} s from now`);
      }
      return { ok: true };
    }
    case "stripe": {
      const header = headers[auth.header.toLowerCase()];
      if (!header) return fail("signature_missing", `${auth.header} header is required`);
      const { ts: t, signatures: v1 } = timestampAndSignatures(header, ",", "t", auth.version);
      if (!t || !/^\d{1,12}$/.test(t) || v1.length === 0 || !v1.every((s) => /^[0-9a-f]{64}$/i.test(s))) {
        return fail("signature_malformed", `${auth.header} must be t=<seconds>,${auth.version}=<hex>`);
      }
      const expected = secrets.map((s) => hmac(s, `${t}.`, body));
      if (
        !anyEqual(
          expected,
          v1.map((s) => Buffer.from(s, "hex")),
        )
      )
        return fail("signature_mismatch", "no signature matches a configured secret");
      // As Stripe's libraries do: only a timestamp that is too old is refused.
      if (nowSeconds - Number(t) > auth.toleranceSeconds)
        return fail("signature_expired", `timestamp is more than ${auth.toleranceSeconds} s old`);
      return { ok: true };
    }
    case "github":
    case "meta": {
      const header = headers["x-hub-signature-256"];
      if (!header) return fail("signature_missing", "X-Hub-Signature-256 header is required");
      if (!/^sha256=[0-9a-f]{64}$/i.test(header))
        return fail("signature_malformed", "X-Hub-Signature-256 must be sha256=<hex>");
      const expected = secrets.map((s) => hmac(s, body));
      if (!anyEqual(expected, [Buffer.from(header.slice(7), "hex")]))
        return fail("signature_mismatch", "no signature matches a configured secret");
      return { ok: true };
    }
    case "shopify": {
      const header = headers["x-shopify-hmac-sha256"];
      if (!header) return fail("signature_missing", "X-Shopify-Hmac-Sha256 header is required");
      if (!BASE64.test(header) || Buffer.from(header, "base64").length !== 32) {
        return fail("signature_malformed", "X-Shopify-Hmac-Sha256 must be the base64 of a SHA-256 HMAC");
      }
      const expected = secrets.map((s) => hmac(s, body));
      if (!anyEqual(expected, [Buffer.from(header, "base64")]))
        return fail("signature_mismatch", "no signature matches a configured secret");
      return { ok: true };
    }
    case "twilio": {
      const header = headers["x-twilio-signature"];
      if (!header) return fail("signature_missing", "X-Twilio-Signature header is required");
      if (!BASE64.test(header) || Buffer.from(header, "base64").length !== 20)
        return fail("signature_malformed", "X-Twilio-Signature must be the base64 of a SHA-1 HMAC");
      // A JSON body is signed through its hash, which Twilio puts in the query as bodySHA256.
      const bodyHash = new URLSearchParams(query).get("bodySHA256");
      if (bodyHash !== null && !anyEqual([createHash("sha256").update(body).digest()], [Buffer.from(bodyHash, "hex")]))
        return fail("signature_mismatch", "the body's SHA-256 is not the query's bodySHA256");
      const fields = bodyHash === null ? twilioFields(body) : "";
      const signature = Buffer.from(header, "base64");
      const signedOneOf = (urls: string[]) =>
        anyEqual(
          secrets.flatMap((s) => urls.map((url) => createHmac("sha1", s).update(url).update(fields).digest())),
          [signature],
        );
      const received = withQuery(auth.url, query);
      if (!signedOneOf(withAndWithoutPort(received)) && !signedOneOf(twilioEscapedForms(received)))
        return fail(
          "signature_mismatch",
          "no signature matches a configured Auth Token (is `url` the URL Twilio calls?)",
        );
      return { ok: true };
    }
    case "slack":
    case "zoom":
      return verifyV0(V0_HEADERS[auth.scheme], auth.toleranceSeconds, secrets, headers, body, nowSeconds);
    case "token": {
      const token = headers[auth.header.toLowerCase()];
      if (!token) return fail("signature_missing", `${auth.header} header is required`);
      if (!matchesToken(secrets, token))
        return fail("signature_mismatch", `${auth.header} matches no configured secret`);
      return { ok: true };
    }
    case "paddle": {
      const header = headers["paddle-signature"];
      if (!header) return fail("signature_missing", "Paddle-Signature header is required");
      const { ts, signatures: h1 } = timestampAndSignatures(header, ";", "ts", "h1");
      if (!ts || !/^\d{1,12}$/.test(ts) || h1.length === 0 || !h1.every((h) => /^[0-9a-f]{64}$/i.test(h)))
        return fail("signature_malformed", "Paddle-Signature must be ts=<seconds>;h1=<hex>");
      const expected = secrets.map((s) => hmac(s, `${ts}:`, body));
      if (
        !anyEqual(
          expected,
          h1.map((h) => Buffer.from(h, "hex")),
        )
      )
        return fail("signature_mismatch", "no signature matches a configured secret key");
      if (Math.abs(nowSeconds - Number(ts)) > auth.toleranceSeconds)
        return fail("signature_expired", `Paddle-Signature's ts is more than ${auth.toleranceSeconds} s from now`);
      return { ok: true };
    }
    case "zendesk": {
      const sig = headers["x-zendesk-webhook-signature"];
      const ts = headers["x-zendesk-webhook-signature-timestamp"];
      if (!sig || !ts)
        return fail(
          "signature_missing",
          "X-Zendesk-Webhook-Signature and X-Zendesk-Webhook-Signature-Timestamp headers are required",
        );
      const at = Date.parse(ts);
      if (!ISO_UTC.test(ts) || Number.isNaN(at))
        return fail("signature_malformed", "X-Zendesk-Webhook-Signature-Timestamp is not an ISO 8601 UTC time");
      if (!BASE64.test(sig) || Buffer.from(sig, "base64").length !== 32)
        return fail("signature_malformed", "X-Zendesk-Webhook-Signature must be the base64 of a SHA-256 HMAC");
      // The timestamp and the body with nothing between, as Zendesk documents it.
      if (
        !anyEqual(
          secrets.map((s) => hmac(s, ts, body)),
          [Buffer.from(sig, "base64")],
        )
      )
        return fail("signature_mismatch", "no signature matches a configured signing secret");
      if (Math.abs(nowSeconds - at / 1000) > auth.toleranceSeconds)
        return fail(
          "signature_expired",
          `X-Zendesk-Webhook-Signature-Timestamp is more than ${auth.toleranceSeconds} s from now`,
        );
      return { ok: true };
    }
    case "hubspot": {
      const sig = headers["x-hubspot-signature-v3"];
      const ts = headers["x-hubspot-request-timestamp"];
      if (!sig || !ts)
        return fail("signature_missing", "X-HubSpot-Signature-v3 and X-HubSpot-Request-Timestamp headers are required");
      if (!/^\d{1,15}$/.test(ts))
        return fail("signature_malformed", "X-HubSpot-Request-Timestamp is not Unix milliseconds");
      if (!BASE64.test(sig) || Buffer.from(sig, "base64").length !== 32)
        return fail("signature_malformed", "X-HubSpot-Signature-v3 must be the base64 of a SHA-256 HMAC");
      // Only POSTs reach a webhook source, so the method signed is POST.
      const url = hubspotSignedUrl(auth.url, query);
      const expected = secrets.map((s) => hmac(s, `POST${url}`, body, ts));
      if (!anyEqual(expected, [Buffer.from(sig, "base64")]))
        return fail(
          "signature_mismatch",
          "no signature matches a configured client secret (is `url` the target URL set in HubSpot?)",
        );
      // As HubSpot's own libraries do: only a timestamp that is too old is refused.
      if (nowSeconds - Number(ts) / 1000 > auth.toleranceSeconds)
        return fail("signature_expired", `X-HubSpot-Request-Timestamp is more than ${auth.toleranceSeconds} s old`);
      return { ok: true };
    }
    case "hmac-sha256":
    case "hmac": {
      const raw = headers[auth.header.toLowerCase()];
      if (!raw) return fail("signature_missing", `${auth.header} header is required`);
      const ts = auth.timestampHeader ? headers[auth.timestampHeader.toLowerCase()] : undefined;
      if (auth.timestampHeader && !ts) return fail("signature_missing", `${auth.timestampHeader} header is required`);
      if (ts !== undefined && !/^\d{1,12}$/.test(ts))
        return fail("signature_malformed", `${auth.timestampHeader} is not Unix seconds`);
      if (!raw.startsWith(auth.prefix))
        return fail("signature_malformed", `${auth.header} must start with "${auth.prefix}"`);
      const sig = raw.slice(auth.prefix.length);
      const bytes = DIGEST_BYTES[auth.algorithm];
      const valid =
        auth.encoding === "hex"
          ? sig.length === bytes * 2 && /^[0-9a-f]+$/i.test(sig)
          : BASE64.test(sig) && Buffer.from(sig, "base64").length === bytes;
      if (!valid) return fail("signature_malformed", `${auth.header} is not a ${auth.encoding} ${auth.algorithm} HMAC`);
      const mac = (key: string) => {
        const h = createHmac(auth.algorithm, key);
        if (ts !== undefined) h.update(`${ts}.`);
        if (auth.url !== undefined) h.update(auth.url);
        return h.update(body).digest();
      };
      const expected = secrets.map(mac);
      if (!anyEqual(expected, [Buffer.from(sig, auth.encoding)]))
        return fail("signature_mismatch", "no signature matches a configured secret");
      if (ts !== undefined && Math.abs(nowSeconds - Number(ts)) > auth.toleranceSeconds) {
        return fail("signature_expired", `${auth.timestampHeader} is more than ${auth.toleranceSeconds} s from now`);
      }
      return { ok: true };
    }
  }
}
