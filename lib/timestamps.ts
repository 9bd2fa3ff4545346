/**
 * Unix seconds to and from ISO-8601 text, on the hot paths: the ingest API writes every queued
 * event's timestamp as ISO text, the consumer reads it back, and the v2 stream sends it as ISO
 * text again. On this project's machine `toISOString` costs about half a microsecond, and the
 * regex with `Date.parse` about a quarter (`npm run bench:stages`).
 */

const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i;

/** Unix seconds of an ISO-8601 time with a zone (fraction floored), or NaN. */
export function secondsFromIso(ts: string): number {
  const seconds = utcIsoSeconds(ts);
  if (!Number.isNaN(seconds)) return seconds;
  return ISO_8601.test(ts) ? Math.floor(Date.parse(ts) / 1000) : Number.NaN;
}

/** The number written in `length` digits at `at`, or -1 if one of them is not a digit. */
function digitsAt(text: string, at: number, length: number): number {
  let n = 0;
  for (let k = at; k < at + length; k++) {
    const d = text.charCodeAt(k) - 0x30;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/**
 * Unix seconds of a timestamp in the form the ingest API queues (`2026-11-26T12:00:00.000Z`,
 * or without the fraction), read digit by digit rather than through the regex and `Date.parse`
 * (`npm run bench:stages`: 642 against 755 ns to read such an event). NaN for any other form or
 * an out-of-range field (the general path then decides), so the answer is always Date.parse's.
 */
function utcIsoSeconds(ts: string): number {
  const n = ts.length;
  if (n !== 20 && n !== 24) return Number.NaN;
  if (
    ts.charCodeAt(4) !== 0x2d /* - */ ||
    ts.charCodeAt(7) !== 0x2d ||
    ts.charCodeAt(10) !== 0x54 /* T */ ||
    ts.charCodeAt(13) !== 0x3a /* : */ ||
    ts.charCodeAt(16) !== 0x3a ||
    ts.charCodeAt(n - 1) !== 0x5a /* Z */ ||
    (n === 24 && (ts.charCodeAt(19) !== 0x2e /* . */ || digitsAt(ts, 20, 3) < 0))
  )
    return Number.NaN;
  const year = digitsAt(ts, 0, 4);
  const month = digitsAt(ts, 5, 2);
  const day = digitsAt(ts, 8, 2);
  const hour = digitsAt(ts, 11, 2);
  const minute = digitsAt(ts, 14, 2);
  const second = digitsAt(ts, 17, 2);
  // Before 1970 the floor of a fraction goes the other way, and Date.UTC reads years below 100
  // as 19xx. A day past the month's end (02-30) rolls over in Date.UTC as in Date.parse.
  if (year < 1970 || month < 1 || month > 12 || day < 1 || day > 31 || hour < 0 || hour > 23) return Number.NaN;
  if (minute < 0 || minute > 59 || second < 0 || second > 59) return Number.NaN;
  return Date.UTC(year, month - 1, day, hour, minute, second) / 1000;
}

/**
 * ISO-8601 (`toISOString`) for Unix seconds, from a small cache by second: the events of a
 * request or a batch fall in a few seconds, interleaved (a standard queue does not keep order),
 * so one remembered second missed most of the time.
 */
const ISO_SLOTS = 64;
const slotSecond = new Float64Array(ISO_SLOTS).fill(Number.NaN);
const slotIso: string[] = new Array(ISO_SLOTS).fill("");
export function isoFromSeconds(seconds: number): string {
  const slot = seconds & (ISO_SLOTS - 1);
  if (slotSecond[slot] === seconds) return slotIso[slot] as string;
  const iso = new Date(seconds * 1000).toISOString();
  slotSecond[slot] = seconds;
  slotIso[slot] = iso;
  return iso;
}
