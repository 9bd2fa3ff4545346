// A local osls plugin: builds the function bundles (scripts/build.ts) before the package step of
// `osls package` and `osls deploy`, so a deploy never zips a missing or stale dist/.
// A code mapping config (mappingConfig: config/sources.ts) cannot be imported as a file on
// Lambda: no TypeScript loader, no node_modules. It is bundled into each function instead, and
// the functions' METERHOOK_CONFIG becomes `bundled:<path>`, which loads that copy.
const { execFileSync } = require("node:child_process");

const CODE_CONFIG = /\.(?:[cm]?[jt]s|tsx?)$/;

class MeterhookBuild {
  constructor(serverless) {
    const build = () => {
      const functions = Object.values(serverless.service.functions ?? {});
      const configs = new Set(functions.map((f) => f.environment?.METERHOOK_CONFIG).filter(Boolean));
      const code = [...configs].filter((c) => CODE_CONFIG.test(c));
      if (code.length > 1) throw new Error(`one code mapping config per stage, not ${code.join(", ")}`);
      const codeConfig = code[0];
      execFileSync(process.execPath, ["--import", "tsx", "scripts/build.ts"], {
        cwd: serverless.serviceDir,
        stdio: "inherit",
        env: { ...process.env, ...(codeConfig ? { METERHOOK_BUNDLE_CONFIG: codeConfig } : {}) },
      });
      if (!codeConfig) return;
      for (const f of functions) {
        if (f.environment?.METERHOOK_CONFIG === codeConfig) f.environment.METERHOOK_CONFIG = `bundled:${codeConfig}`;
      }
    };
    this.hooks = {
      "before:package:createDeploymentArtifacts": build,
      // `osls deploy function -f <name>` packages that function alone.
      "before:deploy:function:packageFunction": build,
    };
  }
}

module.exports = MeterhookBuild;
