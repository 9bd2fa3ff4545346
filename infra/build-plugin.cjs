// A local osls plugin that readies what the functions load, before the package step of
// `osls package` and `osls deploy`:
// - it builds the bundles (scripts/build.ts), so a deploy never zips a missing or stale dist/;
// - a code mapping config (mappingConfig: config/sources.ts) cannot be imported as a file on
//   Lambda (no TypeScript loader, no node_modules): it is bundled into each function, and the
//   functions' METERHOOK_CONFIG becomes `bundled:<path>`, which loads that copy;
// - a key kept in Secrets Manager (stripeKeySecretId, apiKeysSecretId, stripeEventsSecretId
//   params) replaces the SSM parameter in the functions' settings: a function is given one store
//   or the other, never both;
// - the JSON files the config's `table` lookups read (`file:`) are packaged with each function
//   that loads the config: on Lambda nothing else would put them there;
// - a file the functions read at cold start that does not exist, or a `{ env: NAME }` secret of
//   the config that the function's environment lacks, stops the package, naming it.
// Once the template is compiled, each function waits for the IAM policies of its role that stand
// apart from it (infra/config-access.cjs): CloudFormation would otherwise create them in any
// order, and a first deploy's function could run before it may read a secret or a table.
const { execFileSync } = require("node:child_process");
const { existsSync } = require("node:fs");
const { resolve } = require("node:path");
const { lookupFiles, secretRefs, sourcesOf } = require("./mapping-config.cjs");

const CODE_CONFIG = /\.(?:[cm]?[jt]s|tsx?)$/;

class MeterhookBuild {
  constructor(serverless) {
    const prepare = async () => {
      const functions = Object.values(serverless.service.functions ?? {});
      for (const f of functions) {
        for (const key of ["STRIPE_API_KEY", "METERHOOK_API_KEYS", "STRIPE_EVENTS_SECRET"]) {
          const env = f.environment ?? {};
          if (!(`${key}_SECRET_ID` in env)) continue;
          if (env[`${key}_SECRET_ID`]) delete env[`${key}_SSM_PARAMETER`];
          else delete env[`${key}_SECRET_ID`];
        }
      }
      // The files the functions read at cold start: a missing one would fail every cold start.
      const params = { METERHOOK_CONFIG: "mappingConfig", METERHOOK_CUSTOMERS_FILE: "customersFile" };
      for (const f of functions) {
        for (const [name, param] of Object.entries(params)) {
          const file = f.environment?.[name];
          if (typeof file !== "string" || file === "" || file.startsWith("bundled:")) continue;
          if (!existsSync(resolve(serverless.serviceDir, file)))
            throw new Error(`${file}, the ${param} param (${name}), does not exist`);
        }
      }
      // Run twice in one process (a package, then a function's), a code config is `bundled:` already.
      for (const f of functions) {
        const config = f.environment?.METERHOOK_CONFIG;
        if (typeof config === "string" && config.startsWith("bundled:"))
          f.environment.METERHOOK_CONFIG = config.slice(8);
      }
      const configs = [...new Set(functions.map((f) => f.environment?.METERHOOK_CONFIG).filter(Boolean))];
      const code = configs.filter((c) => CODE_CONFIG.test(c));
      if (code.length > 1) throw new Error(`one code mapping config per stage, not ${code.join(", ")}`);
      const codeConfig = code[0];
      execFileSync(process.execPath, ["--import", "tsx", "scripts/build.ts"], {
        cwd: serverless.serviceDir,
        stdio: "inherit",
        env: { ...process.env, ...(codeConfig ? { METERHOOK_BUNDLE_CONFIG: codeConfig } : {}) },
      });
      const files = new Map();
      const envNames = new Map();
      for (const config of configs) {
        const sources = await sourcesOf(resolve(serverless.serviceDir, config));
        const read = lookupFiles(sources);
        for (const file of read) {
          if (!existsSync(resolve(serverless.serviceDir, file)))
            throw new Error(`${file}, which a table lookup of ${config} reads, does not exist`);
        }
        files.set(config, read);
        // The `{ env: NAME }` secrets, by the function that reads them.
        const { webhooks, lookups } = secretRefs(sources);
        const names = (refs) => [...new Set(refs.filter((r) => typeof r?.env === "string").map((r) => r.env))];
        envNames.set(config, { webhooks: names(webhooks), lookups: names(lookups) });
      }
      for (const [key, f] of Object.entries(serverless.service.functions ?? {})) {
        const config = f.environment?.METERHOOK_CONFIG;
        if (!config) continue;
        // A `{ env: NAME }` secret this function reads must be in its environment: on Lambda
        // only serverless.yml can put it there, and a cold start without it fails.
        const { webhooks, lookups } = envNames.get(config);
        const reads = /\/http-api\//.test(f.handler)
          ? webhooks
          : /\/(ingest-queue|dlq-replay)\//.test(f.handler)
            ? lookups
            : [];
        for (const name of reads) {
          if (f.environment?.[name] === undefined && serverless.service.provider?.environment?.[name] === undefined)
            throw new Error(
              `${config} reads the secret { env: ${name} }, which is not in the ${key} function's environment: on AWS keep it in SSM or Secrets Manager, named { ssm: ... } or { secretsManager: ... }`,
            );
        }
        const extra = files.get(config) ?? [];
        if (extra.length > 0) {
          f.package ??= {};
          f.package.patterns = [...(f.package.patterns ?? []), ...extra];
        }
        if (config === codeConfig) f.environment.METERHOOK_CONFIG = `bundled:${codeConfig}`;
      }
    };
    const awaitPolicies = () => {
      const resources = serverless.service.provider.compiledCloudFormationTemplate.Resources;
      const policiesOf = new Map();
      for (const [name, r] of Object.entries(resources)) {
        if (r.Type !== "AWS::IAM::Policy") continue;
        for (const role of r.Properties.Roles ?? []) {
          if (typeof role?.Ref === "string") policiesOf.set(role.Ref, [...(policiesOf.get(role.Ref) ?? []), name]);
        }
      }
      for (const r of Object.values(resources)) {
        const role = r.Type === "AWS::Lambda::Function" ? r.Properties.Role?.["Fn::GetAtt"]?.[0] : undefined;
        const policies = policiesOf.get(role) ?? [];
        if (policies.length > 0) r.DependsOn = [...new Set([...[r.DependsOn ?? []].flat(), ...policies])];
      }
    };
    this.hooks = {
      "before:package:createDeploymentArtifacts": prepare,
      "after:aws:package:finalize:mergeCustomProviderResources": awaitPolicies,
      // `osls deploy function -f <name>` packages that function alone.
      "before:deploy:function:packageFunction": prepare,
    };
  }
}

module.exports = MeterhookBuild;
