// Runs one bundled handler as Lambda would: plain Node, no TypeScript loader, the bundle from
// dist/ (or BUNDLE_DIR). Usage: node test/infra/run-bundle.mjs <function> [timeout seconds, 30]
// < event.json; prints the handler's answer as the last line, after the bundle's own output
// (EMF metrics, logs).
import { readFileSync } from "node:fs";

const name = process.argv[2];
const event = JSON.parse(readFileSync(0, "utf8"));
const { handler } = await import(`${process.env.BUNDLE_DIR ?? `${process.cwd()}/dist`}/${name}/index.mjs`);
const end = Date.now() + Number(process.argv[3] ?? 30) * 1000;
const answer = await handler(event, { getRemainingTimeInMillis: () => end - Date.now() });
process.stdout.write(`\n${JSON.stringify(answer ?? null)}\n`);
process.exit(0);
