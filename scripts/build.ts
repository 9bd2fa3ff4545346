/**
 * Bundles each Lambda entry point in functions/ into dist/<name>/index.mjs with esbuild:
 * tree-shaken, minified, with source maps, and reports each bundle's size, in all and loaded at
 * cold start, against its budgets. Code splitting turns dynamic imports (secret stores, the
 * mapping engine, the SQS client, the Stripe transport) into chunks loaded only when used.
 */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { build } from "esbuild";
import { BUDGET_KIB, COLD_START_BUDGET_KIB } from "./bundle-budgets.js";

const entries = readdirSync("functions").filter((f) => f.endsWith(".ts"));
const sizes: Record<string, number> = {};
const coldStartSizes: Record<string, number> = {};
let over = false;
for (const file of entries) {
  const name = basename(file, ".ts");
  const outdir = join("dist", name);
  rmSync(outdir, { recursive: true, force: true });
  mkdirSync(outdir, { recursive: true });
  const { metafile } = await build({
    metafile: true,
    entryPoints: { index: join("functions", file) },
    outdir,
    splitting: true,
    entryNames: "[name]",
    chunkNames: "chunks/[name]-[hash]",
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    // ESM builds first: with Node's default ("main" first) the AWS SDK resolves to its CommonJS
    // build, whose dynamic import gives a chunk without named exports (`SQSClient` undefined).
    mainFields: ["module", "main"],
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
  // Both figures from esbuild's metafile: every .mjs output, and what a cold start loads
  // (index.mjs and, transitively, every chunk it imports statically).
  const kibOf = (outs: Iterable<string>) => {
    let bytes = 0;
    for (const out of outs) bytes += metafile.outputs[out]?.bytes ?? 0;
    return bytes / 1024;
  };
  const kib = kibOf(Object.keys(metafile.outputs).filter((out) => out.endsWith(".mjs")));
  const loaded = new Set<string>();
  const visit = (out: string) => {
    if (loaded.has(out)) return;
    loaded.add(out);
    for (const i of metafile.outputs[out]?.imports ?? [])
      if (i.kind === "import-statement" && !i.external) visit(i.path);
  };
  visit(join(outdir, "index.mjs"));
  const initial = kibOf(loaded);
  sizes[name] = Math.round(kib * 10) / 10;
  coldStartSizes[name] = Math.round(initial * 10) / 10;
  const budget = BUDGET_KIB[name];
  const coldBudget = COLD_START_BUDGET_KIB[name];
  const ok = budget !== undefined && coldBudget !== undefined && kib <= budget && initial <= coldBudget;
  if (!ok) over = true;
  console.log(
    `${name.padEnd(16)} ${kib.toFixed(1).padStart(8)} KiB in all (budget ${budget ?? "-"}), ${initial.toFixed(1).padStart(7)} KiB loaded at cold start (budget ${coldBudget ?? "-"})   ${ok ? "ok" : "OVER BUDGET"}`,
  );
}
writeFileSync(join("dist", "sizes.json"), `${JSON.stringify(sizes, null, 2)}\n`);
writeFileSync(join("dist", "cold-start-sizes.json"), `${JSON.stringify(coldStartSizes, null, 2)}\n`);
if (over) {
  console.error("a bundle has no budget or is over it (scripts/bundle-budgets.ts)");
  process.exit(1);
}
