import { createHmac, randomUUID } from "node:crypto";
import type { Auth } from "../mapping/config-schema.js";
import { hubspotSignedUrl, standardWebhooksKey, twilioSignedText, v0SignedText } from "./signatures.js";

/**
 * Signs a body the way each provider does, giving the headers to send: for tests, fixtures and
 * for apps that send their own signed webhooks to meterhook.
 */
export function signWebhook(
  auth: Exclude<Auth, { scheme: "api-key" } | { scheme: "none" }>,
  secret: string,
  body: string | Buffer,
  options: { timestamp?: number; id?: string; query?: string } = {},
): Record<string, string> {
  const ts = String(options.timestamp ?? Math.floor(Date.now() / 1000));
  const mac = (key: Buffer | string, prefix = "") => createHmac("sha256", key).update(prefix).update(body).digest();
  switch (auth.scheme) {
    case "standard-webhooks": {
      const id = options.id ?? `msg_${randomUUID()}`;
      return {
        "webhook-id": id,
        "webhook-timestamp": ts,
        "webhook-signature": `v1,${mac(standardWebhooksKey(secret), `${id}.${ts}.`).toString("base64")}`,
      };
    }
    case "stripe":
      return { [auth.header.toLowerCase()]: `t=${ts},${auth.version}=${mac(secret, `${ts}.`).toString("hex")}` };
    case "github":
    case "meta":
      return { "x-hub-signature-256": `sha256=${mac(secret).toString("hex")}` };
    case "shopify":
      return { "x-shopify-hmac-sha256": mac(secret).toString("base64") };
    case "twilio": {
      const text = twilioSignedText(auth.url, options.query ?? "", Buffer.from(body));
      return { "x-twilio-signature": createHmac("sha1", secret).update(text).digest("base64") };
    }
    case "slack":
    case "zoom": {
      const sig = `v0=${createHmac("sha256", secret).update(v0SignedText(ts, body)).digest("hex")}`;
      return auth.scheme === "slack"
        ? { "x-slack-signature": sig, "x-slack-request-timestamp": ts }
        : { "x-zm-signature": sig, "x-zm-request-timestamp": ts };
    }
    case "paddle":
      return { "paddle-signature": `ts=${ts};h1=${mac(secret, `${ts}:`).toString("hex")}` };
    case "zendesk": {
      const iso = new Date(Number(ts) * 1000).toISOString().replace(".000Z", "Z");
      return {
        "x-zendesk-webhook-signature": mac(secret, iso).toString("base64"),
        "x-zendesk-webhook-signature-timestamp": iso,
      };
    }
    case "hubspot": {
      const ms = `${ts}000`;
      const url = hubspotSignedUrl(auth.url, options.query ?? "");
      const digest = createHmac("sha256", secret).update(`POST${url}`).update(body).update(ms).digest("base64");
      return { "x-hubspot-signature-v3": digest, "x-hubspot-request-timestamp": ms };
    }
    case "token":
      return { [auth.header.toLowerCase()]: secret };
    case "hmac-sha256":
    case "hmac": {
      const digest = createHmac(auth.algorithm, secret)
        .update(auth.timestampHeader ? `${ts}.` : "")
        .update(auth.url ?? "")
        .update(body)
        .digest();
      const sig = `${auth.prefix}${digest.toString(auth.encoding)}`;
      return {
        [auth.header.toLowerCase()]: sig,
        ...(auth.timestampHeader ? { [auth.timestampHeader.toLowerCase()]: ts } : {}),
      };
    }
  }
}
