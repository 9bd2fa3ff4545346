import type { AttributeValue, DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { startLocalDynamo } from "../../local/dynamodb.js";

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

/** dynalite (DynamoDB's API, in memory) on a free loopback port, as `npm start` runs it. */
export async function startTestDynamo(): Promise<TestDynamo> {
  const dynamo = await startLocalDynamo();
  return {
    ...dynamo,
    createTable: (name, keys, types = []) =>
      dynamo.createTable({ name, keys: keys.map((k, i) => ({ name: k, type: types[i] ?? "S" })) }),
  };
}
