import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { describe, test } from "node:test";
import { AuthSchema } from "../../../lib/mapping/config-schema.js";
import { signWebhook } from "../../../lib/webhooks/sign.js";
import { twilioSignedText, verifySignature } from "../../../lib/webhooks/signatures.js";

const NOW = 1_795_000_000;
const body = Buffer.from(JSON.stringify({ type: "usage.recorded", data: { requests: 3 } }));

type Signed = Exclude<ReturnType<typeof AuthSchema.parse>, { scheme: "api-key" } | { scheme: "none" }>;
const schemes: Array<{
  name: string;
  auth: Signed;
  secret: string;
  other: string;
  timestamped: "both" | "old" | false;
}> = [
  {
    name: "Standard Webhooks",
    auth: AuthSchema.parse({ scheme: "standard-webhooks", secrets: [{ value: "x" }] }) as Signed,
    secret: `whsec_${Buffer.from("standard-webhooks-secret-0001").toString("base64")}`,
    other: `whsec_${Buffer.from("another-secret-entirely-0002").toString("base64")}`,
    timestamped: "both",
  },
  {
    name: "Stripe-Signature",
    auth: AuthSchema.parse({ scheme: "stripe", secrets: [{ value: "x" }] }) as Signed,
    secret: "whsec_stripeEndpointSecret0001",
    other: "whsec_stripeEndpointSecret0002",
    timestamped: "old",
  },
  {
    name: "Stripe's format under another header (Mux-Signature)",
    auth: AuthSchema.parse({ scheme: "stripe", header: "Mux-Signature", secrets: [{ value: "x" }] }) as Signed,
    secret: "mux-signing-secret-0001",
    other: "mux-signing-secret-0002",
    timestamped: "old",
  },
  {
    name: "GitHub X-Hub-Signature-256",
    auth: AuthSchema.parse({ scheme: "github", secrets: [{ value: "x" }] }) as Signed,
    secret: "github-webhook-secret-1",
    other: "github-webhook-secret-2",
    timestamped: false,
  },
  {
    name: "Shopify X-Shopify-Hmac-Sha256",
    auth: AuthSchema.parse({ scheme: "shopify", secrets: [{ value: "x" }] }) as Signed,
    secret: "shpss_shopifyAppSecret0001",
    other: "shpss_shopifyAppSecret0002",
    timestamped: false,
  },
  {
    name: "Twilio X-Twilio-Signature",
    auth: AuthSchema.parse({
      scheme: "twilio",
      url: "https://hooks.example.com/v1/webhooks/twilio",
      secrets: [{ value: "x" }],
    }) as Signed,
    secret: "twilio-auth-token-0001",
    other: "twilio-auth-token-0002",
    timestamped: false,
  },
  {
    name: "Meta X-Hub-Signature-256",
    auth: AuthSchema.parse({ scheme: "meta", secrets: [{ value: "x" }], verifyTokens: [{ value: "v" }] }) as Signed,
    secret: "meta-app-secret-0001",
    other: "meta-app-secret-0002",
    timestamped: false,
  },
  {
    name: "Slack X-Slack-Signature",
    auth: AuthSchema.parse({ scheme: "slack", secrets: [{ value: "x" }] }) as Signed,
    secret: "8f742231b10e8888abcd99yyyzzz0001",
    other: "8f742231b10e8888abcd99yyyzzz0002",
    timestamped: "both",
  },
  {
    name: "Zoom x-zm-signature (tolerance set to 300 s)",
    auth: AuthSchema.parse({ scheme: "zoom", toleranceSeconds: 300, secrets: [{ value: "x" }] }) as Signed,
    secret: "zoom-secret-token-0001",
    other: "zoom-secret-token-0002",
    timestamped: "both",
  },
  {
    name: "Paddle-Signature",
    auth: AuthSchema.parse({ scheme: "paddle", secrets: [{ value: "x" }] }) as Signed,
    secret: "pdl_ntfset_secret_key_0001",
    other: "pdl_ntfset_secret_key_0002",
    timestamped: "both",
  },
  {
    name: "Zendesk X-Zendesk-Webhook-Signature",
    auth: AuthSchema.parse({ scheme: "zendesk", secrets: [{ value: "x" }] }) as Signed,
    secret: "zendesk-signing-secret-0001",
    other: "zendesk-signing-secret-0002",
    timestamped: "both",
  },
  {
    name: "HubSpot X-HubSpot-Signature-v3",
    auth: AuthSchema.parse({
      scheme: "hubspot",
      url: "https://hooks.example.com/v1/webhooks/hubspot",
      secrets: [{ value: "x" }],
    }) as Signed,
    secret: "hubspot-client-secret-0001",
    other: "hubspot-client-secret-0002",
    timestamped: "old",
  },
  {
    name: "generic HMAC-SHA256, hex with prefix and timestamp",
    auth: AuthSchema.parse({
      scheme: "hmac-sha256",
      header: "X-Signature",
      prefix: "sha256=",
      timestampHeader: "X-Timestamp",
      secrets: [{ value: "x" }],
    }) as Signed,
    secret: "generic-secret-0001",
    other: "generic-secret-0002",
    timestamped: "both",
  },
  {
    name: "generic HMAC, SHA-1 hex with prefix (Intercom's X-Hub-Signature)",
    auth: AuthSchema.parse({
      scheme: "hmac",
      algorithm: "sha1",
      header: "X-Hub-Signature",
      prefix: "sha1=",
      secrets: [{ value: "x" }],
    }) as Signed,
    secret: "intercom-client-secret-0001",
    other: "intercom-client-secret-0002",
    timestamped: false,
  },
  {
    name: "generic HMAC, SHA-512 base64 with timestamp",
    auth: AuthSchema.parse({
      scheme: "hmac",
      algorithm: "sha512",
      header: "X-Signature",
      encoding: "base64",
      timestampHeader: "X-Timestamp",
      secrets: [{ value: "x" }],
    }) as Signed,
    secret: "sha512-secret-0001",
    other: "sha512-secret-0002",
    timestamped: "both",
  },
  {
    name: "generic HMAC-SHA256, base64, no timestamp",
    auth: AuthSchema.parse({
      scheme: "hmac-sha256",
      header: "X-Sig",
      encoding: "base64",
      secrets: [{ value: "x" }],
    }) as Signed,
    secret: "generic-secret-0003",
    other: "generic-secret-0004",
    timestamped: false,
  },
];

const verify = (s: (typeof schemes)[number], secrets: string[], headers: Record<string, string>, b = body, now = NOW) =>
  verifySignature(s.auth, secrets, headers, b, now);
const code = (r: ReturnType<typeof verifySignature>) => (r.ok ? "ok" : r.code);

for (const s of schemes) {
  describe(s.name, () => {
    const headers = signWebhook(s.auth, s.secret, body, { timestamp: NOW - 10 });

    test("accepts a body signed with the secret", () => assert.equal(code(verify(s, [s.secret], headers)), "ok"));

    test("rejects the wrong secret", () => assert.equal(code(verify(s, [s.other], headers)), "signature_mismatch"));

    test("rejects a tampered body, even by one byte", () => {
      const tampered = Buffer.from(body);
      tampered[tampered.length - 2] = 0x34;
      assert.equal(code(verify(s, [s.secret], headers, tampered)), "signature_mismatch");
    });

    test("accepts either secret during a rotation", () => {
      assert.equal(code(verify(s, [s.other, s.secret], headers)), "ok");
      const newHeaders = signWebhook(s.auth, s.other, body, { timestamp: NOW - 10 });
      assert.equal(code(verify(s, [s.secret, s.other], newHeaders)), "ok");
    });

    test("rejects a request without the signature header", () => {
      for (const h of Object.keys(headers)) {
        const missing = { ...headers };
        delete missing[h];
        assert.equal(code(verify(s, [s.secret], missing)), "signature_missing", h);
      }
    });

    test("rejects a malformed signature header", () => {
      const [first] = Object.keys(headers).filter((h) => /sig|hmac/i.test(h));
      assert.equal(
        code(verify(s, [s.secret], { ...headers, [first as string]: "not a signature" })),
        "signature_malformed",
      );
    });

    if (s.timestamped) {
      test("rejects a replay past the tolerance (5 minutes by default)", () => {
        const stale = signWebhook(s.auth, s.secret, body, { timestamp: NOW - 301 });
        assert.equal(code(verify(s, [s.secret], stale)), "signature_expired");
        const fresh = signWebhook(s.auth, s.secret, body, { timestamp: NOW - 299 });
        assert.equal(code(verify(s, [s.secret], fresh)), "ok");
      });
      test(
        s.timestamped === "both"
          ? "rejects a timestamp far in the future"
          : "accepts a future timestamp, as Stripe does",
        () => {
          const future = signWebhook(s.auth, s.secret, body, { timestamp: NOW + 600 });
          assert.equal(code(verify(s, [s.secret], future)), s.timestamped === "both" ? "signature_expired" : "ok");
        },
      );
    }
  });
}

describe("Twilio", () => {
  // Twilio's documented examples ("Validating requests"): signatures Twilio computed, not signWebhook.
  const twilio = (url: string) => AuthSchema.parse({ scheme: "twilio", url, secrets: [{ value: "x" }] }) as Signed;
  const call = (caller: string) =>
    Buffer.from(
      new URLSearchParams({
        To: "+18005551212",
        Caller: caller,
        Digits: "1234",
        CallSid: "CA1234567890ABCDE",
        From: caller,
      }).toString(),
    );
  const check = (url: string, signature: string, body: Buffer, query: string, secret = "12345") =>
    code(verifySignature(twilio(url), [secret], { "x-twilio-signature": signature }, body, NOW, query));

  test("a call's form fields with the URL's query, as Twilio signed them, are accepted", () => {
    const url = "https://mycompany.com/myapp.php";
    assert.equal(check(url, "GvWf1cFY/Q7PnoempGyD5oXAezc=", call("+14158675310"), "foo=1&bar=2"), "ok");
    assert.equal(check(url, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", call("+14158675309"), "foo=1&bar=2"), "ok");
    assert.equal(check(url, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", call("+14158675310"), "foo=1&bar=2"), "signature_mismatch");
    assert.equal(check(url, "GvWf1cFY/Q7PnoempGyD5oXAezc=", call("+14158675310"), "foo=1&bar=3"), "signature_mismatch");
    assert.equal(
      check(url, "GvWf1cFY/Q7PnoempGyD5oXAezc=", call("+14158675310"), "foo=1&bar=2", "54321"),
      "signature_mismatch",
    );
  });

  test("the URL's default port may be written or left out on either side", () => {
    const body = call("+14158675310");
    const signed = (url: string) => signWebhook(twilio(url), "12345", body)["x-twilio-signature"] as string;
    assert.equal(check("https://mycompany.com:443/hook", signed("https://mycompany.com/hook"), body, ""), "ok");
    assert.equal(check("https://mycompany.com/hook", signed("https://mycompany.com:443/hook"), body, ""), "ok");
    assert.equal(
      check("https://mycompany.com:8443/hook", signed("https://mycompany.com/hook"), body, ""),
      "signature_mismatch",
    );
  });

  test("a JSON body is checked against the query's bodySHA256, and the URL with it is signed", () => {
    const url = "https://hooks.example.com/v1/webhooks/twilio";
    const body = Buffer.from(JSON.stringify({ CallSid: "CA1234567890ABCDE", Caller: "+12349013030" }));
    const query = `bodySHA256=${createHash("sha256").update(body).digest("hex")}`;
    const signature = createHmac("sha1", "12345").update(`${url}?${query}`).digest("base64");
    assert.equal(check(url, signature, body, query), "ok");
    const other = Buffer.from(body.toString().replace("3030", "3031"));
    assert.equal(check(url, signature, other, query), "signature_mismatch");
  });

  test("a query Twilio signed in an escaped form is accepted too, as twilio-node accepts it", () => {
    // twilio-node falls back to the URL as new URL() writes it, and that with Node's legacy
    // querystring encoding, "for back ends that signed an escaped form" of the query.
    const url = "https://hooks.example.com/v1/webhooks/twilio";
    const body = call("+14158675310");
    const received = "account=O'Brien&tier=a+b";
    const signedOver = (query: string) =>
      createHmac("sha1", "12345")
        .update(`${url}?${query}${twilioSignedText("", "", body)}`)
        .digest("base64");
    assert.equal(check(url, signedOver(received), body, received), "ok");
    assert.equal(check(url, signedOver("account=O%27Brien&tier=a+b"), body, received), "ok", "new URL()'s form");
    assert.equal(check(url, signedOver("account=O'Brien&tier=a%20b"), body, received), "ok", "legacy querystring");
    assert.equal(check(url, signedOver("account=O%27Brien&tier=a+c"), body, received), "signature_mismatch");
  });

  test("a URL with a query string is refused at load: the request's own is signed", () => {
    assert.throws(() => twilio("https://hooks.example.com/twilio?tenant=a"), /without a query string/);
  });
});

describe("Stripe's format under other headers", () => {
  test("Mux's header as its documentation builds it; a Stripe-Signature header is not read for it", () => {
    const mux = AuthSchema.parse({ scheme: "stripe", header: "Mux-Signature", secrets: [{ value: "x" }] }) as Signed;
    const t = String(NOW - 5);
    // Built with node:crypto as Mux documents it ("timestamp.body", HMAC-SHA256, hex), not with signWebhook.
    const v1 = createHmac("sha256", "mux-secret").update(`${t}.${body.toString()}`).digest("hex");
    assert.equal(code(verifySignature(mux, ["mux-secret"], { "mux-signature": `t=${t},v1=${v1}` }, body, NOW)), "ok");
    assert.equal(
      code(verifySignature(mux, ["mux-secret"], { "stripe-signature": `t=${t},v1=${v1}` }, body, NOW)),
      "signature_missing",
    );
  });

  test("another version key (ElevenLabs' v0) is read instead of v1, and only it", () => {
    const v0 = AuthSchema.parse({
      scheme: "stripe",
      header: "ElevenLabs-Signature",
      version: "v0",
      secrets: [{ value: "x" }],
    }) as Signed;
    const t = String(NOW - 5);
    const sig = createHmac("sha256", "el-secret").update(`${t}.${body.toString()}`).digest("hex");
    const check = (header: string) =>
      code(verifySignature(v0, ["el-secret"], { "elevenlabs-signature": header }, body, NOW));
    assert.equal(check(`t=${t},v0=${sig}`), "ok");
    assert.equal(check(`t=${t},v1=${sig}`), "signature_malformed");
    assert.throws(() => AuthSchema.parse({ scheme: "stripe", version: "1", secrets: [{ value: "x" }] }));
  });
});

describe("generic HMAC", () => {
  test("SHA-1 as Vercel sends it (x-vercel-signature, hex, the body alone); its length is checked", () => {
    const vercel = AuthSchema.parse({
      scheme: "hmac",
      algorithm: "sha1",
      header: "x-vercel-signature",
      secrets: [{ value: "x" }],
    }) as Signed;
    // Built with node:crypto as Vercel documents it, not with signWebhook.
    const sha1 = createHmac("sha1", "vercel-secret").update(body).digest("hex");
    assert.equal(code(verifySignature(vercel, ["vercel-secret"], { "x-vercel-signature": sha1 }, body, NOW)), "ok");
    const sha256 = createHmac("sha256", "vercel-secret").update(body).digest("hex");
    assert.equal(
      code(verifySignature(vercel, ["vercel-secret"], { "x-vercel-signature": sha256 }, body, NOW)),
      "signature_malformed",
    );
  });

  test("Square's: the notification URL and the body, base64; another URL does not verify", () => {
    const square = (url: string) =>
      AuthSchema.parse({
        scheme: "hmac",
        header: "x-square-hmacsha256-signature",
        encoding: "base64",
        url,
        secrets: [{ value: "x" }],
      }) as Signed;
    const url = "https://api.example.com/v1/webhooks/square";
    // Built with node:crypto as Square documents it, not with signWebhook.
    const sig = createHmac("sha256", "square-key")
      .update(url + body.toString())
      .digest("base64");
    const headers = { "x-square-hmacsha256-signature": sig };
    assert.equal(code(verifySignature(square(url), ["square-key"], headers, body, NOW)), "ok");
    assert.equal(code(verifySignature(square(`${url}/`), ["square-key"], headers, body, NOW)), "signature_mismatch");
    assert.equal(signWebhook(square(url), "square-key", body)["x-square-hmacsha256-signature"], sig);
  });

  test("hmac-sha256, the scheme's first name, is hmac with SHA-256 and takes algorithm too", () => {
    const fields = { header: "X-Sig", secrets: [{ value: "x" }] };
    const first = AuthSchema.parse({ scheme: "hmac-sha256", ...fields }) as Signed;
    const renamed = AuthSchema.parse({ scheme: "hmac", ...fields }) as Signed;
    const headers = signWebhook(renamed, "s-1", body);
    assert.equal(code(verifySignature(first, ["s-1"], headers, body, NOW)), "ok");
    assert.equal(headers["x-sig"], createHmac("sha256", "s-1").update(body).digest("hex"));
  });
});

describe("Standard Webhooks and Svix", () => {
  const auth = AuthSchema.parse({ scheme: "standard-webhooks", secrets: [{ value: "x" }] }) as Signed;
  // The example the Standard Webhooks and Svix documentation publish: a signature they computed.
  const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const payload = Buffer.from('{"test": 2432232314}');
  const at = 1614265330;
  const family = (prefix: string): Record<string, string> => ({
    [`${prefix}-id`]: "msg_p5jXN8AQM9LWM0D4loKWxJek",
    [`${prefix}-timestamp`]: String(at),
    [`${prefix}-signature`]: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
  });
  const check = (headers: Record<string, string>, key = secret) =>
    code(verifySignature(auth, [key], headers, payload, at + 5));

  test("the published example verifies under webhook-* headers and under Svix's svix-* (Clerk, Resend)", () => {
    assert.equal(check(family("webhook")), "ok");
    assert.equal(check(family("svix")), "ok");
    assert.equal(check(family("svix"), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx"), "signature_mismatch");
  });

  test("the three headers come from one family: a signature of one and an id of the other is missing its id", () => {
    const mixed: Record<string, string> = { ...family("webhook"), "svix-id": "msg_p5jXN8AQM9LWM0D4loKWxJek" };
    delete mixed["webhook-id"];
    assert.equal(check(mixed), "signature_missing");
  });
});

describe("Paddle, Zendesk and HubSpot", () => {
  // Each signature here is built with node:crypto as the sender documents it, not with signWebhook.
  const paddle = AuthSchema.parse({ scheme: "paddle", secrets: [{ value: "x" }] }) as Signed;
  const zendesk = AuthSchema.parse({ scheme: "zendesk", secrets: [{ value: "x" }] }) as Signed;
  const hubspot = AuthSchema.parse({
    scheme: "hubspot",
    url: "https://hooks.example.com/v1/webhooks/hubspot",
    secrets: [{ value: "x" }],
  }) as Signed;
  const hex = (secret: string, text: string) => createHmac("sha256", secret).update(text).digest("hex");
  const b64 = (secret: string, text: string) => createHmac("sha256", secret).update(text).digest("base64");

  test("Paddle signs '{ts}:{body}'; during a rotation it sends an h1 per secret, and either verifies", () => {
    const ts = String(NOW - 3);
    const check = (header: string, secrets = ["pdl-new"]) =>
      code(verifySignature(paddle, secrets, { "paddle-signature": header }, body, NOW));
    const signed = (secret: string) => hex(secret, `${ts}:${body.toString()}`);
    assert.equal(check(`ts=${ts};h1=${signed("pdl-new")}`), "ok");
    assert.equal(check(`ts=${ts};h1=${signed("pdl-old")};h1=${signed("pdl-new")}`), "ok");
    assert.equal(check(`ts=${ts};h1=${signed("pdl-old")}`), "signature_mismatch");
    // Stripe's separator, or a timestamp moved by a second, does not verify.
    assert.equal(check(`ts=${ts};h1=${hex("pdl-new", `${ts}.${body.toString()}`)}`), "signature_mismatch");
    assert.equal(check(`ts=${Number(ts) + 1};h1=${signed("pdl-new")}`), "signature_mismatch");
    assert.equal(check(`ts=${ts},h1=${signed("pdl-new")}`), "signature_malformed");
  });

  test("Zendesk signs the ISO timestamp header and the body, nothing between, in base64", () => {
    const iso = new Date((NOW - 30) * 1000).toISOString().replace(".000Z", "Z");
    const headers = (sig: string, ts = iso) => ({
      "x-zendesk-webhook-signature": sig,
      "x-zendesk-webhook-signature-timestamp": ts,
    });
    const check = (h: Record<string, string>, now = NOW) => code(verifySignature(zendesk, ["zd-secret"], h, body, now));
    assert.equal(check(headers(b64("zd-secret", iso + body.toString()))), "ok");
    assert.equal(check(headers(b64("zd-secret", `${iso}.${body.toString()}`))), "signature_mismatch");
    assert.equal(check(headers(b64("zd-secret", iso + body.toString()), String(NOW - 30))), "signature_malformed");
    assert.equal(check(headers(b64("zd-secret", iso + body.toString())), NOW + 400), "signature_expired");
  });

  test("HubSpot signs POST, the URL with its query (twelve escapes decoded), the body and the time in ms", () => {
    const ms = String((NOW - 10) * 1000);
    const query = "tenant=acme%40example.com&note=a%20b%2Cc";
    const url = "https://hooks.example.com/v1/webhooks/hubspot?tenant=acme@example.com&note=a%20b,c";
    const sig = b64("hs-secret", `POST${url}${body.toString()}${ms}`);
    const check = (headers: Record<string, string>, q = query, now = NOW) =>
      code(verifySignature(hubspot, ["hs-secret"], headers, body, now, q));
    const headers = { "x-hubspot-signature-v3": sig, "x-hubspot-request-timestamp": ms };
    assert.equal(check(headers), "ok");
    assert.equal(check(headers, "tenant=other%40example.com&note=a%20b%2Cc"), "signature_mismatch");
    const undecoded = b64("hs-secret", `POSThttps://hooks.example.com/v1/webhooks/hubspot?${query}${body}${ms}`);
    assert.equal(check({ ...headers, "x-hubspot-signature-v3": undecoded }), "signature_mismatch");
    // Five minutes old is HubSpot's limit; a time in seconds reads as 1970 and is refused too.
    assert.equal(check(headers, query, NOW + 291), "signature_expired");
    const inSeconds = b64("hs-secret", `POST${url}${body.toString()}${NOW}`);
    assert.equal(
      check({ "x-hubspot-signature-v3": inSeconds, "x-hubspot-request-timestamp": String(NOW) }),
      "signature_expired",
    );
    assert.equal(
      signWebhook(hubspot, "hs-secret", body, { timestamp: NOW - 10, query })["x-hubspot-signature-v3"],
      sig,
    );
  });
});

describe("Slack and Zoom (v0)", () => {
  const slack = AuthSchema.parse({ scheme: "slack", secrets: [{ value: "x" }] }) as Signed;
  const zoom = AuthSchema.parse({ scheme: "zoom", secrets: [{ value: "x" }] }) as Signed;

  test("Slack's documented example, a slash command's form, verifies; altered, it does not", () => {
    // "Verifying requests from Slack": a signature Slack computed, not signWebhook.
    const secret = "8f742231b10e8888abcd99yyyzzz85a5";
    const ts = "1531420618";
    const form = Buffer.from(
      "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c",
    );
    const headers = {
      "x-slack-signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
      "x-slack-request-timestamp": ts,
    };
    const at = Number(ts) + 60;
    assert.equal(code(verifySignature(slack, [secret], headers, form, at)), "ok");
    assert.equal(code(verifySignature(slack, [`${secret}x`], headers, form, at)), "signature_mismatch");
    const later = { ...headers, "x-slack-request-timestamp": String(Number(ts) + 1) };
    assert.equal(code(verifySignature(slack, [secret], later, form, at)), "signature_mismatch");
    assert.equal(code(verifySignature(slack, [secret], headers, form, at + 300)), "signature_expired");
  });

  test("Zoom signs v0:{timestamp}:{body} with the Secret Token, hex, after v0=; a timestamp in ms is malformed", () => {
    // Built here with node:crypto as Zoom's documentation describes it, not with signWebhook.
    const ts = String(NOW - 5);
    const signature = `v0=${createHmac("sha256", "zoom-token").update(`v0:${ts}:${body.toString()}`).digest("hex")}`;
    const headers = { "x-zm-signature": signature, "x-zm-request-timestamp": ts };
    assert.equal(code(verifySignature(zoom, ["zoom-token"], headers, body, NOW)), "ok");
    assert.equal(
      code(
        verifySignature(
          zoom,
          ["zoom-token"],
          { ...headers, "x-zm-signature": signature.replace("v0=", "v1=") },
          body,
          NOW,
        ),
      ),
      "signature_malformed",
    );
    assert.equal(
      code(verifySignature(zoom, ["zoom-token"], { ...headers, "x-zm-request-timestamp": `${ts}000` }, body, NOW)),
      "signature_malformed",
    );
  });

  test("Zoom's tolerance covers its last retry, 85 minutes after the first try", () => {
    const headers = signWebhook(zoom, "zoom-token", body, { timestamp: NOW - 85 * 60 });
    assert.equal(code(verifySignature(zoom, ["zoom-token"], headers, body, NOW)), "ok");
    const later = signWebhook(zoom, "zoom-token", body, { timestamp: NOW - 5_401 });
    assert.equal(code(verifySignature(zoom, ["zoom-token"], later, body, NOW)), "signature_expired");
  });

  test("the secret that signed is named, during a rotation too: Zoom's URL validation answers with it", () => {
    const headers = signWebhook(zoom, "token-new", body, { timestamp: NOW });
    assert.deepEqual(verifySignature(zoom, ["token-old", "token-new"], headers, body, NOW), { ok: true, secret: 1 });
    assert.deepEqual(verifySignature(zoom, ["token-new", "token-old"], headers, body, NOW), { ok: true, secret: 0 });
  });
});

test("every failure message is specific and never contains the secret", () => {
  const s = schemes[0] as (typeof schemes)[number];
  const headers = signWebhook(s.auth, s.secret, body, { timestamp: NOW - 1000 });
  const r = verify(s, [s.secret], headers);
  assert.ok(!r.ok);
  assert.match(r.message, /more than 300 s/);
  assert.ok(!r.message.includes(s.secret));
});

describe("token in a header (GitLab's X-Gitlab-Token)", () => {
  const auth = AuthSchema.parse({ scheme: "token", header: "X-Gitlab-Token", secrets: [{ value: "x" }] }) as Signed;
  const secret = "gitlab-token-0001";
  const check = (secrets: string[], headers: Record<string, string>) =>
    code(verifySignature(auth, secrets, headers, body, NOW));

  test("accepts the token, of either secret during a rotation, whatever the body", () => {
    assert.deepEqual(signWebhook(auth, secret, body), { "x-gitlab-token": secret });
    assert.equal(check([secret], { "x-gitlab-token": secret }), "ok");
    assert.equal(check(["gitlab-token-0002", secret], { "x-gitlab-token": secret }), "ok");
  });

  test("rejects another token, a prefix or extension of it, and a missing header, never echoing it", () => {
    for (const wrong of ["gitlab-token-0002", "gitlab-token-000", `${secret}1`, ` ${secret}`])
      assert.equal(check([secret], { "x-gitlab-token": wrong }), "signature_mismatch", wrong);
    assert.equal(check([secret], {}), "signature_missing");
    const r = verifySignature(auth, [secret], { "x-gitlab-token": "guess" }, body, NOW);
    assert.ok(!r.ok && !r.message.includes(secret) && !r.message.includes("guess"));
  });
});
