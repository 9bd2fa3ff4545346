import type { QueueSender } from "./queue.js";
import { TRIGGER_FORMAT, type TriggerMessage } from "./triggers.js";

/**
 * EventBridge entry: each event is queued as a raw trigger; the consumer picks the source by
 * `source`/`detail-type` and maps it, so a dead-lettered event can be mapped again after a config
 * fix. Throws when the queue cannot take it, so EventBridge retries the delivery.
 */
export function createEventBridgeIngest(queue: QueueSender, now: () => number = Date.now) {
  return async (event: unknown): Promise<void> => {
    const trigger: TriggerMessage = {
      meterhook: TRIGGER_FORMAT,
      kind: "eventbridge",
      receivedAt: new Date(now()).toISOString(),
      headers: {},
      body: JSON.stringify(event),
    };
    const { failed } = await queue.send([{ key: "0", body: JSON.stringify(trigger) }]);
    if (failed.length > 0) throw new Error("could not queue the EventBridge event");
  };
}
