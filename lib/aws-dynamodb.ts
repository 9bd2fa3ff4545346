import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import type { AttributeValue, GetItem } from "./mapping/lookups.js";

/** A client's region, and for another endpoint (a local DynamoDB) placeholder credentials. */
const clientOptions = (region: string, endpoint: string | undefined) => ({
  region,
  ...(endpoint ? { endpoint, credentials: { accessKeyId: "local", secretAccessKey: "local" } } : {}),
});

/**
 * GetItem for the `dynamodb` customer lookup, with the AWS SDK's DynamoDB client. Imported on
 * the first lookup: a consumer whose sources use none never loads it. One client per region (a
 * lookup may name another region than the stack's); `endpoint` points it elsewhere (tests, a
 * local DynamoDB).
 */
export function createDynamoItemReader(options: { region: string; endpoint?: string }): GetItem {
  const clients = new Map<string, Promise<DynamoDBClient>>();
  const sdk = () => import("@aws-sdk/client-dynamodb");
  const clientFor = (region: string) => {
    let client = clients.get(region);
    if (!client) {
      client = sdk().then(
        ({ DynamoDBClient }) =>
          // One retry within the lookup's timeout; the queue retries the message after that.
          new DynamoDBClient({ ...clientOptions(region, options.endpoint), maxAttempts: 2 }),
      );
      clients.set(region, client);
    }
    return client;
  };
  return async ({ tableName, region, key, attribute, consistentRead, timeoutMs }) => {
    const [client, { GetItemCommand }] = await Promise.all([clientFor(region ?? options.region), sdk()]);
    const out = await client.send(
      new GetItemCommand({
        TableName: tableName,
        Key: key,
        // Only the attribute the id is in: a wide account item costs no more to read.
        ProjectionExpression: "#a",
        ExpressionAttributeNames: { "#a": attribute },
        ConsistentRead: consistentRead,
      }),
      { abortSignal: AbortSignal.timeout(timeoutMs) },
    );
    return out.Item as Record<string, AttributeValue> | undefined;
  };
}

/**
 * Every item of a table, with only the `attributes` named (a Scan, page by page): what
 * `meterhook customers` checks against Stripe before a deploy.
 */
export async function scanTable(options: {
  region: string;
  endpoint?: string;
  tableName: string;
  attributes: readonly string[];
}): Promise<Array<Record<string, AttributeValue>>> {
  const { DynamoDBClient, ScanCommand } = await import("@aws-sdk/client-dynamodb");
  const client = new DynamoDBClient(clientOptions(options.region, options.endpoint));
  const names = Object.fromEntries(options.attributes.map((a, i) => [`#a${i}`, a]));
  const items: Array<Record<string, AttributeValue>> = [];
  try {
    let start: Record<string, unknown> | undefined;
    do {
      const page = await client.send(
        new ScanCommand({
          TableName: options.tableName,
          ProjectionExpression: Object.keys(names).join(", "),
          ExpressionAttributeNames: names,
          ...(start ? { ExclusiveStartKey: start as never } : {}),
        }),
      );
      items.push(...((page.Items ?? []) as Array<Record<string, AttributeValue>>));
      start = page.LastEvaluatedKey;
    } while (start);
  } finally {
    client.destroy();
  }
  return items;
}
