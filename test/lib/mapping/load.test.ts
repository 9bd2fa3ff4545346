import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import { parse as parseYaml } from "yaml";
import { readMappingConfig, validateMappingConfig } from "../../../lib/mapping/load.js";
import { mappingJsonSchema } from "../../../scripts/schema.js";

const run = promisify(execFile);
const valid = {
  version: 1,
  sources: {
    app: {
      type: "webhook",
      auth: { scheme: "github", secrets: [{ env: "GH_SECRET" }] },
      rules: [{ name: "r", id: "body.id", customer: "body.c", emit: [{ event_name: "e" }] }],
    },
  },
};

describe("mapping config validation", () => {
  test("cancel rules: emit or cancel, an id, and a rule that makes the event", () => {
    const sqs = (rules: unknown[]) => ({ version: 1, sources: { shop: { type: "sqs", rules } } });
    const placed = { name: "placed", id: "body.id", customer: "body.c", emit: [{ event_name: "orders" }] };
    const ok = validateMappingConfig(
      sqs([placed, { name: "refunded", id: "body.id", cancel: [{ event_name: "orders", rule: "placed" }] }]),
    );
    assert.deepEqual(ok.issues, []);
    const paths = (rules: unknown[]) => validateMappingConfig(sqs(rules)).issues.map((i) => `${i.path}: ${i.message}`);
    assert.deepEqual(paths([placed, { name: "x", id: "body.id" }]), [
      "sources.shop.rules[1]: a rule has emit or cancel, one of them",
    ]);
    assert.deepEqual(paths([{ ...placed, cancel: [{ event_name: "orders" }] }]), [
      "sources.shop.rules[0]: a rule has emit or cancel, one of them",
    ]);
    assert.deepEqual(paths([placed, { name: "x", cancel: [{ event_name: "orders", source: "shop" }] }]), [
      "sources.shop.rules[1].cancel[0]: source needs rule",
    ]);
    assert.deepEqual(
      paths([
        placed,
        { name: "x", cancel: [{ event_name: "orders", rule: "placed" }] },
        { name: "y", id: "body.id", cancel: [{ event_name: "order", rule: "placed" }] },
        { name: "z", id: "body.id", cancel: [{ event_name: "orders", rule: "placed", source: "other" }] },
        { name: "w", id: "body.id ==", cancel: [{ event_name: "orders" }] },
      ]),
      [
        "sources.shop.rules[1].cancel[0].id: an id expression is required (here or on the rule)",
        'sources.shop.rules[2].cancel[0].rule: no rule "placed" of source "shop" emits "order"',
        'sources.shop.rules[3].cancel[0].rule: no rule "placed" of source "other" emits "orders"',
        "sources.shop.rules[4].id: " +
          (validateMappingConfig(sqs([{ ...placed, id: "body.id ==" }])).issues[0]?.message ?? ""),
      ],
    );
  });

  test("each: its expression compiles, and an id must tell the items apart", () => {
    const sqs = (rule: Record<string, unknown>) => ({
      version: 1,
      sources: {
        app: { type: "sqs", rules: [{ name: "r", customer: "item.c", emit: [{ event_name: "e" }], ...rule }] },
      },
    });
    const paths = (rule: Record<string, unknown>) =>
      validateMappingConfig(sqs(rule)).issues.map((i) => `${i.path}: ${i.message}`);
    assert.deepEqual(paths({ each: "body.records", id: "item.id" }), []);
    assert.deepEqual(paths({ each: "body.records", id: "join('-', [body.batch, to_string(index)])" }), []);
    assert.deepEqual(paths({ each: "body.records", id: "join('-', [query.batch, to_string(index)])" }), []);
    assert.deepEqual(paths({ each: "body.records", id: "body.batch" }), [
      "sources.app.rules[0].id: with each, an id must tell the items apart: use item or index",
    ]);
    assert.deepEqual(paths({ each: "body.records", id: "to_string(index)" }), [
      "sources.app.rules[0].id: index alone repeats in every trigger: join it with the trigger's own id (body.batch_id)",
    ]);
    assert.match(paths({ each: "body.records[", id: "item.id" })[0] ?? "", /^sources\.app\.rules\[0\]\.each: /);
  });

  test("a valid config passes, with defaults applied", () => {
    const { config, issues } = validateMappingConfig(valid);
    assert.deepEqual(issues, []);
    assert.equal(config?.sources.app?.unmatched, "ignore");
    assert.equal(config?.sources.app?.rules[0]?.emit?.[0]?.value, "`1`");
  });

  test("reports every problem with its path", () => {
    const { issues } = validateMappingConfig({
      version: 1,
      sources: {
        Bad_Name: { type: "sqs", rules: [] },
        app: {
          type: "webhook",
          auth: { scheme: "none" },
          rules: [
            {
              name: "r",
              when: "body.a ==",
              emit: [
                { event_name: "e", value: "nosuch(body.x)" },
                { event_name: "e", id: "body.id", customer: "body.c" },
              ],
            },
          ],
        },
        bus: {
          type: "eventbridge",
          rules: [{ name: "r", id: "body.id", customer: "body.c", emit: [{ event_name: "e", colour: "red" }] }],
        },
      },
    });
    const paths = issues.map((i) => i.path);
    assert.ok(paths.includes("sources.Bad_Name"), paths.join(", "));
    assert.ok(paths.includes("sources.bus.rules[0].emit[0]"), paths.join(", "));
    const { issues: semantic } = validateMappingConfig({
      version: 1,
      sources: {
        app: {
          type: "webhook",
          auth: { scheme: "none" },
          rules: [
            {
              name: "r",
              when: "body.a ==",
              emit: [
                { event_name: "e", value: "nosuch(body.x)" },
                { event_name: "e", id: "body.id", customer: "body.c" },
              ],
            },
          ],
        },
        bus: {
          type: "eventbridge",
          rules: [{ name: "r", id: "body.id", customer: "body.c", emit: [{ event_name: "e" }] }],
        },
      },
      sqs: { defaultSource: "bus" },
    });
    const byPath = Object.fromEntries(semantic.map((i) => [i.path, i.message]));
    assert.match(byPath["sources.app.auth"] ?? "", /needs a signature scheme/);
    assert.match(byPath["sources.app.rules[0].when"] ?? "", /jmespath expression: parse error/);
    assert.match(byPath["sources.app.rules[0].emit[0].value"] ?? "", /Unknown function: nosuch/);
    assert.match(byPath["sources.app.rules[0].emit[0].id"] ?? "", /id expression is required/);
    assert.match(byPath["sources.app.rules[0].emit[1].event_name"] ?? "", /its own event_name/);
    assert.match(byPath["sources.bus.match"] ?? "", /match.source/);
    assert.match(byPath["sqs.defaultSource"] ?? "", /not an sqs source/);
  });

  test("an HTTP lookup header that HTTP cannot carry is refused at load, with its path", () => {
    const withHeaders = (headers: Record<string, string>) =>
      validateMappingConfig({
        ...valid,
        sources: {
          app: {
            ...valid.sources.app,
            customer: { lookup: "http", url: "https://app.example.com/billing/{customer}", headers },
          },
        },
      }).issues;
    assert.deepEqual(withHeaders({ "x-api-version": "2" }), []);
    const value = withHeaders({ "x-api-version": "2\r\nx-injected: 1" });
    assert.ok(
      value.some((i) => i.path.startsWith("sources.app.customer.headers") && /CR, LF or NUL/.test(i.message)),
      JSON.stringify(value),
    );
    const name = withHeaders({ "x api": "2" });
    // zod reports a bad record key as "Invalid key in record"; the path names the header.
    assert.ok(
      name.some((i) => i.path === "sources.app.customer.headers.x api"),
      JSON.stringify(name),
    );
  });

  test("the committed JSON Schema matches the zod schema", () => {
    assert.equal(
      readFileSync("schema/meterhook-config.schema.json", "utf8"),
      mappingJsonSchema(),
      "run `npm run schema`",
    );
  });
});

describe("reading a config file", () => {
  const dir = mkdtempSync(join(tmpdir(), "mh-config-"));

  test("every shipped example is valid, and reads as the `yaml` package (the parser before js-yaml) reads it", async () => {
    for (const f of readdirSync("examples").filter((x) => x.endsWith(".yaml"))) {
      const file = join("examples", f);
      const reference = validateMappingConfig(parseYaml(readFileSync(file, "utf8")));
      assert.deepEqual(reference.issues, [], f);
      const read = await readMappingConfig(file);
      assert.deepEqual(read.issues, [], f);
      assert.deepEqual(read.config, reference.config, f);
    }
  });

  test("a .json config reads to the same config as its YAML twin", async () => {
    const yamlFile = "examples/standard-webhooks.yaml";
    const jsonFile = join(dir, "standard-webhooks.json");
    writeFileSync(jsonFile, JSON.stringify(parseYaml(readFileSync(yamlFile, "utf8"))));
    const fromJson = await readMappingConfig(jsonFile);
    assert.deepEqual(fromJson.issues, []);
    assert.deepEqual(fromJson.config, (await readMappingConfig(yamlFile)).config);
  });

  test("YAML 1.2 core schema: an unquoted date stays a string, and a duplicate key is an error", async () => {
    const dated = join(dir, "dated.yaml");
    writeFileSync(
      dated,
      "version: 1\nsources:\n  q:\n    type: sqs\n    customer: { lookup: table, table: { 2024-01-01: cus_Dated0001 } }\n    rules:\n      - { name: r, id: body.id, customer: body.c, emit: [{ event_name: e }] }\n",
    );
    const read = await readMappingConfig(dated);
    assert.deepEqual(read.issues, []);
    const lookup = read.config?.sources.q?.customer;
    assert.deepEqual(lookup?.lookup === "table" && lookup.table, { "2024-01-01": "cus_Dated0001" });

    const twice = join(dir, "twice.yaml");
    writeFileSync(twice, "version: 1\nversion: 1\nsources: {}\n");
    const dup = await readMappingConfig(twice);
    assert.equal(dup.config, undefined);
    assert.equal(dup.issues[0]?.path, "(file)");
    assert.match(dup.issues[0]?.message ?? "", /^not valid YAML\/JSON: duplicated mapping key \(2:1\)/);
  });

  test("a .json file that is not JSON is refused as JSON, with the parser's reason", async () => {
    const file = join(dir, "broken.json");
    writeFileSync(file, "{ version: 1 }");
    const { config, issues } = await readMappingConfig(file);
    assert.equal(config, undefined);
    assert.equal(issues.length, 1);
    assert.equal(issues[0]?.path, "(file)");
    assert.match(issues[0]?.message ?? "", /^not valid JSON: .*property name/);
  });

  test("a missing file is one issue naming the file", async () => {
    const { issues } = await readMappingConfig(join(dir, "nope.yaml"));
    assert.equal(issues.length, 1);
    assert.match(issues[0]?.message ?? "", /^cannot read .*nope\.yaml/);
  });
});

describe("meterhook validate", () => {
  test("exits 0 and says ok for a valid file", async () => {
    const { stdout } = await run("npx", ["tsx", "cli/meterhook.ts", "validate", "examples/llm-usage.yaml"]);
    assert.match(stdout, /examples\/llm-usage\.yaml: ok \(1 source\)/);
  });

  test("exits 1 listing each error with its path", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mh-validate-"));
    const file = join(dir, "bad.yaml");
    writeFileSync(
      file,
      "version: 1\nsources:\n  app:\n    type: webhook\n    auth: { scheme: github, secrets: [] }\n    rules:\n      - name: r\n        emit:\n          - event_name: ''\n",
    );
    const err = await run("npx", ["tsx", "cli/meterhook.ts", "validate", file]).then(
      () => assert.fail("expected a non-zero exit"),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(err.code, 1);
    assert.match(err.stderr, /sources\.app\.auth\.secrets: /);
    assert.match(err.stderr, /sources\.app\.rules\[0\]\.emit\[0\]\.event_name: /);
    assert.match(err.stderr, /\d+ problems/);
  });
});
