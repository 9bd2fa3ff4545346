import { CustomerNotFoundError } from "./errors.js";

/**
 * Maps an app's customer reference to a Stripe customer id. Every kind of lookup (a static table
 * now; HTTP, Stripe search later) sits behind this one interface. `resolve` answers undefined
 * when nothing is mapped, and throws a retryable error when the lookup itself failed.
 */
export interface CustomerLookup {
  readonly name: string;
  /**
   * `startBy` (epoch ms): the latest a request may start; a lookup that must wait longer for its
   * turn (a rate limit) fails transiently instead.
   */
  resolve(customer: string, startBy?: number): Promise<string | undefined>;
  /**
   * The answer when it is known without I/O (a table, a cache hit): the id, or null for "not
   * mapped". Undefined means "ask resolve()". Lets the consumer skip a promise per event.
   */
  known?(customer: string): string | null | undefined;
}

export const STRIPE_CUSTOMER_PREFIX = "cus_";

/** A Stripe customer id: `cus_` and something after it (`cus_` alone names no customer). */
export const isStripeCustomerId = (s: string): boolean =>
  s.length > STRIPE_CUSTOMER_PREFIX.length && s.startsWith(STRIPE_CUSTOMER_PREFIX);

/** `cus_` ids are Stripe's already: used as they are. */
export const stripeIdLookup: CustomerLookup = {
  name: "stripe-id",
  resolve: async (customer) => (isStripeCustomerId(customer) ? customer : undefined),
  known: (customer) => (isStripeCustomerId(customer) ? customer : null),
};

/** A fixed table from app account ids to Stripe customer ids (from config). */
export function staticTableLookup(table: ReadonlyMap<string, string>): CustomerLookup {
  return {
    name: "static-table",
    resolve: async (customer) => table.get(customer),
    known: (customer) => table.get(customer) ?? null,
  };
}

/**
 * Caches answers for `ttlMs` (found) and `negativeTtlMs` (not found); failures are not cached.
 * Concurrent lookups of the same customer share one request.
 */
export function cachedLookup(
  inner: CustomerLookup,
  options: { ttlMs: number; negativeTtlMs: number; now?: () => number; maxEntries?: number },
): CustomerLookup {
  const now = options.now ?? Date.now;
  const max = options.maxEntries ?? 10_000;
  const cache = new Map<string, { id: string | undefined; expires: number }>();
  const inflight = new Map<string, Promise<string | undefined>>();
  const known = (customer: string) => {
    const hit = cache.get(customer);
    return hit && hit.expires > now() ? (hit.id ?? null) : undefined;
  };
  return {
    name: `cached ${inner.name}`,
    known,
    resolve(customer, startBy) {
      const hit = known(customer);
      if (hit !== undefined) return Promise.resolve(hit ?? undefined);
      const pending = inflight.get(customer);
      if (pending) return pending;
      const p = inner
        .resolve(customer, startBy)
        .then((id) => {
          const ttl = id === undefined ? options.negativeTtlMs : options.ttlMs;
          if (ttl > 0) {
            if (cache.size >= max) cache.delete(cache.keys().next().value as string);
            cache.set(customer, { id, expires: now() + ttl });
          }
          return id;
        })
        .finally(() => inflight.delete(customer));
      inflight.set(customer, p);
      return p;
    },
  };
}

/** Asks each lookup in turn; the first answer wins. */
export class CustomerResolver {
  constructor(
    private readonly lookups: readonly CustomerLookup[],
    /** Deliveries that may find nothing before the event is dead-lettered as customer_not_found. */
    readonly notFoundAttempts = 1,
  ) {}

  /**
   * The Stripe id when every lookup it depends on answers without I/O; undefined when one must
   * be asked. Throws CustomerNotFoundError when all of them know the customer is not mapped.
   */
  known(customer: string): string | undefined {
    for (const lookup of this.lookups) {
      const id = lookup.known?.(customer);
      if (id === undefined) return undefined;
      if (id !== null) return id;
    }
    throw new CustomerNotFoundError(customer);
  }

  /** Resolves or throws CustomerNotFoundError (permanent) / a retryable error (transient). */
  async resolve(customer: string, startBy?: number): Promise<string> {
    for (const lookup of this.lookups) {
      const id = await lookup.resolve(customer, startBy);
      if (id !== undefined) return id;
    }
    throw new CustomerNotFoundError(customer);
  }
}
