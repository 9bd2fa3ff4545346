// A local osls plugin: builds the function bundles (scripts/build.ts) before the package step of
// `osls package` and `osls deploy`, so a deploy never zips a missing or stale dist/.
const { execFileSync } = require("node:child_process");

class MeterhookBuild {
  constructor(serverless) {
    const build = () => {
      execFileSync(process.execPath, ["--import", "tsx", "scripts/build.ts"], {
        cwd: serverless.serviceDir,
        stdio: "inherit",
      });
    };
    this.hooks = {
      "before:package:createDeploymentArtifacts": build,
      // `osls deploy function -f <name>` packages that function alone.
      "before:deploy:function:packageFunction": build,
    };
  }
}

module.exports = MeterhookBuild;
