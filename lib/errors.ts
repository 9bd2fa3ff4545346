/**
 * One error hierarchy. Callers branch on `code` (stable, documented in the README), never on
 * message text; `retryable` says whether trying the same work later can succeed.
 */

/** Why an event could not be billed: these strings are the dead-letter contract. */
export const DeadLetterCode = {
  invalidMessage: "invalid_message",
  invalidEvent: "invalid_event",
  invalidValue: "invalid_value",
  invalidPayload: "invalid_payload",
  timestampOutOfRange: "timestamp_out_of_range",
  customerNotFound: "customer_not_found",
  meterNotFound: "meter_not_found",
  /** Stripe has no customer with the event's `cus_` id, or has deleted it (lib/stripe/customer-check.ts). */
  customerNotInStripe: "customer_not_in_stripe",
  /** Stripe would not cancel the event a cancellation names (lib/cancellation.ts). */
  cancelRejected: "cancel_rejected",
  stripeRejected: "stripe_rejected",
  stripeUnauthorized: "stripe_unauthorized",
  retriesExhausted: "retries_exhausted",
  dedupeWindowPassed: "dedupe_window_passed",
  mappingFailed: "mapping_failed",
  noMatchingRule: "no_matching_rule",
  unknownSource: "unknown_source",
} as const;
export type DeadLetterCode = (typeof DeadLetterCode)[keyof typeof DeadLetterCode];

/**
 * meterhook's errors. Each class names itself in a literal: the bundles are minified, and a name
 * taken from the class would be a minified one (`ke`) in the logs and in Lambda's `errorType`.
 */
export class MeterhookError extends Error {
  override name = "MeterhookError";
  readonly code: string;
  readonly retryable: boolean;
  constructor(code: string, message: string, options: { retryable?: boolean; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
  }
}

/** The event breaks our schema or one of Stripe's rules; it can never be billed as it is. */
export class InvalidEventError extends MeterhookError {
  override name = "InvalidEventError";
  /** Dotted path of the failing field, e.g. `properties.region`. */
  readonly path: string | undefined;
  constructor(code: DeadLetterCode, message: string, path?: string) {
    super(code, message);
    this.path = path;
  }
}

export class CustomerNotFoundError extends MeterhookError {
  override name = "CustomerNotFoundError";
  /** `why`: what the lookup answered, when that tells more than "nothing". */
  constructor(customer: string, why?: string) {
    super(
      DeadLetterCode.customerNotFound,
      `no Stripe customer is mapped for customer "${customer}"${why === undefined ? "" : `: ${why}`}`,
    );
  }
}

/** A lookup or dependency failed in a way that may pass: the message goes back to the queue. */
export class TransientError extends MeterhookError {
  override name = "TransientError";
  constructor(code: string, message: string, cause?: unknown) {
    super(code, message, { retryable: true, cause });
  }
}

/** A setting is missing or invalid: start-up fails with a message naming it. */
export class ConfigError extends MeterhookError {
  override name = "ConfigError";
  constructor(message: string) {
    super("invalid_config", message);
  }
}
