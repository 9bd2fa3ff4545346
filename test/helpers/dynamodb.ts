import type { AddressInfo } from "node:net";
import {
  type AttributeValue,
  CreateTableCommand,
  DynamoDBClient,
  PutItemCommand,
  waitUntilTableExists,
} from "@aws-sdk/client-dynamodb";
import dynalite from "dynalite";

export interface TestDynamo {
  /** For DYNAMODB_ENDPOINT. */
  endpoint: string;
  client: DynamoDBClient;
  /**
   * Creates a table keyed by one attribute (a partition key) or two (and a sort key), strings
   * unless `types` says otherwise.
   */
  createTable(name: string, keys: [string] | [string, string], types?: Array<"S" | "N">): Promise<void>;
  put(table: string, item: Record<string, AttributeValue>): Promise<void>;
  stop(): Promise<void>;
}

/** dynalite (DynamoDB's API, in memory) on a free loopback port, and a real DynamoDB client for it. */
export async function startTestDynamo(): Promise<TestDynamo> {
  const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new DynamoDBClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
  });
  return {
    endpoint,
    client,
    async createTable(name, keys, types = []) {
      await client.send(
        new CreateTableCommand({
          TableName: name,
          AttributeDefinitions: keys.map((k, i) => ({ AttributeName: k, AttributeType: types[i] ?? "S" })),
          KeySchema: keys.map((k, i) => ({ AttributeName: k, KeyType: i === 0 ? "HASH" : "RANGE" })),
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
