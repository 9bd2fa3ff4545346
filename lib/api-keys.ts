import { createHash, timingSafeEqual } from "node:crypto";
import { reloading } from "./reloading.js";

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

/**
 * createApiKeyCheck over keys kept in a store, read again as lib/reloading.ts says: a new key
 * works within MISS_RELOAD_INTERVAL_MS of a request presenting it, a removed one stops within
 * `maxAgeMs`.
 */
export function createReloadingApiKeyCheck(
  keys: readonly string[],
  reload: () => Promise<readonly string[]>,
  options: { maxAgeMs: number; now?: () => number; onReloadFailed?: (err: unknown) => void },
): (authorization: string | undefined) => Promise<boolean> {
  const checks = reloading(createApiKeyCheck(keys), async () => createApiKeyCheck(await reload()), options);
  return async (authorization) =>
    (await checks.get())(authorization) || ((await checks.afterMiss())?.(authorization) ?? false);
}
