/** Bundle size budgets in KiB (all minified .mjs of a function, source maps excluded), enforced by the build and the tests. */
export const BUDGET_KIB: Record<string, number> = {
  "http-api": 1200,
  "ingest-queue": 1200,
  "dlq-replay": 1200,
  eventbridge: 1200,
  "stripe-reports": 1200,
};

/**
 * What a cold start may load, in KiB: index.mjs and every chunk it imports statically (dynamic
 * imports load on first use). Set about a quarter above the figures of their day, so that a
 * static import of something heavy (all of undici, the AWS SDK) fails the build. The replay
 * function carries the consumer's code and the replay's: its budget is the consumer's since
 * 2026-11-30 (178.6 KiB then, against 180).
 */
export const COLD_START_BUDGET_KIB: Record<string, number> = {
  "http-api": 180,
  "ingest-queue": 200,
  "dlq-replay": 200,
  eventbridge: 150,
  "stripe-reports": 160,
};
