import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { DEFAULT_RETRY_DELAYS_MS, EventDeliveries, type EventDestination } from "./event-destinations.js";
import { Ledger, type LedgerOptions, type MeterDefinition } from "./ledger.js";
import { ErrorReports } from "./reports.js";

/**
 * A local Stripe that follows shared/stripe/METER_API.md for the meter ingestion APIs: v1 meter
 * events (form), v2 meter events (JSON), v2 sessions and the meter event stream, meter event
 * adjustments (cancellations, v1 and v2), with their
 * auth, validations, error bodies, duplicate identifiers, idempotency and session expiry. It keeps
 * per-customer, per-meter totals, and can be told to misbehave (faults) for tests.
 */
export interface EmulatorOptions {
  /** Secret keys it accepts (Bearer, or Basic with the key as user name). */
  apiKeys?: string[];
  meters?: LedgerOptions["meters"];
  customers?: LedgerOptions["customers"];
  /** Lifetime of a v2 meter event session (Stripe: 15 minutes). */
  sessionTtlMs?: number;
  /** Added to every answer, to stand for the network between Lambda and Stripe. */
  latencyMs?: number;
  /** Requests per second per key on v1 meter events before 429 (off when unset). */
  v1RateLimit?: number;
  /** Customer searches per second per key before 429: Stripe's 20 unless set; 0 turns it off. */
  searchRateLimit?: number;
  /**
   * How long asynchronous errors are gathered per meter before they are reported as one
   * `v1.billing.meter.error_report_triggered` event (Stripe's examples: 10 s windows); 2 s unless set.
   */
  errorReportWindowMs?: number;
  /**
   * Where each error report is pushed as a signed thin notification, as to a Stripe event
   * destination with the thin payload style (METER_API.md §4.2, §8).
   */
  eventDestinations?: EventDestination[];
  /**
   * The v1 checks to make at once, answering `400` as some integrations report Stripe does,
   * instead of accepting the event and reporting it later (the documented path, and the default;
   * METER_API.md §1.3 leaves both open): `no_meter` (no meter, or an inactive one, for its
   * event_name) and `timestamp` (outside the past 35 days and next 5 minutes).
   */
  v1RefusesAtOnce?: Array<"no_meter" | "timestamp">;
  /** The delays between tries of a delivery not answered 2xx (DEFAULT_RETRY_DELAYS_MS unless set). */
  eventRetryDelaysMs?: number[];
  now?: () => number;
}

/** A scripted misbehaviour for the next matching request(s). */
export interface Fault {
  /** Path the fault applies to, e.g. `/v1/billing/meter_events`; ending in `*`, every path it begins. */
  path: string;
  /** How many matching requests it affects (default 1). */
  times?: number;
  /** Answer this instead of processing the request. */
  respond?: { status: number; body?: unknown; headers?: Record<string, string> };
  /** Only requests whose raw body contains this text. */
  bodyIncludes?: string;
  /**
   * `accept-then-drop`: process it, then close the connection without an answer.
   * `accept-then-garble`: process it, then answer bytes that are not HTTP and close. `reset`: close
   * at once. `expire-session`: expire every session token, then handle the request.
   */
  action?: "accept-then-drop" | "accept-then-garble" | "reset" | "expire-session";
  /** Wait this long before doing anything else. */
  delayMs?: number;
}

/** What a fault policy sees of a request. */
export interface FaultContext {
  path: string;
  body: string;
  /** Meter event identifiers in the request. */
  identifiers: string[];
  /** Whether Stripe already has this event: a real Stripe then answers "already exists", never a fresh rejection. */
  isRecorded: (identifier: string) => boolean;
}

const DEFAULT_KEY = "sk_test_meterhook_local";
const MAX_BODY = 1024 * 1024;
const DAY_MS = 86_400_000;

/**
 * An answer. `beforeExecution`: a parameter check refused the request before the endpoint began
 * its work, so Stripe's idempotency layer does not save it (METER_API.md §7).
 */
type Reply = { status: number; body: unknown; headers?: Record<string, string>; beforeExecution?: true };

const v1Error = (
  status: number,
  type: string,
  message: string,
  extra: Record<string, unknown> = {},
  headers?: Record<string, string>,
): Reply => ({
  status,
  body: { error: { type, message, ...extra } },
  headers,
});
const v2Error = (status: number, code: string, message: string, type?: string): Reply => ({
  status,
  body: { error: { code, message, ...(type ? { type } : {}), doc_url: `https://docs.stripe.com/error-codes/${code}` } },
});

function significantDigits(value: string): number {
  const digits = value.replace(/^-/, "").replace(".", "").replace(/^0+/, "");
  return digits.replace(/0+$/, "").length;
}

/** Parses `a=1&payload[b]=2` (brackets raw or percent-encoded) into flat and nested params. */
export function parseForm(body: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of body.split("&")) {
    if (!part) continue;
    const eq = part.indexOf("=");
    const k = decodeURIComponent((eq < 0 ? part : part.slice(0, eq)).replace(/\+/g, " "));
    const v = eq < 0 ? "" : decodeURIComponent(part.slice(eq + 1).replace(/\+/g, " "));
    out.set(k, v);
  }
  return out;
}

/** A v1 meter event's parameters, or the 400 that refuses them before any work begins. */
function v1MeterEventParams(
  params: Map<string, string>,
): Reply | { eventName: string; identifier?: string; timestamp?: string; payload: Record<string, string> } {
  const payload: Record<string, string> = {};
  let eventName: string | undefined;
  let identifier: string | undefined;
  let timestamp: string | undefined;
  for (const [k, v] of params) {
    const m = /^payload\[(.+)\]$/.exec(k);
    if (m) payload[m[1] as string] = v;
    else if (k === "event_name") eventName = v;
    else if (k === "identifier") identifier = v;
    else if (k === "timestamp") timestamp = v;
    else if (!/^expand\[\d*\]$/.test(k)) {
      return v1Error(400, "invalid_request_error", `Received unknown parameter: ${k}`, {
        code: "parameter_unknown",
        param: k,
      });
    }
  }
  if (!eventName)
    return v1Error(400, "invalid_request_error", "Missing required param: event_name.", {
      code: "parameter_missing",
      param: "event_name",
    });
  if (Object.keys(payload).length === 0)
    return v1Error(400, "invalid_request_error", "Missing required param: payload.", {
      code: "parameter_missing",
      param: "payload",
    });
  if (eventName.length > 100)
    return v1Error(400, "invalid_request_error", "Invalid string: event_name must be at most 100 characters", {
      code: "string_length",
      param: "event_name",
    });
  if (identifier !== undefined && (identifier.length > 100 || identifier.length === 0)) {
    return v1Error(400, "invalid_request_error", "Invalid string: identifier must be 1-100 characters", {
      code: "string_length",
      param: "identifier",
    });
  }
  if (timestamp !== undefined && !/^\d+$/.test(timestamp))
    return v1Error(400, "invalid_request_error", "Invalid integer: timestamp", {
      code: "invalid_integer",
      param: "timestamp",
    });
  for (const [k, v] of Object.entries(payload)) {
    if (/^-?\d+(\.\d+)?$/.test(v) && significantDigits(v) > 15) {
      return v1Error(
        400,
        "invalid_request_error",
        `The value for payload[${k}] can have at most 15 significant digits.`,
        { param: `payload[${k}]` },
      );
    }
  }
  return { eventName, identifier, timestamp, payload };
}

/** The 400 that refuses a v1 adjustment's parameters before any work begins, or undefined. */
function v1AdjustmentParamsRefused(params: Map<string, string>): Reply | undefined {
  for (const k of params.keys()) {
    if (!["event_name", "type", "cancel[identifier]"].includes(k) && !/^expand\[\d*\]$/.test(k)) {
      return v1Error(400, "invalid_request_error", `Received unknown parameter: ${k}`, {
        code: "parameter_unknown",
        param: k,
      });
    }
  }
  for (const k of ["event_name", "type", "cancel[identifier]"]) {
    if (!params.get(k))
      return v1Error(400, "invalid_request_error", `Missing required param: ${k}.`, {
        code: "parameter_missing",
        param: k,
      });
  }
  if (params.get("type") !== "cancel") {
    return v1Error(400, "invalid_request_error", "Invalid type: must be cancel", { param: "type" });
  }
  return undefined;
}

export class StripeEmulator {
  readonly ledger: Ledger;
  /** Stripe's asynchronous error reports, as v2 events. */
  readonly errorReports: ErrorReports;
  /** The pushes of those reports to event destinations, and their log. */
  readonly eventDeliveries: EventDeliveries;
  private readonly keys: Set<string>;
  private readonly now: () => number;
  private readonly sessionTtlMs: number;
  private readonly sessions = new Map<string, number>();
  private readonly idempotency = new Map<string, { hash: string; reply: Reply; at: number }>();
  private readonly rate = new Map<string, { second: number; count: number }>();
  private readonly searchRate = new Map<string, { second: number; count: number }>();
  private faults: Array<Fault & { left: number }> = [];
  /** Chooses a fault for requests no scripted fault matched (seeded fault schedules). */
  private faultPolicy: ((req: FaultContext) => Fault | undefined) | undefined;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  /** Every request seen, for tests that count calls: method, path, status. */
  readonly requests: Array<{
    method: string;
    path: string;
    status: number | "dropped";
    headers: Record<string, string | string[] | undefined>;
  }> = [];

  private inFlight = 0;
  /**
   * The most requests it has held at once since it started or forgot its history: with a delay
   * on each answer (latencyMs, a fault's delayMs), how many requests a client keeps in flight.
   */
  peakInFlight = 0;

  constructor(private readonly options: EmulatorOptions = {}) {
    this.now = options.now ?? Date.now;
    this.keys = new Set(options.apiKeys ?? [DEFAULT_KEY]);
    this.sessionTtlMs = options.sessionTtlMs ?? 15 * 60_000;
    this.eventDeliveries = new EventDeliveries(
      [...(options.eventDestinations ?? [])],
      options.eventRetryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS,
      this.now,
    );
    this.errorReports = new ErrorReports(options.errorReportWindowMs ?? 2_000, this.now, (e) =>
      this.eventDeliveries.deliver(e),
    );
    this.ledger = new Ledger({
      meters: options.meters ?? "auto",
      customers: options.customers ?? "any",
      now: this.now,
      // A `no_meter` error names no meter; the rest are reported for their event's meter.
      onError: (e) =>
        this.errorReports.add(e, e.code === "no_meter" ? undefined : this.ledger.meters.get(e.event_name)?.id),
    });
  }

  get url(): string {
    const addr = this.server?.address() as AddressInfo | null;
    if (!addr) throw new Error("emulator not started");
    return `http://127.0.0.1:${addr.port}`;
  }

  async start(port = 0, host = "127.0.0.1"): Promise<string> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err) => {
        if (!res.headersSent)
          this.send(res, { status: 500, body: { error: { type: "api_error", message: String(err) } } });
      });
    });
    this.server.on("connection", (s) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      this.server?.once("error", reject);
      this.server?.listen(port, host, () => resolve());
    });
    return this.url;
  }

  async stop(): Promise<void> {
    await this.eventDeliveries.stop();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  /**
   * Closes every keep-alive connection that is not serving a request, as Stripe's front ends do
   * with connections idle too long (a Lambda's, across a freeze).
   */
  closeIdleConnections(): void {
    this.server?.closeIdleConnections();
  }

  /**
   * Forgets what earlier requests left (the ledger's events, the request log, idempotency keys,
   * rate counters); meters, customers and meter event sessions stay valid.
   */
  forgetHistory(): void {
    this.ledger.forgetEvents();
    this.requests.length = 0;
    this.peakInFlight = this.inFlight;
    this.idempotency.clear();
    this.rate.clear();
    this.searchRate.clear();
  }

  /** Sets (or clears) a function that picks a fault for each request; scripted faults go first. */
  setFaultPolicy(policy: ((req: FaultContext) => Fault | undefined) | undefined): void {
    this.faultPolicy = policy;
  }

  injectFaults(...faults: Fault[]): void {
    this.faults.push(...faults.map((f) => ({ ...f, left: f.times ?? 1 })));
  }

  /**
   * Replaces the secret keys it accepts, as rolling a key in Stripe's dashboard does once the
   * old one expires. Stripe does not say whether meter event sessions made with the old key stay
   * valid: by default they do until they expire; `endSessions` makes their tokens unknown (the
   * stream answers 401 `invalid_session_token`), the stricter case.
   */
  setApiKeys(keys: readonly string[], options: { endSessions?: boolean } = {}): void {
    this.keys.clear();
    for (const k of keys) this.keys.add(k);
    if (options.endSessions) this.sessions.clear();
  }

  /** Makes every current session token expire now. */
  expireSessions(): void {
    for (const token of this.sessions.keys()) this.sessions.set(token, this.now() - 1);
  }

  private takeFault(path: string, body: string): Fault | undefined {
    const f = this.faults.find(
      (x) =>
        x.left > 0 &&
        (path === x.path || (x.path.endsWith("*") && path.startsWith(x.path.slice(0, -1)))) &&
        (!x.bodyIncludes || body.includes(x.bodyIncludes)),
    );
    if (!f) {
      if (!this.faultPolicy) return undefined;
      const identifiers = [...body.matchAll(/identifier(?:=|":")([A-Za-z0-9_-]+)/g)].map((m) => m[1] as string);
      return this.faultPolicy({ path, body, identifiers, isRecorded: (i) => this.ledger.isDuplicate(i) });
    }
    f.left--;
    this.faults = this.faults.filter((x) => x.left > 0);
    return f;
  }

  private send(res: ServerResponse, reply: Reply): void {
    const body = JSON.stringify(reply.body);
    res.writeHead(reply.status, {
      "content-type": "application/json",
      "request-id": `req_${randomBytes(7).toString("hex")}`,
      "content-length": Buffer.byteLength(body),
      ...reply.headers,
    });
    res.end(body);
  }

  private async readBody(req: IncomingMessage): Promise<string | undefined> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_BODY) return undefined;
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks).toString("utf8");
  }

  /** The secret key or session token the request presents. */
  private credential(req: IncomingMessage): string | undefined {
    const auth = req.headers.authorization ?? "";
    if (/^bearer /i.test(auth)) return auth.slice(7).trim();
    if (/^basic /i.test(auth)) return Buffer.from(auth.slice(6), "base64").toString("utf8").split(":")[0];
    return undefined;
  }

  /** `livemode` as the key's kind says: a `sk_test_`/`rk_test_` key is test mode. */
  private live(req: IncomingMessage): boolean {
    return !(this.credential(req) ?? "").includes("_test_");
  }

  private authError(key: string | undefined): Reply | undefined {
    if (!key) return v1Error(401, "invalid_request_error", "You did not provide an API key.");
    if (!this.keys.has(key))
      return v1Error(401, "invalid_request_error", `Invalid API Key provided: ${key.slice(0, 8)}****${key.slice(-4)}`);
    return undefined;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.inFlight++;
    this.peakInFlight = Math.max(this.peakInFlight, this.inFlight);
    try {
      await this.answer(req, res);
    } finally {
      this.inFlight--;
    }
  }

  private async answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://emulator");
    const path = url.pathname;
    const raw = await this.readBody(req);
    const fault = this.takeFault(path, raw ?? "");
    if (this.options.latencyMs) await new Promise((r) => setTimeout(r, this.options.latencyMs));
    if (fault?.delayMs) await new Promise((r) => setTimeout(r, fault.delayMs));
    if (fault?.action === "reset") {
      this.requests.push({ method: req.method ?? "", path, status: "dropped", headers: req.headers });
      req.socket.destroy();
      return;
    }
    if (fault?.action === "expire-session") this.expireSessions();
    if (fault?.respond) {
      this.requests.push({ method: req.method ?? "", path, status: fault.respond.status, headers: req.headers });
      this.send(res, {
        status: fault.respond.status,
        body: fault.respond.body ?? { error: { type: "api_error", message: "injected fault" } },
        headers: fault.respond.headers,
      });
      return;
    }
    const reply =
      raw === undefined
        ? v1Error(413, "invalid_request_error", "Request body too large.")
        : await this.route(req, path, url, raw);
    if (fault?.action === "accept-then-drop" || fault?.action === "accept-then-garble") {
      this.requests.push({ method: req.method ?? "", path, status: "dropped", headers: req.headers });
      // Written on the socket itself: Node's response object would only send valid HTTP.
      if (fault.action === "accept-then-garble") req.socket.end("HTTP/1.1 200 OK\r\nthis is not a header\r\n\r\n{}");
      else req.socket.destroy();
      return;
    }
    this.requests.push({ method: req.method ?? "", path, status: reply.status, headers: req.headers });
    this.send(res, reply);
  }

  private async route(req: IncomingMessage, path: string, url: URL, raw: string): Promise<Reply> {
    const method = req.method ?? "GET";
    if (method === "GET" && path === "/v1/billing/meters/summaries") {
      return { status: 200, body: { object: "list", data: this.ledger.summaries() } };
    }
    if (method === "GET" && path === "/_emulator/events") {
      return {
        status: 200,
        body: {
          events: this.ledger.events,
          errors: this.ledger.errors,
          cancelled: [...this.ledger.cancelled],
          receipts: Object.fromEntries(this.ledger.receipts),
        },
      };
    }
    if (method === "GET" && path === "/_emulator/deliveries") {
      return { status: 200, body: { deliveries: this.eventDeliveries.log } };
    }
    if (method === "GET" && path === "/v1/billing/meters") return this.listMeters(req, url);
    const summaryMatch = /^\/v1\/billing\/meters\/([^/]+)\/event_summaries$/.exec(path);
    if (method === "GET" && summaryMatch) {
      const customer = url.searchParams.get("customer") ?? "";
      const meterId = summaryMatch[1] ?? "";
      return {
        status: 200,
        body: {
          object: "list",
          data: [
            {
              object: "billing.meter_event_summary",
              meter: meterId,
              aggregated_value: this.ledger.aggregate(meterId, customer),
            },
          ],
        },
      };
    }
    if (method === "GET" && path === "/v1/customers/search") return this.searchCustomers(req, url);
    if (method === "GET" && path.startsWith("/v1/customers/")) return this.retrieveCustomer(req, path);
    if (method === "GET" && path.startsWith("/v2/core/events")) return this.coreEvents(req, path, url);
    if (method !== "POST")
      return v1Error(404, "invalid_request_error", `Unrecognized request URL (${method}: ${path}).`);
    switch (path) {
      case "/v1/billing/meter_events":
        return this.v1MeterEvent(req, raw);
      case "/v2/billing/meter_events":
        return this.v2MeterEvent(req, raw);
      case "/v1/billing/meter_event_adjustments":
        return this.v1Adjustment(req, raw);
      case "/v2/billing/meter_event_adjustments":
        return this.v2Adjustment(req, raw);
      case "/v2/billing/meter_event_session":
        return this.createSession(req, raw);
      case "/v2/billing/meter_event_stream":
        return this.stream(req, raw);
      case "/v1/customers":
        return this.createCustomer(req, raw);
      default:
        return v1Error(404, "invalid_request_error", `Unrecognized request URL (POST: ${path}).`);
    }
  }

  /**
   * `GET /v1/billing/meters`, as Stripe lists: newest first, `status` to filter, `limit` (1-100,
   * default 10) and `starting_after` to page, `has_more` when a page is full and more follow.
   */
  private listMeters(req: IncomingMessage, url: URL): Reply {
    const denied = this.authError(this.credential(req));
    if (denied) return denied;
    const q = url.searchParams;
    const status = q.get("status");
    if (status !== null && status !== "active" && status !== "inactive") {
      return v1Error(400, "invalid_request_error", `Invalid status: must be one of active, inactive`, {
        param: "status",
      });
    }
    const limit = q.has("limit") ? Number(q.get("limit")) : 10;
    if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
      return v1Error(400, "invalid_request_error", "Invalid limit: must be between 1 and 100", { param: "limit" });
    }
    let meters = [...this.ledger.meters.values()].reverse();
    if (status) meters = meters.filter((m) => m.status === status);
    const after = q.get("starting_after");
    if (after !== null) {
      const i = meters.findIndex((m) => m.id === after);
      if (i < 0) return v1Error(400, "invalid_request_error", `No such billing meter: '${after.slice(0, 64)}'`);
      meters = meters.slice(i + 1);
    }
    return {
      status: 200,
      body: {
        object: "list",
        data: meters.slice(0, limit).map(toMeterObject),
        has_more: meters.length > limit,
        url: "/v1/billing/meters",
      },
    };
  }

  /** `GET /v2/core/events` and `GET /v2/core/events/{id}`, with the secret key. */
  private coreEvents(req: IncomingMessage, path: string, url: URL): Reply {
    const denied = this.authError(this.credential(req));
    if (denied) return denied;
    if (path === "/v2/core/events") return { status: 200, body: this.errorReports.list(url.searchParams) };
    const id = decodeURIComponent(path.slice("/v2/core/events/".length));
    const event = this.errorReports.get(id);
    if (!event) return v2Error(404, "not_found", `No such event: ${id.slice(0, 64)}`, "invalid_request_error");
    return { status: 200, body: event };
  }

  /** Creates a meter (as `POST /v1/billing/meters` does), e.g. one created after its first usage. */
  defineMeter(m: Partial<MeterDefinition> & { event_name: string }): MeterDefinition {
    return this.ledger.defineMeter(m);
  }

  /** Deactivates a meter (`POST /v1/billing/meters/{id}/deactivate`): it takes no new events. */
  deactivateMeter(eventName: string): void {
    const m = this.ledger.meters.get(eventName);
    if (!m) throw new Error(`no meter for ${eventName}`);
    m.status = "inactive";
  }

  /** Adds a customer (as `POST /v1/customers` does), e.g. one created after its first usage. */
  addCustomer(id: string, metadata: Record<string, string> = {}): void {
    this.ledger.customers.set(id, metadata);
  }

  private createCustomer(req: IncomingMessage, raw: string): Reply {
    const denied = this.authError(this.credential(req));
    if (denied) return denied;
    const metadata: Record<string, string> = {};
    for (const [k, v] of parseForm(raw)) {
      const m = /^metadata\[(.+)\]$/.exec(k);
      if (m) metadata[m[1] as string] = v;
    }
    const id = `cus_${randomBytes(7).toString("hex")}`;
    this.addCustomer(id, metadata);
    return { status: 200, body: { id, object: "customer", metadata } };
  }

  /** Deletes a customer, as `DELETE /v1/customers/{id}` does: Stripe then answers for it with `deleted: true`. */
  deleteCustomer(id: string): void {
    this.ledger.customers.delete(id);
    this.ledger.deletedCustomers.add(id);
  }

  /** `GET /v1/customers/{id}`: the customer, `{deleted: true}` for a deleted one, 404 for an unknown one. */
  private retrieveCustomer(req: IncomingMessage, path: string): Reply {
    const denied = this.authError(this.credential(req));
    if (denied) return denied;
    const id = decodeURIComponent(path.slice("/v1/customers/".length));
    if (this.ledger.deletedCustomers.has(id)) return { status: 200, body: { id, object: "customer", deleted: true } };
    if (!this.ledger.customerExists(id)) {
      return v1Error(404, "invalid_request_error", `No such customer: '${id.slice(0, 64)}'`, {
        code: "resource_missing",
        param: "id",
      });
    }
    return { status: 200, body: { id, object: "customer", metadata: this.ledger.customers.get(id) ?? {} } };
  }

  /** `GET /v1/customers/search?query=metadata['key']:'value'`: the one query form lookups use. */
  private searchCustomers(req: IncomingMessage, url: URL): Reply {
    const credential = this.credential(req);
    const denied = this.authError(credential);
    if (denied) return denied;
    if (this.rateLimited(credential as string, this.options.searchRateLimit ?? 20, this.searchRate)) {
      return v1Error(429, "invalid_request_error", "Request rate limit exceeded.", { code: "rate_limit" });
    }
    const query = url.searchParams.get("query") ?? "";
    const m = /^metadata\['([^']+)'\]:'((?:[^'\\]|\\.)*)'$/.exec(query);
    if (!m)
      return v1Error(400, "invalid_request_error", `Unsupported search query: ${query}`, {
        code: "parameter_invalid_string",
        param: "query",
      });
    const key = m[1] as string;
    const value = (m[2] as string).replace(/\\(.)/g, "$1");
    const data = [...this.ledger.customers.entries()]
      .filter(([, md]) => md[key] === value)
      .map(([id, metadata]) => ({ id, object: "customer", metadata }));
    return { status: 200, body: { object: "search_result", data, has_more: false, url: "/v1/customers/search" } };
  }

  /** Over `limit` requests from `key` in this calendar second (counted in `rate`). */
  private rateLimited(key: string, limit = this.options.v1RateLimit, rate = this.rate): boolean {
    if (!limit) return false;
    const second = Math.floor(this.now() / 1000);
    const r = rate.get(key);
    if (!r || r.second !== second) {
      rate.set(key, { second, count: 1 });
      return false;
    }
    r.count++;
    return r.count > limit;
  }

  /** What a v1 write checks first: the key, then the account's request rate. */
  private v1Gate(key: string | undefined): Reply | undefined {
    const denied = this.authError(key);
    if (denied) return denied;
    if (this.rateLimited(key as string)) {
      return v1Error(429, "invalid_request_error", "Request rate limit exceeded.", { code: "rate_limit" });
    }
    return undefined;
  }

  private v1MeterEvent(req: IncomingMessage, raw: string): Reply {
    const key = this.credential(req);
    const refused = this.v1Gate(key);
    if (refused) return refused;
    return this.idempotent(req, raw, (params) => this.createV1MeterEvent(key as string, params));
  }

  /**
   * A v1 POST under Stripe's idempotency: the answer to a key seen in the last 24 h is replayed
   * (with `Idempotent-Replayed`), and the key with other parameters is refused.
   */
  private idempotent(req: IncomingMessage, raw: string, work: (params: Map<string, string>) => Reply): Reply {
    const header = req.headers["idempotency-key"];
    // Keys are per account: another account's key of the same name is another key.
    const idemKey = typeof header === "string" ? `${this.credential(req)}\u0000${header}` : undefined;
    const hash = createHash("sha256").update(raw).digest("hex");
    if (idemKey !== undefined) {
      const saved = this.idempotency.get(idemKey);
      if (saved && this.now() - saved.at < DAY_MS) {
        if (saved.hash !== hash) {
          return v1Error(
            400,
            "idempotency_error",
            `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${header}' if you meant to execute a different request.`,
          );
        }
        return { ...saved.reply, headers: { ...saved.reply.headers, "idempotent-replayed": "true" } };
      }
    }
    const reply = work(parseForm(raw));
    if (idemKey !== undefined && !reply.beforeExecution) this.idempotency.set(idemKey, { hash, reply, at: this.now() });
    return reply;
  }

  /**
   * A v2 POST under Stripe's v2 idempotency (METER_API.md §3.0): work that succeeded under a key
   * in the last 30 days is not done again and its result is answered; work that failed is done
   * again; the key with other parameters is refused `idempotency_error`.
   */
  private idempotentV2(req: IncomingMessage, raw: string, work: () => Reply): Reply {
    const header = req.headers["idempotency-key"];
    if (typeof header !== "string") return work();
    const idemKey = `v2\u0000${this.credential(req)}\u0000${header}`;
    const hash = createHash("sha256").update(raw).digest("hex");
    const saved = this.idempotency.get(idemKey);
    if (saved && this.now() - saved.at < 30 * DAY_MS) {
      if (saved.hash !== hash) {
        return v2Error(
          400,
          "idempotency_error",
          "An idempotent retry occurred with different request parameters.",
          "idempotency_error",
        );
      }
      if (saved.reply.status === 200) return saved.reply;
    }
    const reply = work();
    this.idempotency.set(idemKey, { hash, reply, at: this.now() });
    return reply;
  }

  private createV1MeterEvent(key: string, params: Map<string, string>): Reply {
    const parsed = v1MeterEventParams(params);
    if ("status" in parsed) return { ...parsed, beforeExecution: true };
    const { eventName, identifier, timestamp, payload } = parsed;
    const id = identifier ?? `emu_${randomBytes(12).toString("hex")}`;
    if (this.ledger.isDuplicate(id)) {
      this.ledger.noteReceipt(id);
      return v1Error(
        400,
        "invalid_request_error",
        `An event already exists with identifier ${id}.`,
        {},
        { "stripe-should-retry": "false" },
      );
    }
    const nowS = Math.floor(this.now() / 1000);
    const ts = timestamp === undefined ? nowS : Number(timestamp);
    const atOnce = this.refusedAtOnce(eventName, ts);
    if (atOnce) return atOnce;
    this.ledger.record({
      event_name: eventName,
      identifier: id,
      timestamp: ts,
      payload,
      api: "v1",
      receivedAt: this.now(),
    });
    return {
      status: 200,
      body: {
        object: "billing.meter_event",
        created: nowS,
        event_name: eventName,
        identifier: id,
        livemode: !key.includes("_test_"),
        payload,
        timestamp: ts,
      },
    };
  }

  /**
   * The `400` for a v1 event refused at once (v1RefusesAtOnce), or undefined. Not saved under
   * its idempotency key: a retry after the meter is created is taken.
   */
  private refusedAtOnce(eventName: string, timestamp: number): Reply | undefined {
    const at = this.options.v1RefusesAtOnce ?? [];
    const refuse = (message: string, param: string): Reply => ({
      ...v1Error(400, "invalid_request_error", message, { param }),
      beforeExecution: true,
    });
    if (at.includes("no_meter") && this.ledger.meterFor(eventName)?.status !== "active") {
      return refuse(`No active meter found for event_name ${eventName}.`, "event_name");
    }
    const late = at.includes("timestamp") ? this.ledger.timestampProblem(timestamp) : undefined;
    return late ? refuse(late.message, "timestamp") : undefined;
  }

  /** `POST /v1/billing/meter_event_adjustments` (form): `type=cancel` and `cancel[identifier]`. */
  private v1Adjustment(req: IncomingMessage, raw: string): Reply {
    const key = this.credential(req);
    const refused = this.v1Gate(key);
    if (refused) return refused;
    return this.idempotent(req, raw, (params) => {
      const badParams = v1AdjustmentParamsRefused(params);
      if (badParams) return { ...badParams, beforeExecution: true };
      const eventName = params.get("event_name") as string;
      const identifier = params.get("cancel[identifier]") as string;
      const refused = this.ledger.cancel(eventName, identifier);
      if (refused) {
        return v1Error(400, "invalid_request_error", refused.message, {
          ...(refused.code ? { code: refused.code } : {}),
          param: "cancel[identifier]",
        });
      }
      return {
        status: 200,
        body: {
          object: "billing.meter_event_adjustment",
          cancel: { identifier },
          event_name: eventName,
          livemode: !(key as string).includes("_test_"),
          status: "pending",
          type: "cancel",
        },
      };
    });
  }

  /** `POST /v2/billing/meter_event_adjustments` (JSON, the secret key). */
  private v2Adjustment(req: IncomingMessage, raw: string): Reply {
    const denied = this.authError(this.credential(req));
    if (denied) return denied;
    return this.idempotentV2(req, raw, () => {
      const body = this.parseJson(raw) as { event_name?: unknown; type?: unknown; cancel?: unknown } | undefined;
      if (!body || typeof body.event_name !== "string" || body.type !== "cancel") {
        return v2Error(400, "invalid_fields", "event_name and type (cancel) are required.");
      }
      const identifier = (body.cancel as { identifier?: unknown } | null)?.identifier;
      if (typeof identifier !== "string" || identifier === "") {
        return v2Error(400, "invalid_cancel_configuration", "A cancel adjustment needs cancel.identifier.");
      }
      const refused = this.ledger.cancel(body.event_name, identifier);
      if (refused) return v2Error(400, refused.code || "invalid_cancel_configuration", refused.message);
      return {
        status: 200,
        body: {
          id: `mtr_event_adj_${randomBytes(8).toString("hex")}`,
          object: "v2.billing.meter_event_adjustment",
          cancel: { identifier },
          created: new Date(this.now()).toISOString(),
          event_name: body.event_name,
          livemode: this.live(req),
          status: "pending",
          type: "cancel",
        },
      };
    });
  }

  private parseJson(raw: string): unknown {
    try {
      return JSON.parse(raw);
    } catch {
      return undefined;
    }
  }

  private v2MeterEvent(req: IncomingMessage, raw: string): Reply {
    const denied = this.authError(this.credential(req));
    if (denied) return denied;
    return this.idempotentV2(req, raw, () => {
      const body = this.parseJson(raw) as
        | { event_name?: unknown; payload?: unknown; identifier?: unknown; timestamp?: unknown }
        | undefined;
      if (!body || typeof body.event_name !== "string" || !body.payload || typeof body.payload !== "object") {
        return v2Error(400, "invalid_fields", "event_name and payload are required.");
      }
      const payload = body.payload as Record<string, string>;
      const meter = this.ledger.meterFor(body.event_name);
      if (!meter) return v2Error(400, "no_meter", `No meter was found matching event_name ${body.event_name}.`);
      if (meter.status !== "active") return v2Error(400, "archived_meter", `Meter ${meter.id} is inactive.`);
      if (payload[meter.customerKey] === undefined)
        return v2Error(
          400,
          "payload_no_customer_defined",
          `Customer mapping key ${meter.customerKey} not found in payload.`,
        );
      const value = payload[meter.valueKey];
      if (value === undefined)
        return v2Error(400, "payload_no_value_defined", `Value key ${meter.valueKey} not found in payload.`);
      if (!/^-?\d+(\.\d+)?$/.test(value) || significantDigits(value) > 15)
        return v2Error(400, "payload_invalid_value", `Value ${value} is invalid.`);
      const identifier =
        typeof body.identifier === "string" ? body.identifier : `emu_${randomBytes(12).toString("hex")}`;
      if (this.ledger.isDuplicate(identifier)) {
        this.ledger.noteReceipt(identifier);
        return v2Error(400, "duplicate_meter_event", `An event already exists with identifier ${identifier}.`);
      }
      const ts =
        typeof body.timestamp === "string"
          ? Math.floor(Date.parse(body.timestamp) / 1000)
          : Math.floor(this.now() / 1000);
      this.ledger.record({
        event_name: body.event_name,
        identifier,
        timestamp: ts,
        payload,
        api: "v2",
        receivedAt: this.now(),
      });
      return {
        status: 200,
        body: {
          object: "v2.billing.meter_event",
          created: new Date(this.now()).toISOString(),
          event_name: body.event_name,
          identifier,
          livemode: this.live(req),
          payload,
          timestamp: new Date(ts * 1000).toISOString(),
        },
      };
    });
  }

  private createSession(req: IncomingMessage, raw: string): Reply {
    const denied = this.authError(this.credential(req));
    if (denied) return denied;
    return this.idempotentV2(req, raw, () => {
      const token = `ek_test_${randomBytes(24).toString("hex")}`;
      const created = this.now();
      const expires = created + this.sessionTtlMs;
      this.sessions.set(token, expires);
      return {
        status: 200,
        body: {
          id: `mtr_evt_sess_${randomBytes(8).toString("hex")}`,
          object: "v2.billing.meter_event_session",
          authentication_token: token,
          created: new Date(created).toISOString(),
          expires_at: new Date(expires).toISOString(),
          livemode: this.live(req),
        },
      };
    });
  }

  private stream(req: IncomingMessage, raw: string): Reply {
    const token = this.credential(req);
    const expires = token ? this.sessions.get(token) : undefined;
    if (expires === undefined)
      return v2Error(
        401,
        "invalid_session_token",
        "Invalid or missing meter event session token.",
        "invalid_request_error",
      );
    if (expires <= this.now()) {
      return v2Error(
        401,
        "billing_meter_event_session_expired",
        "The meter event session has expired. Create a new session.",
        "temporary_session_expired",
      );
    }
    const body = this.parseJson(raw) as { events?: unknown } | undefined;
    if (!body || !Array.isArray(body.events) || body.events.length < 1 || body.events.length > 100) {
      return v2Error(400, "invalid_fields", "events must be an array of 1 to 100 meter events.");
    }
    for (const [i, e] of body.events.entries()) {
      const ev = e as { event_name?: unknown; payload?: unknown };
      if (!ev || typeof ev.event_name !== "string" || !ev.payload || typeof ev.payload !== "object") {
        return v2Error(400, "invalid_fields", `events[${i}]: event_name and payload are required.`);
      }
    }
    const nowMs = this.now();
    for (const e of body.events as Array<{
      event_name: string;
      payload: Record<string, string>;
      identifier?: string;
      timestamp?: string;
    }>) {
      const identifier = e.identifier ?? `emu_${randomBytes(12).toString("hex")}`;
      const ts = e.timestamp ? Math.floor(Date.parse(e.timestamp) / 1000) : Math.floor(nowMs / 1000);
      const value = e.payload.value;
      if (value !== undefined && significantDigits(value) > 15) {
        this.ledger.addError({
          code: "meter_event_value_too_many_digits",
          message: "The value can have at most 15 digits.",
          identifier,
          event_name: e.event_name,
        });
        continue;
      }
      this.ledger.record({
        event_name: e.event_name,
        identifier,
        timestamp: ts,
        payload: e.payload,
        api: "v2-stream",
        receivedAt: nowMs,
      });
    }
    return { status: 200, body: {} };
  }
}

function toMeterObject(m: MeterDefinition) {
  return {
    id: m.id,
    object: "billing.meter",
    event_name: m.event_name,
    status: m.status,
    display_name: m.event_name,
    livemode: false,
    default_aggregation: { formula: m.formula },
    event_time_window: null,
    customer_mapping: { type: "by_id", event_payload_key: m.customerKey },
    value_settings: { event_payload_key: m.valueKey },
  };
}

export const EMULATOR_DEFAULT_KEY = DEFAULT_KEY;
