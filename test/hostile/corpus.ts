/** One hostile input of test/fixtures/hostile-inputs.json and what meterhook must answer. */
export interface HostileInput {
  name: string;
  entry: "events" | "webhook" | "sqs" | "route";
  method?: string;
  path?: string;
  /** The query string, without `?`. */
  query?: string;
  headers?: Record<string, string>;
  /** Raw body text ("$now", "$now+N", "$now-N", "$now*1000" are filled in when the test runs). */
  body?: string;
  /** A JSON body, stringified when the test runs (after the same substitution). */
  json?: unknown;
  /** Bodies too large to keep. */
  generate?:
    | { kind: "nested"; depth: number }
    | { kind: "big"; bytes: number }
    /** A webhook body with `quotes` double quotes in a string: each doubles twice once escaped. */
    | { kind: "quoted"; quotes: number };
  /** Webhooks: which source, and what to do with its signature. */
  source?: string;
  signature?: "valid" | "forged" | "missing" | "stale" | "malformed" | "other-body";
  expect: HostileExpect;
}

export type HostileExpect = { status: number; code?: string } | { dlq: string };
