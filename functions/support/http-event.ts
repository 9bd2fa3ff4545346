import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from "aws-lambda";
import type { HttpRequest, HttpResponse } from "../../lib/http.js";

/** An API Gateway HTTP API (payload 2.0) or Function URL event as lib/'s request: path without the stage. */
export function httpRequestOf(event: APIGatewayProxyEventV2): HttpRequest {
  const stage = event.requestContext.stage;
  let path = event.rawPath;
  if (stage && stage !== "$default" && path.startsWith(`/${stage}/`)) path = path.slice(stage.length + 1);
  const headers: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(event.headers ?? {})) headers[k.toLowerCase()] = v;
  return {
    method: event.requestContext.http.method.toUpperCase(),
    path,
    headers,
    body: Buffer.from(event.body ?? "", event.isBase64Encoded ? "base64" : "utf8"),
    requestId: event.requestContext.requestId,
    query: event.rawQueryString,
  };
}

/** lib/'s response as API Gateway's. */
export const httpResultOf = (res: HttpResponse): APIGatewayProxyStructuredResultV2 => ({
  statusCode: res.status,
  headers: res.headers,
  body: res.body,
});

/** Whether a Lambda event is an HTTP API (payload 2.0) request. */
export const isHttpEvent = (event: unknown): event is APIGatewayProxyEventV2 =>
  typeof event === "object" &&
  event !== null &&
  "requestContext" in event &&
  typeof (event as APIGatewayProxyEventV2).requestContext?.http?.method === "string";
