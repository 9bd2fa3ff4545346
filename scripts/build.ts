/**
 * Bundles each Lambda entry point in functions/ into dist/<name>/index.mjs with esbuild:
 * tree-shaken, minified, with source maps, and reports each bundle's size against its budget.
 */
import { mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { build } from "esbuild";
import { BUDGET_KIB } from "./bundle-budgets.js";

const entries = readdirSync("functions").filter((f) => f.endsWith(".ts"));
const sizes: Record<string, number> = {};
let over = false;
for (const file of entries) {
  const name = basename(file, ".ts");
  const outdir = join("dist", name);
  mkdirSync(outdir, { recursive: true });
  await build({
    entryPoints: [join("functions", file)],
    outfile: join(outdir, "index.mjs"),
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node22",
    minify: true,
    sourcemap: true,
    sourcesContent: false,
    treeShaking: true,
    legalComments: "none",
    // Some CommonJS dependencies call require(); give ESM bundles one.
    banner: { js: "import{createRequire as __cr}from'node:module';const require=__cr(import.meta.url);" },
    logLevel: "warning",
  });
  const kib = statSync(join(outdir, "index.mjs")).size / 1024;
  sizes[name] = Math.round(kib * 10) / 10;
  const budget = BUDGET_KIB[name];
  const status = budget === undefined ? "NO BUDGET" : kib <= budget ? "ok" : "OVER BUDGET";
  if (status !== "ok") over = true;
  console.log(`${name.padEnd(16)} ${kib.toFixed(1).padStart(8)} KiB   budget ${budget ?? "-"} KiB   ${status}`);
}
writeFileSync(join("dist", "sizes.json"), `${JSON.stringify(sizes, null, 2)}\n`);
if (over) {
  console.error("a bundle has no budget or is over it (scripts/bundle-budgets.ts)");
  process.exit(1);
}
