import { dimensionsKey, type MetricPoint, type MetricsRecorder } from "../../lib/metrics.js";

/**
 * CloudWatch Embedded Metric Format for what lib/ recorded during an invocation: one JSON line per
 * dimension set on stdout, namespace `meterhook`, dimensions `service` and `function` plus the
 * set's own. Written here rather than through Powertools Metrics, which reads the environment on
 * every value it stores (to scope values per invocation): with a latency value per v1 request,
 * that was more CPU than the rest of the metrics path (bench/HISTORY.md).
 */
const NAMESPACE = "meterhook";
const SERVICE = "meterhook";
/** EMF's limits per document: 100 metrics, and 100 values per metric. */
const MAX_METRICS = 100;
const MAX_VALUES = 100;

/** The EMF documents for `points`, timestamped `timestamp` (epoch ms). */
export function emfDocuments(
  points: readonly MetricPoint[],
  functionName: string,
  timestamp: number,
): Array<Record<string, unknown>> {
  const groups = new Map<string, MetricPoint[]>();
  for (const p of points) {
    const key = dimensionsKey(p.dimensions);
    const group = groups.get(key);
    if (group) group.push(p);
    else groups.set(key, [p]);
  }
  const docs: Array<Record<string, unknown>> = [];
  for (const group of groups.values()) {
    const dimensions = { service: SERVICE, function: functionName, ...group[0]?.dimensions };
    // A metric with more than MAX_VALUES values continues in further documents.
    for (let from = 0; group.some((p) => p.values.length > from); from += MAX_VALUES) {
      const chunk = group.filter((p) => p.values.length > from);
      for (let i = 0; i < chunk.length; i += MAX_METRICS) {
        const metrics = chunk.slice(i, i + MAX_METRICS);
        const doc: Record<string, unknown> = {
          _aws: {
            Timestamp: timestamp,
            CloudWatchMetrics: [
              {
                Namespace: NAMESPACE,
                Dimensions: [Object.keys(dimensions)],
                Metrics: metrics.map((p) => ({ Name: p.name, Unit: p.unit })),
              },
            ],
          },
          ...dimensions,
        };
        for (const p of metrics) {
          const values = p.values.slice(from, from + MAX_VALUES);
          doc[p.name] = values.length === 1 ? values[0] : values;
        }
        docs.push(doc);
      }
    }
  }
  return docs;
}

/** Writes what `recorder` holds as EMF lines to stdout (where Lambda sends it to CloudWatch Logs), and empties it. */
export function publishMetrics(
  recorder: MetricsRecorder,
  functionName: string,
  write: (line: string) => void = (line) => process.stdout.write(line),
): void {
  const docs = emfDocuments(recorder.drain(), functionName, Date.now());
  if (docs.length > 0) write(`${docs.map((d) => JSON.stringify(d)).join("\n")}\n`);
}
