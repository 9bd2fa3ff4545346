import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from "aws-lambda";
import { createIngestApiFromConfig, type IngestApi } from "../lib/app.js";
import { loadConfig } from "../lib/config.js";
import { MetricsRecorder } from "../lib/metrics.js";
import { oncePerColdStart } from "./support/cold-start.js";
import { publishMetrics } from "./support/observability.js";

/** Translates an API Gateway HTTP API (payload 2.0) or Function URL event for lib/ingest-api. */
export function createHttpHandler(getApi: () => Promise<IngestApi>, onDone?: () => void) {
  return async (event: APIGatewayProxyEventV2): Promise<APIGatewayProxyStructuredResultV2> => {
    const stage = event.requestContext.stage;
    let path = event.rawPath;
    if (stage && stage !== "$default" && path.startsWith(`/${stage}/`)) path = path.slice(stage.length + 1);
    const headers: Record<string, string | undefined> = {};
    for (const [k, v] of Object.entries(event.headers ?? {})) headers[k.toLowerCase()] = v;
    try {
      const res = await (await getApi()).handle({
        method: event.requestContext.http.method.toUpperCase(),
        path,
        headers,
        body: Buffer.from(event.body ?? "", event.isBase64Encoded ? "base64" : "utf8"),
        requestId: event.requestContext.requestId,
        query: event.rawQueryString,
      });
      return { statusCode: res.status, headers: res.headers, body: res.body };
    } finally {
      onDone?.();
    }
  };
}

const metrics = new MetricsRecorder();
export const handler = createHttpHandler(
  oncePerColdStart(() => createIngestApiFromConfig(loadConfig(), { metrics })),
  () => publishMetrics(metrics, "http-api"),
);
