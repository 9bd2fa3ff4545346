/** Helpers the benches share. */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";

/** The middle value (the upper one of an even count). */
export const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/** Numbers in [0, 1) from `seed` (mulberry32): enough randomness for a bench, and the same every run. */
export function seededRandom(seed: number): () => number {
  let state = seed | 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/**
 * A 95 % bootstrap interval for the median of `xs` (percentiles of the medians of 4,000
 * resamples, seeded so that the same figures give the same interval): how far the median of a
 * handful of noisy rounds can be trusted. Undefined for fewer than 5 values.
 */
export function medianInterval(xs: readonly number[]): [number, number] | undefined {
  if (xs.length < 5) return undefined;
  const random = seededRandom(1);
  const medians: number[] = [];
  for (let r = 0; r < 4000; r++) {
    medians.push(median(Array.from(xs, () => xs[Math.floor(random() * xs.length)] as number)));
  }
  medians.sort((a, b) => a - b);
  return [medians[Math.floor(0.025 * medians.length)] as number, medians[Math.floor(0.975 * medians.length)] as number];
}

/** A goal for a ratio: at least or at most `value`. */
export interface Goal {
  op: ">=" | "<=";
  value: number;
}

/**
 * Whether a goal is met, judged by the interval of the rounds' median (medianInterval): "met" or
 * "not met" when the whole interval is on one side of the goal, "at the line" when it spans it.
 */
export function verdict(interval: readonly [number, number], goal: Goal): "met" | "not met" | "at the line" {
  const [low, high] = interval;
  const meets = (x: number) => (goal.op === ">=" ? x >= goal.value : x <= goal.value);
  if (meets(low) && meets(high)) return "met";
  if (!meets(low) && !meets(high)) return "not met";
  return "at the line";
}

/** A full garbage collection when Node runs with --expose-gc (the bench scripts pass it); else nothing. */
export const collectGarbage = (globalThis as { gc?: () => void }).gc ?? (() => {});

/**
 * Events a run processes unmeasured after its forced collection (BENCH_REWARM_EVENTS; as many as
 * the run's `events` when unset or empty), in whole batches of 100: the collection throws away
 * optimized code that the run would otherwise pay to compile again (bench/pipeline-clients.ts).
 * A tenth of a run, the default until 2026-11-27 22:40, left the SDK's v2 client compiling on
 * its helper threads through the window, about 2 µs per event (bench/HISTORY.md, 22:05).
 */
export const rewarmEvents = (events: number): number =>
  100 * Math.round(Number(process.env.BENCH_REWARM_EVENTS || events) / 100);

/** The Stripe emulator in a process of its own (bench/emulator-process.ts), `latencyMs` added per request. */
export async function startEmulator(latencyMs: number): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ["--expose-gc", "--import", "tsx", "bench/emulator-process.ts"], {
    env: { ...process.env, BENCH_STRIPE_LATENCY_MS: String(latencyMs) },
    stdio: ["ignore", "pipe", "inherit", "ipc"],
  });
  const [line] = (await once(child.stdout as NodeJS.ReadableStream, "data")) as [Buffer];
  return { url: JSON.parse(line.toString()).url as string, child };
}

/**
 * Has the emulator started by startEmulator forget what earlier runs sent it and collect its
 * heap. Kept, every run's events stayed in the emulator, so each run met a bigger heap than the
 * one before (from 184 to 658 MB within one v2-only bench, sampled every 10 s) and longer
 * collections holding its answers back: the later a client ran, the more its figures measured
 * the emulator's state.
 */
export async function forgetHistory(emulator: ChildProcess): Promise<void> {
  // BENCH_KEEP_EMULATOR_HISTORY=1: the emulator keeps every run's events, as the bench did before 2026-11-27 15:52.
  if (process.env.BENCH_KEEP_EMULATOR_HISTORY === "1") return;
  emulator.send("forget");
  const [msg] = await once(emulator, "message");
  if (msg !== "forgot") throw new Error(`the emulator answered ${String(msg)} to "forget"`);
}

/**
 * Memory of the ingest-queue function (serverless.yml `ingestQueue.memorySize`; a template test
 * holds the two equal): the bench runs its clients with the heap flags Lambda gives it.
 */
export const INGEST_QUEUE_MEMORY_MB = 512;

/**
 * The heap flags the Lambda Node.js runtime starts `node` with for a function of `memoryMb`: its
 * bootstrap gives a tenth of the memory to the young generation (two semi-spaces) and the rest
 * to the old one. Only the semi-space is applied here: the bench keeps every run's input in
 * memory (hundreds of MB that a Lambda never holds), so the old-space limit would measure that
 * instead. Young-generation size sets how often V8 scavenges, which is most of a consumer's GC.
 */
export const lambdaYoungGenerationFlags = (memoryMb: number): string[] => [
  `--max-semi-space-size=${Math.floor(Math.floor(memoryMb / 10) / 2)}`,
];

/**
 * Pins every thread of process `pid` (V8's helpers and libuv's pool included; threads it starts
 * later inherit the pin) to CPU `core` with util-linux's `taskset`. Throws when it fails, so a
 * run asked to be pinned never silently runs unpinned.
 */
export async function pinToCore(pid: number, core: number): Promise<void> {
  const child = spawn("taskset", ["-a", "-p", "-c", String(core), String(pid)], { stdio: "ignore" });
  const [code] = (await once(child, "exit")) as [number | null];
  if (code !== 0) throw new Error(`taskset could not pin process ${pid} to CPU ${core} (exit ${code})`);
}

/**
 * CPU ms so far from a /proc `stat` file (a process's, or one thread's under /proc/<pid>/task):
 * utime + stime, in clock ticks of 10 ms. Throws where there is no such file.
 */
export function statCpuMs(path: string): number {
  const stat = readFileSync(path, "utf8");
  // Fields after the command name, which may hold spaces: utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** CPU ms so far of process `pid`, every thread; NaN without /proc. */
function processCpuMs(pid: number): number {
  try {
    return statCpuMs(`/proc/${pid}/stat`);
  } catch {
    return Number.NaN;
  }
}

/**
 * Waits until the processes `pids` together have used at most `quietMs` of CPU over `windowMs`
 * (at most `maxMs` in all), and answers how long it waited: so that a run never shares the
 * machine with work another process left running in the background (bench/HISTORY.md, "One core
 * each, and quiet neighbours").
 */
export async function waitUntilQuiet(
  pids: readonly number[],
  quietMs = 10,
  windowMs = 200,
  maxMs = 10_000,
): Promise<number> {
  const started = Date.now();
  const total = () => pids.reduce((sum, pid) => sum + processCpuMs(pid), 0);
  let before = total();
  if (Number.isNaN(before)) return 0;
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, windowMs));
    const now = total();
    if (now - before <= quietMs || Date.now() - started >= maxMs) return Date.now() - started;
    before = now;
  }
}
