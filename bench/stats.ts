/** Helpers the benches share. */

/** The middle value (the upper one of an even count). */
export const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/** A full garbage collection when Node runs with --expose-gc (the bench scripts pass it); else nothing. */
export const collectGarbage = (globalThis as { gc?: () => void }).gc ?? (() => {});
