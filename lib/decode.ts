/**
 * What a queue message's body holds, as usage events: a canonical event, or a trigger (an HTTP
 * webhook, an EventBridge event, an app's own message) mapped by its source's rules. No I/O:
 * customers are resolved afterwards (lib/prepare.ts).
 */
import type { CancelTarget } from "./cancellation.js";
import type { ConsumerDeps, Mapping, QueueMessage } from "./consumer.js";
import type { CustomerResolver } from "./customers.js";
import { DeadLetterCode } from "./errors.js";
import type { Source, Trigger } from "./mapping/engine.js";
import { isEventBridgeEvent, isTriggerMessage, queryFields, SOURCE_ATTRIBUTE, triggerBody } from "./triggers.js";
import { parseUsageEvent, type UsageEvent } from "./usage-event.js";

export type DecodedUsage =
  | {
      kind: "events";
      events: UsageEvent[];
      /** Meter events a trigger's rules cancel (lib/cancellation.ts). */
      cancels?: CancelTarget[];
      source?: Source;
      resolver: CustomerResolver;
    }
  /** A trigger no rule matched, whose source says `unmatched: ignore`. */
  | { kind: "ignored"; source: string }
  /** It can never be mapped as it is: dead-letter it with this code. */
  | { kind: "refused"; code: DeadLetterCode; message: string; source?: string };

const looksCanonical = (x: unknown) =>
  !!x && typeof x === "object" && "id" in x && "event_name" in x && "customer" in x;

/**
 * `input` is the message's parsed body (its text when an app's message for a named source is not
 * JSON). Throws InvalidEventError for a canonical event that breaks the schema, and whatever the
 * mapping throws for a trigger it fails on.
 */
export function decodeUsage(
  m: QueueMessage,
  input: unknown,
  deps: Pick<ConsumerDeps, "mapping" | "resolver">,
): DecodedUsage {
  const mapping = deps.mapping;
  let trigger: Trigger | undefined;
  let sourceName: string | undefined;
  if (isTriggerMessage(input)) {
    const body = triggerBody(input);
    sourceName = input.source;
    if (!sourceName && input.kind === "eventbridge" && mapping) sourceName = matchEventBridge(mapping, body);
    trigger = {
      source: sourceName ?? "",
      headers: input.headers,
      query: queryFields(input),
      body,
      receivedAt: Date.parse(input.receivedAt) || m.sentAt,
    };
  } else {
    const named = m.attributes?.[SOURCE_ATTRIBUTE];
    // An EventBridge event a rule sent to the queue itself (an SQS target), not through the
    // eventBridge function: mapped by the eventbridge source its `match` picks, as it would be.
    const eventBridge = !named && isEventBridgeEvent(input);
    const canonical = looksCanonical(input);
    sourceName =
      named ??
      (eventBridge && mapping ? matchEventBridge(mapping, input) : undefined) ??
      (canonical ? undefined : mapping?.defaultSqsSource);
    if (sourceName) trigger = { source: sourceName, headers: m.attributes ?? {}, body: input, receivedAt: m.sentAt };
    else if (eventBridge && !canonical) {
      const e = input as { source: string; "detail-type": string };
      return {
        kind: "refused",
        code: DeadLetterCode.unknownSource,
        message: `no eventbridge source's match takes this EventBridge event (source "${e.source.slice(0, 100)}", detail-type "${e["detail-type"].slice(0, 100)}")`,
      };
    }
  }
  if (!trigger) return { kind: "events", events: [parseUsageEvent(input, m.sentAt / 1000)], resolver: deps.resolver };
  const source = sourceName ? mapping?.sources.get(sourceName) : undefined;
  if (!source) {
    return {
      kind: "refused",
      code: DeadLetterCode.unknownSource,
      message: sourceName ? `no source "${sourceName}" in the mapping config` : "no source matches this trigger",
    };
  }
  const outcome = (mapping as Mapping).map(source, trigger);
  if (outcome.kind === "unmatched") {
    return source.unmatched === "ignore"
      ? { kind: "ignored", source: source.name }
      : {
          kind: "refused",
          code: DeadLetterCode.noMatchingRule,
          message: `no rule of source "${source.name}" matches`,
          source: source.name,
        };
  }
  return {
    kind: "events",
    events: outcome.events,
    // None for most triggers: what follows reads "cancels something" as `cancels` being set.
    cancels: outcome.cancels.length > 0 ? outcome.cancels : undefined,
    source,
    resolver: mapping?.resolvers.get(source.name) ?? deps.resolver,
  };
}

/** Whether an EventBridge source's `match` takes this event (by `source` and `detail-type`). */
export function takesEventBridgeEvent(s: Pick<Source, "type" | "match">, event: unknown): boolean {
  const e = event as { source?: unknown; "detail-type"?: unknown } | null;
  const has = (want: string | string[] | undefined, got: unknown) =>
    want === undefined || (typeof got === "string" && [want].flat().includes(got));
  return (
    s.type === "eventbridge" &&
    !!s.match &&
    has(s.match.source, e?.source) &&
    has(s.match.detailType, e?.["detail-type"])
  );
}

/** The EventBridge source whose `match` takes this event. */
function matchEventBridge(mapping: Mapping, event: unknown): string | undefined {
  for (const s of mapping.sources.values()) if (takesEventBridgeEvent(s, event)) return s.name;
  return undefined;
}
