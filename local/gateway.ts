import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from "aws-lambda";

/** API Gateway refuses bodies over 10 MB before they reach Lambda; so does this gateway. */
const GATEWAY_MAX_BODY = 10 * 1024 * 1024;
const TEXT_TYPES = /^(application\/(json|x-www-form-urlencoded|[\w.+-]+\+json)|text\/)/i;

export type HttpLambda = (event: APIGatewayProxyEventV2) => Promise<APIGatewayProxyStructuredResultV2>;

/**
 * A local stand-in for API Gateway's HTTP API: turns each request into a payload-2.0 event for
 * the same handler Lambda runs, and its result back into an HTTP response.
 */
export async function startGateway(
  handler: HttpLambda,
  port = 0,
  host = "127.0.0.1",
): Promise<{ url: string; server: Server }> {
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > GATEWAY_MAX_BODY) {
        res.writeHead(413, { "content-type": "application/json", connection: "close" });
        res.end(JSON.stringify({ message: "Request Entity Too Large" }));
        req.socket.destroy();
        return;
      }
      chunks.push(chunk as Buffer);
    }
    const body = Buffer.concat(chunks);
    const url = new URL(req.url ?? "/", "http://gateway");
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers))
      if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(",") : v;
    // A compressed body is bytes whatever its type: API Gateway passes it base64-encoded.
    const coded = !/^\s*(identity\s*)?$/i.test(headers["content-encoding"] ?? "");
    const text = !coded && TEXT_TYPES.test(headers["content-type"] ?? "");
    const now = Date.now();
    const event: APIGatewayProxyEventV2 = {
      version: "2.0",
      routeKey: "$default",
      rawPath: url.pathname,
      rawQueryString: url.search.slice(1),
      headers,
      ...(body.length > 0 ? { body: text ? body.toString("utf8") : body.toString("base64") } : {}),
      isBase64Encoded: body.length > 0 && !text,
      requestContext: {
        accountId: "000000000000",
        apiId: "local",
        domainName: headers.host ?? "localhost",
        domainPrefix: "local",
        http: {
          method: req.method ?? "GET",
          path: url.pathname,
          protocol: `HTTP/${req.httpVersion}`,
          sourceIp: req.socket.remoteAddress ?? "127.0.0.1",
          userAgent: headers["user-agent"] ?? "",
        },
        requestId: randomUUID(),
        routeKey: "$default",
        stage: "$default",
        time: new Date(now).toUTCString(),
        timeEpoch: now,
      },
    };
    try {
      const result = await handler(event);
      const payload = result.body ?? "";
      res.writeHead(result.statusCode ?? 200, result.headers as Record<string, string>);
      res.end(result.isBase64Encoded ? Buffer.from(payload, "base64") : payload);
    } catch {
      // What API Gateway answers when the function itself fails.
      res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ message: "Internal Server Error" }));
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return { url: `http://${host}:${(server.address() as AddressInfo).port}`, server };
}
