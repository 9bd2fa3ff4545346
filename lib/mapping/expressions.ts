import {
  EmptyExpressionError,
  IncompleteExpressionError,
  JMESPathTypeError,
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
 * - `round_to(n, digits)`: rounds to a number of decimals, half away from zero.
 * - `epoch_seconds(t)`: an ISO-8601 string or Unix seconds, as Unix seconds.
 * - `seconds_between(start, end)`: `end - start` in seconds, for ISO-8601 strings or Unix seconds.
 * - `to_string(x)` is JMESPath's, but refuses a whole number past 2^53 (its digits are lost).
 *
 * A function given the wrong type (a missing field is null) throws a JMESPath type error, and a
 * division by zero answers null: either way the rule fails with `mapping_failed` naming the
 * expression, rather than billing a half-computed value.
 */
class MeterhookFunctions extends PowertoolsFunctions {}

/** Unix ms of an ISO-8601 string or Unix seconds: whole ms for strings, so differences stay exact. */
const toMs = (t: unknown): number | null => {
  if (typeof t === "number" && Number.isFinite(t)) return t * 1000;
  if (typeof t !== "string") return null;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms;
};
const toSeconds = (t: unknown): number | null => {
  if (typeof t === "number") return Number.isFinite(t) ? t : null;
  const ms = toMs(t);
  return ms === null ? null : ms / 1000;
};
/** A whole number past 2^53: JSON.parse has already rounded away its last digits. */
export const lostDigits = (n: unknown): boolean =>
  typeof n === "number" && Number.isInteger(n) && !Number.isSafeInteger(n);

const finite = (n: number) => (Number.isFinite(n) ? n : null);

/**
 * `n` rounded to `digits` decimals, half away from zero, as the decimal it prints as: shifting the
 * decimal point in the text, not multiplying, so `round_to(1.005, 2)` is 1.01 (1.005 * 100 is
 * 100.49999999999999 in binary).
 */
function roundDecimals(n: number, digits: number): number {
  const shift = (x: number, by: number) => {
    const [mantissa, exp = "0"] = String(x).split("e");
    return Number(`${mantissa}e${Number(exp) + by}`);
  };
  const d = Math.max(0, Math.min(12, Math.trunc(digits)));
  const rounded = shift(Math.round(shift(Math.abs(n), d)), -d);
  return n < 0 ? -rounded : rounded;
}

const extraFunctions: Record<string, { specs: string[][]; fn: (...args: never[]) => unknown }> = {
  funcMultiply: { specs: [["number"], ["number"]], fn: (a: number, b: number) => finite(a * b) },
  funcDivide: { specs: [["number"], ["number"]], fn: (a: number, b: number) => (b === 0 ? null : finite(a / b)) },
  funcRoundTo: { specs: [["number"], ["number"]], fn: (n: number, d: number) => roundDecimals(n, d) },
  // JMESPath's own, except for a whole number past 2^53: JSON has already lost its last digits,
  // and as an id's text it would make neighbouring ids one identifier.
  funcToString: {
    specs: [["any"]],
    fn: (arg: unknown) => {
      if (lostDigits(arg))
        throw new JMESPathTypeError({
          currentValue: arg,
          expectedTypes: ["string", "number below 2^53"],
          actualType: "number past 2^53, whose last digits JSON has lost: use the value's string form",
        });
      return typeof arg === "string" ? arg : JSON.stringify(arg);
    },
  },
  funcEpochSeconds: { specs: [["string", "number"]], fn: (t: string | number) => toSeconds(t) },
  funcSecondsBetween: {
    specs: [
      ["string", "number"],
      ["string", "number"],
    ],
    fn: (a: string | number, b: string | number) => {
      const start = toMs(a);
      const end = toMs(b);
      // Unix seconds near 1.7e9 carry about 0.2 µs of binary noise each: keep whole microseconds.
      return start === null || end === null ? null : Math.round((end - start) * 1000) / 1e6;
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
