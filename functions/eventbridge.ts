import type { EventBridgeEvent } from "aws-lambda";
import { sqsClientFor } from "../lib/app.js";
import { loadConfig, required } from "../lib/config.js";
import { createEventBridgeIngest } from "../lib/eventbridge-ingest.js";
import { createSqsSender } from "../lib/queue.js";
import { oncePerColdStart } from "./support/cold-start.js";

/** Target of the EventBridge rule(s): queues each event for the consumer to map. */
export function createEventBridgeHandler(getIngest: () => Promise<(event: unknown) => Promise<void>>) {
  return async (event: EventBridgeEvent<string, unknown>): Promise<void> => {
    await (await getIngest())(event);
  };
}

export const handler = createEventBridgeHandler(
  oncePerColdStart(async () => {
    const config = loadConfig();
    return createEventBridgeIngest(
      createSqsSender(sqsClientFor(config), required(config.ingestQueueUrl, "METERHOOK_INGEST_QUEUE_URL")),
    );
  }),
);
