/**
 * Stripe's asynchronous error reports (shared/stripe/METER_API.md §4): events Stripe accepted and
 * then refused (unknown customer, no meter, timestamp out of range...) are gathered per meter over
 * a validation window, and each window becomes one v2 event, `v1.billing.meter.error_report_triggered`
 * (or `v1.billing.meter.no_meter_found` for events naming no meter), with counts per code and
 * sample errors. Served by `GET /v2/core/events` and `GET /v2/core/events/{id}`, and pushed to
 * event destinations (event-destinations.ts).
 */
import { randomBytes } from "node:crypto";
import type { AsyncError } from "./ledger.js";

export const ERROR_REPORT_TRIGGERED = "v1.billing.meter.error_report_triggered";
export const NO_METER_FOUND = "v1.billing.meter.no_meter_found";
/** Sample errors kept per code in one report. */
const MAX_SAMPLES = 5;

export interface CoreEvent {
  id: string;
  object: "v2.core.event";
  type: string;
  created: string;
  livemode: false;
  context: null;
  reason: null;
  related_object: { id: string; type: "billing.meter"; url: string } | null;
  data: {
    developer_message_summary: string;
    validation_start: string;
    validation_end: string;
    reason: {
      error_count: number;
      error_types: Array<{
        code: string;
        error_count: number;
        sample_errors: Array<{ error_message: string; request: { identifier: string } }>;
      }>;
    };
  };
}

interface Window {
  type: string;
  meterId: string | undefined;
  start: number;
  errors: AsyncError[];
  timer: NodeJS.Timeout | undefined;
}

export class ErrorReports {
  /** Reports made, oldest first. */
  readonly events: CoreEvent[] = [];
  private readonly open = new Map<string, Window>();

  constructor(
    /** How long a window gathers errors before it is reported (Stripe's examples: 10 s). */
    private readonly windowMs: number,
    private readonly now: () => number,
    /** Told of each report as it is made (the event destinations'). */
    private readonly onReport: (event: CoreEvent) => void = () => {},
  ) {}

  /** An asynchronous error of an event for `meterId` (undefined: no meter matched its event_name). */
  add(e: AsyncError, meterId: string | undefined): void {
    // A repeated identifier is dropped without a report.
    if (e.code === "duplicate_meter_event") return;
    const type = meterId === undefined ? NO_METER_FOUND : ERROR_REPORT_TRIGGERED;
    const key = `${type}\u0000${meterId ?? ""}`;
    let w = this.open.get(key);
    if (!w) {
      w = { type, meterId, start: this.now(), errors: [], timer: undefined };
      const opened = w;
      w.timer = setTimeout(() => this.close(key, opened), this.windowMs);
      w.timer.unref();
      this.open.set(key, w);
    }
    w.errors.push(e);
  }

  /** Reports every open window now (tests, and a stopping emulator). */
  flush(): void {
    for (const [key, w] of [...this.open]) this.close(key, w);
  }

  private close(key: string, w: Window): void {
    if (this.open.get(key) !== w) return;
    this.open.delete(key);
    clearTimeout(w.timer);
    const end = this.now();
    const byCode = new Map<string, AsyncError[]>();
    for (const e of w.errors) {
      const same = byCode.get(e.code);
      if (same) same.push(e);
      else byCode.set(e.code, [e]);
    }
    const n = w.errors.length;
    const event: CoreEvent = {
      id: `evt_emu${randomBytes(10).toString("hex")}`,
      object: "v2.core.event",
      type: w.type,
      created: new Date(end).toISOString(),
      livemode: false,
      context: null,
      reason: null,
      related_object: w.meterId
        ? { id: w.meterId, type: "billing.meter", url: `/v1/billing/meters/${w.meterId}` }
        : null,
      data: {
        developer_message_summary: `There ${n === 1 ? "is 1 invalid event" : `are ${n} invalid events`}`,
        validation_start: new Date(w.start).toISOString(),
        validation_end: new Date(end).toISOString(),
        reason: {
          error_count: n,
          error_types: [...byCode].map(([code, errors]) => ({
            code,
            error_count: errors.length,
            sample_errors: errors
              .slice(0, MAX_SAMPLES)
              .map((e) => ({ error_message: e.message, request: { identifier: e.identifier } })),
          })),
        },
      },
    };
    this.events.push(event);
    this.onReport(event);
  }

  /**
   * `GET /v2/core/events`: newest first, filtered by `types` (repeated) and `created[gt|gte|lt|lte]`
   * (RFC 3339), `limit` per page (default 20, at most 100), `page` from `next_page_url`.
   */
  list(query: URLSearchParams): { data: CoreEvent[]; next_page_url: string | null; previous_page_url: null } {
    const types = query.getAll("types");
    const bound = (op: string) => {
      const v = query.get(`created[${op}]`);
      return v === null ? undefined : Date.parse(v);
    };
    const [gt, gte, lt, lte] = ["gt", "gte", "lt", "lte"].map(bound);
    const matching = this.events
      .filter((e) => {
        const t = Date.parse(e.created);
        return (
          (types.length === 0 || types.includes(e.type)) &&
          (gt === undefined || t > gt) &&
          (gte === undefined || t >= gte) &&
          (lt === undefined || t < lt) &&
          (lte === undefined || t <= lte)
        );
      })
      .reverse();
    const limit = Math.min(Math.max(Number(query.get("limit") ?? 20) || 20, 1), 100);
    const from = Number(query.get("page") ?? 0) || 0;
    const data = matching.slice(from, from + limit);
    let next: string | null = null;
    if (from + limit < matching.length) {
      const q = new URLSearchParams(query);
      q.set("page", String(from + limit));
      next = `/v2/core/events?${q.toString()}`;
    }
    return { data, next_page_url: next, previous_page_url: null };
  }

  get(id: string): CoreEvent | undefined {
    return this.events.find((e) => e.id === id);
  }
}
