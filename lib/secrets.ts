import type { Config, SecretSource } from "./config.js";
import { ConfigError } from "./errors.js";
import { registerSecret } from "./redact.js";
import { reloading } from "./reloading.js";

/** Reads one secret's value from wherever it is stored. */
export type SecretReader = (source: SecretSource) => Promise<string>;

function describe(source: SecretSource): string {
  return source.store === "ssm" ? `SSM parameter ${source.name}` : `secret ${source.name}`;
}

/**
 * One secret's value from its store, trimmed (a value pasted or written from a file often ends in
 * a newline); `what` names its use in errors ("webhook "). Fails start-up naming it, never the value.
 */
export async function readSecret(reader: SecretReader, source: SecretSource, what = ""): Promise<string> {
  let value: string;
  try {
    value = (await reader(source)).trim();
  } catch (err) {
    // The cause may be an SDK error; its message names the parameter, never the value.
    throw new ConfigError(`cannot read ${what}${describe(source)}: ${(err as Error).message}`);
  }
  if (!value) throw new ConfigError(`${what}${describe(source)} is empty`);
  return value;
}

/**
 * Fills the secrets a config points at (SSM Parameter Store or Secrets Manager) into a copy of
 * it. Called once per cold start; the values are registered for redaction before any use.
 */
export async function resolveSecrets(
  config: Config,
  reader: SecretReader,
  needs: { apiKeys?: boolean; stripeKey?: boolean },
): Promise<Config> {
  let apiKeys = config.apiKeys;
  let stripeKey = config.stripe.apiKey;
  const jobs: Promise<void>[] = [];
  if (needs.apiKeys && config.apiKeysSource) {
    const source = config.apiKeysSource;
    jobs.push(
      readSecret(reader, source).then((v) => {
        apiKeys = listedSecrets(v);
      }),
    );
  }
  if (needs.stripeKey && config.stripe.apiKeySource) {
    const source = config.stripe.apiKeySource;
    jobs.push(
      readSecret(reader, source).then((v) => {
        stripeKey = v;
        registerSecret(v);
      }),
    );
  }
  await Promise.all(jobs);
  return Object.freeze({ ...config, apiKeys, stripe: { ...config.stripe, apiKey: stripeKey } });
}

/** The secrets a stored value lists (comma-separated: API keys, signing secrets), registered for redaction. */
function listedSecrets(value: string): string[] {
  const keys = value
    .split(",")
    .map((k) => k.trim())
    .filter(Boolean);
  for (const k of keys) registerSecret(k);
  return keys;
}

/**
 * Reads the API keys again from their store (lib/api-keys.ts createReloadingApiKeyCheck), or
 * undefined when they are not kept in one. An empty list is refused: it would lock every app out.
 */
export function apiKeysReloader(config: Config, reader: SecretReader): (() => Promise<string[]>) | undefined {
  const source = config.apiKeysSource;
  if (!source) return undefined;
  return async () => {
    const keys = listedSecrets(await readSecret(reader, source));
    if (keys.length === 0) throw new ConfigError(`${describe(source)} lists no API key`);
    return keys;
  };
}

/**
 * Reads the Stripe key again from its store (after Stripe refused it: the key may have been
 * rolled), registered for redaction before it is returned. Undefined when the key is not kept in
 * a store, so there is nothing to read again.
 */
export function stripeKeyReloader(config: Config, reader: SecretReader): (() => Promise<string>) | undefined {
  const source = config.stripe.apiKeySource;
  if (!source) return undefined;
  return async () => {
    const value = await readSecret(reader, source);
    registerSecret(value);
    return value;
  };
}

/**
 * The signing secrets of the Stripe event destination (STRIPE_EVENTS_SECRET, or its store),
 * registered for redaction. From a store they are read at the first notification, not at cold
 * start (a stack that never sets up a destination has no such secret), then again when
 * `maxAgeMs` old and after a signature matched none (a rolled secret). A first read that fails
 * throws, and is tried again at the next notification.
 */
export function stripeEventsSecrets(
  config: Config,
  reader: SecretReader,
  options: { maxAgeMs: number; onReloadFailed: (err: unknown) => void },
): { secrets(): Promise<readonly string[]>; secretsAfterMiss(): Promise<readonly string[] | undefined> } {
  const source = config.stripe.eventsSecretSource;
  if (!source) {
    const fixed = config.stripe.eventsSecrets;
    return { secrets: async () => fixed, secretsAfterMiss: async () => undefined };
  }
  const read = async () => listedSecrets(await readSecret(reader, source, "Stripe events "));
  let held: ReturnType<typeof reloading<readonly string[]>> | undefined;
  const first = async () => {
    const value = await read();
    held ??= reloading<readonly string[]>(value, read, options);
    return value;
  };
  return {
    secrets: async () => (held ? held.get() : first()),
    secretsAfterMiss: async () => (held ? held.afterMiss() : undefined),
  };
}
