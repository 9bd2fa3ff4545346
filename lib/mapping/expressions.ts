import {
  EmptyExpressionError,
  IncompleteExpressionError,
  LexerError,
  ParseError,
  search,
  UnknownFunctionError,
} from "@aws-lambda-powertools/jmespath";
import { PowertoolsFunctions } from "@aws-lambda-powertools/jmespath/functions";
import type { JSONObject } from "@aws-lambda-powertools/jmespath/types";

/**
 * JMESPath (Powertools' implementation) plus the few functions billing needs that JMESPath lacks:
 * arithmetic for unit conversions and time differences. Everything else is standard JMESPath:
 * `sum(body.items[].qty)`, `length(body.items)`, literals such as `` `1` `` and `'eu'`.
 *
 * - `multiply(a, b)`, `divide(a, b)`: numbers; `divide(body.bytes, \`1e9\`)` gives GB.
 * - `round_to(n, digits)`: rounds to a number of decimals.
 * - `epoch_seconds(t)`: an ISO-8601 string or Unix seconds, as Unix seconds.
 * - `seconds_between(start, end)`: `end - start` in seconds, for ISO-8601 strings or Unix seconds.
 *
 * A function given the wrong type (a missing field is null) throws a JMESPath type error, and a
 * division by zero answers null: either way the rule fails with `mapping_failed` naming the
 * expression, rather than billing a half-computed value.
 */
class MeterhookFunctions extends PowertoolsFunctions {}

const toSeconds = (t: unknown): number | null => {
  if (typeof t === "number" && Number.isFinite(t)) return t;
  if (typeof t !== "string") return null;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms / 1000;
};
const finite = (n: number) => (Number.isFinite(n) ? n : null);

const extraFunctions: Record<string, { specs: string[][]; fn: (...args: never[]) => unknown }> = {
  funcMultiply: { specs: [["number"], ["number"]], fn: (a: number, b: number) => finite(a * b) },
  funcDivide: { specs: [["number"], ["number"]], fn: (a: number, b: number) => (b === 0 ? null : finite(a / b)) },
  funcRoundTo: {
    specs: [["number"], ["number"]],
    fn: (n: number, d: number) => {
      const f = 10 ** Math.max(0, Math.min(12, Math.trunc(d)));
      return Math.round(n * f) / f;
    },
  },
  funcEpochSeconds: { specs: [["string", "number"]], fn: (t: string | number) => toSeconds(t) },
  funcSecondsBetween: {
    specs: [
      ["string", "number"],
      ["string", "number"],
    ],
    fn: (a: string | number, b: string | number) => {
      const start = toSeconds(a);
      const end = toSeconds(b);
      return start === null || end === null ? null : end - start;
    },
  },
};
// The Powertools signature decorator, applied without decorator syntax.
for (const [name, { specs, fn }] of Object.entries(extraFunctions)) {
  const descriptor: PropertyDescriptor = {
    value: (...args: never[]) => fn(...args),
    writable: true,
    configurable: true,
  };
  PowertoolsFunctions.signature({ argumentsSpecs: specs as never, variadic: false })(
    MeterhookFunctions.prototype,
    name,
    descriptor,
  );
  Object.defineProperty(MeterhookFunctions.prototype, name, descriptor);
}

const functions = new MeterhookFunctions();

/** Evaluates an expression over `data`; throws on syntax errors and on function type errors. */
export function evaluate(expression: string, data: unknown): unknown {
  return search(expression, data as JSONObject, { customFunctions: functions });
}

/** Why an expression cannot be used (syntax, unknown function), or undefined when it can. */
export function checkExpression(expression: string): string | undefined {
  try {
    evaluate(expression, {});
    return undefined;
  } catch (err) {
    if (
      err instanceof LexerError ||
      err instanceof ParseError ||
      err instanceof IncompleteExpressionError ||
      err instanceof EmptyExpressionError ||
      err instanceof UnknownFunctionError
    ) {
      return err.message;
    }
    return undefined; // a type error on empty data: depends on the event, not a mistake
  }
}
