/**
 * A trigger mapped as the consumer maps it, with nothing queued or sent: what `meterhook map`
 * prints, so that a mapping config can be tried on a sample payload before anything is billed.
 * It goes through the consumer's own decoding (lib/decode.ts) and meter-event building, so what
 * it shows is what the consumer would send; only checks that need Stripe (the meter and customer
 * checks) and customer lookups over the network are left to run time.
 */
import type { CancelTarget } from "./cancellation.js";
import { loadConfig } from "./config.js";
import type { Mapping, QueueMessage } from "./consumer.js";
import { CustomerResolver, stripeIdLookup } from "./customers.js";
import { decodeUsage } from "./decode.js";
import { MeterhookError } from "./errors.js";
import { queuedWebhook, webhookBodyRefusal } from "./ingest-api.js";
import { customerResolvers, loadMapping, toConsumerMapping } from "./mapping/runtime.js";
import { type MeterEvent, toMeterEvent, type ValueRules } from "./meter-event.js";
import { inputOf } from "./prepare.js";
import type { HttpTransport } from "./stripe/transport.js";
import { SOURCE_ATTRIBUTE, type TriggerMessage, webhookTrigger } from "./triggers.js";
import type { UsageEvent } from "./usage-event.js";

/** A sample trigger: what a webhook's request, or an app's message, would carry. */
export interface SampleTrigger {
  /** Header names as sent (they are lower-cased as API Gateway does); an SQS message's attributes. */
  headers: Record<string, string>;
  /** A webhook URL's query string, without `?`. */
  query?: string;
  body: string;
}

export type PreviewEvent =
  /** Sent as this meter event. */
  | { meterEvent: MeterEvent }
  /** Its customer is read by a lookup over the network at run time (http, stripe-search, dynamodb). */
  | { usage: UsageEvent; customerLookup: string }
  /** Not sent: dead-lettered with this code (the others of its trigger are billed). */
  | { usage: UsageEvent; refused: { code: string; message: string } };

export type Preview =
  | { outcome: "events"; events: PreviewEvent[]; cancels?: CancelTarget[] }
  | { outcome: "ignored"; message: string }
  | { outcome: "dead-letter"; code: string; message: string };
/** A webhook the HTTP side would refuse before queueing it (too large, compressed): its answer. */
export type RefusedPreview = { outcome: "refused"; status: number; code: string; message: string };

/** Never called: a preview's lookups answer only from what they hold (tables, `cus_` ids). */
const NO_NETWORK: HttpTransport = {
  send: () => Promise.reject(new Error("a preview sends nothing")),
  close: async () => {},
};

/** The mapping config's sources with their customer resolvers, as the consumer loads them. */
export async function loadPreviewMapping(file: string): Promise<Mapping> {
  const loaded = await loadMapping(file);
  // An http lookup's header secrets are never sent: one not set here (its environment variable,
  // or a store this machine cannot read) need not be.
  const unused = "unused in a preview";
  const env = new Proxy(process.env, {
    get: (vars, name) => (typeof name === "string" ? (vars[name] ?? unused) : undefined),
  });
  const resolvers = await customerResolvers(loaded, {
    transport: NO_NETWORK,
    stripeGet: async () => ({ error: "a preview sends nothing" }),
    getItem: () => Promise.reject(new Error("a preview sends nothing")),
    env,
    reader: async () => unused,
  });
  return toConsumerMapping(loaded, resolvers);
}

export async function previewTrigger(
  mapping: Mapping,
  sourceName: string,
  sample: SampleTrigger,
  /** `maxBodyBytes`: METERHOOK_MAX_BODY_BYTES, the largest webhook body the HTTP side takes. */
  options: { now?: number; valueRules?: ValueRules; maxBodyBytes?: number } = {},
): Promise<Preview | RefusedPreview> {
  const now = options.now ?? Date.now();
  const source = mapping.sources.get(sourceName);
  if (!source) {
    const names = [...mapping.sources.keys()].join(", ");
    return { outcome: "dead-letter", code: "unknown_source", message: `no source "${sourceName}" (${names})` };
  }
  // A webhook is queued as a trigger message, if the HTTP side takes it; an app's message or an
  // EventBridge event is read for the source its meterhook_source attribute names.
  const webhook = source.type === "webhook";
  let trigger: TriggerMessage | undefined;
  if (webhook) {
    const headers = Object.fromEntries(Object.entries(sample.headers).map(([k, v]) => [k.toLowerCase(), v]));
    const bytes = Buffer.byteLength(sample.body);
    const unreadable = webhookBodyRefusal(headers, bytes, options.maxBodyBytes ?? loadConfig({}).maxBodyBytes);
    const auth = source.auth;
    trigger = webhookTrigger(
      sourceName,
      now,
      { ...sample, headers },
      auth.scheme === "token" ? auth.header : undefined,
    );
    const refusal = unreadable ?? queuedWebhook(trigger).refusal;
    if (refusal) return { outcome: "refused", ...refusal };
  }
  const message: QueueMessage = {
    messageId: "preview",
    body: sample.body,
    receiveCount: 1,
    sentAt: now,
    firstReceivedAt: now,
    attributes: webhook ? {} : { ...sample.headers, [SOURCE_ATTRIBUTE]: sourceName },
  };
  // As the consumer reads an app's message: its JSON (after a byte order mark), else its text.
  const input: unknown = trigger ?? inputOf(message);
  let decoded: ReturnType<typeof decodeUsage>;
  try {
    decoded = decodeUsage(message, input, { mapping, resolver: new CustomerResolver([stripeIdLookup]) });
  } catch (err) {
    if (err instanceof MeterhookError) return { outcome: "dead-letter", code: err.code, message: err.message };
    throw err;
  }
  if (decoded.kind === "ignored")
    return {
      outcome: "ignored",
      message: `no rule of source "${decoded.source}" matches: acknowledged and not billed (unmatched: ignore)`,
    };
  if (decoded.kind === "refused") return { outcome: "dead-letter", code: decoded.code, message: decoded.message };
  // A table answers without the network; an http, stripe-search or dynamodb lookup only from its cache.
  const offline = source.customer.lookup === "table" || source.customer.lookup === "event";
  const events: PreviewEvent[] = [];
  for (const usage of decoded.events) {
    try {
      const customer = offline
        ? await decoded.resolver.resolve(usage.customer)
        : decoded.resolver.known(usage.customer);
      if (customer === undefined) events.push({ usage, customerLookup: source.customer.lookup });
      else events.push({ meterEvent: toMeterEvent(usage, customer, Math.floor(now / 1000), options.valueRules) });
    } catch (err) {
      if (!(err instanceof MeterhookError)) throw err;
      events.push({ usage, refused: { code: err.code, message: err.message } });
    }
  }
  return { outcome: "events", events, ...(decoded.cancels ? { cancels: decoded.cancels } : {}) };
}
