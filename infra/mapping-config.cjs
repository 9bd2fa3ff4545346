// Reads a mapping config at package time: a YAML/JSON file, or a code config (defineSource)
// imported through tsx. Used by config-access.cjs (the IAM for what the config's sources read)
// and build-plugin.cjs (the files its lookups read, packaged with the functions, and the
// environment variables its secrets name, checked).
const { existsSync, readFileSync } = require("node:fs");
const { resolve } = require("node:path");
const { pathToFileURL } = require("node:url");
const { load, CORE_SCHEMA } = require("js-yaml");

/** Each source's settings: `{ auth, customer }`, as written (YAML/JSON) or as defineSource parsed them. */
async function sourcesOf(file) {
  if (!existsSync(file)) throw new Error(`${file}, the mappingConfig param (METERHOOK_CONFIG), does not exist`);
  if (/\.(ya?ml|json)$/i.test(file)) {
    const config = load(readFileSync(file, "utf8"), { schema: CORE_SCHEMA }) ?? {};
    return Object.values(config.sources ?? {}).filter(Boolean);
  }
  // A code config, imported as `npm start` imports it (tsx), with what it imports.
  const { tsImport } = await import("tsx/esm/api");
  const { default: config } = await tsImport(pathToFileURL(resolve(file)).href, __filename);
  return (config?.sources ?? []).filter(Boolean);
}

/** The JSON files `table` lookups read at cold start (`file:`), relative to the service. */
function lookupFiles(sources) {
  const files = new Set();
  for (const { customer: c } of sources) if (c?.lookup === "table" && typeof c.file === "string") files.add(c.file);
  return [...files];
}

/**
 * The secret references of the sources, by the function that reads them: `webhooks` (secrets and
 * Verify Tokens, read by the HTTP API) and `lookups` (http lookups' headers, read by the consumer
 * and replay).
 */
function secretRefs(sources) {
  const webhooks = [];
  const lookups = [];
  for (const { auth, customer: c } of sources) {
    webhooks.push(...(auth?.secrets ?? []), ...(auth?.verifyTokens ?? []));
    if (c?.lookup === "http") lookups.push(...Object.values(c.headers ?? {}));
  }
  return { webhooks, lookups };
}

module.exports = { sourcesOf, lookupFiles, secretRefs };
