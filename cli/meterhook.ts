/**
 * meterhook's command line. `validate` checks a mapping config; `map` maps a sample trigger with it;
 * `send` signs one as its sender would and posts it to a running meterhook. `meters` lists Stripe's active
 * meters and checks the event names the settings use against them; `customers`, that Stripe has
 * the customers of the customer tables. `replay` takes dead letters off the DLQ and runs them through the
 * current pipeline, with the same settings as the functions (METERHOOK_DLQ_URL, STRIPE_API_KEY or
 * STRIPE_API_KEY_SSM_PARAMETER or _SECRET_ID, ...; SQS_ENDPOINT for the local runtime's fauxqs).
 */

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import {
  replayFromConfig,
  secretReaderFor,
  sqsClientFor,
  summarizeDlqFromConfig,
  withStripeClient,
} from "../lib/app.js";
import { scanTable } from "../lib/aws-dynamodb.js";
import { type Config, loadConfig } from "../lib/config.js";
import { isStripeCustomerId } from "../lib/customers.js";
import { takesEventBridgeEvent } from "../lib/decode.js";
import { ConfigError, MeterhookError } from "../lib/errors.js";
import type { MappingConfig, SecretRef } from "../lib/mapping/config-schema.js";
import { readMappingConfig } from "../lib/mapping/load.js";
import { dynamodbEntries } from "../lib/mapping/lookups.js";
import { checkStripeCustomers } from "../lib/stripe/customer-check.js";
import { readActiveMeters } from "../lib/stripe/meters.js";
import { isEventBridgeEvent, SOURCE_ATTRIBUTE } from "../lib/triggers.js";
import { INGEST_QUEUE, localGatewayUrl, localQueueUrl, localSqsEndpoint } from "../local/defaults.js";

const USAGE = `usage:
  meterhook validate <config.yaml|config.json>
      check a mapping config; prints every problem with its path
  meterhook meters [config.yaml|config.json]
      list Stripe's active meters (with STRIPE_API_KEY, or its _SSM_PARAMETER or _SECRET_ID), and
      check that every event_name the mapping config (or METERHOOK_CONFIG), METERHOOK_AGGREGATE
      and METERHOOK_METER_VALUE_RULES name has one; exits 1 when one has none
  meterhook customers [config.yaml|config.json]
      check that Stripe has every cus_ id of the customer tables (METERHOOK_CUSTOMERS,
      METERHOOK_CUSTOMERS_FILE, and table and dynamodb lookups of the mapping config or
      METERHOOK_CONFIG; a DynamoDB table is read with a Scan); exits 1 when one is missing or
      deleted, or an item's attribute is not a cus_ id
  meterhook map <config.yaml|config.json|sources.ts> <source> <trigger file, or - for stdin>
        [--header "Name: value"]... [--query "a=1&b=2"] [--content-type type]
      map a sample trigger (a webhook's body, an app's message, an EventBridge event) as the
      consumer would, and print the meter events it makes, or why it makes none; nothing is
      queued or sent (customers from tables and cus_ ids; network lookups are left to run time);
      exits 1 when it, or one of its events, would be dead-lettered
  meterhook send <config.yaml|config.json|sources.ts> <source> <trigger file, or - for stdin>
        [--url http://127.0.0.1:3000] [--header "Name: value"]... [--query "a=1&b=2"] [--content-type type]
      sign a sample webhook as the source's sender would, with the source's first secret (read
      from where the config says: environment, SSM, Secrets Manager), and POST it to
      <url>/v1/webhooks/<source> (npm start's gateway by default); prints the answer, and exits
      1 unless it is 2xx. An api-key source is sent the first of METERHOOK_API_KEYS. An sqs
      source's trigger is put on the ingest queue as its message body, with the source named
      in the meterhook_source attribute (METERHOOK_INGEST_QUEUE_URL and SQS_ENDPOINT, by
      default npm start's fauxqs); prints the message id. An eventbridge source's trigger (an
      EventBridge event its match takes) is put there as a rule's SQS target delivers it
  meterhook dlq [--limit N]
      what the DLQ holds (METERHOOK_DLQ_URL), read without changing it: its letters by code and
      by source, the oldest, and a few of each code (default limit 1000)
  meterhook replay [--limit N] [--dry-run] [--after-dedupe-window] [--code CODE]...
      --limit N   take at most N dead letters off the DLQ (default 100)
      --code CODE replay only letters of this code (repeatable; e.g. customer_not_found once
                  a mapping is added); those of other codes are put back as they were
      --dry-run   only report what would happen: nothing is sent, deleted or re-queued
      --after-dedupe-window
                  also resend letters Stripe may have recorded more than 23 hours ago, and
                  events the ledger has as sent that long ago with no answer (held
                  otherwise: Stripe would bill them again); check Stripe first
      With METERHOOK_REPLAY_LEDGER_TABLE (the stack's ReplayLedgerTableName output, and
      AWS_REGION), events an earlier replay billed are not sent again, and those sent now are
      marked there, sent and then billed: two letters of one event replayed days apart bill once`;

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

/** What `meters` and `customers` check: the settings, and the mapping config named or in METERHOOK_CONFIG. */
interface Settings {
  config: Config;
  file?: string;
  mapping?: MappingConfig;
}

async function settingsFor(args: string[]): Promise<Settings | undefined> {
  if (args.length > 1) return undefined;
  const config = loadConfig();
  const file = args[0] ?? config.mappingConfigFile;
  if (!file) return { config };
  const { config: mapping, issues } = await readMappingConfig(file);
  if (!mapping) throw new ConfigError(`${file}: ${issues.map((i) => `${i.path}: ${i.message}`).join("; ")}`);
  return { config, file, mapping };
}

/** Every event_name the settings name, and where: the mapping config's rules, aggregation, value rules. */
function namesInSettings({ config, file, mapping }: Settings): Map<string, string[]> {
  const names = new Map<string, string[]>();
  const add = (name: string, where: string) => names.set(name, [...(names.get(name) ?? []), where]);
  for (const [source, s] of Object.entries(mapping?.sources ?? {}))
    for (const rule of s.rules)
      for (const e of [...(rule.emit ?? []), ...(rule.cancel ?? [])])
        add(e.event_name, `${file}: ${source}/${rule.name}`);
  for (const name of config.aggregation?.meters.keys() ?? []) add(name, "METERHOOK_AGGREGATE");
  for (const name of config.valueRules.keys()) add(name, "METERHOOK_METER_VALUE_RULES");
  return names;
}

async function meters(settings: Settings): Promise<number> {
  const { config } = settings;
  const names = namesInSettings(settings);
  const active = await withStripeClient(config, (client) => readActiveMeters(client, Number.POSITIVE_INFINITY));
  console.log(`Stripe's active meters (${active.size}):`);
  for (const m of [...active.values()].sort((a, b) => a.eventName.localeCompare(b.eventName))) {
    const keys = m.defaultKeys ? "" : `  (customer key ${m.customerKey}, value key ${m.valueKey})`;
    console.log(`  ${m.eventName}  ${m.id}${keys}`);
  }
  let missing = 0;
  if (names.size > 0) console.log("event names in the settings:");
  for (const [name, where] of names) {
    const meter = active.get(name);
    if (!meter) missing++;
    console.log(`  ${name}  ${meter ? `ok (${meter.id})` : "NO ACTIVE METER"}  ${where.join(", ")}`);
  }
  if (missing > 0) {
    console.log(
      `${missing} event name${missing === 1 ? " has" : "s have"} no active meter: its events would be dead-lettered meter_not_found (with the meter check) or dropped by Stripe`,
    );
  }
  return missing > 0 ? 1 : 0;
}

/** Every table entry (app id → cus_ id) the settings hold, and where. */
function tableEntries({ config, file, mapping }: Settings): Array<[string, string, string]> {
  const entries: Array<[string, string, string]> = [];
  for (const [app, id] of config.customers) entries.push([app, id, "METERHOOK_CUSTOMERS(_FILE)"]);
  for (const [source, s] of Object.entries(mapping?.sources ?? {})) {
    if (s.customer.lookup !== "table") continue;
    const table = { ...s.customer.table };
    if (s.customer.file) Object.assign(table, JSON.parse(readFileSync(s.customer.file, "utf8")));
    for (const [app, id] of Object.entries(table)) entries.push([app, id as string, `${file}: ${source}`]);
  }
  return entries;
}

/**
 * The entries of the mapping config's `dynamodb` lookups' tables, read with a Scan each (the
 * operator's credentials need dynamodb:Scan); and those whose attribute is not a `cus_` id.
 */
async function dynamodbTableEntries({ config, file, mapping }: Settings) {
  const entries: Array<[string, string, string]> = [];
  const notIds: Array<[string, string, string]> = [];
  for (const [source, s] of Object.entries(mapping?.sources ?? {})) {
    const c = s.customer;
    if (c.lookup !== "dynamodb") continue;
    const items = await scanTable({
      region: c.region ?? config.aws.region,
      endpoint: config.aws.dynamodbEndpoint,
      requestTimeoutMs: config.aws.requestTimeoutMs,
      tableName: c.tableName,
      attributes: [...new Set([...Object.keys(c.key), c.stripeIdAttribute.split(".")[0] as string])],
    });
    const where = `${file}: ${source} (DynamoDB table ${c.tableName})`;
    for (const { customer, value } of dynamodbEntries(items, c)) {
      if (typeof value.S === "string" && isStripeCustomerId(value.S)) entries.push([customer, value.S, where]);
      else notIds.push([customer, JSON.stringify(value).slice(0, 80), where]);
    }
  }
  return { entries, notIds };
}

async function customers(settings: Settings): Promise<number> {
  const { config } = settings;
  const tables = await dynamodbTableEntries(settings);
  const entries = [...tableEntries(settings), ...tables.entries];
  for (const [app, value, where] of tables.notIds) console.log(`  ${app} -> ${value}  NOT A CUSTOMER ID  ${where}`);
  if (entries.length === 0) {
    console.log(
      "no customer table in the settings (METERHOOK_CUSTOMERS, METERHOOK_CUSTOMERS_FILE, table and dynamodb lookups)",
    );
    return tables.notIds.length > 0 ? 1 : 0;
  }
  const ids = entries.map(([, id]) => id);
  const states = await withStripeClient(config, (client) =>
    checkStripeCustomers(client, ids, Number.POSITIVE_INFINITY),
  );
  const bad = entries.filter(([, id]) => states.get(id) !== "ok");
  console.log(`${entries.length} table entries, ${states.size} Stripe customers checked`);
  for (const [app, id, where] of bad) {
    console.log(`  ${app} -> ${id}  ${states.get(id) === "deleted" ? "DELETED IN STRIPE" : "NOT IN STRIPE"}  ${where}`);
  }
  if (bad.length > 0) {
    console.log(
      `${bad.length} entr${bad.length === 1 ? "y names a customer" : "ies name customers"} Stripe does not have: their events would be accepted, then refused by Stripe (README "Stripe's error reports")`,
    );
  }
  if (tables.notIds.length > 0) {
    console.log(
      `${tables.notIds.length} DynamoDB item${tables.notIds.length === 1 ? " holds" : "s hold"} no cus_ id: their events would be dead-lettered customer_not_found`,
    );
  }
  return bad.length > 0 || tables.notIds.length > 0 ? 1 : 0;
}

async function map(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      header: { type: "string", multiple: true, default: [] },
      query: { type: "string" },
      "content-type": { type: "string" },
    },
    allowPositionals: true,
    strict: true,
  });
  const [file, source, triggerFile] = positionals;
  if (!file || !source || !triggerFile || positionals.length > 3) {
    console.error(USAGE);
    return 2;
  }
  // As given: an SQS message's attribute names are case-sensitive (a webhook's are lower-cased).
  const headers = headerOptions(values.header ?? []);
  if (!headers) return 2;
  // JSON is read as JSON whatever its type; a form needs its type.
  if (values["content-type"]) headers["content-type"] = values["content-type"];
  const body = triggerText(triggerFile);
  const { loadPreviewMapping, previewTrigger } = await import("../lib/preview.js");
  const config = loadConfig();
  const preview = await previewTrigger(
    await loadPreviewMapping(file),
    source,
    { headers, body, ...(values.query ? { query: values.query.replace(/^\?/, "") } : {}) },
    { valueRules: config.valueRules, maxBodyBytes: config.maxBodyBytes },
  );
  console.log(JSON.stringify(preview, null, 2));
  const refused = preview.outcome === "events" && preview.events.some((e) => "refused" in e);
  return preview.outcome === "dead-letter" || preview.outcome === "refused" || refused ? 1 : 0;
}

/** `--header "Name: value"` options as headers, names as given; undefined after printing why. */
function headerOptions(given: string[]): Record<string, string> | undefined {
  const headers: Record<string, string> = {};
  for (const h of given) {
    const at = h.indexOf(":");
    if (at < 1) {
      console.error(`--header must be "Name: value", got "${h}"`);
      return undefined;
    }
    headers[h.slice(0, at).trim()] = h.slice(at + 1).trim();
  }
  return headers;
}

/**
 * The trigger file's text. The newline an editor or `echo` ends a file with is not part of the
 * payload (a form's last field would end with it).
 */
const triggerText = (file: string) => readFileSync(file === "-" ? 0 : file, "utf8").replace(/\r?\n$/, "");

async function send(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      url: { type: "string", default: localGatewayUrl },
      header: { type: "string", multiple: true, default: [] },
      query: { type: "string" },
      "content-type": { type: "string", default: "application/json" },
    },
    allowPositionals: true,
    strict: true,
  });
  const [file, name, triggerFile] = positionals;
  const given = headerOptions(values.header ?? []);
  if (!file || !name || !triggerFile || positionals.length > 3 || !given) {
    if (given) console.error(USAGE);
    return 2;
  }
  const [{ loadMapping, readSecretRef }, { signWebhook }] = await Promise.all([
    import("../lib/mapping/runtime.js"),
    import("../lib/webhooks/sign.js"),
  ]);
  const source = (await loadMapping(file)).sources.get(name);
  if (!source) throw new ConfigError(`${file} has no source "${name}"`);
  const body = triggerText(triggerFile);
  if (source.type === "sqs") return sendToQueue(body, name);
  if (source.type === "eventbridge") {
    let event: unknown;
    try {
      event = JSON.parse(body);
    } catch {
      event = undefined;
    }
    if (!isEventBridgeEvent(event))
      throw new ConfigError(
        `"${name}" is an eventbridge source: send an EventBridge event (source, detail-type, detail)`,
      );
    // Routed by its `match`, as the consumer routes it: one it does not take would go elsewhere.
    if (!takesEventBridgeEvent(source, event))
      throw new ConfigError(`the event's source and detail-type are not what "${name}" matches`);
    return sendToQueue(body);
  }
  if (source.auth.scheme === "none")
    throw new ConfigError(`"${name}" is an ${source.type} source with no auth: nothing to sign`);
  const query = values.query?.replace(/^\?/, "") ?? "";
  const config = loadConfig();
  let auth: Record<string, string>;
  if (source.auth.scheme === "api-key") {
    const [key] = config.apiKeys;
    if (!key) throw new ConfigError("an api-key source needs METERHOOK_API_KEYS set, to send the first of them");
    auth = { authorization: `Bearer ${key}` };
  } else {
    const secret = await readSecretRef(source.auth.secrets[0] as SecretRef, process.env, secretReaderFor(config));
    auth = signWebhook(source.auth, secret, body, { query });
  }
  const url = `${values.url?.replace(/\/+$/, "")}/v1/webhooks/${encodeURIComponent(name)}${query ? `?${query}` : ""}`;
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": values["content-type"] as string, ...given, ...auth },
    body,
  }).catch((err: Error) => {
    const why = (err.cause as Error | undefined)?.message ?? err.message;
    throw new ConfigError(`cannot reach ${values.url} (${why}): is meterhook running there (npm start)?`);
  });
  console.log(`${res.status} ${await res.text()}`);
  return res.ok ? 0 : 1;
}

/**
 * Puts a trigger on the ingest queue as its producer would: an app's message named for its
 * source, or an EventBridge event as a rule's SQS target delivers it (no attribute: the consumer
 * routes it by its `match`).
 */
async function sendToQueue(body: string, source?: string): Promise<number> {
  const local = !process.env.METERHOOK_INGEST_QUEUE_URL;
  // Unset, npm start's fauxqs and ingest queue.
  const config = loadConfig(local ? { SQS_ENDPOINT: localSqsEndpoint(), ...process.env } : process.env);
  const queueUrl = config.ingestQueueUrl ?? localQueueUrl(INGEST_QUEUE);
  const [{ SendMessageCommand }, sqs] = await Promise.all([import("@aws-sdk/client-sqs"), sqsClientFor(config)()]);
  try {
    const { MessageId } = await sqs.send(
      new SendMessageCommand({
        QueueUrl: queueUrl,
        MessageBody: body,
        ...(source ? { MessageAttributes: { [SOURCE_ATTRIBUTE]: { DataType: "String", StringValue: source } } } : {}),
      }),
    );
    console.log(`queued ${MessageId} on ${queueUrl}`);
    return 0;
  } catch (err) {
    const e = err as Error;
    const why = (e.cause as Error | undefined)?.message ?? e.message;
    throw new ConfigError(
      `cannot send to ${queueUrl} (${e.name}: ${why})${local ? ": is meterhook running (npm start)?" : ""}`,
    );
  } finally {
    sqs.destroy();
  }
}

async function dlq(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { limit: { type: "string", default: "1000" } }, strict: true });
  const limit = Number(values.limit);
  if (!Number.isInteger(limit) || limit < 1) {
    console.error(`--limit must be a positive whole number\n${USAGE}`);
    return 2;
  }
  console.log(JSON.stringify(await summarizeDlqFromConfig(loadConfig(), { limit }), null, 2));
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === "validate") return validate(rest);
  if (command === "map") return map(rest);
  if (command === "send") return send(rest);
  if (command === "dlq") return dlq(rest);
  if (command === "meters" || command === "customers") {
    const settings = await settingsFor(rest);
    if (!settings) {
      console.error(USAGE);
      return 2;
    }
    return command === "meters" ? meters(settings) : customers(settings);
  }
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
      code: { type: "string", multiple: true },
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
    ...(values.code?.length ? { codes: values.code } : {}),
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
