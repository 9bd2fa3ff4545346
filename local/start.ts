/**
 * `npm start`: meterhook on this machine with embedded defaults. No AWS, no Stripe account.
 */
import { ConfigError } from "../lib/errors.js";
import { LOCAL_PORTS } from "./defaults.js";
import { startLocalRuntime } from "./runtime.js";

const port = (name: string, def: number): number => {
  const v = process.env[name];
  if (v === undefined || v === "") return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    console.error(`${name} must be a port number, got "${v}"`);
    process.exit(2);
  }
  return n;
};

// The AWS SDK warns that its 2027 releases will need Node 22; Lambda runs 22/24 already, and
// locally the notice only buries the start-up banner.
const emitWarning = process.emitWarning.bind(process);
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  if (String(warning).includes("NodeVersionSupportWarning")) return;
  (emitWarning as (...a: unknown[]) => void)(warning, ...rest);
}) as typeof process.emitWarning;

// Settings of the local runtime itself, not of the pipeline: kept out of its config.
const env = { ...process.env };
for (const k of [
  "PORT",
  "SQS_PORT",
  "STRIPE_EMULATOR_PORT",
  "STRIPE_EMULATOR_METERS",
  "STRIPE_EMULATOR_CUSTOMERS",
  "STRIPE_EMULATOR_EVENT_DESTINATION",
  "STRIPE_EMULATOR_EVENT_SECRET",
  "DYNAMODB_PORT",
  "DYNAMODB_ITEMS",
]) {
  delete env[k];
}
// The emulator's meters: by default one is made for any event_name on first sight; named here
// (comma-separated), it has these sum meters and no other, as a Stripe account does, e.g. to
// try the meter check (METERHOOK_METER_CHECK=on).
const list = (name: string) =>
  (process.env[name] ?? "")
    .split(",")
    .map((n) => n.trim())
    .filter(Boolean);
const meters = list("STRIPE_EMULATOR_METERS");
// Its customers: by default every cus_ id exists; named here, only these do, e.g. to try the
// customer check (METERHOOK_CUSTOMER_CHECK=on).
const customers = list("STRIPE_EMULATOR_CUSTOMERS");
// An event destination: each error report is POSTed there as Stripe pushes thin events, signed
// with STRIPE_EMULATOR_EVENT_SECRET, e.g. to try a receiver of Stripe's notifications.
const destination = process.env.STRIPE_EMULATOR_EVENT_DESTINATION || undefined;
const destinationSecret = process.env.STRIPE_EMULATOR_EVENT_SECRET || "whsec_meterhook_local";
const emulatorOptions = {
  ...(meters.length > 0 ? { meters: meters.map((event_name) => ({ event_name })) } : {}),
  ...(customers.length > 0 ? { customers } : {}),
  ...(destination ? { eventDestinations: [{ url: destination, secret: destinationSecret }] } : {}),
};

try {
  const rt = await startLocalRuntime({
    env,
    port: port("PORT", LOCAL_PORTS.gateway),
    sqsPort: port("SQS_PORT", LOCAL_PORTS.sqs),
    stripeEmulatorPort: port("STRIPE_EMULATOR_PORT", LOCAL_PORTS.stripeEmulator),
    // DynamoDB Local's usual port; used only when the config has dynamodb lookups.
    dynamodbPort: port("DYNAMODB_PORT", LOCAL_PORTS.dynamodb),
    dynamodbItems: process.env.DYNAMODB_ITEMS || undefined,
    emulator: Object.keys(emulatorOptions).length > 0 ? emulatorOptions : undefined,
  });
  const sample = JSON.stringify({
    id: "req_8f2c",
    event_name: "api_requests",
    customer: "cus_NciAYcXfLnqBoz",
    value: 3,
  });
  const webhook = rt.sources.find((src) => src.type === "webhook");
  const lines = [
    "meterhook is running locally",
    `  API gateway     ${rt.gatewayUrl}   (POST /v1/events, POST /v1/events/cancel, GET /v1/health)`,
    ...(rt.reportsPushed
      ? [`    Stripe's error reports pushed to POST ${rt.gatewayUrl}/v1/stripe/events (STRIPE_EVENTS_SECRET)`]
      : []),
    `  SQS (fauxqs)    ${rt.sqsEndpoint}`,
    `    ingest queue  ${rt.ingestQueueUrl}`,
    `    dead letters  ${rt.deadLetterQueueUrl}`,
    rt.emulator
      ? `  Stripe emulator ${rt.stripeApiBase}   (totals: GET ${rt.stripeApiBase}/v1/billing/meters/summaries)${meters.length > 0 ? `\n    meters        ${meters.join(", ")} (STRIPE_EMULATOR_METERS)` : ""}${customers.length > 0 ? `\n    customers     ${customers.join(", ")} (STRIPE_EMULATOR_CUSTOMERS)` : ""}${destination ? `\n    error reports pushed to ${destination}, signed with ${process.env.STRIPE_EMULATOR_EVENT_SECRET ? "STRIPE_EMULATOR_EVENT_SECRET" : destinationSecret}` : ""}`
      : `  Stripe          ${rt.stripeApiBase}`,
    ...(rt.dynamodb
      ? [
          `  DynamoDB        ${rt.dynamodb.endpoint}   (dynalite, in memory: ${
            rt.dynamodb.items > 0
              ? `${rt.dynamodb.items} item${rt.dynamodb.items === 1 ? "" : "s"} from DYNAMODB_ITEMS`
              : "empty, so every lookup finds nothing; set DYNAMODB_ITEMS to fill it"
          })`,
          ...rt.dynamodb.tables.map(
            (t) => `    table         ${t.name} (${t.keys.map((k) => `${k.name} ${k.type}`).join(", ")})`,
          ),
        ]
      : []),
    rt.usingDefaultApiKey
      ? `  API key         ${rt.apiKey}   (local default; set METERHOOK_API_KEYS to change)`
      : "  API key         from METERHOOK_API_KEYS",
    ...rt.sources.map((src) =>
      src.type === "webhook"
        ? `  source ${src.name.padEnd(14)} POST ${rt.gatewayUrl}/v1/webhooks/${src.name}`
        : `  source ${src.name.padEnd(14)} ${src.type}`,
    ),
    "",
    "Send a usage event:",
    `  curl -sS -X POST ${rt.gatewayUrl}/v1/events -H 'Authorization: Bearer ${rt.usingDefaultApiKey ? rt.apiKey : "<your key>"}' -H 'Content-Type: application/json' -d '${sample}'`,
    ...(rt.emulator ? ["Then see it billed:", `  curl -sS ${rt.stripeApiBase}/v1/billing/meters/summaries`] : []),
    ...(webhook
      ? [
          "Send a sample webhook, signed as its sender would (its secret read as the config says):",
          `  npm run -s meterhook -- send ${env.METERHOOK_CONFIG} ${webhook.name} <payload file> --url ${rt.gatewayUrl}`,
        ]
      : []),
    "",
    "Ctrl-C to stop.",
  ];
  console.log(lines.join("\n"));
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${signal}: stopping...`);
    await rt.stop();
    console.log("stopped");
    process.exit(0);
  };
  process.on("SIGINT", () => void shutdown("SIGINT"));
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
} catch (err) {
  if (err instanceof ConfigError) console.error(`meterhook: ${err.message}`);
  else if ((err as { code?: string }).code === "EADDRINUSE")
    console.error(`meterhook: a port is already in use: ${(err as Error).message}`);
  else console.error(err);
  process.exit(1);
}
