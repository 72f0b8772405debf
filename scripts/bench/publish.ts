/**
 * Publishing of the benchmark figures. docs/bench-results.json keeps the latest value of every
 * figure with the run that measured it (machine, versions, commit, date); the block of
 * docs/PERFORMANCE.md between BEGIN and END is regenerated from it, so the hand-written text
 * around it is kept and met / not met is computed from each figure's goal.
 */
import { type Goal, goalMet, type Result } from "./report.ts";
import { PG_BIN } from "../peers/postgres.ts";

/**
 * What a run's "uncommitted changes" are looked for in: every tracked file but the two this
 * publishing rewrites after each script, which would otherwise mark every run after the first.
 */
const CODE = [":/", ":(top,exclude)docs/bench-results.json", ":(top,exclude)docs/PERFORMANCE.md"];

export const BEGIN = "<!-- bench:begin -->";
export const END = "<!-- bench:end -->";

/** The benchmark scripts of scripts/bench/, in the order they run and are published. */
export const SCRIPTS: Record<string, { title: string; about: string; env?: string[] }> = {
  core: {
    title: "Lossless core: spool, forwarder, drain",
    about: "spool append, forward rate, restart and drain of a backlog while polling, RSS",
    env: ["BENCH_BACKLOG", "BENCH_ONLY", "BENCH_V8_FLAGS", "BENCH_GLIBC_TUNABLES"],
  },
  e2e: {
    title: "End to end",
    about: "sample → central row at 10,000 samples/s, no backlog",
    env: ["BENCH_V8_FLAGS", "BENCH_GLIBC_TUNABLES"],
  },
  recovery: {
    title: "Recovery after central outages",
    about: "central database's return → first live sample committed, live freshness while the outage's backlog drains",
    env: ["BENCH_OUTAGES", "BENCH_OUTAGE_S", "BENCH_SETTLE_S", "BENCH_V8_FLAGS", "BENCH_GLIBC_TUNABLES"],
  },
  fleet: {
    title: "Fleet fairness",
    about: "20 collectors returning together with a backlog each: live freshness, aggregate drain, exactly once",
    env: [
      "BENCH_FLEET_N",
      "BENCH_FLEET_BACKLOG",
      "BENCH_FLEET_DOWN_S",
      "BENCH_FLEET_NEIGHBOURS",
      "BENCH_V8_FLAGS",
      "BENCH_GLIBC_TUNABLES",
    ],
  },
  snmp: { title: "SNMP", about: "throughput against a local snmpd, fleet of 1,000 simulated agents" },
  modbus_ipmi: { title: "Modbus and IPMI", about: "200 simulated Modbus devices, 10 simulated BMCs" },
  wattmetre: { title: "Wattmeter stream", about: "48 ports at 50 Hz into a durable spool" },
  peers: {
    title: "Beside the peer collectors",
    about: "workload A (10,000 series at 1 s) for kwollector and Debian's Prometheus agent in one run; " +
      "workload B (200 SNMP OIDs at 1 s): CPU per 1,000 samples and RSS",
    env: ["BENCH_PEERS_S", "BENCH_V8_FLAGS", "BENCH_GLIBC_TUNABLES"],
  },
  hostile: {
    title: "Hostile input",
    about: "64 MB heap against a 50,000-series exporter, a 16 MB JSON document and a 5,000-entry metrics.d " +
      "file, beside a device polled every second",
    env: ["BENCH_ONLY", "BENCH_FILE_ENTRIES", "BENCH_V8_FLAGS", "BENCH_GLIBC_TUNABLES"],
  },
};

export interface Run {
  id: number;
  script: string;
  command: string;
  /** The variables the script reads (SCRIPTS[script].env) that were set for the run. */
  env: Record<string, string>;
  date: string;
  commit: string;
  /** Whether the working tree had uncommitted changes to tracked files. */
  uncommittedChanges: boolean;
  os: string;
  arch: string;
  cores: number;
  cpu: string;
  memoryGiB: number;
  deno: string;
  postgresql: string;
  loadAverage: number[];
  /** Set when the script failed: its exit code. */
  exitCode?: number;
}

export interface StoredResult extends Result {
  script: string;
  run: number;
}

export interface Results {
  runs: Run[];
  results: StoredResult[];
}

async function output(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : "";
  } catch {
    return "";
  }
}

/** Where and on what a script is about to run. */
export async function runContext(script: string, id: number): Promise<Run> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const postgres = await output(`${PG_BIN}/postgres`, ["--version"]);
  return {
    id,
    script,
    command: `deno run -A scripts/bench/${script}.ts`,
    env: Object.fromEntries(
      (SCRIPTS[script]?.env ?? []).flatMap((k) => {
        const v = Deno.env.get(k);
        return v === undefined ? [] : [[k, v]];
      }),
    ),
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    commit: await output("git", ["rev-parse", "--short", "HEAD"]),
    uncommittedChanges: (await output("git", ["status", "--porcelain", "--untracked-files=no", "--", ...CODE])) !== "",
    os: Deno.build.os,
    arch: Deno.build.arch,
    cores: navigator.hardwareConcurrency,
    cpu: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? "",
    memoryGiB: Math.round(Deno.systemMemoryInfo().total / 2 ** 30 * 10) / 10,
    deno: Deno.version.deno,
    postgresql: /(\d+\.\d+)/.exec(postgres)?.[1] ?? "",
    loadAverage: Deno.loadavg().map((l) => Math.round(l * 100) / 100),
  };
}

export async function readResults(path: string): Promise<Results> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as Results;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { runs: [], results: [] };
    throw new Error(`Cannot read benchmark results '${path}': ${(err as Error).message}`);
  }
}

/**
 * Merges the lines of one run into `previous`. A complete run (the whole script, exit 0)
 * replaces every figure of its script; a partial one (BENCH_ONLY, or a failure) replaces only the
 * figures it printed. Runs no figure refers to any more are forgotten, except the latest run of
 * each script (it tells when the script last failed).
 */
export function merge(previous: Results, run: Run, lines: Result[], complete: boolean): Results {
  const fresh: StoredResult[] = lines.map((l) => ({ ...l, script: run.script, run: run.id }));
  const freshByName = new Map(fresh.map((r) => [r.name, r]));
  let results: StoredResult[];
  if (complete) {
    results = [...previous.results.filter((r) => r.script !== run.script), ...fresh];
  } else {
    // Figures keep their place in the table; new ones go after the others.
    results = previous.results.map((r) => (r.script === run.script && freshByName.get(r.name)) || r);
    const placed = new Set(results.filter((r) => r.run === run.id).map((r) => r.name));
    results.push(...fresh.filter((r) => !placed.has(r.name)));
  }
  results.sort((a, b) => scriptOrder(a.script) - scriptOrder(b.script));
  const latest = new Map<string, number>();
  for (const r of [...previous.runs, run]) latest.set(r.script, Math.max(latest.get(r.script) ?? 0, r.id));
  const used = new Set(results.map((r) => r.run));
  const runs = [...previous.runs, run].filter((r) => used.has(r.id) || latest.get(r.script) === r.id);
  return { runs, results };
}

function scriptOrder(script: string): number {
  const i = Object.keys(SCRIPTS).indexOf(script);
  return i < 0 ? Infinity : i;
}

const GOAL_SIGN: Record<Goal["op"], string> = { ">=": "≥", "<=": "≤", "==": "=" };

export function formatNumber(v: number | null): string {
  if (v === null || !Number.isFinite(v)) return "n/a";
  const abs = Math.abs(v);
  if (abs >= 100) return new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 }).format(v);
  // Enough digits to tell a value from a goal just above it (0.9989 < 0.999).
  return new Intl.NumberFormat("en-US", { maximumSignificantDigits: abs >= 1 ? 3 : 4 }).format(v);
}

function cell(text: string): string {
  return text.replaceAll("|", "\\|").replaceAll("\n", " ");
}

function describeRun(r: Run): string[] {
  const env = Object.entries(r.env).map(([k, v]) => `${k}=${v}`).join(" ");
  return [
    String(r.id),
    `\`${env ? `${env} ` : ""}${r.command}\`${
      r.exitCode !== undefined ? ` **(failed: exit code ${r.exitCode})**` : ""
    }`,
    r.date.replace("T", " ").replace("Z", " UTC"),
    `${r.commit}${r.uncommittedChanges ? " + uncommitted changes" : ""}`,
    `${r.os} ${r.arch}, ${r.cores} cores${r.cpu ? ` (${r.cpu})` : ""}, ${r.memoryGiB} GiB`,
    r.deno,
    r.postgresql || "—",
    r.loadAverage.join(" "),
  ];
}

function table(header: string[], rows: string[][]): string[] {
  return [
    `| ${header.join(" | ")} |`,
    `| ${header.map(() => "---").join(" | ")} |`,
    ...rows.map((r) => `| ${r.map(cell).join(" | ")} |`),
  ];
}

/** The generated block, markers included. */
export function render(data: Results): string {
  const withGoal = data.results.filter((r) => r.goal);
  const met = withGoal.filter((r) => goalMet(r.value, r.goal!)).length;
  const lines = [
    BEGIN,
    "<!-- Generated by `deno task bench` from docs/bench-results.json: edit outside the bench markers. -->",
    "",
    `**${met} of ${withGoal.length} goals met.** Figures without a goal are raw ceilings measured in the same run, ` +
    "or informational.",
    "",
    "Runs:",
    "",
    ...table(
      ["run", "command", "date", "commit", "machine", "Deno", "PostgreSQL", "load average at start"],
      data.runs.map(describeRun),
    ),
  ];
  for (const [script, { title, about }] of Object.entries(SCRIPTS)) {
    const rows = data.results.filter((r) => r.script === script);
    if (rows.length === 0) continue;
    lines.push("", `### ${title}`, "", `\`scripts/bench/${script}.ts\`: ${about}.`, "");
    lines.push(...table(
      ["figure", "value", "unit", "goal", "met", "run"],
      rows.map((r) => [
        `${r.figure} (\`${r.name}\`)`,
        formatNumber(r.value),
        r.unit,
        r.goal ? `${GOAL_SIGN[r.goal.op]} ${formatNumber(r.goal.value)}` : "—",
        r.goal ? (goalMet(r.value, r.goal) ? "met" : "**not met**") : "—",
        String(r.run),
      ]),
    ));
  }
  lines.push(END);
  return lines.join("\n");
}

/** Replaces the block between the markers of `doc` (which must have them). */
export function replaceBlock(doc: string, block: string, path: string): string {
  const begin = doc.indexOf(BEGIN);
  const end = doc.indexOf(END);
  if (begin < 0 || end < begin) {
    throw new Error(`'${path}' has no '${BEGIN}' ... '${END}' block to write the benchmark figures in`);
  }
  return doc.slice(0, begin) + block + doc.slice(end + END.length);
}
