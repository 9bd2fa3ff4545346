import { after, before } from "node:test";
import { EMULATOR_DEFAULT_KEY, type EmulatorOptions, type StripeEmulator } from "../../local/stripe-emulator/server.js";
import { startTestQueues, type TestQueues } from "./sqs.js";
import { startEmulator } from "./stripe.js";

/** The parts a consumer test runs against: fauxqs (ingest queue, DLQ) and the Stripe emulator. */
export interface PipelineParts {
  queues: TestQueues;
  emulator: StripeEmulator;
  stop(): Promise<void>;
}

export async function startPipelineParts(emulatorOptions: EmulatorOptions = {}): Promise<PipelineParts> {
  const queues = await startTestQueues();
  const emulator = await startEmulator(emulatorOptions);
  return {
    queues,
    emulator,
    async stop() {
      await emulator.stop();
      await queues.stop();
    },
  };
}

/**
 * The parts for one test file: started before its tests, stopped after them. Its fields are
 * read inside tests and hooks, once the file's `before` has run.
 */
export function usePipelineParts(emulatorOptions: EmulatorOptions = {}): PipelineParts {
  let started: PipelineParts | undefined;
  const get = (): PipelineParts => {
    if (!started) throw new Error("pipeline parts read before the test file's before hook ran");
    return started;
  };
  before(async () => {
    started = await startPipelineParts(emulatorOptions);
  });
  after(() => started?.stop());
  return {
    get queues() {
      return get().queues;
    },
    get emulator() {
      return get().emulator;
    },
    stop: () => get().stop(),
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
