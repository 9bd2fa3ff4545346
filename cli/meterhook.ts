/**
 * meterhook's command line. `validate` checks a mapping config. `replay` takes dead letters off the DLQ and runs them through the
 * current pipeline, with the same settings as the functions (METERHOOK_DLQ_URL, STRIPE_API_KEY or
 * STRIPE_API_KEY_SSM_PARAMETER, ...; SQS_ENDPOINT for the local runtime's fauxqs).
 */
import { parseArgs } from "node:util";
import { replayFromConfig } from "../lib/app.js";
import { loadConfig } from "../lib/config.js";
import { MeterhookError } from "../lib/errors.js";
import { readMappingConfig } from "../lib/mapping/load.js";

const USAGE = `usage:
  meterhook validate <config.yaml|config.json>
      check a mapping config; prints every problem with its path
  meterhook replay [--limit N] [--dry-run] [--after-dedupe-window]
      --limit N   take at most N dead letters off the DLQ (default 100)
      --dry-run   only report what would happen: nothing is sent, deleted or re-queued
      --after-dedupe-window
                  also resend letters Stripe may have recorded more than 23 hours ago
                  (held otherwise: Stripe would bill them again); check Stripe first`;

async function validate(files: string[]): Promise<number> {
  if (files.length !== 1) {
    console.error(USAGE);
    return 2;
  }
  const file = files[0] as string;
  const { config, issues } = await readMappingConfig(file);
  if (!config) {
    for (const i of issues) console.error(`${file}: ${i.path}: ${i.message}`);
    console.error(`${issues.length} problem${issues.length === 1 ? "" : "s"}`);
    return 1;
  }
  const n = Object.keys(config.sources).length;
  console.log(`${file}: ok (${n} source${n === 1 ? "" : "s"})`);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === "validate") return validate(rest);
  if (command !== "replay") {
    console.error(USAGE);
    return 2;
  }
  const { values } = parseArgs({
    args: rest,
    options: {
      limit: { type: "string", default: "100" },
      "dry-run": { type: "boolean", default: false },
      "after-dedupe-window": { type: "boolean", default: false },
    },
    strict: true,
  });
  const limit = Number(values.limit);
  if (!Number.isInteger(limit) || limit < 1) {
    console.error(`--limit must be a positive whole number\n${USAGE}`);
    return 2;
  }
  const report = await replayFromConfig(loadConfig(), {
    limit,
    dryRun: values["dry-run"] ?? false,
    afterDedupeWindow: values["after-dedupe-window"] ?? false,
  });
  console.log(JSON.stringify(report, null, 2));
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(
      `meterhook: ${err instanceof MeterhookError || err instanceof TypeError ? err.message : String(err)}`,
    );
    process.exit(1);
  },
);
