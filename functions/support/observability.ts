import { Metrics as PowertoolsMetrics } from "@aws-lambda-powertools/metrics";
import type { MetricPoint, MetricsRecorder } from "../../lib/metrics.js";

/**
 * Publishes what lib/ recorded during an invocation as CloudWatch Embedded Metric Format, through
 * Powertools Metrics: one EMF line per dimension set, namespace `meterhook`.
 */
const emf = new PowertoolsMetrics({ namespace: "meterhook", serviceName: "meterhook" });

export function publishMetrics(recorder: MetricsRecorder, functionName: string): void {
  const groups = new Map<string, MetricPoint[]>();
  for (const p of recorder.drain()) {
    const key = JSON.stringify(p.dimensions);
    groups.set(key, [...(groups.get(key) ?? []), p]);
  }
  for (const points of groups.values()) {
    emf.addDimensions({ function: functionName, ...points[0]?.dimensions });
    for (const p of points) for (const v of p.values) emf.addMetric(p.name, p.unit, v);
    emf.publishStoredMetrics();
  }
}
