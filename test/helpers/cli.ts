import { execFile } from "node:child_process";
import { promisify } from "node:util";

/** `meterhook <args>` as an operator runs it (`npm run meterhook -- ...`): its exit code and output. */
export async function meterhookCli(
  args: string[],
  env: Record<string, string | undefined>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)("npx", ["tsx", "cli/meterhook.ts", ...args], {
      env: { ...process.env, NODE_NO_WARNINGS: "1", ...env },
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}
