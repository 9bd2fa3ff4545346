/** Bundle size budgets in KiB (all minified .mjs of a function, source maps excluded), enforced by the build. */
export const BUDGET_KIB: Record<string, number> = {
  "http-api": 2000,
  "ingest-queue": 2000,
  "dlq-replay": 2000,
  eventbridge: 2000,
};
