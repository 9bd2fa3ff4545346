import type { StripeEmulator } from "../../local/stripe-emulator/server.js";
import { EMULATOR_DEFAULT_KEY } from "../../local/stripe-emulator/server.js";
import { startTestQueues, type TestQueues } from "./sqs.js";
import { startEmulator } from "./stripe.js";

/** The parts a consumer test runs against: fauxqs (ingest queue, DLQ) and the Stripe emulator. */
export interface PipelineParts {
  queues: TestQueues;
  emulator: StripeEmulator;
  stop(): Promise<void>;
}

export async function startPipelineParts(): Promise<PipelineParts> {
  const queues = await startTestQueues();
  const emulator = await startEmulator();
  return {
    queues,
    emulator,
    async stop() {
      await emulator.stop();
      await queues.stop();
    },
  };
}

/** The consumer's environment against these parts, as the deployed one is shaped. */
export function consumerEnv(parts: PipelineParts, extra: Record<string, string> = {}): Record<string, string> {
  return {
    STRIPE_API_KEY: EMULATOR_DEFAULT_KEY,
    STRIPE_API_BASE: parts.emulator.url,
    STRIPE_METER_EVENTS_BASE: parts.emulator.url,
    METERHOOK_DLQ_URL: parts.queues.deadLetterQueueUrl,
    SQS_ENDPOINT: parts.queues.endpoint,
    ...extra,
  };
}
