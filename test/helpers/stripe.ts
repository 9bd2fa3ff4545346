import { silentLogger } from "../../lib/logger.js";
import type { MeterEvent } from "../../lib/meter-event.js";
import { meterEventIdentifier } from "../../lib/meter-event.js";
import { StripeClient } from "../../lib/stripe/client.js";
import { DEFAULT_RETRY } from "../../lib/stripe/retry-policy.js";
import { createWireTransport } from "../../lib/stripe/wire.js";
import { EMULATOR_DEFAULT_KEY, type EmulatorOptions, StripeEmulator } from "../../local/stripe-emulator/server.js";

/** Retries fast: the policy is the production one, only the base delay is shorter. */
export const FAST_RETRY = { ...DEFAULT_RETRY, baseDelayMs: 5, maxDelayMs: 20 };

export async function startEmulator(options: EmulatorOptions = {}): Promise<StripeEmulator> {
  const emulator = new StripeEmulator(options);
  await emulator.start(0);
  return emulator;
}

export function clientFor(
  emulator: StripeEmulator,
  overrides: { apiKey?: string; timeoutMs?: number; maxAttempts?: number } = {},
) {
  const transport = createWireTransport({ connections: 8 });
  const client = new StripeClient(
    {
      apiKey: overrides.apiKey ?? EMULATOR_DEFAULT_KEY,
      apiBase: emulator.url,
      meterEventsBase: emulator.url,
      timeoutMs: overrides.timeoutMs ?? 2_000,
      retry: { ...FAST_RETRY, maxAttempts: overrides.maxAttempts ?? FAST_RETRY.maxAttempts },
    },
    transport,
    silentLogger,
  );
  return { client, transport };
}

export function meterEvent(n: number, overrides: Partial<MeterEvent> = {}): MeterEvent {
  return {
    event_name: "api_requests",
    identifier: meterEventIdentifier(`req_${n}`, "api_requests"),
    timestamp: Math.floor(Date.now() / 1000) - 10,
    payload: { stripe_customer_id: "cus_A", value: "1" },
    ...overrides,
  };
}

export const inAMinute = () => Date.now() + 60_000;

/** Stripe's answer to a restricted key without the permission an endpoint needs. */
export const RESTRICTED_KEY_REFUSAL = {
  status: 403,
  body: {
    error: {
      type: "invalid_request_error",
      message: "The provided key 'rk_test_****1234' does not have the required permissions for this endpoint.",
    },
  },
};
