/**
 * A token bucket in front of Stripe: at most `perSecond` requests per second from this process,
 * with bursts of at most `burst`. Stripe's limits are per account (v1 meter events: 1,000/s live,
 * 25/s in test mode); a Lambda's share is the account budget divided by the consumer's maximum
 * concurrency (serverless.yml), so a burst waits in the queue rather than turning into 429s.
 */
export class RateLimiter {
  private tokens: number;
  private last: number;
  private queue: Promise<void> = Promise.resolve();
  /** Callers of acquire() not yet answered: tryAcquire() does not pass them. */
  private waiting = 0;

  constructor(
    private readonly perSecond: number,
    private readonly burst = 1,
    private readonly now: () => number = Date.now,
    private readonly sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
  ) {
    this.tokens = burst;
    this.last = now();
  }

  /** Waits for a token; answers false (taking none) if that would end after `deadline`. */
  acquire(deadline: number): Promise<boolean> {
    // Callers queue up in order, so waiting is fair and the rate holds across them.
    this.waiting++;
    const turn = this.queue.then(async () => {
      this.refill();
      if (this.tokens < 1) {
        const wait = ((1 - this.tokens) / this.perSecond) * 1000;
        if (this.now() + wait > deadline) return false;
        await this.sleep(wait);
        this.refill();
      }
      this.tokens -= 1;
      return true;
    });
    this.queue = turn.then(() => {
      this.waiting--;
    });
    return turn;
  }

  /** A token now, or false (taking none) when none is free or a caller of acquire() waits. */
  tryAcquire(): boolean {
    if (this.waiting > 0) return false;
    this.refill();
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.perSecond);
    this.last = t;
  }
}
