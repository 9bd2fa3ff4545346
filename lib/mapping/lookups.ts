import { type CustomerLookup, isStripeCustomerId, STRIPE_CUSTOMER_PREFIX } from "../customers.js";
import { CustomerNotFoundError, TransientError } from "../errors.js";
import type { HttpTransport } from "../stripe/transport.js";
import { DYNAMO_NUMBER, type DynamoKeyValue, keyTemplate } from "./config-schema.js";
import { evaluate } from "./expressions.js";

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
      if (id === null || id === undefined) return undefined;
      if (typeof id === "string" && isStripeCustomerId(id)) return id;
      // Something that is not an id: a wrong stripeIdPath or a service bug, not an unmapped account.
      // Not cached, so the fix is seen at once.
      throw new CustomerNotFoundError(
        customer,
        `the lookup answered 200 and \`${options.stripeIdPath}\` gave ${JSON.stringify(id).slice(0, 80)}, not a ${STRIPE_CUSTOMER_PREFIX} id`,
      );
    },
  };
}

/** What the Stripe customer search lookup needs from the Stripe client. */
export type StripeGet = (
  path: string,
  query: Record<string, string>,
  /** The latest the request may start (see CustomerLookup.resolve). */
  startBy?: number,
) => Promise<{ status: number; body: string } | { error: string }>;

/** Searches Stripe customers by metadata: `metadata['account_id']:'acct_42'`. */
export function stripeSearchLookup(get: StripeGet, metadataKey: string): CustomerLookup {
  return {
    name: "stripe-search",
    async resolve(customer, startBy) {
      const quoted = customer.replaceAll("\\", "\\\\").replaceAll("'", "\\'");
      const query = { query: `metadata['${metadataKey}']:'${quoted}'`, limit: "2" };
      const res = await get("/v1/customers/search", query, startBy);
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

/** An attribute value as DynamoDB's API gives it (`{"S": "cus_..."}`, `{"M": {...}}`, ...). */
export type AttributeValue = { S?: string; N?: string; NULL?: boolean; M?: Record<string, AttributeValue> } & Record<
  string,
  unknown
>;

/** DynamoDB's GetItem: the item, or undefined when the table has none with that key. */
export type GetItem = (request: {
  tableName: string;
  /** The table's region; the stack's when unset. */
  region?: string;
  /** The key attributes, string (S) or number (N). */
  key: Record<string, { S: string } | { N: string }>;
  /** The top-level attribute to read (a projection: only it is returned). */
  attribute: string;
  consistentRead: boolean;
  timeoutMs: number;
}) => Promise<Record<string, AttributeValue> | undefined>;

/**
 * Reads the customer's item from the app's own DynamoDB table: the key's `{customer}` filled in
 * (as it is: DynamoDB keys are not URLs), the `cus_` id read from a string attribute. No item, or
 * no such attribute: not found; so is a customer value that is not a number, for a number key. A failed read (throttled, timed out, the table missing or not
 * readable by the function's role) is transient, and its reason names DynamoDB's error.
 */
export function dynamodbLookup(
  getItem: GetItem,
  options: {
    tableName: string;
    region?: string;
    key: Record<string, DynamoKeyValue>;
    stripeIdAttribute: string;
    consistentRead: boolean;
    timeoutMs: number;
  },
): CustomerLookup {
  const path = options.stripeIdAttribute.split(".");
  return {
    name: "dynamodb",
    async resolve(customer) {
      const key: Record<string, { S: string } | { N: string }> = {};
      for (const [name, value] of Object.entries(options.key)) {
        const { type, template } = keyTemplate(value);
        const filled = template.replaceAll("{customer}", customer);
        if (type === "S") key[name] = { S: filled };
        else if (DYNAMO_NUMBER.test(filled)) key[name] = { N: filled };
        // No item can have this key, and DynamoDB would refuse the request, retried for nothing.
        else throw new CustomerNotFoundError(customer, `the table's key \`${name}\` is a number, and this is not one`);
      }
      let item: Record<string, AttributeValue> | undefined;
      try {
        item = await getItem({
          tableName: options.tableName,
          region: options.region,
          key,
          attribute: path[0] as string,
          consistentRead: options.consistentRead,
          timeoutMs: options.timeoutMs,
        });
      } catch (err) {
        const e = err as Error;
        throw new TransientError("customer_lookup_failed", `customer lookup failed: DynamoDB ${e.name}: ${e.message}`);
      }
      const value = item ? valueAt(item, path) : undefined;
      if (value === undefined || value.NULL === true) return undefined;
      if (typeof value.S === "string" && isStripeCustomerId(value.S)) return value.S;
      // Something that is not an id: a wrong attribute name or bad data, not an unmapped account.
      // Not cached, so the fix is seen at once.
      throw new CustomerNotFoundError(
        customer,
        `the item's \`${options.stripeIdAttribute}\` is ${JSON.stringify(value).slice(0, 80)}, not a string ${STRIPE_CUSTOMER_PREFIX} id`,
      );
    },
  };
}

/** The attribute at `path` (names into maps), or undefined. */
function valueAt(item: Record<string, AttributeValue>, path: readonly string[]): AttributeValue | undefined {
  let value: AttributeValue | undefined = item[path[0] as string];
  for (const name of path.slice(1)) value = value?.M?.[name];
  return value;
}

/**
 * The customers a `dynamodb` lookup's table maps, from its scanned items (`meterhook customers`):
 * the customer value each item's key was made from, and what its id attribute holds. Items whose
 * key the lookup's templates could not have made (another entity of a single-table design), and
 * items without the attribute (not mapped yet), are left out.
 */
export function dynamodbEntries(
  items: ReadonlyArray<Record<string, AttributeValue>>,
  options: { key: Record<string, DynamoKeyValue>; stripeIdAttribute: string },
): Array<{ customer: string; value: AttributeValue }> {
  const path = options.stripeIdAttribute.split(".");
  const out: Array<{ customer: string; value: AttributeValue }> = [];
  for (const item of items) {
    let customer: string | undefined;
    let made = true;
    for (const [name, value] of Object.entries(options.key)) {
      const { type, template } = keyTemplate(value);
      const text = item[name]?.[type] as string | undefined;
      const parts = template.split("{customer}");
      if (text === undefined) made = false;
      else if (parts.length === 1) made &&= type === "S" ? text === template : Number(text) === Number(template);
      else {
        // The one value that, put in every {customer} of the template, makes the item's key.
        const length = (text.length - parts.join("").length) / (parts.length - 1);
        const start = (parts[0] as string).length;
        const inner = Number.isInteger(length) && length > 0 ? text.slice(start, start + length) : "";
        if (inner === "" || parts.join(inner) !== text) made = false;
        // Every template that holds {customer} must give the same one back.
        else if (customer !== undefined && customer !== inner) made = false;
        else customer = inner;
      }
    }
    const value = valueAt(item, path);
    if (made && customer !== undefined && value !== undefined && value.NULL !== true) out.push({ customer, value });
  }
  return out;
}
