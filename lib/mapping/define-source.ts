import type * as z from "zod";
import {
  type Auth,
  AuthSchema,
  type CustomerLookupConfig,
  CustomerLookupSchema,
  type SourceConfig,
} from "./config-schema.js";
import { MappingError, type Source, type Trigger } from "./engine.js";

/** One meter event, as a code source returns it. */
export interface MeterEventSpec {
  event_name: string;
  value: number;
  /** Text, or a number below 2^53. */
  id: string | number;
  /** Text, or a whole number (looked up as its text). */
  customer: string | number;
  timestamp?: string | number;
  properties?: Record<string, string | number>;
  /** Keeps apart several events of one trigger that share an event_name (default "code"). */
  key?: string;
}

/**
 * One meter event a code source cancels: `id` and `event_name` as it was made with; `rule` is
 * the `key` of the code source that made it ("code" by default) and `source` that source
 * (default: this one); neither for an event sent as a canonical event.
 */
export interface CancelSpec {
  cancel: true;
  event_name: string;
  id: string | number;
  rule?: string;
  source?: string;
}

export interface SourceDefinition<S extends z.ZodType> {
  name: string;
  type: SourceConfig["type"];
  auth?: z.input<typeof AuthSchema>;
  match?: SourceConfig["match"];
  customer?: z.input<typeof CustomerLookupSchema>;
  unmatched?: SourceConfig["unmatched"];
  /** Validates the trigger body; a body that fails it is dead-lettered with mapping_failed. */
  schema: S;
  /** The meter events for a body that passed the schema, and those it cancels; [] when none apply. */
  map: (body: z.infer<S>, trigger: Trigger) => Array<MeterEventSpec | CancelSpec>;
}

/**
 * The typed TypeScript way to write a source: a zod schema for the body and a function from the
 * body to meter events. It runs through the same engine as config sources (validation,
 * identifiers, customer lookups, dead letters).
 */
export function defineSource<S extends z.ZodType>(def: SourceDefinition<S>): Source {
  const auth: Auth = AuthSchema.parse(def.auth ?? { scheme: "none" });
  const customer: CustomerLookupConfig = CustomerLookupSchema.parse(def.customer ?? { lookup: "event" });
  return {
    name: def.name,
    type: def.type,
    auth,
    match: def.match,
    customer,
    unmatched: def.unmatched ?? "ignore",
    produce(trigger) {
      const parsed = def.schema.safeParse(trigger.body);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new MappingError(
          `body does not match the source's schema: ${issue?.path.join(".") || "(body)"}: ${issue?.message}`,
        );
      }
      return def
        .map(parsed.data, trigger)
        .map((e) => ("cancel" in e ? { ...e, key: "code" } : { ...e, key: e.key ?? "code" }));
    },
  };
}
