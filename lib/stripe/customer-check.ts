/**
 * Whether Stripe has the customer of a meter event. Stripe checks a meter event's customer only
 * after it has accepted the event, and drops one for a customer it does not have (an id from
 * the other mode, a typo in a table, a customer deleted in Stripe) into its error reports, which
 * give samples only. Checked before a deploy (`meterhook customers`), a table's mistakes are
 * found first; checked at run time (METERHOOK_CUSTOMER_CHECK=on, `checkingCustomers`), such an
 * event is dead-lettered with its reason instead, and replayed once its customer is fixed.
 */
import { DeadLetterCode } from "../errors.js";
import type { Logger } from "../logger.js";
import { CUSTOMER_KEY, type MeterEvent } from "../meter-event.js";
import { Metric, type Metrics } from "../metrics.js";
import { redact } from "../redact.js";
import type { StripeClient } from "./client.js";
import type { RateLimiter } from "./rate-limiter.js";
import type { Verdict } from "./retry-policy.js";
import { behindCheck, type MeterEventSubmitter, runPool, type SubmitOutcome, submitSome } from "./submitter.js";

export type CustomerState = "ok" | "missing" | "deleted";

/** `GET /v1/customers/{id}`: 404 is missing, `deleted: true` deleted; any other failure its verdict. */
async function readCustomer(
  client: StripeClient,
  id: string,
  deadline: number,
): Promise<CustomerState | Exclude<Verdict, { kind: "ok" }>> {
  const v = await client.call({
    base: "api",
    method: "GET",
    path: `/v1/customers/${encodeURIComponent(id)}`,
    deadline,
  });
  if (v.kind === "ok") return (JSON.parse(v.body) as { deleted?: unknown }).deleted === true ? "deleted" : "ok";
  if (v.kind === "permanent" && v.status === 404) return "missing";
  return v;
}

/** Each id's state, a few at a time (`meterhook customers`); throws when one cannot be read. */
export async function checkStripeCustomers(
  client: StripeClient,
  ids: readonly string[],
  deadline: number,
  concurrency = 4,
): Promise<Map<string, CustomerState>> {
  const states = new Map<string, CustomerState>();
  await runPool([...new Set(ids)], concurrency, async (id) => {
    const state = await readCustomer(client, id, deadline);
    if (typeof state !== "string") throw new Error(`checking customer ${id} in Stripe failed: ${state.reason}`);
    states.set(id, state);
  });
  return states;
}

export interface CustomerCheckOptions {
  /** An answer is asked again when this old; until the new one comes, the old one stands. */
  maxAgeMs: number;
  /** This instance's share of Stripe's read rate: a check with no turn free at once is not made... */
  limiter: RateLimiter;
  /**
   * ...unless this is set: each check waits for its turn (a replay, where no one waits on a
   * batch), and an event whose customer still has no answer is retried, never sent unchecked.
   */
  waitForTurns?: boolean;
  /** Counts the events sent before their customer could be checked (Metric.eventsCustomerUnchecked). */
  metrics?: Metrics;
  /** Customers remembered; beyond, the first remembered is forgotten (and checked again if seen). */
  maxEntries?: number;
  now?: () => number;
}

/** Why a replayed event whose customer has no answer stays in the DLQ. */
function noAnswer(id: string, off: boolean): string {
  return off
    ? `customer ${id} could not be checked: Stripe refuses to let this key read customers (give it read access to Customers, or replay with METERHOOK_CUSTOMER_CHECK=off)`
    : `customer ${id} could not be read from Stripe in time`;
}

/** The longest one check may hold its batch: a slow Stripe costs the batch the check, not its time. */
const CUSTOMER_CHECK_BUDGET_MS = 5_000;
const MAX_ENTRIES = 100_000;

interface Answer {
  state: CustomerState;
  at: number;
}

/**
 * `inner` behind the customer check: an event whose `cus_` id Stripe does not have, or has
 * deleted, is refused `customer_not_in_stripe` and not sent. A customer is checked when first
 * seen and again when its answer is `maxAgeMs` old, each check under the instance's read rate
 * and only with a turn free at once: a check never waits for the rate, and an event whose
 * customer has no answer yet (no turn, Stripe slow or failing) is sent, as without the check,
 * and counted. Events must carry Stripe's default customer key (the meter check, inside, renames it).
 */
export function checkingCustomers(
  inner: MeterEventSubmitter,
  client: StripeClient,
  logger: Logger,
  options: CustomerCheckOptions,
): MeterEventSubmitter {
  const now = options.now ?? Date.now;
  const maxEntries = options.maxEntries ?? MAX_ENTRIES;
  const answers = new Map<string, Answer>();
  // Batches running at once (a replay, the local runtime) share one check per customer.
  const inflight = new Map<string, Promise<CustomerState | undefined>>();
  /** Until then checks are off: Stripe refused to let the key read customers (401/403). */
  let offUntil = Number.NEGATIVE_INFINITY;

  const remember = (id: string, state: CustomerState) => {
    answers.delete(id);
    if (answers.size >= maxEntries) answers.delete(answers.keys().next().value as string);
    answers.set(id, { state, at: now() });
  };

  /** The customer's state from Stripe once `turn` (under the rate) comes, or undefined when it could not be read. */
  const check = (id: string, deadline: number, turn: Promise<boolean>): Promise<CustomerState | undefined> => {
    const p = (async () => {
      if (!(await turn)) return undefined;
      // The client's deadlines are wall-clock time; `now` dates the answers.
      const read = await readCustomer(client, id, Math.min(deadline, Date.now() + CUSTOMER_CHECK_BUDGET_MS));
      if (typeof read === "string") {
        remember(id, read);
        return read;
      }
      const reason = redact(read.reason);
      if (read.kind === "permanent" && read.code === DeadLetterCode.stripeUnauthorized) {
        offUntil = now() + options.maxAgeMs;
        logger.error(
          `the customer check is off: Stripe refused to let this key read customers; ${
            options.waitForTurns ? "letters whose customer is not known stay in the DLQ" : "events are sent unchecked"
          }`,
          {
            reason,
            fix: "give the key read access to Customers, or set METERHOOK_CUSTOMER_CHECK=off",
            retryInSeconds: Math.round(options.maxAgeMs / 1000),
          },
        );
      } else {
        logger.warn(
          `checking a customer in Stripe failed; ${options.waitForTurns ? "its letters stay in the DLQ unless it was read before" : "its events are sent unchecked"}`,
          { reason },
        );
      }
      return undefined;
    })().finally(() => inflight.delete(id));
    inflight.set(id, p);
    return p;
  };

  /** The checks of `due` customers: those under way, and new ones while turns are free now (or, waiting for turns, all). */
  const checks = (due: Iterable<string>, deadline: number): Array<Promise<unknown>> => {
    const started: Array<Promise<unknown>> = [];
    // Once no turn is free, none is asked for again in this batch.
    let turns = now() >= offUntil;
    for (const id of due) {
      const under = inflight.get(id);
      if (under) {
        started.push(under);
        continue;
      }
      if (options.waitForTurns) {
        if (turns) started.push(check(id, deadline, options.limiter.acquire(deadline)));
        continue;
      }
      turns = turns && options.limiter.tryAcquire();
      if (turns) started.push(check(id, deadline, Promise.resolve(true)));
    }
    return started;
  };

  const submit = async (
    target: MeterEventSubmitter,
    events: readonly MeterEvent[],
    deadline: number,
  ): Promise<SubmitOutcome[]> => {
    const t = now();
    // The common case in one pass, allocating nothing: every customer answered ok, lately.
    let due: Set<string> | undefined;
    let refused = false;
    for (const e of events) {
      const id = e.payload[CUSTOMER_KEY] as string;
      const answer = answers.get(id);
      if (answer === undefined || t - answer.at >= options.maxAgeMs) {
        due ??= new Set();
        due.add(id);
      } else if (answer.state !== "ok") refused = true;
    }
    if (due === undefined && !refused) return target.submit(events, deadline);
    if (due !== undefined) await Promise.all(checks(due, deadline));
    // Read after the checks: one of them may have just found the key refused.
    const off = now() < offUntil;
    let unchecked = 0;
    const outcomes = submitSome(target, events, deadline, (e) => {
      const id = e.payload[CUSTOMER_KEY] as string;
      // An answer asked again and not had keeps the one before; none at all: sent unchecked.
      const state = answers.get(id)?.state;
      if (state === undefined) {
        if (options.waitForTurns) return { kind: "retry", reason: noAnswer(id, off) };
        unchecked++;
      }
      if (state !== "missing" && state !== "deleted") return e;
      return {
        kind: "rejected",
        code: DeadLetterCode.customerNotInStripe,
        reason:
          state === "deleted"
            ? `customer ${id} was deleted in Stripe: map the customer to one Stripe has, then replay`
            : `Stripe has no customer ${id} (a typo, or an id from the other mode: test or live): map the customer to one Stripe has, then replay`,
      };
    });
    options.metrics?.count(Metric.eventsCustomerUnchecked, unchecked);
    if (off) options.metrics?.count(Metric.eventsCustomerCheckOff, unchecked);
    return outcomes;
  };
  return behindCheck(inner, submit);
}
