/**
 * Runs `init` once per cold start and shares its promise with every invocation. A failed init is
 * not cached, so the next invocation tries again (e.g. after a secret was created).
 */
export function oncePerColdStart<T>(init: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () => {
    pending ??= init().catch((err) => {
      pending = undefined;
      throw err;
    });
    return pending;
  };
}
