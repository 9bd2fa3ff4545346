import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";
import { createReportsHandler, HTTP_ANSWER_WITHIN_MS } from "../../functions/stripe-reports.js";
import { createErrorReportReaderFromConfig, type ErrorReportReader } from "../../lib/app.js";
import { loadConfig } from "../../lib/config.js";
import { createLogger } from "../../lib/logger.js";
import { MetricsRecorder } from "../../lib/metrics.js";
import { STRIPE_SIGNATURE } from "../../lib/stripe/event-notifications.js";
import { signWebhook } from "../../lib/webhooks/sign.js";
import { startGateway } from "../../local/gateway.js";
import { EMULATOR_DEFAULT_KEY, type StripeEmulator } from "../../local/stripe-emulator/server.js";
import { startFakeSecretStores } from "../helpers/fake-secret-stores.js";
import { startEmulator } from "../helpers/stripe.js";
import { waitFor } from "../helpers/wait.js";

// The stripe-reports function behind an HTTP API route, as the stack deploys it, and a Stripe
// that pushes its error reports there (an event destination with the thin payload style).
const SECRET = "whsec_meterhook_events_test";
const ROLLED = "whsec_meterhook_events_rolled";
const PARAMETER = "/meterhook/test/stripe-events-secret";

let emulator: StripeEmulator;
let stores: Awaited<ReturnType<typeof startFakeSecretStores>>;
const ssm: Record<string, string> = {};
let lines: Array<Record<string, unknown>> = [];
let metrics: MetricsRecorder;
let reader: ErrorReportReader;
let gateway: Awaited<ReturnType<typeof startGateway>>;

/** The function as Lambda runs it, with these settings, behind a local HTTP API. */
async function deploy(settings: Record<string, string>) {
  await reader?.close();
  reader = await createErrorReportReaderFromConfig(
    loadConfig({
      STRIPE_API_KEY: EMULATOR_DEFAULT_KEY,
      STRIPE_API_BASE: emulator.url,
      STRIPE_METER_EVENTS_BASE: emulator.url,
      STRIPE_MAX_ATTEMPTS: "1",
      SSM_ENDPOINT: stores.url,
      ...settings,
    }),
    { logger: createLogger({ write: (line) => lines.push(JSON.parse(line)) }), metrics },
  );
}

before(async () => {
  emulator = await startEmulator({ customers: ["cus_Known"], errorReportWindowMs: 50, eventRetryDelaysMs: [100, 100] });
  stores = await startFakeSecretStores({ ssm });
  metrics = new MetricsRecorder();
  const handler = createReportsHandler(async () => ({ reader, intervalMs: 300_000 }));
  gateway = await startGateway((event) => handler(event, { getRemainingTimeInMillis: () => HTTP_ANSWER_WITHIN_MS }));
  emulator.eventDeliveries.add({ url: `${gateway.url}/v1/stripe/events`, secret: SECRET });
});
after(async () => {
  await reader?.close();
  gateway.server.closeAllConnections();
  await new Promise<void>((r) => gateway.server.close(() => r()));
  await emulator.stop();
  await stores.stop();
});
beforeEach(() => {
  lines = [];
  metrics.drain();
});

/** A meter event Stripe accepts and then refuses: its customer does not exist. */
async function refusedByStripe(identifier: string) {
  const res = await fetch(`${emulator.url}/v1/billing/meter_events`, {
    method: "POST",
    headers: { authorization: `Bearer ${EMULATOR_DEFAULT_KEY}`, "content-type": "application/x-www-form-urlencoded" },
    body: `event_name=api_requests&identifier=${identifier}&payload[stripe_customer_id]=cus_Unknown&payload[value]=1`,
  });
  assert.equal(res.status, 200);
  emulator.errorReports.flush();
  return emulator.errorReports.events.at(-1)?.id as string;
}
const deliveriesOf = (eventId: string) =>
  emulator.eventDeliveries.log.filter((d) => d.eventId === eventId).map((d) => d.status);
const refusedLines = () => lines.filter((l) => l.message === "Stripe refused meter events it had accepted");
/** The events counted refused, and the notifications counted failed (by code), since the last call. */
function counted() {
  const points = metrics.drain();
  const sum = (name: string) =>
    points
      .filter((p) => p.name === name && !p.dimensions.code)
      .flatMap((p) => p.values)
      .reduce((a, b) => a + b, 0);
  const failedCodes = points
    .filter((p) => p.name === "StripeNotificationsFailed" && p.dimensions.code)
    .map((p) => p.dimensions.code);
  return { refused: sum("StripeRefusedEvents"), failed: sum("StripeNotificationsFailed"), failedCodes };
}

/** POSTs a notification to the route, signed with `secret`. */
async function notify(body: unknown, secret = SECRET) {
  const raw = JSON.stringify(body);
  const res = await fetch(`${gateway.url}/v1/stripe/events`, {
    method: "POST",
    headers: { "content-type": "application/json", ...signWebhook(STRIPE_SIGNATURE, secret, raw) },
    body: raw,
  });
  return { status: res.status, body: (await res.json()) as { error?: { code: string }; ignored?: boolean } };
}

describe("Stripe's error reports pushed to POST /v1/stripe/events", () => {
  test("a report is read by the id its signed notification names, logged and counted once, and answered 200", async () => {
    await deploy({ STRIPE_EVENTS_SECRET: SECRET });
    const eventId = await refusedByStripe("push_billed_1");
    await waitFor(() => (deliveriesOf(eventId).length > 0 ? true : undefined), "the notification");
    assert.deepEqual(deliveriesOf(eventId), [200]);
    const [line, ...more] = refusedLines();
    assert.equal(more.length, 0);
    assert.equal(line?.eventId, eventId);
    assert.equal(line?.errorCount, 1);
    assert.deepEqual(
      ((line?.errors ?? []) as Array<{ code: string }>).map((e) => e.code),
      ["meter_event_customer_not_found"],
    );
    assert.deepEqual(counted(), { refused: 1, failed: 0, failedCodes: [] });
  });

  test("a notification not signed with the secret is 401 and read no further; another event type is acknowledged and ignored", async () => {
    await deploy({ STRIPE_EVENTS_SECRET: SECRET });
    const eventId = await refusedByStripe("push_forged_1");
    await waitFor(() => (deliveriesOf(eventId).length > 0 ? true : undefined), "the notification");
    lines = [];
    metrics.drain();
    const forged = await notify({ id: eventId, type: "v1.billing.meter.error_report_triggered" }, "whsec_guess");
    assert.deepEqual([forged.status, forged.body.error?.code], [401, "signature_mismatch"]);
    const unsigned = await fetch(`${gateway.url}/v1/stripe/events`, { method: "POST", body: "{}" });
    assert.deepEqual(
      [unsigned.status, ((await unsigned.json()) as { error: { code: string } }).error.code],
      [401, "signature_missing"],
    );
    const other = await notify({ id: "evt_other", type: "v1.billing.meter.something_else" });
    assert.deepEqual([other.status, other.body.ignored], [200, true]);
    // Signed, but naming an event this key cannot read: acknowledged (Stripe would resend it for
    // days), and logged at error.
    const unknown = await notify({ id: "evt_not_this_account", type: "v1.billing.meter.error_report_triggered" });
    assert.deepEqual([unknown.status, (unknown.body as { unknownEvent?: boolean }).unknownEvent], [200, true]);
    assert.ok(lines.some((l) => l.level === "error" && l.eventId === "evt_not_this_account"));
    assert.equal(refusedLines().length, 0);
    // The forged one counts (a destination whose secret was rolled looks the same); the unsigned one does not.
    assert.deepEqual(counted(), { refused: 0, failed: 1, failedCodes: ["signature_mismatch"] });
  });

  test("when Stripe cannot be read, the notification is answered 503 and counted once Stripe sends it again", async () => {
    await deploy({ STRIPE_EVENTS_SECRET: SECRET });
    emulator.injectFaults({
      path: "/v2/core/events/*",
      respond: { status: 500, body: { error: { type: "api_error" } } },
    });
    const eventId = await refusedByStripe("push_retried_1");
    await waitFor(() => (deliveriesOf(eventId).length >= 2 ? true : undefined), "the second try");
    assert.deepEqual(deliveriesOf(eventId), [503, 200]);
    assert.equal(refusedLines().length, 1);
    assert.deepEqual(counted(), { refused: 1, failed: 1, failedCodes: ["stripe_unavailable"] });
  });

  test("with the secret in SSM: read at the first notification (503 while the parameter is missing), and again when old (a roll)", async () => {
    delete ssm[PARAMETER];
    await deploy({ STRIPE_EVENTS_SECRET_SSM_PARAMETER: PARAMETER, METERHOOK_SECRETS_MAX_AGE_SECONDS: "1" });
    // Unsigned (anyone who finds the URL): refused without a read of the store.
    const reads = stores.calls.length;
    const unsigned = await fetch(`${gateway.url}/v1/stripe/events`, { method: "POST", body: "{}" });
    assert.equal(unsigned.status, 401);
    assert.equal(stores.calls.length, reads);
    const missing = await notify({ id: "evt_x", type: "v1.billing.meter.error_report_triggered" });
    assert.deepEqual([missing.status, missing.body.error?.code], [503, "secret_unavailable"]);
    assert.deepEqual(counted(), { refused: 0, failed: 1, failedCodes: ["secret_unavailable"] });
    assert.ok(lines.some((l) => l.message === "the Stripe event destination's signing secret could not be read"));
    assert.ok(!JSON.stringify(lines).includes(SECRET));

    ssm[PARAMETER] = SECRET;
    const eventId = await refusedByStripe("push_ssm_1");
    await waitFor(() => (deliveriesOf(eventId).length > 0 ? true : undefined), "the notification");
    assert.deepEqual(deliveriesOf(eventId), [200]);

    // Rolled in Stripe and in SSM: read again once the secret read is older than its max age.
    ssm[PARAMETER] = `${ROLLED},${SECRET}`;
    await new Promise((r) => setTimeout(r, 1_100));
    const rolled = await notify({ id: eventId, type: "v1.billing.meter.error_report_triggered" }, ROLLED);
    assert.equal(rolled.status, 200);
    assert.ok(!JSON.stringify(lines).includes(ROLLED));
  });

  test("without a signing secret the route answers 404: no event destination is set up", async () => {
    await deploy({});
    const res = await notify({ id: "evt_x", type: "v1.billing.meter.error_report_triggered" });
    assert.deepEqual([res.status, res.body.error?.code], [404, "not_found"]);
  });
});
