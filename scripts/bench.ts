/**
 * `deno task bench`: runs each benchmark of scripts/bench/ in its own process (so RSS figures are
 * not mixed), prints their JSON lines, and publishes them: docs/bench-results.json keeps the latest
 * value of every figure with the run that measured it, and the generated block of
 * docs/PERFORMANCE.md is rewritten from it (see scripts/bench/publish.ts).
 *
 *   deno task bench                      every script
 *   deno task bench --only core,e2e      these scripts; the other figures keep their last values
 *   deno task bench --render             rewrite the block from docs/bench-results.json only
 *
 * BENCH_* variables (e.g. BENCH_BACKLOG, BENCH_ONLY for core.ts, peers.ts and hostile.ts) reach the scripts and are
 * recorded with their run.
 */
import type { Result } from "./bench/report.ts";
import { merge, readResults, render, replaceBlock, type Results, runContext, SCRIPTS } from "./bench/publish.ts";

const RESULTS = new URL("../docs/bench-results.json", import.meta.url).pathname;
const DOC = new URL("../docs/PERFORMANCE.md", import.meta.url).pathname;

function selectedScripts(): string[] {
  const at = Deno.args.indexOf("--only");
  if (at < 0) return Object.keys(SCRIPTS);
  const names = (Deno.args[at + 1] ?? "").split(",").filter((n) => n !== "");
  const unknown = names.filter((n) => !(n in SCRIPTS));
  if (names.length === 0 || unknown.length > 0) {
    console.error(
      `--only takes script names among ${Object.keys(SCRIPTS).join(", ")} (got '${Deno.args[at + 1] ?? ""}')`,
    );
    Deno.exit(2);
  }
  return names;
}

/** Runs one script, echoing its output; returns its JSON lines and exit code. */
async function runScript(script: string): Promise<{ lines: Result[]; code: number }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(`./bench/${script}.ts`, import.meta.url).pathname],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines: Result[] = [];
  const take = (line: string) => {
    console.log(line);
    if (!line.startsWith("{")) return;
    try {
      lines.push(JSON.parse(line) as Result);
    } catch {
      console.error(`bench: ${script}.ts printed a line that is not JSON: ${line.slice(0, 200)}`);
    }
  };
  let pending = "";
  for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
    const parts = (pending + text).split("\n");
    pending = parts.pop()!;
    parts.forEach(take);
  }
  if (pending !== "") take(pending);
  return { lines, code: (await child.status).code };
}

async function publish(data: Results): Promise<void> {
  await Deno.writeTextFile(RESULTS, JSON.stringify(data, null, 2) + "\n");
  const doc = await Deno.readTextFile(DOC);
  await Deno.writeTextFile(DOC, replaceBlock(doc, render(data), DOC));
  // Tables as `deno fmt` lays them out, so formatting the tree does not rewrite the block.
  await new Deno.Command(Deno.execPath(), { args: ["fmt", "-q", DOC], stdout: "inherit", stderr: "inherit" })
    .output();
}

let data = await readResults(RESULTS);
if (Deno.args.includes("--render")) {
  await publish(data);
  Deno.exit(0);
}
let failed = 0;
for (const script of selectedScripts()) {
  const id = Math.max(0, ...data.runs.map((r) => r.id)) + 1;
  const run = await runContext(script, id);
  const { lines, code } = await runScript(script);
  if (code !== 0) {
    failed++;
    run.exitCode = code;
    console.error(`bench: ${script}.ts exited with code ${code}`);
  }
  const partial = code !== 0 ||
    (["core", "peers", "hostile"].includes(script) && Deno.env.get("BENCH_ONLY") !== undefined);
  data = merge(data, run, lines, !partial);
  await publish(data);
}
Deno.exit(failed > 0 ? 1 : 0);
