/**
 * Loaded with `node --import` (see `npm run test:later`): moves this process's clock
 * (`Date.now()`, `new Date()`) TEST_CLOCK_AHEAD_DAYS days ahead (60 by default), and that of
 * every Node process it starts, which inherits NODE_OPTIONS. A test that passes today and fails
 * on a later day holds a fixed date that Stripe's 35-day window or a cache's age will overtake:
 * run ahead of the calendar, the suite finds it the day it is written.
 */
const days = Number(process.env.TEST_CLOCK_AHEAD_DAYS ?? 60);
const offset = days * 86_400_000;
const SystemDate = Date;

class LaterDate extends SystemDate {
  constructor(...args) {
    // Only "now" moves: dates built from a value keep it.
    if (args.length === 0) super(SystemDate.now() + offset);
    else super(...args);
  }
  static now() {
    return SystemDate.now() + offset;
  }
}

globalThis.Date = LaterDate;
