/** Bundle size budgets in KiB (minified index.mjs, source map excluded), enforced by the build. */
export const BUDGET_KIB: Record<string, number> = {
  "http-api": 2000,
  "ingest-queue": 2000,
  "dlq-replay": 2000,
  eventbridge: 2000,
};
