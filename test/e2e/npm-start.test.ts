import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { after, test } from "node:test";
import { waitFor } from "../helpers/wait.js";

let child: ChildProcess | undefined;
after(() => {
  try {
    if (child?.pid) process.kill(-child.pid, "SIGKILL");
  } catch {
    // already gone
  }
});

test("`npm start` serves the sample event it prints, end to end, and stops cleanly on Ctrl-C", async () => {
  // Free ports, so the test runs beside a developer's own `npm start`.
  child = spawn("npm", ["start", "--silent"], {
    env: { ...process.env, PORT: "0", SQS_PORT: "0", STRIPE_EMULATOR_PORT: "0", METERHOOK_API_KEYS: "" },
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    out += d;
  });
  const exited = new Promise<string>((resolve) => child?.on("exit", (code, signal) => resolve(String(code ?? signal))));

  await waitFor(() => out.includes("Ctrl-C to stop."), `the start-up banner; got:\n${out}`, 30_000);
  const curl =
    /curl -sS -X POST (\S+) -H 'Authorization: Bearer (\S+)' -H 'Content-Type: application\/json' -d '(.+)'/.exec(out);
  const summaries = /curl -sS (\S+\/v1\/billing\/meters\/summaries)/.exec(out);
  assert.ok(curl && summaries, `banner without the sample commands:\n${out}`);
  const [, url, key, body] = curl;

  const res = await fetch(url as string, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body,
  });
  assert.equal(res.status, 202);
  const sample = JSON.parse(body as string);
  const billed = await waitFor(async () => {
    const data = (await (await fetch(summaries[1] as string)).json()) as {
      data: Array<{ customer: string; event_name: string; aggregated_value: number }>;
    };
    return data.data.find((s) => s.customer === sample.customer && s.aggregated_value === sample.value);
  }, "the sample to be billed");
  assert.equal(billed.event_name, sample.event_name);

  // Ctrl-C signals the whole foreground process group: npm and meterhook under it.
  process.kill(-(child.pid as number), "SIGINT");
  assert.match(await exited, /^(0|SIGINT)$/);
  await waitFor(() => /\nstopped/.test(out) || undefined, `meterhook to report it stopped; got:\n${out}`);
});
