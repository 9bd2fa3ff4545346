import type { DynamoDBClient, AttributeValue as SdkAttributeValue, WriteRequest } from "@aws-sdk/client-dynamodb";
import { type AwsClientTarget, awsClientConfig } from "./aws-clients.js";
import type { AttributeValue, GetItem } from "./mapping/lookups.js";
import type { LedgerEntry, LedgerMark, ReplayLedger } from "./replay-ledger.js";
import { backoffDelayMs } from "./stripe/retry-policy.js";
import { runPool } from "./stripe/submitter.js";

/** The AWS SDK's DynamoDB client, imported on first use: most functions never need it. */
const sdk = () => import("@aws-sdk/client-dynamodb");

/**
 * GetItem for the `dynamodb` customer lookup, with the AWS SDK's DynamoDB client. Imported on
 * the first lookup: a consumer whose sources use none never loads it. One client per region (a
 * lookup may name another region than the stack's); `endpoint` points it elsewhere (tests, a
 * local DynamoDB).
 */
export function createDynamoItemReader(options: AwsClientTarget): GetItem {
  const clients = new Map<string, Promise<DynamoDBClient>>();
  const clientFor = (region: string) => {
    let client = clients.get(region);
    if (!client) {
      client = sdk().then(
        ({ DynamoDBClient }) =>
          // One retry within the lookup's timeout; the queue retries the message after that.
          new DynamoDBClient({ ...awsClientConfig({ ...options, region }), maxAttempts: 2 }),
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
export async function scanTable(
  options: AwsClientTarget & { tableName: string; attributes: readonly string[] },
): Promise<Array<Record<string, AttributeValue>>> {
  const { DynamoDBClient, ScanCommand } = await sdk();
  const client = new DynamoDBClient(awsClientConfig(options));
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

/** The replay ledger table's key, and its TTL attribute: infra/replay-ledger.yml names both. */
export const LEDGER_KEY = "identifier";
export const LEDGER_EXPIRY = "expiresAt";

/** BatchGetItem takes 100 keys, BatchWriteItem 25 writes. */
const GET_BATCH = 100;
const WRITE_BATCH = 25;
/** Conditional writes (one call each) in flight at once. */
const CONDITIONAL_IN_FLIGHT = 16;
/** Calls for what DynamoDB leaves unprocessed (throttled) before the batch fails. */
const UNPROCESSED_ROUNDS = 5;
/** Between them, capped exponential backoff with jitter, as AWS advises for batch operations. */
const UNPROCESSED_BACKOFF = { baseDelayMs: 50, maxDelayMs: 1_000 };

const chunks = <T>(items: readonly T[], size: number): T[][] =>
  Array.from({ length: Math.ceil(items.length / size) }, (_, i) => items.slice(i * size, (i + 1) * size));

/**
 * `call` for each of `items`, `CONDITIONAL_IN_FLIGHT` at a time. Every call is answered before
 * this settles, so that nothing is still being written when it throws (the first error).
 */
async function eachInFlight<T>(items: readonly T[], call: (item: T) => Promise<void>): Promise<void> {
  const errors: unknown[] = [];
  await runPool(items, CONDITIONAL_IN_FLIGHT, (item) =>
    call(item).catch((err: unknown) => {
      errors.push(err);
    }),
  );
  if (errors.length > 0) throw errors[0];
}

/** A conditional write DynamoDB refused because its condition did not hold. */
const conditionFailed = (err: unknown) =>
  (err as { name?: unknown } | null)?.name === "ConditionalCheckFailedException";

/** Calls `call` with `items`, then with what it answers it left unprocessed, until none is left. */
async function untilProcessed<T>(
  items: T[],
  what: string,
  call: (items: T[]) => Promise<T[] | undefined>,
): Promise<void> {
  let left: T[] | undefined = items;
  for (let round = 0; left && left.length > 0; round++) {
    if (round === UNPROCESSED_ROUNDS) throw new Error(`DynamoDB left ${left.length} ${what} unprocessed`);
    if (round > 0)
      await new Promise((resolve) => setTimeout(resolve, backoffDelayMs(round - 1, UNPROCESSED_BACKOFF, Math.random)));
    left = await call(left);
  }
}

/**
 * The replay ledger in a DynamoDB table keyed by `identifier` (a string), whose items expire by
 * their `expiresAt` (the table's TTL attribute): consistent reads, so a replay sees what one that
 * ended just before recorded. An item is `state` `sending` with `sentAt`, or `billed` with
 * `billedAt` (an item without `state`, written before marks existed, is billed). A `sending`
 * mark is written only where no item is, and deleted only while it is still the one written, one
 * conditional call per event: two replays of copies of one event cannot overwrite or remove each
 * other's mark. The client is made on the ledger's first use: the consumer that holds a ledger
 * reads it only for redriven letters.
 */
export function createDynamoReplayLedger(options: AwsClientTarget & { tableName: string }): ReplayLedger {
  let client: Promise<DynamoDBClient> | undefined;
  const clientOf = () => {
    client ??= sdk().then(({ DynamoDBClient }) => new DynamoDBClient(awsClientConfig(options)));
    return client;
  };
  const table = options.tableName;
  /** Writes (puts or deletes), 25 a call, each call until DynamoDB has processed them all. */
  const write = async (writes: WriteRequest[]) => {
    const [c, { BatchWriteItemCommand }] = await Promise.all([clientOf(), sdk()]);
    for (const part of chunks(writes, WRITE_BATCH)) {
      await untilProcessed(part, `writes to ${table}`, async (w) => {
        const out = await c.send(new BatchWriteItemCommand({ RequestItems: { [table]: w } }));
        return out.UnprocessedItems?.[table];
      });
    }
  };
  const item = (e: LedgerEntry): Record<string, SdkAttributeValue> => ({
    [LEDGER_KEY]: { S: e.identifier },
    eventName: { S: e.eventName },
    state: { S: e.state },
    [e.state === "billed" ? "billedAt" : "sentAt"]: { S: e.at },
    [LEDGER_EXPIRY]: { N: String(e.expiresAt) },
  });
  /** One entry per identifier: BatchWriteItem refuses a batch that names a key twice, and one conditional call per key is enough. */
  const unique = <T extends { identifier: string }>(entries: readonly T[]) => [
    ...new Map(entries.map((e) => [e.identifier, e])).values(),
  ];
  return {
    async marks(identifiers) {
      const [c, { BatchGetItemCommand }] = await Promise.all([clientOf(), sdk()]);
      const found = new Map<string, LedgerMark>();
      for (const ids of chunks([...new Set(identifiers)], GET_BATCH)) {
        const keys = ids.map((id): Record<string, SdkAttributeValue> => ({ [LEDGER_KEY]: { S: id } }));
        await untilProcessed(keys, `reads of ${table}`, async (Keys) => {
          const out = await c.send(
            new BatchGetItemCommand({
              RequestItems: {
                [table]: {
                  Keys,
                  ConsistentRead: true,
                  // Through names: `state` is one of DynamoDB's reserved words.
                  ProjectionExpression: "#k, #s, #t",
                  ExpressionAttributeNames: { "#k": LEDGER_KEY, "#s": "state", "#t": "sentAt" },
                },
              },
            }),
          );
          for (const item of out.Responses?.[table] ?? []) {
            const id = item[LEDGER_KEY]?.S;
            if (!id) continue;
            // A sending mark whose time cannot be read counts as sent long ago: held, never resent.
            if (item.state?.S === "sending")
              found.set(id, { state: "sending", since: Date.parse(item.sentAt?.S ?? "") });
            else found.set(id, { state: "billed" });
          }
          return out.UnprocessedKeys?.[table]?.Keys;
        });
      }
      return found;
    },
    async claim(entries) {
      const [c, { PutItemCommand }] = await Promise.all([clientOf(), sdk()]);
      const claimed = new Set<string>();
      await eachInFlight(unique(entries), async (e) => {
        try {
          await c.send(
            new PutItemCommand({
              TableName: table,
              Item: item(e),
              ConditionExpression: "attribute_not_exists(#k)",
              ExpressionAttributeNames: { "#k": LEDGER_KEY },
            }),
          );
          claimed.add(e.identifier);
        } catch (err) {
          if (!conditionFailed(err)) throw err;
        }
      });
      return claimed;
    },
    async record(entries) {
      await write(unique(entries).map((e): WriteRequest => ({ PutRequest: { Item: item(e) } })));
    },
    async forget(marks) {
      const [c, { DeleteItemCommand }] = await Promise.all([clientOf(), sdk()]);
      await eachInFlight(unique(marks), async (m) => {
        await c
          .send(
            new DeleteItemCommand({
              TableName: table,
              Key: { [LEDGER_KEY]: { S: m.identifier } },
              // Only this call's mark (`state` is a reserved word): not a billing recorded since,
              // nor the mark of another replay that wrote it after this one's was removed.
              ConditionExpression: "#s = :sending AND #t = :at",
              ExpressionAttributeNames: { "#s": "state", "#t": "sentAt" },
              ExpressionAttributeValues: { ":sending": { S: "sending" }, ":at": { S: m.at } },
            }),
          )
          .catch((err: unknown) => {
            if (!conditionFailed(err)) throw err;
          });
      });
    },
  };
}
