/**
 * Cancelling an event meterhook was asked to bill: what an app sends to `POST /v1/events/cancel`
 * or puts on the ingest queue, and the meter event it names. The identifier is derived as the
 * event's own was (lib/meter-event.ts), so a cancellation needs only what the app already knows.
 */
import * as z from "zod";
import { DeadLetterCode, InvalidEventError } from "./errors.js";
import { meterEventIdentifier } from "./meter-event.js";
import { describeIssue, MAX_EVENT_NAME_LENGTH, MAX_ID_LENGTH, Text } from "./usage-event.js";

/** The `meterhook` field of a cancellation on the ingest queue. */
export const CANCEL_FORMAT = "cancel/1";

/**
 * `id` and `event_name` as the event had them; for an event a mapping source made, `source` and
 * `rule` name the source and the rule that made it (both, or neither).
 */
export const CancellationSchema = z
  .strictObject({
    id: z.union([Text(MAX_ID_LENGTH), z.number().transform(String)]),
    event_name: Text(MAX_EVENT_NAME_LENGTH),
    source: Text(MAX_ID_LENGTH).optional(),
    rule: Text(MAX_ID_LENGTH).optional(),
  })
  .refine((c) => (c.source === undefined) === (c.rule === undefined), "source and rule go together");
export type Cancellation = z.output<typeof CancellationSchema>;

/** As it waits on the ingest queue. */
export type CancelMessage = Cancellation & { meterhook: typeof CANCEL_FORMAT };

/** A cancellation from an app; throws InvalidEventError (`invalid_event`) naming what is wrong. */
export function parseCancellation(input: unknown): Cancellation {
  const parsed = CancellationSchema.safeParse(input);
  if (parsed.success) return parsed.data;
  const first = parsed.error.issues[0];
  const { path, message } = first ? describeIssue(first) : { path: "", message: "invalid cancellation" };
  throw new InvalidEventError(DeadLetterCode.invalidEvent, message, path || undefined);
}

export function isCancelMessage(x: unknown): x is CancelMessage {
  return !!x && typeof x === "object" && (x as { meterhook?: unknown }).meterhook === CANCEL_FORMAT;
}

/** The ingest-queue body of a cancellation. */
export function cancelMessageBody(c: Cancellation): string {
  const m: CancelMessage = { meterhook: CANCEL_FORMAT, ...c };
  return JSON.stringify(m);
}

/** A meter event to cancel, as Stripe names it. */
export interface CancelTarget {
  event_name: string;
  identifier: string;
}

/** The meter event a cancellation names. */
export function cancelTarget(c: Cancellation): CancelTarget {
  return { event_name: c.event_name, identifier: cancelledIdentifier(c) };
}

/** The identifier of the meter event a cancellation names. */
export function cancelledIdentifier(c: Cancellation): string {
  return meterEventIdentifier(c.id, c.event_name, c.source === undefined ? undefined : `${c.source}/${c.rule}`);
}
