import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from "aws-lambda";
import { createIngestApiFromConfig, type IngestApi } from "../lib/app.js";
import { loadConfig } from "../lib/config.js";
import { MetricsRecorder } from "../lib/metrics.js";
import { oncePerColdStart } from "./support/cold-start.js";
import { httpRequestOf, httpResultOf } from "./support/http-event.js";
import { publishMetrics } from "./support/observability.js";

/** Translates an API Gateway HTTP API (payload 2.0) or Function URL event for lib/ingest-api. */
export function createHttpHandler(getApi: () => Promise<IngestApi>, onDone?: () => void) {
  return async (event: APIGatewayProxyEventV2): Promise<APIGatewayProxyStructuredResultV2> => {
    try {
      return httpResultOf(await (await getApi()).handle(httpRequestOf(event)));
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
