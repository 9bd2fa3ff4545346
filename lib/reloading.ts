/**
 * A value read from a secret store (SSM, Secrets Manager) that is read again while a warm Lambda
 * runs, so that rotating it needs no deploy: when it is older than `maxAgeMs` (a removed secret
 * stops working within that time), and after a request it did not match (a new secret works at
 * once, at most one read per `missIntervalMs`, so guesses cannot flood the store). Reads are
 * shared by the requests waiting for them; a failed read keeps the value in use.
 */
export interface Reloading<T> {
  /** The value as last read, without reading. */
  current(): T;
  /** The value, read again first when it is older than maxAgeMs. */
  get(): Promise<T>;
  /** After the value did not match a request: the value read again, or undefined when it was read too recently. */
  afterMiss(): Promise<T | undefined>;
  /** The value read again now (or by the read in flight), whatever its age: e.g. while none was ever read. */
  reload(): Promise<T>;
}

/** A value that did not match is read again at most this often (an attacker's guesses included). */
export const MISS_RELOAD_INTERVAL_MS = 30_000;

export function reloading<T>(
  initial: T,
  reload: () => Promise<T>,
  options: {
    /** Read again when older than this; never for its age when unset. */
    maxAgeMs?: number;
    /** After a miss, read again at most this often (MISS_RELOAD_INTERVAL_MS unless set). */
    missIntervalMs?: number;
    /**
     * When `initial` was read (now unless set): a miss within missIntervalMs of it reads nothing.
     * Number.NEGATIVE_INFINITY makes the first miss read whenever it comes.
     */
    readAt?: number;
    now?: () => number;
    onReloadFailed?: (err: unknown) => void;
  },
): Reloading<T> {
  const now = options.now ?? Date.now;
  const missIntervalMs = options.missIntervalMs ?? MISS_RELOAD_INTERVAL_MS;
  let value = initial;
  let readAt = options.readAt ?? now();
  let reading: Promise<T> | undefined;
  const read = (): Promise<T> => {
    reading ??= reload()
      .then(
        (fresh) => {
          value = fresh;
        },
        (err: unknown) => options.onReloadFailed?.(err),
      )
      .then(() => value)
      .finally(() => {
        readAt = now();
        reading = undefined;
      });
    return reading;
  };
  return {
    current: () => value,
    async get() {
      if (reading) return reading;
      return options.maxAgeMs !== undefined && now() - readAt >= options.maxAgeMs ? read() : value;
    },
    async afterMiss() {
      if (reading) return reading;
      return now() - readAt < missIntervalMs ? undefined : read();
    },
    reload: read,
  };
}
