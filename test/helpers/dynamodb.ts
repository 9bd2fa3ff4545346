import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
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

export interface DynamoFaultProxy {
  /** For DYNAMODB_ENDPOINT. */
  endpoint: string;
  /** Keys and writes answered unprocessed so far, by operation. */
  left: { BatchGetItem: number; BatchWriteItem: number };
  /** Calls answered AccessDeniedException so far, by operation. */
  refused: Record<string, number>;
  stop(): Promise<void>;
}

type BatchOperation = keyof DynamoFaultProxy["left"];

/**
 * A loopback proxy to `target` (dynalite) that answers part of each BatchGetItem's keys and
 * BatchWriteItem's writes unprocessed, as a throttled DynamoDB does and dynalite never does:
 * `leave` says how many of a call's `n` keys or writes (`items`) to hold back (the last ones); the rest go to dynalite,
 * and its answer comes back with the held ones added as UnprocessedKeys or UnprocessedItems.
 * `refuse`, if given, picks calls (by operation and request) to answer AccessDeniedException, as
 * DynamoDB answers a role its policy does not allow the operation. Every other call passes
 * through unchanged.
 */
export async function startDynamoFaultProxy(
  target: string,
  leave: (operation: BatchOperation, n: number, items: readonly Record<string, unknown>[]) => number,
  refuse: (operation: string, request: Record<string, unknown>) => boolean = () => false,
): Promise<DynamoFaultProxy> {
  const left = { BatchGetItem: 0, BatchWriteItem: 0 };
  const refused: Record<string, number> = {};
  const forward = async (headers: Record<string, string>, body: string) => {
    const res = await fetch(target, { method: "POST", headers, body });
    return { status: res.status, body: await res.text() };
  };
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    const headers: Record<string, string> = {};
    for (const h of ["content-type", "x-amz-target", "authorization", "x-amz-date"]) {
      const v = req.headers[h];
      if (typeof v === "string") headers[h] = v;
    }
    const operation = headers["x-amz-target"]?.split(".")[1];
    let answer: { status: number; body: string };
    if (operation && refuse(operation, JSON.parse(text))) {
      refused[operation] = (refused[operation] ?? 0) + 1;
      answer = {
        status: 400,
        body: JSON.stringify({
          __type: "com.amazon.coral.service#AccessDeniedException",
          message: `not authorized to perform: dynamodb:${operation}`,
        }),
      };
    } else if (operation === "BatchGetItem" || operation === "BatchWriteItem") {
      answer = await withUnprocessed(operation, JSON.parse(text), (body) => forward(headers, body));
    } else {
      answer = await forward(headers, text);
    }
    res.writeHead(answer.status, { "content-type": "application/x-amz-json-1.0" });
    res.end(answer.body);
  });

  // The table's list of keys (reads) or writes, split into those sent and those held back.
  async function withUnprocessed(
    operation: BatchOperation,
    request: { RequestItems: Record<string, unknown> },
    send: (body: string) => Promise<{ status: number; body: string }>,
  ) {
    const sent: Record<string, unknown> = {};
    const held: Record<string, unknown> = {};
    for (const [table, spec] of Object.entries(request.RequestItems)) {
      const list = (operation === "BatchGetItem" ? (spec as { Keys: unknown[] }).Keys : spec) as unknown[];
      const n = Math.min(list.length, Math.max(0, leave(operation, list.length, list as Record<string, unknown>[])));
      left[operation] += n;
      const keep = list.slice(0, list.length - n);
      const hold = list.slice(list.length - n);
      const as = (items: unknown[]) => (operation === "BatchGetItem" ? { ...(spec as object), Keys: items } : items);
      if (keep.length > 0) sent[table] = as(keep);
      if (hold.length > 0) held[table] = as(hold);
    }
    const answer =
      Object.keys(sent).length > 0
        ? await send(JSON.stringify({ ...request, RequestItems: sent }))
        : { status: 200, body: JSON.stringify(operation === "BatchGetItem" ? { Responses: {} } : {}) };
    if (answer.status !== 200) return answer;
    const out = JSON.parse(answer.body) as Record<string, unknown>;
    out[operation === "BatchGetItem" ? "UnprocessedKeys" : "UnprocessedItems"] = held;
    return { status: 200, body: JSON.stringify(out) };
  }

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    left,
    refused,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // The SDK keeps its connections open.
        server.closeAllConnections();
      }),
  };
}
