/**
 * `deno task torture`: runs every torture scenario of scripts/torture/ at full size against real
 * processes, files and PostgreSQL, prints one JSON line per scenario (its ScenarioResult plus
 * `scenario`), and rewrites the generated block of docs/RELIABILITY.md with the results, the
 * machine and the versions. Exits 1 when any scenario failed.
 *
 *   deno task torture                       every scenario at full size, then docs/RELIABILITY.md
 *   deno task torture --quick               the CI sizes (docs left unchanged)
 *   deno task torture --only kill-sweep     one scenario (docs left unchanged)
 *   deno task torture --seed 7              another seed for every pseudo-random choice
 *
 * Progress goes to stderr; stdout holds only the JSON lines.
 */
import { CI_SEED, CI_SIZES, type ScenarioResult, type ScenarioSize } from "./torture/scenario.ts";

type Runner = (size: ScenarioSize) => Promise<ScenarioResult>;

interface Scenario {
  name: keyof typeof CI_SIZES;
  load(): Promise<Runner>;
  /** Iterations at full size (CI sizes: CI_SIZES of scripts/torture/scenario.ts). */
  full: number;
}

const SCENARIOS: Scenario[] = [
  {
    name: "kill-sweep",
    load: async () => (await import("./torture/kill_sweep.ts")).runKillSweep,
    full: 240,
  },
  {
    name: "outage-restarts",
    load: async () => (await import("./torture/outage_restarts.ts")).runOutageRestarts,
    full: 20,
  },
  {
    name: "orphaned-session",
    load: async () => (await import("./torture/orphaned_session.ts")).runOrphanedSession,
    full: 6,
  },
  {
    name: "slow-central",
    load: async () => (await import("./torture/slow_central.ts")).runSlowCentral,
    full: 12,
  },
  {
    name: "clock-step",
    load: async () => (await import("./torture/clock_step.ts")).runClockStep,
    full: 8,
  },
  {
    name: "spool-model",
    load: async () => (await import("./torture/spool_model.ts")).runSpoolModel,
    full: 80,
  },
  {
    name: "crash-images",
    load: async () => (await import("./torture/crash_images.ts")).runCrashImages,
    full: 100,
  },
  {
    name: "disk-full",
    load: async () => (await import("./torture/disk_full.ts")).runDiskFull,
    full: 10,
  },
  {
    name: "bad-samples",
    load: async () => (await import("./torture/bad_samples.ts")).runBadSamples,
    full: 6,
  },
  {
    name: "full-at-start",
    load: async () => (await import("./torture/full_at_start.ts")).runFullAtStart,
    full: 10,
  },
  {
    name: "spool-deleted",
    load: async () => (await import("./torture/spool_deleted.ts")).runSpoolDeleted,
    full: 20,
  },
  {
    name: "sighup",
    load: async () => (await import("./torture/sighup.ts")).runSighup,
    full: 20,
  },
];

const DEFAULT_SEED = CI_SEED;
const DOC = new URL("../docs/RELIABILITY.md", import.meta.url);
const BEGIN = "<!-- torture:begin -->";
const END = "<!-- torture:end -->";
const INTRO = `# Reliability

kwollector promises that a sample which reached the spool is stored in the central database
exactly once, whatever happens to the collector process, the spool's disk, the network or the
central database. This page shows that promise tested against real faults: the real collector
process killed with SIGKILL at aimed points, PostgreSQL stopped while the collector restarts,
a collector losing power in the middle of a batch (its network namespace cut and deleted),
a central database that is slow, locked and refusing rows, a wall clock stepped by an hour, the
spool driven against a model through random crashes, crash images of its files, and a full disk.

Each scenario counts what it checked. "Committed" samples are those the spool acknowledged;
"central" are the rows found in \`metrics\`, compared value by value with what the test exporter
served, and the delivery ledger (\`kwollect_ledger_gaps\`) must show no gap. The scenarios live in
\`scripts/torture/\`; CI runs each at a small size with a fixed seed (\`tests/torture/\`), and
\`deno task torture\` runs them at full size and rewrites the block below. A failure names its
seed, so it can be replayed with \`deno task torture --only <scenario> --seed <seed>\`.
`;

function parseArgs(args: string[]): { only: string | undefined; quick: boolean; seed: number } {
  let only: string | undefined;
  let quick = false;
  let seed = DEFAULT_SEED;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--quick") quick = true;
    else if (a === "--only") only = args[++i];
    else if (a === "--seed") seed = Number(args[++i]);
    else throw new Error(`Unknown argument '${a}' (use --only <name>, --quick, --seed <n>)`);
  }
  if (only !== undefined && !SCENARIOS.some((s) => s.name === only)) {
    throw new Error(`Unknown scenario '${only}'; one of: ${SCENARIOS.map((s) => s.name).join(", ")}`);
  }
  if (!Number.isInteger(seed)) throw new Error("--seed needs an integer");
  return { only, quick, seed };
}

async function runOne(s: Scenario, size: ScenarioSize): Promise<ScenarioResult> {
  const started = performance.now();
  try {
    return await (await s.load())(size);
  } catch (err) {
    return {
      name: s.name,
      fault: "-",
      criteria: "-",
      passed: false,
      counts: { iterations: size.iterations, seed: size.seed },
      durationMs: Math.round(performance.now() - started),
      notes: [`FAILED: the scenario could not run: ${err instanceof Error ? err.message : String(err)}`],
    };
  }
}

async function commandText(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
    return new TextDecoder().decode(out.stdout).trim();
  } catch {
    return "";
  }
}

async function environment(): Promise<Record<string, string>> {
  const { PG_BIN } = await import("./peers/postgres.ts");
  const commit = await commandText("git", ["rev-parse", "--short", "HEAD"]);
  const dirty = (await commandText("git", ["status", "--porcelain", "--untracked-files=no"])) !== "";
  const memory = Deno.systemMemoryInfo().total;
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    commit: commit ? `${commit}${dirty ? " (with uncommitted changes)" : ""}` : "unknown",
    machine: `${Deno.build.os} ${Deno.osRelease()} ${Deno.build.arch}, ${navigator.hardwareConcurrency} cores, ${
      (memory / 1024 ** 3).toFixed(1)
    } GiB memory`,
    deno: Deno.version.deno,
    postgresql: (await commandText(`${PG_BIN}/postgres`, ["--version"])).replace(/^postgres \(PostgreSQL\) /, ""),
  };
}

function duration(ms: number): string {
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

function cell(text: string): string {
  return text.replaceAll("|", "\\|").replaceAll("\n", " ");
}

function block(results: ScenarioResult[], env: Record<string, string>, seed: number): string {
  const rows = results.map((r) =>
    `| ${cell(r.name)} | ${cell(r.fault)} | ${cell(r.criteria)} | ${r.passed ? "pass" : "**FAIL**"} | ${
      cell(Object.entries(r.counts).map(([k, v]) => `${k} ${v}`).join(", "))
    } | ${duration(r.durationMs)} |`
  );
  const notes = results.flatMap((r) => r.notes.map((n) => `- ${r.name}: ${n.replaceAll("\n", " ")}`));
  return [
    BEGIN,
    "",
    `Generated by \`deno task torture\` on ${env.date}, commit ${env.commit}, seed ${seed}.`,
    "",
    `Machine: ${env.machine}. Deno ${env.deno}. PostgreSQL ${env.postgresql}.`,
    "",
    "| Scenario | Fault | Criteria | Result | Counts | Duration |",
    "|---|---|---|---|---|---|",
    ...rows,
    ...(notes.length ? ["", "Notes:", "", ...notes] : []),
    "",
    END,
  ].join("\n");
}

/**
 * Replaces the generated block of docs/RELIABILITY.md, keeping the hand-written text around it,
 * then formats the file with `deno fmt` so that a later `deno fmt` of the tree leaves it as it is.
 */
async function writeDoc(generated: string): Promise<void> {
  let text: string;
  try {
    text = await Deno.readTextFile(DOC);
  } catch {
    text = `${INTRO}\n${BEGIN}\n${END}\n`;
  }
  const from = text.indexOf(BEGIN);
  const to = text.indexOf(END);
  if (from < 0 || to < from) throw new Error(`${DOC.pathname} has no '${BEGIN}' ... '${END}' block`);
  await Deno.writeTextFile(DOC, text.slice(0, from) + generated + text.slice(to + END.length));
  const fmt = await new Deno.Command(Deno.execPath(), { args: ["fmt", "-q", DOC.pathname], stderr: "piped" }).output();
  if (!fmt.success) console.error(`torture: deno fmt ${DOC.pathname} failed: ${new TextDecoder().decode(fmt.stderr)}`);
}

if (import.meta.main) {
  const { only, quick, seed } = parseArgs(Deno.args);
  const results: ScenarioResult[] = [];
  for (const s of SCENARIOS) {
    if (only !== undefined && s.name !== only) continue;
    const size = { iterations: quick ? CI_SIZES[s.name] : s.full, seed };
    console.error(`torture: ${s.name} (${size.iterations} iterations, seed ${seed}) ...`);
    const result = await runOne(s, size);
    results.push(result);
    console.log(JSON.stringify({ scenario: s.name, ...result }));
    console.error(`torture: ${s.name} ${result.passed ? "passed" : "FAILED"} in ${duration(result.durationMs)}`);
  }
  if (only === undefined && !quick) {
    await writeDoc(block(results, await environment(), seed));
    console.error(`torture: ${DOC.pathname} updated`);
  } else {
    console.error("torture: docs/RELIABILITY.md left unchanged (partial or quick run)");
  }
  Deno.exit(results.every((r) => r.passed) ? 0 : 1);
}
