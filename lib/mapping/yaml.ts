import { CORE_SCHEMA, load } from "js-yaml";

/**
 * The YAML parser, in a module of its own so that load.ts loads it only for YAML files. js-yaml
 * rather than `yaml`: loading and first use cost about half as much at cold start
 * (BENCHMARKS.md, "Cold start"), with the same YAML 1.2 core schema (dates stay strings).
 */
export function parseYaml(text: string): unknown {
  return load(text, { schema: CORE_SCHEMA });
}
