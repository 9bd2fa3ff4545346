/**
 * Writes the JSON Schema of the mapping config, generated from its zod schema, so editors can
 * validate and complete config files (`# yaml-language-server: $schema=...`). `npm run schema`;
 * a test fails when the committed file is out of date.
 */
import { writeFileSync } from "node:fs";
import { z } from "zod";
import { MappingConfigSchema } from "../lib/mapping/config-schema.js";

export function mappingJsonSchema(): string {
  const schema = z.toJSONSchema(MappingConfigSchema, { io: "input", target: "draft-2020-12" });
  return `${JSON.stringify({ ...schema, title: "meterhook mapping config" }, null, 2)}\n`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  writeFileSync("schema/meterhook-config.schema.json", mappingJsonSchema());
  console.log("wrote schema/meterhook-config.schema.json");
}
