import { CustomerNotFoundError } from "./errors.js";

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

/** Asks each lookup in turn; the first answer wins. */
export class CustomerResolver {
  constructor(private readonly lookups: readonly CustomerLookup[]) {}

  /** Resolves or throws CustomerNotFoundError (permanent) / a retryable error (transient). */
  async resolve(customer: string): Promise<string> {
    for (const lookup of this.lookups) {
      const id = await lookup.resolve(customer);
      if (id !== undefined) return id;
    }
    throw new CustomerNotFoundError(customer);
  }
}
