/**
 * Bundles each Lambda entry point in functions/ into dist/<name>/index.mjs with esbuild:
 * tree-shaken, minified, with source maps, and reports each bundle's size, in all and loaded at
 * cold start, against its budgets. Code splitting turns dynamic imports (secret stores, the
 * mapping engine, the SQS client, the Stripe transport) into chunks loaded only when used.
 *
 * METERHOOK_BUNDLE_CONFIG names a code mapping config (a module of `defineSource` sources): it is
 * bundled into each function as a chunk, sharing meterhook's own modules (its errors must be the
 * classes the consumer checks for), and loaded with METERHOOK_CONFIG=bundled:<path>. Without
 * it, that chunk is an empty stand-in. METERHOOK_BUILD_DIR writes elsewhere than dist/ (tests).
 */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { basename, join, relative, resolve as resolvePath } from "node:path";
import { build, type Plugin } from "esbuild";
import { BUDGET_KIB, COLD_START_BUDGET_KIB } from "./bundle-budgets.js";

const entries = readdirSync("functions").filter((f) => f.endsWith(".ts"));
const outRoot = process.env.METERHOOK_BUILD_DIR ?? "dist";
const codeConfig = process.env.METERHOOK_BUNDLE_CONFIG;
/** `import("meterhook-code-config")` (lib/mapping/runtime.ts): the code config, or the stand-in. */
const codeConfigModule: Plugin = {
  name: "meterhook-code-config",
  setup(b) {
    b.onResolve({ filter: /^meterhook-code-config$/ }, () => ({
      path: resolvePath(codeConfig ?? "lib/mapping/no-code-config.ts"),
    }));
  },
};
const sizes: Record<string, number> = {};
const coldStartSizes: Record<string, number> = {};
let over = false;
for (const file of entries) {
  const name = basename(file, ".ts");
  const outdir = join(outRoot, name);
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
    plugins: [codeConfigModule],
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
  // The metafile names outputs relative to the working directory, whatever outdir is.
  visit(relative(process.cwd(), resolvePath(outdir, "index.mjs")));
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
writeFileSync(join(outRoot, "sizes.json"), `${JSON.stringify(sizes, null, 2)}\n`);
writeFileSync(join(outRoot, "cold-start-sizes.json"), `${JSON.stringify(coldStartSizes, null, 2)}\n`);
if (over && codeConfig) {
  // The budgets hold meterhook's own code; a deployment's code config is its own to weigh.
  console.warn(
    `with the code mapping config ${codeConfig}, a bundle is over meterhook's budget: it adds to every function's cold start (\`import * as z from "zod"\` rather than \`import { z }\` keeps zod's unused parts out)`,
  );
} else if (over) {
  console.error("a bundle has no budget or is over it (scripts/bundle-budgets.ts)");
  process.exit(1);
}
