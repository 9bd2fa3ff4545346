// A local osls plugin that readies what the functions load, before the package step of
// `osls package` and `osls deploy`:
// - it builds the bundles (scripts/build.ts), so a deploy never zips a missing or stale dist/;
// - a code mapping config (mappingConfig: config/sources.ts) cannot be imported as a file on
//   Lambda (no TypeScript loader, no node_modules): it is bundled into each function, and the
//   functions' METERHOOK_CONFIG becomes `bundled:<path>`, which loads that copy;
// - the JSON files the config's `table` lookups read (`file:`) are packaged with each function
//   that loads the config: on Lambda nothing else would put them there;
// - a file the functions read at cold start that does not exist stops the package, naming it.
const { execFileSync } = require("node:child_process");
const { existsSync } = require("node:fs");
const { resolve } = require("node:path");
const { lookupFiles } = require("./mapping-config.cjs");

const CODE_CONFIG = /\.(?:[cm]?[jt]s|tsx?)$/;

class MeterhookBuild {
  constructor(serverless) {
    const prepare = async () => {
      const functions = Object.values(serverless.service.functions ?? {});
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
      for (const config of configs) {
        const read = await lookupFiles(resolve(serverless.serviceDir, config));
        for (const file of read) {
          if (!existsSync(resolve(serverless.serviceDir, file)))
            throw new Error(`${file}, which a table lookup of ${config} reads, does not exist`);
        }
        files.set(config, read);
      }
      for (const f of functions) {
        const config = f.environment?.METERHOOK_CONFIG;
        if (!config) continue;
        const extra = files.get(config) ?? [];
        if (extra.length > 0) {
          f.package ??= {};
          f.package.patterns = [...(f.package.patterns ?? []), ...extra];
        }
        if (config === codeConfig) f.environment.METERHOOK_CONFIG = `bundled:${codeConfig}`;
      }
    };
    this.hooks = {
      "before:package:createDeploymentArtifacts": prepare,
      // `osls deploy function -f <name>` packages that function alone.
      "before:deploy:function:packageFunction": prepare,
    };
  }
}

module.exports = MeterhookBuild;
