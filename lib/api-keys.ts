import { createHash, timingSafeEqual } from "node:crypto";

const digest = (s: string) => createHash("sha256").update(s).digest();

/**
 * Checks `Authorization: Bearer <key>` against the configured keys. Keys are compared as SHA-256
 * digests with timingSafeEqual, always against every key, so neither the length nor the position
 * of a match shows in the response time.
 */
export function createApiKeyCheck(keys: readonly string[]): (authorization: string | undefined) => boolean {
  const digests = keys.map(digest);
  return (authorization) => {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
    const presented = digest(match?.[1] ?? "");
    let ok = false;
    for (const d of digests) ok = timingSafeEqual(d, presented) || ok;
    return ok && match !== null;
  };
}

/** A key no configured key matches reads the store again at most this often (an attacker's guesses included). */
export const MISS_RELOAD_INTERVAL_MS = 30_000;

/**
 * createApiKeyCheck over keys kept in a store (SSM, Secrets Manager), read again so that a
 * rotation needs no deploy: when the keys are older than `maxAgeMs` (a removed key stops working
 * within that time), and when a presented key matches none (a new key works at once; at most one
 * read per MISS_RELOAD_INTERVAL_MS). Reads are shared by the requests waiting for them; a failed
 * read keeps the keys in use.
 */
export function createReloadingApiKeyCheck(
  keys: readonly string[],
  reload: () => Promise<readonly string[]>,
  options: { maxAgeMs: number; now?: () => number; onReloadFailed?: (err: unknown) => void },
): (authorization: string | undefined) => Promise<boolean> {
  const now = options.now ?? Date.now;
  let check = createApiKeyCheck(keys);
  let readAt = now();
  let reading: Promise<void> | undefined;
  const read = (): Promise<void> => {
    reading ??= reload()
      .then(
        (fresh) => {
          check = createApiKeyCheck(fresh);
        },
        (err: unknown) => options.onReloadFailed?.(err),
      )
      .finally(() => {
        readAt = now();
        reading = undefined;
      });
    return reading;
  };
  return async (authorization) => {
    if (reading) await reading;
    else if (now() - readAt >= options.maxAgeMs) await read();
    if (check(authorization)) return true;
    if (now() - readAt < MISS_RELOAD_INTERVAL_MS) return false;
    await read();
    return check(authorization);
  };
}
