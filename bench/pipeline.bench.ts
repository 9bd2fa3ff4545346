/**
 * `npm run bench`: the whole consumer pipeline (SQS batch in, parsing, validation, customer lookup
 * from cache, submission, partial batch response out) against the official `stripe` SDK doing
 * submission alone, both against the Stripe emulator in another process with added latency.
 * Each client runs in a process of its own (bench/client-process.ts, clients in
 * bench/pipeline-clients.ts), built once and reused by every run as a warm Lambda reuses its
 * consumer. Runs are interleaved (A B C D, A B C D, ...), one at a time; the table shows medians.
 *
 * BENCH_EVENTS (20000 per v1 run), BENCH_V2_EVENTS (200000 per v2 run: a v2 run of 20000 lasts a
 * third of a second, too short to measure steadily), BENCH_ROUNDS (3), BENCH_WARMUP (1 uncounted
 * round), BENCH_RTTS ("0,20" ms),
 * BENCH_QUICK=1 for a CI smoke run, BENCH_ONLY=<text>[|<text>...] for the clients whose name has one,
 * BENCH_NODE_ARGS for more Node flags in the client processes (--cpu-prof), BENCH_PROFILE_DIR for
 * a CPU profile of each measured window alone. Client processes run
 * with the semi-space size the Lambda runtime gives the ingest-queue function (bench/stats.ts
 * lambdaYoungGenerationFlags; a later --max-semi-space-size in BENCH_NODE_ARGS wins), and with
 * --expose-gc so that each run starts from a collected heap; BENCH_REWARM_EVENTS (a run's
 * worth) are then processed unmeasured before the run's window opens (bench/pipeline-clients.ts
 * says why). Client processes run with source maps off (BENCH_SOURCE_MAPS=1 leaves tsx's on;
 * bench/client-process.ts says why). BENCH_RUNTIME_PARSE=1 adds the Lambda runtime's JSON.parse
 * of each SQS event to the pipeline rows (bench/pipeline-clients.ts). The pipeline rows run the
 * ingest-queue Lambda bundle that `npm run bench` builds first (BENCH_SOURCES=1: the sources).
 * Before each run the emulator forgets the events earlier runs sent it
 * (BENCH_KEEP_EMULATOR_HISTORY=1 keeps them); BENCH_IDLE_MS pauses before each run. Each round
 * runs the clients in its own fixed shuffle (BENCH_SHUFFLE=0: the listed order every round).
 * BENCH_COMPARE_BUNDLE=<index.mjs> adds the v2 pipeline on another build of the ingest-queue
 * bundle, to measure a change side by side (bench/pipeline-clients.ts). BENCH_PIN=1 pins the
 * clients to one CPU and the emulator to another (taskset); BENCH_SETTLE=1 waits for every
 * process to go quiet before each run.
 */
import { type ChildProcess, fork } from "node:child_process";
import { once } from "node:events";
import { cpus } from "node:os";
import { scenarios as allScenarios, type Result, type Role } from "./pipeline-clients.js";
import {
  forgetHistory,
  type Goal,
  INGEST_QUEUE_MEMORY_MB,
  lambdaYoungGenerationFlags,
  median,
  medianInterval,
  pinToCore,
  seededRandom,
  startEmulator,
  verdict,
  waitUntilQuiet,
} from "./stats.js";

const QUICK = process.env.BENCH_QUICK === "1";
const EVENTS = Number(process.env.BENCH_EVENTS ?? (QUICK ? 2000 : 20_000));
const V2_EVENTS = Number(process.env.BENCH_V2_EVENTS ?? (QUICK ? 2000 : 200_000));
const eventsFor = (name: string) => (name.includes("v2") ? V2_EVENTS : EVENTS);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? (QUICK ? 1 : 3));
const WARMUP = Number(process.env.BENCH_WARMUP ?? (QUICK ? 0 : 1));
/** BENCH_SHUFFLE=0: every round runs the clients in the listed order, as the bench did before 2026-11-27 17:10. */
const SHUFFLE = process.env.BENCH_SHUFFLE !== "0";

/**
 * The order of the clients in round `round`: a shuffle fixed by the round's number, so that no
 * client always runs right after the same one, and a rerun runs the same orders. (Order was one
 * suspect for the SDK's higher v2 figure in full runs; it was not the cause, HISTORY.md.)
 */
function runOrder(n: number, round: number): number[] {
  const order = Array.from({ length: n }, (_, k) => k);
  if (!SHUFFLE) return order;
  const next = seededRandom((round + 1) * 0x9e3779b9);
  for (let k = n - 1; k > 0; k--) {
    const j = Math.floor(next() * (k + 1));
    [order[k], order[j]] = [order[j] as number, order[k] as number];
  }
  return order;
}
/**
 * BENCH_IDLE_MS: a pause before each run, so that every client idles between its runs about as
 * long as it does in a full run (the other clients' runs) even when BENCH_ONLY picks two.
 */
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 0);
/**
 * BENCH_PIN=1: every client process on the last CPU and the emulator on the first, so the
 * client under measurement has one core to itself (the issue's "on one core"), its GC helper
 * threads included, and the emulator's work never shares it.
 */
const PIN = process.env.BENCH_PIN === "1";
/**
 * BENCH_SETTLE=1: before each run, wait for every client and the emulator to go quiet
 * (bench/stats.ts waitUntilQuiet). A diagnostic: in the full runs of 2026-11-27 they always already were.
 */
const SETTLE = process.env.BENCH_SETTLE === "1";
const CLIENT_CORE = cpus().length - 1;
const RTTS = (process.env.BENCH_RTTS ?? (QUICK ? "0" : "0,20")).split(",").map(Number);

/** A client in its own process, started against the emulator at `url`. */
async function startClient(name: string, url: string): Promise<ChildProcess> {
  const child = fork("bench/client-process.ts", {
    // Every client runs with the young generation Lambda gives the ingest-queue function (the SDK
    // too, as if it ran there); BENCH_NODE_ARGS adds Node flags, e.g. --cpu-prof to profile.
    execArgv: [
      "--expose-gc",
      ...lambdaYoungGenerationFlags(INGEST_QUEUE_MEMORY_MB),
      ...(process.env.BENCH_NODE_ARGS ?? "").split(" ").filter(Boolean),
      "--import",
      "tsx",
    ],
    env: { ...process.env, BENCH_CLIENT: name, BENCH_STRIPE_URL: url, BENCH_EVENTS: String(eventsFor(name)) },
    // stdout is /dev/null: the pipeline's log and metrics lines cost a write each, as on Lambda.
    stdio: ["ignore", "ignore", "inherit", "ipc"],
  });
  const [msg] = await once(child, "message");
  if (msg !== "ready") throw new Error(`bench client "${name}" did not start`);
  if (PIN) await pinToCore(child.pid as number, CLIENT_CORE);
  return child;
}

async function runOnce(child: ChildProcess): Promise<Result> {
  child.send("run");
  const [r] = await once(child, "message");
  return r as Result;
}

const scenarios = [...allScenarios];
// BENCH_ONLY=<text>[|<text>...]: run only the scenarios whose name contains one of them (to profile
// one, or to pair two).
const only = process.env.BENCH_ONLY;
if (only) {
  const wanted = only.split("|");
  scenarios.splice(0, scenarios.length, ...scenarios.filter((s) => wanted.some((w) => s.name.includes(w))));
}

console.log(
  `meterhook bench: ${EVENTS} events per v1 run, ${V2_EVENTS} per v2 run, ${ROUNDS} interleaved rounds, Node ${process.version} ${lambdaYoungGenerationFlags(INGEST_QUEUE_MEMORY_MB).join(" ")} (Lambda, ${INGEST_QUEUE_MEMORY_MB} MB), ${cpus().length} x ${cpus()[0]?.model ?? "cpu"}${PIN ? `; clients pinned to CPU ${CLIENT_CORE}, the emulator to CPU 0` : ""}${process.env.BENCH_RUNTIME_PARSE === "1" ? "; pipeline rows include the Lambda runtime's JSON.parse of each SQS event" : ""}`,
);
for (const rtt of RTTS) {
  const { url, child } = await startEmulator(rtt);
  if (PIN) await pinToCore(child.pid as number, 0);
  const results = new Map<string, Result[]>(scenarios.map((s) => [s.name, []]));
  const clients = await Promise.all(scenarios.map((s) => startClient(s.name, url)));
  const waits: number[] = [];
  // Warm-up rounds let the JIT settle and are not counted (cold starts have their own bench).
  // One client runs at a time, so each has the machine to itself.
  for (let round = 0; round < WARMUP + ROUNDS; round++) {
    for (const i of runOrder(scenarios.length, round)) {
      const s = scenarios[i] as (typeof scenarios)[number];
      // Every run meets the emulator in the same state (bench/stats.ts forgetHistory says why).
      await forgetHistory(child);
      if (IDLE_MS > 0) await new Promise((resolve) => setTimeout(resolve, IDLE_MS));
      if (SETTLE) waits.push(await waitUntilQuiet([child, ...clients].map((c) => c.pid as number)));
      const r = await runOnce(clients[i] as ChildProcess);
      if (round >= WARMUP) results.get(s.name)?.push(r);
    }
  }
  for (const c of clients) {
    c.send("close");
    await once(c, "exit");
  }
  child.kill("SIGTERM");
  const row = (name: string) => {
    const rs = results.get(name) ?? [];
    return {
      eps: median(rs.map((r) => r.eventsPerSecond)),
      cpu: median(rs.map((r) => r.cpuMsPer1000)),
      gc: median(rs.map((r) => r.gcMsPer1000)),
      others: median(rs.map((r) => r.otherThreadsMsPer1000)),
      rss: Math.max(...rs.map((r) => r.rssMb)),
    };
  };
  console.log(`\nStripe emulator latency ${rtt} ms (medians of ${ROUNDS})`);
  console.log(
    "| client | events/s | CPU ms per 1,000 events | of which GC pauses | of which other threads | peak RSS MB |",
  );
  console.log("|---|---:|---:|---:|---:|---:|");
  for (const s of scenarios) {
    const r = row(s.name);
    console.log(
      `| ${s.name} | ${Math.round(r.eps).toLocaleString("en-US")} | ${r.cpu.toFixed(1)} | ${r.gc.toFixed(1)} | ${r.others.toFixed(1)} | ${r.rss.toFixed(0)} |`,
    );
  }
  // Each ratio of medians, and the range of the same ratio round by round: rounds interleave the
  // clients, so a round's pair shares the machine's state of the moment, and the range shows how
  // far one run's answer can be trusted on a noisy machine.
  const ratio = (
    pipeline: string | undefined,
    sdk: string | undefined,
    metric: "eps" | "cpu",
    sdkOverPipeline: boolean,
    goal: Goal | string,
  ) => {
    const mhs = results.get(pipeline ?? "") ?? [];
    const sdks = results.get(sdk ?? "") ?? [];
    if (!pipeline || !sdk || mhs.length === 0 || sdks.length === 0) return undefined;
    const of = (r: Result) => (metric === "eps" ? r.eventsPerSecond : r.cpuMsPer1000);
    const div = (mh: number, k: number) => (sdkOverPipeline ? k / mh : mh / k);
    const rounds = mhs.map((m, i) => div(of(m), of(sdks[i] as Result)));
    const mid = div(row(pipeline)[metric], row(sdk)[metric]);
    // The rounds' own median, with how far it can be trusted: each round's pair shares the machine.
    const interval = medianInterval(rounds);
    const trust = interval
      ? `, median of the rounds ${median(rounds).toFixed(2)}x, 95 % interval ${interval[0].toFixed(2)}-${interval[1].toFixed(2)}`
      : "";
    const goalText =
      typeof goal === "string"
        ? goal
        : `${goal.op} ${goal.value.toFixed(1)}${interval ? `: ${verdict(interval, goal)} by the interval` : ""}`;
    return `${mid.toFixed(2)}x (rounds ${Math.min(...rounds).toFixed(2)}-${Math.max(...rounds).toFixed(2)}${trust}; goal ${goalText})`;
  };
  const named = (role: Role) => allScenarios.find((s) => s.role === role)?.name;
  const [sdk2, mh2, sdk1, mh1] = (["sdk v2", "pipeline v2", "sdk v1", "pipeline v1"] as const).map(named);
  const [stack, packed, alone, compared, alone1] = (
    [
      "pipeline v2, stack batch",
      "pipeline v2, packed",
      "client alone v2",
      "pipeline v2, compared build",
      "client alone v1",
    ] as const
  ).map(named);
  const lines = [
    ["v2 pipeline/SDK events/s", ratio(mh2, sdk2, "eps", false, { op: ">=", value: 1 })],
    ["v2 CPU per event pipeline/SDK", ratio(mh2, sdk2, "cpu", false, { op: "<=", value: 1 })],
    ["v2 events/s, the stack's batch/SDK", ratio(stack, sdk2, "eps", false, "none, not a goal row")],
    ["v2 CPU per event, the stack's batch/SDK", ratio(stack, sdk2, "cpu", false, "none, not a goal row")],
    ["v2 CPU per event, packed pipeline/SDK", ratio(packed, sdk2, "cpu", false, "none, not a goal row")],
    ["v2 CPU per event, meterhook's client alone/SDK", ratio(alone, sdk2, "cpu", false, "none, submission alone")],
    ["v2 CPU per event, pipeline/BENCH_COMPARE_BUNDLE", ratio(mh2, compared, "cpu", false, "none, a comparison")],
    // Events per CPU-second: the SDK's CPU per event over the pipeline's.
    ["v1 events per CPU-second pipeline/SDK", ratio(mh1, sdk1, "cpu", true, { op: ">=", value: 3 })],
    [
      "v1 events per CPU-second, meterhook's client alone/SDK",
      ratio(alone1, sdk1, "cpu", true, "none, submission alone"),
    ],
  ].filter(([, r]) => r !== undefined);
  if (lines.length > 0) console.log(`\nratios at ${rtt} ms: ${lines.map(([what, r]) => `${what} ${r}`).join("; ")}`);
  if (waits.length > 0) {
    console.log(
      `waited for the processes to go quiet before each run: median ${median(waits)} ms, longest ${Math.max(...waits)} ms`,
    );
  }
}
process.exit(0);
