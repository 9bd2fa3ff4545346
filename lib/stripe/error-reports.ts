/**
 * Stripe's asynchronous error reports: meter events Stripe accepted (the v2 stream answers for a
 * whole batch before checking its events) and then refused, e.g. for a customer Stripe does not
 * have. Stripe reports them per meter and validation window as v2 events; meterhook reads them
 * (the stripe-reports function, on a schedule, or as an event destination pushes them:
 * event-notifications.ts) so that such a refusal ends in a log line, a metric and an alarm
 * rather than only in Stripe's Workbench. See shared/stripe/METER_API.md §4.
 */
import type { Logger } from "../logger.js";
import type { Metrics } from "../metrics.js";
import type { StripeClient } from "./client.js";

export const ERROR_REPORT_TYPES = [
  "v1.billing.meter.error_report_triggered",
  "v1.billing.meter.no_meter_found",
] as const;

/** Metric names of the reports (README "Metrics"). */
export const ReportMetric = {
  /** Events Stripe refused asynchronously, all codes together (the alarm's metric). */
  refused: "StripeRefusedEvents",
  /**
   * Pushed notifications answered so that a report may not get through: signed with another
   * secret or too old (401), or unread for want of the secret or of Stripe (503).
   */
  notificationsFailed: "StripeNotificationsFailed",
} as const;

/** One report, as meterhook logs it. */
export interface ErrorReport {
  eventId: string;
  type: string;
  created: string;
  /** The meter (`mtr_...`); none for `no_meter_found`. */
  meter?: string;
  summary?: string;
  validationStart?: string;
  validationEnd?: string;
  /** Events refused in the window, all codes together. */
  errorCount: number;
  errors: Array<{ code: string; count: number; samples: Array<{ message: string; identifier?: string }> }>;
}

interface CoreEvent {
  id?: unknown;
  type?: unknown;
  created?: unknown;
  related_object?: { id?: unknown } | null;
  data?: {
    developer_message_summary?: unknown;
    validation_start?: unknown;
    validation_end?: unknown;
    reason?: {
      error_count?: unknown;
      error_types?: Array<{
        code?: unknown;
        error_count?: unknown;
        sample_errors?: Array<{ error_message?: unknown; request?: { identifier?: unknown } }>;
      }>;
    };
  };
}

const text = (x: unknown): string | undefined => (typeof x === "string" ? x : undefined);
const count = (x: unknown): number => (typeof x === "number" && Number.isFinite(x) ? x : 0);

/** Stripe's event in meterhook's shape; Stripe documents the enum of codes as open, so any code is kept. */
function toReport(e: CoreEvent): ErrorReport {
  const reason = e.data?.reason;
  const errors = (reason?.error_types ?? []).map((t) => ({
    code: text(t.code) ?? "unknown",
    count: count(t.error_count),
    samples: (t.sample_errors ?? []).map((s) => ({
      message: text(s.error_message) ?? "",
      identifier: text(s.request?.identifier),
    })),
  }));
  return {
    eventId: text(e.id) ?? "",
    type: text(e.type) ?? "",
    created: text(e.created) ?? "",
    meter: text(e.related_object?.id),
    summary: text(e.data?.developer_message_summary),
    validationStart: text(e.data?.validation_start),
    validationEnd: text(e.data?.validation_end),
    errorCount: count(reason?.error_count) || errors.reduce((n, t) => n + t.count, 0),
    errors,
  };
}

/** A failed read of the reports: the run fails, and its scheduled invocation is retried. */
export class ErrorReportsUnavailable extends Error {
  override name = "ErrorReportsUnavailable";
}

/**
 * The reports Stripe created in (from, to], oldest first: every page of `GET /v2/core/events` for
 * each report type, and the full event (`GET /v2/core/events/{id}`) for any listed without data.
 */
export async function readErrorReports(
  client: StripeClient,
  window: { from: number; to: number },
  deadline: number,
): Promise<ErrorReport[]> {
  const get = async (path: string, query?: Record<string, string>): Promise<unknown> => {
    const body = await getJson(client, path, deadline, query);
    if (body === undefined) throw new ErrorReportsUnavailable(`reading Stripe's error reports failed: ${path}: 404`);
    return body;
  };
  const events: CoreEvent[] = [];
  for (const type of ERROR_REPORT_TYPES) {
    // One type per request: a scalar parameter reads the same whatever Stripe's array encoding.
    let page: { path: string; query: Record<string, string> } | undefined = {
      path: "/v2/core/events",
      query: {
        types: type,
        "created[gt]": new Date(window.from).toISOString(),
        "created[lte]": new Date(window.to).toISOString(),
        limit: "100",
      },
    };
    while (page) {
      const body = (await get(page.path, page.query)) as { data?: CoreEvent[]; next_page_url?: unknown };
      for (const e of body.data ?? []) {
        events.push(e.data || typeof e.id !== "string" ? e : ((await get(eventPath(e.id))) as CoreEvent));
      }
      const next = text(body.next_page_url);
      const url = next ? new URL(next, "https://api.stripe.com") : undefined;
      page = url ? { path: url.pathname, query: Object.fromEntries(url.searchParams) } : undefined;
    }
  }
  return events.map(toReport).sort((a, b) => (a.created < b.created ? -1 : a.created > b.created ? 1 : 0));
}

/**
 * One report by its event id (`GET /v2/core/events/{id}`), what a pushed thin notification names;
 * undefined when Stripe has no such event for this key (404). Throws ErrorReportsUnavailable
 * when Stripe could not be read.
 */
export async function readErrorReport(
  client: StripeClient,
  id: string,
  deadline: number,
): Promise<ErrorReport | undefined> {
  const event = await getJson(client, eventPath(id), deadline);
  return event === undefined ? undefined : toReport(event as CoreEvent);
}

const eventPath = (id: string) => `/v2/core/events/${encodeURIComponent(id)}`;

/** A GET of Stripe's API as JSON, for the reads above; undefined for a 404. Throws ErrorReportsUnavailable. */
async function getJson(
  client: StripeClient,
  path: string,
  deadline: number,
  query?: Record<string, string>,
): Promise<unknown> {
  const v = await client.call({ base: "api", method: "GET", path, query, deadline });
  if (v.kind === "permanent" && v.status === 404) return undefined;
  if (v.kind !== "ok") throw new ErrorReportsUnavailable(`reading Stripe's error reports failed: ${v.reason}`);
  return JSON.parse(v.body);
}

/** Events the reports say Stripe refused, all reports together. */
export const refusedIn = (reports: readonly ErrorReport[]): number => reports.reduce((n, r) => n + r.errorCount, 0);

/** Each report as an `error` log line, and the events it refused as metrics (all codes, and per code). */
export function publishErrorReports(reports: readonly ErrorReport[], logger: Logger, metrics: Metrics): void {
  for (const r of reports) {
    logger.error("Stripe refused meter events it had accepted", { ...r });
    metrics.count(ReportMetric.refused, r.errorCount);
    for (const t of r.errors) metrics.count(ReportMetric.refused, t.count, { code: t.code });
  }
}
