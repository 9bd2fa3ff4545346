/**
 * The emulator's book of meters, accepted events and per-customer totals: what Stripe would
 * eventually show in meter event summaries. Validation that Stripe does asynchronously happens
 * here, on receipt; failures are kept as error reports instead of totals.
 */
export interface MeterDefinition {
  id: string;
  event_name: string;
  formula: "sum" | "count" | "last";
  customerKey: string;
  valueKey: string;
  status: "active" | "inactive";
}

export interface ReceivedEvent {
  event_name: string;
  identifier: string;
  /** Unix seconds. */
  timestamp: number;
  payload: Record<string, string>;
  api: "v1" | "v2" | "v2-stream";
  receivedAt: number;
}

export interface AsyncError {
  code: string;
  message: string;
  identifier: string;
  event_name: string;
}

export interface LedgerOptions {
  /** `auto` creates a sum meter for any unknown event_name (local convenience; Stripe would report no_meter). */
  meters: "auto" | Array<Partial<MeterDefinition> & { event_name: string }>;
  /** Customers that exist (ids, or ids with metadata); `any` accepts every `cus_` id. */
  customers: "any" | Array<string | { id: string; metadata?: Record<string, string> }>;
  now: () => number;
  /** Hears each asynchronous error as it is recorded (the emulator's error reports). */
  onError?: (e: AsyncError) => void;
}

const DAY = 86_400;

/** A meter's total for a customer: the sum kept exactly, in integer units of 10^-scale, as Stripe sums decimals. */
interface Total {
  units: bigint;
  scale: number;
  count: number;
  last: number;
}
const newTotal = (): Total => ({ units: 0n, scale: 0, count: 0, last: 0 });

/** One more event, its value a decimal's text (check() has refused any other), in a total. */
function addTo(t: Total, value: string): void {
  const [, sign, whole, fraction = ""] = /^(-?)(\d+)(?:\.(\d+))?$/.exec(value) ?? ["", "", "0"];
  if (fraction.length > t.scale) {
    t.units *= 10n ** BigInt(fraction.length - t.scale);
    t.scale = fraction.length;
  }
  const units = BigInt(`${whole}${fraction}`) * 10n ** BigInt(t.scale - fraction.length);
  t.units += sign === "-" ? -units : units;
  t.count += 1;
  t.last = Number(value);
}

/** The sum as a JSON number, as Stripe's summaries give it. */
function sumOf(t: Total): number {
  const digits = (t.units < 0n ? -t.units : t.units).toString().padStart(t.scale + 1, "0");
  const point = digits.length - t.scale;
  return Number(`${t.units < 0n ? "-" : ""}${digits.slice(0, point)}.${digits.slice(point)}0`);
}
const IDENTIFIER_WINDOW_MS = 24 * 3600 * 1000;

export class Ledger {
  readonly meters = new Map<string, MeterDefinition>();
  /** identifier → first time it was received (ms). Stripe dedupes over at least 24 h. */
  private readonly identifiers = new Map<string, number>();
  /** identifier → how many times an event with it arrived, duplicates included. */
  readonly receipts = new Map<string, number>();
  readonly events: ReceivedEvent[] = [];
  readonly errors: AsyncError[] = [];
  /** meter id → customer → aggregate. */
  private readonly totals = new Map<string, Map<string, Total>>();
  private nextMeter = 1;
  /** Known customers and their metadata (searchable). */
  readonly customers = new Map<string, Record<string, string>>();

  constructor(private readonly options: LedgerOptions) {
    if (options.meters !== "auto") for (const m of options.meters) this.defineMeter(m);
    if (options.customers !== "any") {
      for (const c of options.customers) {
        if (typeof c === "string") this.customers.set(c, {});
        else this.customers.set(c.id, c.metadata ?? {});
      }
    }
  }

  defineMeter(m: Partial<MeterDefinition> & { event_name: string }): MeterDefinition {
    const meter: MeterDefinition = {
      id: m.id ?? `mtr_emu${String(this.nextMeter++).padStart(6, "0")}`,
      event_name: m.event_name,
      formula: m.formula ?? "sum",
      customerKey: m.customerKey ?? "stripe_customer_id",
      valueKey: m.valueKey ?? "value",
      status: m.status ?? "active",
    };
    this.meters.set(meter.event_name, meter);
    return meter;
  }

  meterFor(eventName: string): MeterDefinition | undefined {
    const found = this.meters.get(eventName);
    if (found || this.options.meters !== "auto") return found;
    return this.defineMeter({ event_name: eventName });
  }

  isDuplicate(identifier: string): boolean {
    const first = this.identifiers.get(identifier);
    return first !== undefined && this.options.now() - first < IDENTIFIER_WINDOW_MS;
  }

  /** Customers deleted (their events are refused, as for an unknown customer). */
  readonly deletedCustomers = new Set<string>();

  customerExists(id: string): boolean {
    if (this.deletedCustomers.has(id)) return false;
    return this.customers.has(id) || (this.options.customers === "any" && id.startsWith("cus_"));
  }

  /** Why Stripe would refuse this event once it processes it, or undefined when it counts. */
  check(e: Omit<ReceivedEvent, "api" | "receivedAt">): { code: string; message: string } | undefined {
    const meter = this.meterFor(e.event_name);
    if (!meter) return { code: "no_meter", message: `No meter was found matching event_name ${e.event_name}.` };
    if (meter.status !== "active") return { code: "archived_meter", message: `Meter ${meter.id} is inactive.` };
    const customer = e.payload[meter.customerKey];
    if (customer === undefined) {
      return {
        code: "meter_event_no_customer_defined",
        message: `Customer mapping key ${meter.customerKey} not found in payload.`,
      };
    }
    const value = e.payload[meter.valueKey];
    if (value === undefined && meter.formula !== "count") {
      return { code: "meter_event_value_not_found", message: `Value key ${meter.valueKey} not found in payload.` };
    }
    if (value !== undefined && !/^-?\d+(\.\d+)?$/.test(value)) {
      return { code: "meter_event_invalid_value", message: `Value ${value} is not a number.` };
    }
    if (!this.customerExists(customer)) {
      return { code: "meter_event_customer_not_found", message: `Customer ${customer} was not found.` };
    }
    return this.timestampProblem(e.timestamp);
  }

  /** Why Stripe would refuse an event at this Unix time: outside the past 35 days and next 5 minutes. */
  timestampProblem(timestamp: number): { code: string; message: string } | undefined {
    const nowS = Math.floor(this.options.now() / 1000);
    if (timestamp < nowS - 35 * DAY) {
      return { code: "timestamp_too_far_in_past", message: "Timestamp is more than 35 days in the past." };
    }
    if (timestamp > nowS + 300) {
      return { code: "timestamp_in_future", message: "Timestamp is more than 5 minutes in the future." };
    }
    return undefined;
  }

  /** An event Stripe accepted and then refused in its asynchronous checks. */
  addError(e: AsyncError): void {
    this.errors.push(e);
    this.options.onError?.(e);
  }

  /** Counts one arrival of an identifier, duplicates included (for ledger checks). */
  noteReceipt(identifier: string): void {
    this.receipts.set(identifier, (this.receipts.get(identifier) ?? 0) + 1);
  }

  /** Records an event Stripe accepted for processing; counts it unless it fails the async checks. */
  record(e: ReceivedEvent): void {
    this.noteReceipt(e.identifier);
    if (this.isDuplicate(e.identifier)) {
      // On the stream a duplicate is dropped asynchronously; it never counts twice.
      this.addError({
        code: "duplicate_meter_event",
        message: `An event already exists with identifier ${e.identifier}.`,
        identifier: e.identifier,
        event_name: e.event_name,
      });
      return;
    }
    this.identifiers.set(e.identifier, e.receivedAt);
    const problem = this.check(e);
    if (problem) {
      this.addError({ ...problem, identifier: e.identifier, event_name: e.event_name });
      return;
    }
    this.events.push(e);
    const meter = this.meterFor(e.event_name) as MeterDefinition;
    const customer = e.payload[meter.customerKey] as string;
    let byCustomer = this.totals.get(meter.id);
    if (!byCustomer) {
      byCustomer = new Map();
      this.totals.set(meter.id, byCustomer);
    }
    const t = byCustomer.get(customer) ?? newTotal();
    addTo(t, e.payload[meter.valueKey] ?? "0");
    byCustomer.set(customer, t);
  }

  /** Identifiers of cancelled events (meter event adjustments); they no longer count. */
  readonly cancelled = new Set<string>();

  /**
   * Cancels the counted event with this identifier and event_name (a meter event adjustment of
   * type `cancel`), if Stripe received it less than 24 h ago; its meter's total for its customer
   * is counted again without it. Stripe's answers when it cannot are not documented
   * (METER_API.md §12, item 11): these are the emulator's.
   */
  cancel(eventName: string, identifier: string): { code: string; message: string } | undefined {
    let event: ReceivedEvent | undefined;
    for (let i = this.events.length - 1; i >= 0 && !event; i--) {
      const e = this.events[i] as ReceivedEvent;
      if (e.identifier === identifier && e.event_name === eventName) event = e;
    }
    if (!event) {
      return {
        code: "resource_missing",
        message: `No meter event with identifier ${identifier} was found for event_name ${eventName}.`,
      };
    }
    if (this.cancelled.has(identifier)) {
      return { code: "", message: `The meter event with identifier ${identifier} has already been cancelled.` };
    }
    if (this.options.now() - event.receivedAt >= IDENTIFIER_WINDOW_MS) {
      return { code: "", message: "Meter events can only be cancelled within 24 hours of Stripe receiving them." };
    }
    this.cancelled.add(identifier);
    const meter = this.meterFor(eventName) as MeterDefinition;
    const customer = event.payload[meter.customerKey] as string;
    const t = newTotal();
    for (const e of this.events) {
      if (e.event_name !== eventName || e.payload[meter.customerKey] !== customer || this.cancelled.has(e.identifier))
        continue;
      addTo(t, e.payload[meter.valueKey] ?? "0");
    }
    this.totals.get(meter.id)?.set(customer, t);
    return undefined;
  }

  /**
   * Forgets every event, error, receipt and total (meters and customers stay): a benchmark
   * starts each run from the same ledger, as Stripe's does not slow down with an account's history.
   */
  forgetEvents(): void {
    this.identifiers.clear();
    this.receipts.clear();
    this.events.length = 0;
    this.errors.length = 0;
    this.cancelled.clear();
    this.totals.clear();
  }

  aggregate(meterId: string, customer: string): number {
    const meter = [...this.meters.values()].find((m) => m.id === meterId);
    const t = this.totals.get(meterId)?.get(customer);
    if (!meter || !t) return 0;
    return meter.formula === "sum" ? sumOf(t) : meter.formula === "count" ? t.count : t.last;
  }

  /** Every meter's totals per customer (GET /v1/billing/meters/summaries). */
  summaries(): Array<{
    meter: string;
    event_name: string;
    formula: string;
    customer: string;
    aggregated_value: number;
    event_count: number;
  }> {
    const out = [];
    for (const meter of this.meters.values()) {
      for (const [customer, t] of this.totals.get(meter.id) ?? []) {
        out.push({
          meter: meter.id,
          event_name: meter.event_name,
          formula: meter.formula,
          customer,
          aggregated_value: this.aggregate(meter.id, customer),
          event_count: t.count,
        });
      }
    }
    return out;
  }
}
