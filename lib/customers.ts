import { CustomerNotFoundError, TransientError } from "./errors.js";
import { evaluate } from "./mapping/expressions.js";
import type { HttpTransport } from "./stripe/transport.js";

/**
 * Maps an app's customer reference to a Stripe customer id. Every kind of lookup (a static table
 * now; HTTP, Stripe search later) sits behind this one interface. `resolve` answers undefined
 * when nothing is mapped, and throws a retryable error when the lookup itself failed.
 */
export interface CustomerLookup {
  readonly name: string;
  resolve(customer: string): Promise<string | undefined>;
}

export const STRIPE_CUSTOMER_PREFIX = "cus_";

/** `cus_` ids are Stripe's already: used as they are. */
export const stripeIdLookup: CustomerLookup = {
  name: "stripe-id",
  resolve: async (customer) => (customer.startsWith(STRIPE_CUSTOMER_PREFIX) ? customer : undefined),
};

/** A fixed table from app account ids to Stripe customer ids (from config). */
export function staticTableLookup(table: ReadonlyMap<string, string>): CustomerLookup {
  return { name: "static-table", resolve: async (customer) => table.get(customer) };
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
  return {
    name: `cached ${inner.name}`,
    resolve(customer) {
      const hit = cache.get(customer);
      if (hit && hit.expires > now()) return Promise.resolve(hit.id);
      const pending = inflight.get(customer);
      if (pending) return pending;
      const p = inner
        .resolve(customer)
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

/**
 * Asks the app's own service: GET the URL (with `{customer}` filled in, URL-encoded) and read the
 * Stripe id from the JSON answer with a JMESPath expression. 404 or no id: not found. Anything
 * else that is not a 200 (5xx, 429, timeout, refused) is a transient failure: retried via the queue.
 */
export function httpLookup(
  transport: HttpTransport,
  options: { url: string; headers: Record<string, string>; timeoutMs: number; stripeIdPath: string },
): CustomerLookup {
  return {
    name: "http",
    async resolve(customer) {
      const url = options.url.replaceAll("{customer}", encodeURIComponent(customer));
      let res: Awaited<ReturnType<HttpTransport["send"]>>;
      try {
        res = await transport.send({
          method: "GET",
          url,
          headers: { accept: "application/json", ...options.headers },
          timeoutMs: options.timeoutMs,
        });
      } catch (err) {
        throw new TransientError(
          "customer_lookup_failed",
          `customer lookup failed: ${(err as Error).name}: ${(err as Error).message}`,
        );
      }
      if (res.status === 404) return undefined;
      if (res.status !== 200)
        throw new TransientError("customer_lookup_failed", `customer lookup answered ${res.status}`);
      let id: unknown;
      try {
        id = evaluate(options.stripeIdPath, JSON.parse(res.body));
      } catch {
        throw new TransientError("customer_lookup_failed", "customer lookup answered with unreadable JSON");
      }
      return typeof id === "string" && id.startsWith(STRIPE_CUSTOMER_PREFIX) ? id : undefined;
    },
  };
}

/** What the Stripe customer search lookup needs from the Stripe client. */
export type StripeGet = (
  path: string,
  query: Record<string, string>,
) => Promise<{ status: number; body: string } | { error: string }>;

/** Searches Stripe customers by metadata: `metadata['account_id']:'acct_42'`. */
export function stripeSearchLookup(get: StripeGet, metadataKey: string): CustomerLookup {
  return {
    name: "stripe-search",
    async resolve(customer) {
      const quoted = customer.replaceAll("\\", "\\\\").replaceAll("'", "\\'");
      const res = await get("/v1/customers/search", { query: `metadata['${metadataKey}']:'${quoted}'`, limit: "2" });
      if ("error" in res)
        throw new TransientError("customer_lookup_failed", `Stripe customer search failed: ${res.error}`);
      if (res.status !== 200)
        throw new TransientError("customer_lookup_failed", `Stripe customer search answered ${res.status}`);
      const data = (JSON.parse(res.body) as { data?: Array<{ id?: string }> }).data ?? [];
      // Two customers with the same account id is a data problem: bill neither rather than guess.
      return data.length === 1 ? data[0]?.id : undefined;
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

  /** Resolves or throws CustomerNotFoundError (permanent) / a retryable error (transient). */
  async resolve(customer: string): Promise<string> {
    for (const lookup of this.lookups) {
      const id = await lookup.resolve(customer);
      if (id !== undefined) return id;
    }
    throw new CustomerNotFoundError(customer);
  }
}
