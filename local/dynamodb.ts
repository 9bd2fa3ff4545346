import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import {
  type AttributeValue,
  CreateTableCommand,
  DynamoDBClient,
  PutItemCommand,
  waitUntilTableExists,
} from "@aws-sdk/client-dynamodb";
import { ConfigError } from "../lib/errors.js";
import { keyTemplate } from "../lib/mapping/config-schema.js";
import type { Source } from "../lib/mapping/engine.js";

/** A table a `dynamodb` lookup reads: its name and key attributes, with their types. */
export interface LookupTable {
  name: string;
  keys: Array<{ name: string; type: "S" | "N" }>;
}

export interface LocalDynamo {
  /** For DYNAMODB_ENDPOINT. */
  endpoint: string;
  client: DynamoDBClient;
  /** Creates a table keyed by one attribute (a partition key) or two (and a sort key). */
  createTable(table: LookupTable): Promise<void>;
  put(table: string, item: Record<string, AttributeValue>): Promise<void>;
  stop(): Promise<void>;
}

/**
 * dynalite (DynamoDB's API, in memory) on loopback, and a DynamoDB client for it: the tables of
 * the mapping config's `dynamodb` lookups for `npm start`, and the tests' tables.
 */
export async function startLocalDynamo(port = 0): Promise<LocalDynamo> {
  // A dev dependency, loaded only by a local run or a test that needs it.
  const { default: dynalite } = await import("dynalite");
  const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new DynamoDBClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
  });
  return {
    endpoint,
    client,
    async createTable({ name, keys }) {
      await client.send(
        new CreateTableCommand({
          TableName: name,
          AttributeDefinitions: keys.map((k) => ({ AttributeName: k.name, AttributeType: k.type })),
          KeySchema: keys.map((k, i) => ({ AttributeName: k.name, KeyType: i === 0 ? "HASH" : "RANGE" })),
          BillingMode: "PAY_PER_REQUEST",
        }),
      );
      await waitUntilTableExists({ client, maxWaitTime: 10, minDelay: 0.05 }, { TableName: name });
    },
    async put(table, item) {
      await client.send(new PutItemCommand({ TableName: table, Item: item }));
    },
    async stop() {
      client.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * The tables the sources' `dynamodb` lookups read, each once (by name: dynalite has one
 * namespace for every region). The key attributes' order is the config's: the first is the
 * partition key.
 */
export function lookupTables(sources: Iterable<Pick<Source, "customer">>): LookupTable[] {
  const tables = new Map<string, LookupTable>();
  for (const { customer: c } of sources) {
    if (c.lookup !== "dynamodb" || tables.has(c.tableName)) continue;
    const keys = Object.entries(c.key).map(([name, value]) => ({ name, type: keyTemplate(value).type }));
    tables.set(c.tableName, { name: c.tableName, keys });
  }
  return [...tables.values()];
}

/** A plain JSON value as a DynamoDB attribute value. */
export function toAttribute(value: unknown): AttributeValue {
  if (typeof value === "string") return { S: value };
  if (typeof value === "number") return { N: String(value) };
  if (typeof value === "boolean") return { BOOL: value };
  if (value === null) return { NULL: true };
  if (Array.isArray(value)) return { L: value.map(toAttribute) };
  if (typeof value === "object")
    return { M: Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toAttribute(v)])) };
  throw new Error(`${String(value)} cannot be a DynamoDB attribute`);
}

/**
 * Items to put in the local tables, from a JSON file of plain items by table name:
 * `{"accounts": [{"account_id": "acct_1", "stripe_customer_id": "cus_..."}]}`.
 */
export function readItems(file: string): Array<{ table: string; item: Record<string, AttributeValue> }> {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new ConfigError(`DYNAMODB_ITEMS: ${file} is not a readable JSON file (${(err as Error).message})`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data))
    throw new ConfigError(`DYNAMODB_ITEMS: ${file} must hold an object of table names to lists of items`);
  return Object.entries(data).flatMap(([table, items]) => {
    if (!Array.isArray(items)) throw new ConfigError(`DYNAMODB_ITEMS: ${file}: ${table} is not a list of items`);
    return items.map((item) => {
      const value = toAttribute(item);
      if (!value.M) throw new ConfigError(`DYNAMODB_ITEMS: ${file}: an item of ${table} is not an object`);
      return { table, item: value.M };
    });
  });
}
