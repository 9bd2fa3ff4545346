/**
 * `POST /v1/stripe/events`: Stripe's thin event notifications, as an event destination with the
 * thin payload style pushes them (shared/stripe/METER_API.md §4.2, §8). A notification names an
 * event and carries no `data`: once its `Stripe-Signature` is verified, the error report it names
 * is read from Stripe by id and logged and counted as the scheduled read does (error-reports.ts),
 * seconds after Stripe makes it rather than at the next run. Stripe retries a delivery not
 * answered 2xx, so a report Stripe could not be read for is answered 503, to come again.
 */
import { type HttpRequest, type HttpResponse, httpError, json } from "../http.js";
import type { Logger } from "../logger.js";
import type { Auth } from "../mapping/config-schema.js";
import { verifySignature } from "../webhooks/signatures.js";
import { ERROR_REPORT_TYPES, type ErrorReport } from "./error-reports.js";

/** The route an event destination is given: `https://<api>/v1/stripe/events`. */
export const STRIPE_EVENTS_PATH = "/v1/stripe/events";

/**
 * Stripe-Signature as §8 has it: `t=...,v1=<hex>`, five minutes' tolerance for old timestamps;
 * the `stripe` webhook scheme's settings, for verifySignature and signWebhook alike.
 */
export const STRIPE_SIGNATURE: Extract<Auth, { scheme: "stripe" }> = {
  scheme: "stripe",
  secrets: [],
  header: "Stripe-Signature",
  version: "v1",
  toleranceSeconds: 300,
};

export interface StripeEventReceiverDeps {
  /** The destination's signing secrets as they stand (read from their store on first use); none: not set up. */
  secrets(): Promise<readonly string[]>;
  /** After a signature matched none: the secrets read again (a rolled secret), or undefined when read too recently. */
  secretsAfterMiss(): Promise<readonly string[] | undefined>;
  /** The report an event id names; undefined when Stripe has no such event. Throws when Stripe cannot be read. */
  report(eventId: string, deadline: number): Promise<ErrorReport | undefined>;
  /** Logs and counts a report as the scheduled read does. */
  publish(report: ErrorReport): void;
  /**
   * Counts a notification answered so that its report may be lost (ReportMetric.notificationsFailed):
   * a wrong secret or a stale timestamp, or a secret or Stripe that could not be read. Unsigned
   * requests (anyone who finds the URL) are not counted.
   */
  failed(code: string): void;
  logger: Logger;
  now?: () => number;
}

const REPORT_TYPES: ReadonlySet<string> = new Set(ERROR_REPORT_TYPES);

export function createStripeEventReceiver(deps: StripeEventReceiverDeps) {
  const now = deps.now ?? Date.now;
  return {
    async handle(req: HttpRequest, deadline: number): Promise<HttpResponse> {
      const rid = req.requestId;
      if (req.method !== "POST") return httpError(405, "method_not_allowed", "POST only", rid, {}, { allow: "POST" });
      const nowSeconds = Math.floor(now() / 1000);
      // A request without a Stripe-Signature in Stripe's format (anyone who finds the URL) is
      // refused before the secret is read: it costs no read of the store and counts in no alarm.
      const shape = verifySignature(STRIPE_SIGNATURE, [], req.headers, req.body, nowSeconds);
      if (!shape.ok && shape.code !== "signature_mismatch") return httpError(401, shape.code, shape.message, rid);
      let secrets: readonly string[];
      try {
        secrets = await deps.secrets();
      } catch (err) {
        // Its store cannot be read (a missing parameter, a denied read): Stripe tries again later.
        deps.logger.error("the Stripe event destination's signing secret could not be read", {
          reason: err instanceof Error ? err.message : String(err),
        });
        deps.failed("secret_unavailable");
        return httpError(503, "secret_unavailable", "the signing secret could not be read; try again later", rid);
      }
      if (secrets.length === 0) {
        return httpError(
          404,
          "not_found",
          "Stripe event notifications are not set up here (STRIPE_EVENTS_SECRET)",
          rid,
        );
      }
      let check = verifySignature(STRIPE_SIGNATURE, secrets, req.headers, req.body, nowSeconds);
      if (!check.ok && check.code === "signature_mismatch") {
        const fresh = await deps.secretsAfterMiss();
        if (fresh) check = verifySignature(STRIPE_SIGNATURE, fresh, req.headers, req.body, nowSeconds);
      }
      if (!check.ok) {
        deps.logger.warn("a Stripe event notification was refused", { code: check.code, requestId: rid });
        if (check.code === "signature_mismatch" || check.code === "signature_expired") deps.failed(check.code);
        return httpError(401, check.code, check.message, rid);
      }
      let note: { id?: unknown; type?: unknown };
      try {
        note = JSON.parse(req.body.toString("utf8")) ?? {};
      } catch {
        return httpError(400, "invalid_json", "body is not valid JSON", rid);
      }
      if (typeof note.id !== "string" || typeof note.type !== "string") {
        return httpError(400, "invalid_body", "a thin event notification has an id and a type", rid);
      }
      if (!REPORT_TYPES.has(note.type)) {
        // Answered 2xx, or Stripe would send it again for days: the destination may list more types.
        deps.logger.info("a Stripe event notification of another type was ignored", {
          eventId: note.id,
          type: note.type,
        });
        return json(200, { received: true, ignored: true });
      }
      let report: ErrorReport | undefined;
      try {
        report = await deps.report(note.id, deadline);
      } catch (err) {
        deps.logger.warn("a Stripe error report could not be read; Stripe will send its notification again", {
          eventId: note.id,
          reason: err instanceof Error ? err.message : String(err),
        });
        deps.failed("stripe_unavailable");
        return httpError(503, "stripe_unavailable", "the event could not be read from Stripe; try again later", rid);
      }
      if (!report) {
        // Signed with our secret but unknown to our key: another account's or mode's destination.
        deps.logger.error("a signed Stripe event notification names an event this Stripe key cannot read", {
          eventId: note.id,
          type: note.type,
        });
        return json(200, { received: true, unknownEvent: true });
      }
      deps.publish(report);
      return json(200, { received: true });
    },
  };
}

export type StripeEventReceiver = ReturnType<typeof createStripeEventReceiver>;
