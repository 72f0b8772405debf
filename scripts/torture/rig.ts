/**
 * The rig of the process-level fault scenarios (tests/torture): a counting exporter that records
 * when each value was served, a collector configuration pointing at a test PostgreSQL, the real
 * collector as a child process (optionally under a wrapper such as strace or libfaketime), and
 * the end-of-run check that every sample the spool committed is in the central table exactly
 * once, with a ledger that tiles every seq.
 *
 * The exporter serves one value per scrape (1, 2, 3, ...) on `series` series at once, so every
 * sample names its poll: a missing value is a poll that never reached the spool, a repeated
 * (series, value) pair is a duplicate.
 */
import { DatabaseSync } from "node:sqlite";
import { destroyPostgres, type PgCluster, type ServedNetwork, startPostgres } from "../peers/postgres.ts";
import { pgConfig } from "../harness/config.ts";
import { setupDatabase } from "../../src/central/setup.ts";
import { Spool } from "../../src/spool/spool.ts";
import { collectLines } from "../harness/collector.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
/** device_id of the exporter's samples in metrics.d. */
const EXPORTER_DEVICE = "exporter-1";

// -----------------------------------------------------------------------------------------------
// Exporter

export interface RecordingExporter {
  hostname: string;
  port: number;
  /** Series per scrape: `scrape_count` plus `bulk{i="1"}` ... `bulk{i="series-1"}`. */
  series: number;
  /** Values served so far (the last value). */
  served(): number;
  /** When value `v` was served, in this process' monotonic and wall-clock milliseconds. */
  servedAt(v: number): { monoMs: number; wallMs: number } | undefined;
  /** Requests received and not yet answered. */
  inFlight(): number;
  /** Delays every answer by `ms` (a poll then stays in flight that long). */
  setDelay(ms: number): void;
  /** Resolves when the next request arrives, with its value. */
  nextRequest(): Promise<number>;
  close(): Promise<void>;
}

/** `hostname`: where it listens (127.0.0.1 unless a collector polls it from a network namespace). */
export function startRecordingExporter(
  opts: { series?: number; hostname?: string; extraLines?: string[] } = {},
): RecordingExporter {
  const series = opts.series ?? 1;
  const hostname = opts.hostname ?? "127.0.0.1";
  let count = 0;
  let inFlight = 0;
  let delayMs = 0;
  const monos: number[] = [];
  const walls: number[] = [];
  let waiters: ((v: number) => void)[] = [];
  const server = Deno.serve({ hostname, port: 0, onListen: () => {} }, async () => {
    const v = ++count;
    monos[v] = performance.now();
    walls[v] = Date.now();
    inFlight++;
    const arrived = waiters;
    waiters = [];
    for (const w of arrived) w(v);
    try {
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      const lines = ["# TYPE scrape_count counter", `scrape_count ${v}`];
      for (let i = 1; i < series; i++) lines.push(`bulk{i="${i}"} ${v}`);
      lines.push(...opts.extraLines ?? []);
      return new Response(lines.join("\n") + "\n", { headers: { "content-type": "text/plain; version=0.0.4" } });
    } finally {
      inFlight--;
    }
  });
  return {
    hostname,
    port: server.addr.port,
    series,
    served: () => count,
    servedAt: (v) => {
      const monoMs = monos[v];
      const wallMs = walls[v];
      return monoMs === undefined || wallMs === undefined ? undefined : { monoMs, wallMs };
    },
    inFlight: () => inFlight,
    setDelay: (ms) => {
      delayMs = ms;
    },
    nextRequest: () => new Promise((resolve) => waiters.push(resolve)),
    close: () => server.shutdown(),
  };
}

// -----------------------------------------------------------------------------------------------
// Central database and configuration

/** A test PostgreSQL with the Kwollect schema applied (`setup-db`), serving `network` too if given. */
export async function startCentral(opts: { network?: ServedNetwork } = {}): Promise<PgCluster> {
  const pg = await startPostgres(opts.network ? { network: opts.network } : {});
  try {
    const dir = await Deno.makeTempDir({ prefix: "kwollector-setup-" });
    await setupDatabase(pgConfig(pg, dir));
    await Deno.remove(dir, { recursive: true });
    return pg;
  } catch (err) {
    await destroyPostgres(pg);
    throw err;
  }
}

export interface Rig {
  dir: string;
  config: string;
  spoolPath: string;
}

/**
 * Writes metrics.d (one Prometheus entry polling the exporter every `periodMs`) and a collector
 * configuration: TLS to the test cluster, a private spool, fast forwarding and retries.
 */
export async function writeRig(opts: {
  pg: PgCluster;
  exporter: RecordingExporter;
  periodMs?: number;
  /** More metrics.d entries (YAML list items), appended to the exporter's. */
  extraEntries?: string;
  /** verify-full by default; `require` encrypts without checking the certificate. */
  sslmode?: "verify-full" | "require" | "disable";
  settings?: Record<string, string | number>;
}): Promise<Rig> {
  const dir = await Deno.makeTempDir({ prefix: "kwollector-torture-" });
  await Deno.mkdir(`${dir}/metrics.d`);
  const names = opts.exporter.series > 1 ? "scrape_count-bulk" : "scrape_count";
  await Deno.writeTextFile(
    `${dir}/metrics.d/exporter.yaml`,
    `- name: counter\n  device_id: ${EXPORTER_DEVICE}\n  url: prometheus://${opts.exporter.hostname}:${opts.exporter.port}/${names}\n` +
      `  update_every: ${opts.periodMs ?? 100}\n` + (opts.extraEntries ?? ""),
  );
  const spoolPath = `${dir}/spool/spool.db`;
  const settings: Record<string, string | number> = {
    metrics_dir: `${dir}/metrics.d`,
    db_host: "127.0.0.1",
    db_port: opts.pg.port,
    db_sslmode: opts.sslmode ?? "verify-full",
    spool_path: spoolPath,
    edge_id: "torture-edge",
    forward_interval_ms: 50,
    forward_retry_max_ms: 300,
    log_level: "info",
    ...(opts.sslmode === undefined || opts.sslmode === "verify-full" ? { db_sslrootcert: opts.pg.caFile } : {}),
    ...opts.settings,
  };
  const config = `${dir}/kwollector.yaml`;
  await Deno.writeTextFile(config, Object.entries(settings).map(([k, v]) => `${k}: ${v}`).join("\n") + "\n");
  return { dir, config, spoolPath };
}

// -----------------------------------------------------------------------------------------------
// The collector process

export interface CollectorProcess {
  /** PID of the collector itself (not of a wrapper). */
  pid(): Promise<number>;
  logs(): string[];
  /** The collector's exit; through a wrapper, the wrapper's (strace re-raises the signal). */
  status: Promise<Deno.CommandStatus>;
  /** Sends `signal` to the collector itself and waits for the exit. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

/**
 * Starts `kwollector run CONFIG`. A `wrapper` (e.g. `["strace", ..., "--"]`) runs the collector
 * as its child; signals still go to the collector's own PID. `netns` runs it in that network
 * namespace (`ip netns exec` becomes the collector: same PID).
 */
export function startCollector(
  config: string,
  opts: { env?: Record<string, string>; wrapper?: string[]; netns?: string } = {},
): CollectorProcess {
  const argv = [
    ...(opts.netns ? ["ip", "netns", "exec", opts.netns] : []),
    Deno.execPath(),
    "run",
    "-A",
    MAIN,
    "run",
    config,
  ];
  const wrapper = opts.wrapper ?? [];
  const all = [...wrapper, ...argv];
  const child = new Deno.Command(all[0]!, {
    args: all.slice(1),
    env: opts.env ?? {},
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const { lines, done } = collectLines(child);
  let exited = false;
  const status = child.status.then(async (s) => {
    exited = true;
    await done;
    return s;
  });
  let pid: Promise<number> | undefined;
  const findPid = async (): Promise<number> => {
    if (wrapper.length === 0) return child.pid;
    // The wrapper's child is the collector.
    for (let i = 0; i < 2000 && !exited; i++) {
      try {
        const kids = (await Deno.readTextFile(`/proc/${child.pid}/task/${child.pid}/children`)).trim();
        if (kids) return Number(kids.split(/\s+/)[0]);
      } catch { /* the wrapper is starting or gone */ }
      await sleep(5);
    }
    throw new Error(`No collector process under wrapper '${wrapper[0]}' (pid ${child.pid})`);
  };
  return {
    pid: () => (pid ??= findPid()),
    logs: () => lines,
    status,
    async stop(signal: Deno.Signal = "SIGTERM") {
      if (!exited) {
        try {
          Deno.kill(await (pid ??= findPid()), signal);
        } catch { /* already gone */ }
      }
      return await status;
    },
  };
}

/** Runs a CLI subcommand (`flush`, `status`) to completion. */
export async function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    env: {},
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** The spool's rows as `status --json` reports them (works while the collector runs). */
export async function spoolRows(config: string): Promise<number> {
  const out = await runCli(["status", config, "--json"]);
  if (out.code !== 0) throw new Error(`kwollector status failed (${out.code}): ${out.stderr}`);
  return Number(JSON.parse(out.stdout).spool_rows);
}

/** Stops the running collector with SIGTERM, then forwards what is left with `flush`. */
export async function finalDrain(collector: CollectorProcess, config: string): Promise<string[]> {
  const problems: string[] = [];
  const stopped = await collector.stop("SIGTERM");
  if (stopped.code !== 0) {
    problems.push(`the last collector exited with ${stopped.code}/${stopped.signal} on SIGTERM`);
  }
  const flush = await runCli(["flush", config, "--timeout_s", "60"]);
  if (flush.code !== 0) problems.push(`flush exited ${flush.code}: ${flush.stderr.trim().slice(-300)}`);
  return problems;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** `p`'s value, or undefined once `ms` have passed (the timer is cleared either way). */
export async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

// -----------------------------------------------------------------------------------------------
// The end-of-run check

export interface DeliveryCheck {
  /** Values the exporter served (polls answered). */
  served: number;
  /** Seqs the spool ever committed (next_seq - 1). */
  committedSeqs: number;
  spoolRowsLeft: number;
  ledgerDataRows: number;
  ledgerBatches: number;
  ledgerQuarantinedSeqs: number;
  ledgerDroppedSeqs: number;
  ledgerGaps: number;
  ledgerLastSeq: number;
  centralRows: number;
  /** Central rows of the collector's own telemetry (device edge_id). */
  telemetryRows: number;
  duplicateRows: number;
  /** Polls whose samples are neither all central nor all quarantined. */
  partialPolls: number;
  quarantinedRows: number;
  /** Served values found neither central nor in quarantine: polls that never reached the spool. */
  missingValues: number[];
  /** Quarantined samples. */
  quarantine: { deviceId: string; metricId: string; value: number; labels: Record<string, string>; reason: string }[];
  /** Central rows of `scrape_count`: value and timestamp (ms). */
  central: Map<number, number>;
  /** Empty when every committed sample is central exactly once and the ledger tiles every seq. */
  problems: string[];
}

/**
 * Compares the central table and ledger with the spool (the collector must be stopped and the
 * spool drained): the ledger of the spool tiles 1..next_seq-1 with no gap, its data rows are the
 * central rows, and no (series, value) pair is stored twice.
 */
export async function checkDelivery(
  pg: PgCluster,
  spoolPath: string,
  exporter: RecordingExporter,
): Promise<DeliveryCheck> {
  const spool = Spool.open({
    path: spoolPath,
    maxBytes: 1 << 30,
    fullPolicy: "drop_oldest",
    synchronous: "full",
    commitIntervalMs: 10,
    mode: "reader",
  });
  const stats = spool.stats();
  spool.close();
  const db = new DatabaseSync(spoolPath, { readOnly: true });
  const quarantineRows = db.prepare(
    "SELECT device_id, metric_id, value, labels, reason FROM quarantine ORDER BY seq",
  ).all() as {
    device_id: string;
    metric_id: string;
    value: number | null;
    labels: string;
    reason: string;
  }[];
  db.close();

  const sql = pg.admin("kwdb");
  try {
    const ledger = await sql<{ kind: string; batches: number; rows: number; seqs: number; last: number }[]>`
      SELECT kind, count(*)::int AS batches, sum(rows)::int AS rows, sum(last_seq - first_seq + 1)::int AS seqs,
             max(last_seq)::int AS last
      FROM kwollect_ledger WHERE spool_id = ${stats.spoolId} GROUP BY kind`;
    const [gaps] = await sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM kwollect_ledger_gaps WHERE spool_id = ${stats.spoolId}`;
    const perValue = await sql<{ value: number; n: number; series: number }[]>`
      SELECT value, count(*)::int AS n, count(DISTINCT (metric_id, labels))::int AS series
      FROM metrics WHERE device_id = ${EXPORTER_DEVICE} GROUP BY value ORDER BY value`;
    // The collector's own telemetry (device edge_id) is forwarded too: a duplicate there is a
    // second row of one series at one timestamp.
    const [others] = await sql<{ n: number; distinct: number }[]>`
      SELECT count(*)::int AS n, count(DISTINCT (device_id, metric_id, labels, "timestamp"))::int AS distinct
      FROM metrics WHERE device_id <> ${EXPORTER_DEVICE}`;
    const counter = await sql<{ value: number; ts: number }[]>`
      SELECT value, (extract(epoch FROM "timestamp") * 1000)::float8 AS ts
      FROM metrics WHERE device_id = ${EXPORTER_DEVICE} AND metric_id = 'prom_scrape_count'`;
    const kind = (k: string) => ledger.find((l) => l.kind === k);
    const check: DeliveryCheck = {
      served: exporter.served(),
      committedSeqs: stats.nextSeq - 1,
      spoolRowsLeft: stats.rows,
      ledgerDataRows: kind("data")?.rows ?? 0,
      ledgerBatches: kind("data")?.batches ?? 0,
      ledgerQuarantinedSeqs: kind("quarantined")?.seqs ?? 0,
      ledgerDroppedSeqs: kind("dropped")?.seqs ?? 0,
      ledgerGaps: gaps?.n ?? -1,
      ledgerLastSeq: Math.max(0, ...ledger.map((l) => l.last)),
      centralRows: perValue.reduce((n, v) => n + v.n, 0) + (others?.n ?? 0),
      telemetryRows: others?.n ?? 0,
      duplicateRows: perValue.reduce((n, v) => n + (v.n - v.series), 0) + (others ? others.n - others.distinct : 0),
      partialPolls: 0,
      quarantinedRows: quarantineRows.length,
      missingValues: [],
      quarantine: quarantineRows.map((q) => ({
        deviceId: q.device_id,
        metricId: q.metric_id,
        value: q.value ?? NaN,
        labels: JSON.parse(q.labels),
        reason: q.reason,
      })),
      central: new Map(counter.map((c) => [c.value, c.ts])),
      problems: [],
    };
    // Per poll (value): its central rows plus its quarantined rows must be all its series.
    const rowsOf = new Map<number, number>();
    for (const v of perValue) rowsOf.set(v.value, v.series);
    for (const q of quarantineRows) {
      if (q.device_id === EXPORTER_DEVICE && q.value !== null) rowsOf.set(q.value, (rowsOf.get(q.value) ?? 0) + 1);
    }
    for (let v = 1; v <= check.served; v++) {
      const n = rowsOf.get(v);
      if (n === undefined) check.missingValues.push(v);
      else if (n !== exporter.series) check.partialPolls++;
    }
    const p = check.problems;
    if (check.ledgerGaps !== 0) p.push(`kwollect_ledger_gaps shows ${check.ledgerGaps} gap(s)`);
    if (check.committedSeqs > 0 && check.ledgerLastSeq !== check.committedSeqs) {
      p.push(`the ledger ends at seq ${check.ledgerLastSeq}, the spool committed ${check.committedSeqs}`);
    }
    const tiled = check.ledgerDataRows + check.ledgerQuarantinedSeqs + check.ledgerDroppedSeqs;
    if (tiled !== check.committedSeqs) {
      p.push(`the ledger accounts for ${tiled} seqs, the spool committed ${check.committedSeqs}`);
    }
    if (check.spoolRowsLeft !== 0) p.push(`${check.spoolRowsLeft} samples left in the spool after the drain`);
    if (check.centralRows !== check.ledgerDataRows) {
      p.push(`${check.centralRows} central rows, the ledger's data batches hold ${check.ledgerDataRows}`);
    }
    if (check.duplicateRows !== 0) {
      const dups = await sql<{ metric_id: string; labels: unknown; value: number; n: number }[]>`
        SELECT metric_id, labels, value, count(*)::int AS n FROM metrics WHERE device_id = ${EXPORTER_DEVICE}
        GROUP BY metric_id, labels, value HAVING count(*) > 1 ORDER BY value LIMIT 5`;
      p.push(`${check.duplicateRows} duplicated rows in the central table, e.g. ${JSON.stringify(dups)}`);
    }
    if (check.partialPolls !== 0) {
      const partial = [...rowsOf].filter(([, n]) => n !== exporter.series).slice(0, 5);
      p.push(
        `${check.partialPolls} polls not delivered whole (value, series central + quarantined): ${
          JSON.stringify(partial)
        }`,
      );
    }
    if (check.ledgerQuarantinedSeqs !== check.quarantinedRows) {
      p.push(`${check.quarantinedRows} quarantined samples, ${check.ledgerQuarantinedSeqs} in the ledger`);
    }
    if (check.ledgerDroppedSeqs !== 0) p.push(`${check.ledgerDroppedSeqs} seqs dropped (the spool was never full)`);
    return check;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** The delivery counts of a scenario result. */
export function deliveryCounts(c: DeliveryCheck): Record<string, number> {
  return {
    served: c.served,
    committed: c.committedSeqs,
    central: c.centralRows,
    telemetryRows: c.telemetryRows,
    batches: c.ledgerBatches,
    duplicates: c.duplicateRows,
    ledgerGaps: c.ledgerGaps,
    quarantined: c.quarantinedRows,
    neverSpooled: c.missingValues.length,
  };
}

/** One run of the collector process: the values served while it ran, and how it ended. */
export interface Life {
  /** First and last value served while this process ran. */
  first: number;
  last: number;
  stop: "SIGTERM" | "SIGKILL";
  /** The process logged a failing poll (a timeout on a loaded machine loses that poll's value). */
  pollFailed: boolean;
}

/**
 * Missing values no fault explains. A SIGKILL may lose the poll in flight and the samples waiting
 * for the next group commit: at most `tail` values at the end of the life. A SIGTERM stop commits
 * its in-flight polls, so it may lose none. A failing poll loses its own value.
 */
export function unexplainedMissing(missing: number[], lives: Life[], tail = 3): number[] {
  const set = new Set(missing);
  return missing.filter((v) => {
    const life = lives.find((l) => v >= l.first && v <= l.last);
    if (!life) return true;
    if (life.pollFailed) return false;
    if (life.stop === "SIGTERM") return true;
    // Within the tail: every value from v to the end of the life must be missing too.
    if (life.last - v >= tail) return true;
    for (let w = v; w <= life.last; w++) if (!set.has(w)) return true;
    return false;
  });
}

export function pollFailed(lines: string[]): boolean {
  return lines.some((l) => /Device poll failing/.test(l));
}

/** A SIGKILL cannot damage a SQLite spool in WAL mode: a salvage after one is a bug. */
export function spoolSalvaged(lines: string[]): boolean {
  return lines.some((l) => /Spool is damaged/.test(l));
}

/** Log lines of a collector that report a condition no fault here should cause. */
export function unexpectedLogLines(lines: string[]): string[] {
  return lines.filter((l) =>
    /Unexpected|Samples lost|Spool is damaged|Spool full|panicked|Uncaught/.test(l) ||
    /^(ERROR|CRITICAL) /.test(l) && !/Central database refuses/.test(l)
  );
}

/**
 * How well the exporter's polls kept their period between values `from` and `to`: the longest
 * gap between two polls, and the share of gaps within `toleranceMs` of the period.
 */
export function scheduleOf(
  exporter: RecordingExporter,
  range: { from: number; to: number; periodMs: number; toleranceMs: number },
): { polls: number; longestGapMs: number; onTime: number } {
  let longest = 0;
  let onTime = 0;
  let gaps = 0;
  for (let v = range.from + 1; v <= range.to; v++) {
    const a = exporter.servedAt(v - 1);
    const b = exporter.servedAt(v);
    if (!a || !b) continue;
    const gap = b.monoMs - a.monoMs;
    longest = Math.max(longest, gap);
    gaps++;
    if (Math.abs(gap - range.periodMs) <= range.toleranceMs) onTime++;
  }
  return { polls: range.to - range.from + 1, longestGapMs: Math.round(longest), onTime: gaps ? onTime / gaps : 0 };
}
