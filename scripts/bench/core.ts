/**
 * Benchmarks of the lossless core (issue 3 and 6 goals), one JSON line per figure:
 * spool append (durable group commit) and its ratio to a bare node:sqlite loop with the same
 * durability; forward rate to a local PostgreSQL and its ratio to a bare COPY by the same
 * client; drain of a large backlog while 10,000 metrics are polled at 1 Hz, with RSS sampled all
 * along; idle RSS. Sizes can be reduced with BENCH_BACKLOG (default 10,000,000).
 */
import { DatabaseSync } from "node:sqlite";
import { Spool } from "../../src/spool/spool.ts";
import { openSpool } from "../../src/cli/runtime.ts";
import type { Sample } from "../../src/sample.ts";
import { Forwarder } from "../../src/forward/forwarder.ts";
import { connect, endpointOf } from "../../src/central/connect.ts";
import { setupDatabase } from "../../src/central/setup.ts";
import { copyRow } from "../../src/forward/copy_text.ts";
import { setLogSink } from "../../src/log.ts";
import { report } from "./report.ts";
import { destroyPostgres, startPostgres } from "../../tests/helpers/postgres.ts";
import { pgConfig } from "../../tests/helpers/config.ts";

setLogSink(() => {});
/** V8 flags of the collector under test (the compiled binary embeds the same ones). */
const V8_FLAGS = (Deno.env.get("BENCH_V8_FLAGS") ?? "").split(" ").filter((f) => f !== "");
const BACKLOG = Number(Deno.env.get("BENCH_BACKLOG") ?? 10_000_000);

function emit(name: string, value: number, unit: string, goal?: string, extra: Record<string, unknown> = {}) {
  report({ name, value, unit, ...(goal && { goal }), ...extra });
}

function batch(n: number, from: number, series = 10_000): Sample[] {
  const out: Sample[] = new Array(n);
  const now = Date.now();
  for (let i = 0; i < n; i++) {
    const k = from + i;
    out[i] = {
      timestampMs: now + k,
      deviceId: `node-${k % series}`,
      metricId: "bmc_node_power_watt",
      value: k % 997,
      labels: { _device_alias: `n${k % series}` },
    };
  }
  return out;
}

async function spoolAppend(dir: string) {
  const spool = Spool.open({
    path: `${dir}/append.db`,
    maxBytes: 2 ** 40,
    fullPolicy: "drop_oldest",
    synchronous: "full",
    commitIntervalMs: 100,
  });
  const seconds = 10;
  const end = performance.now() + seconds * 1000;
  let acked = 0;
  let sent = 0;
  const inflight: Promise<void>[] = [];
  const started = performance.now();
  while (performance.now() < end) {
    const b = batch(1000, sent);
    sent += 1000;
    inflight.push(
      spool.append(b).then(() => {
        acked += 1000;
      }),
    );
    if (inflight.length >= 64) await inflight.shift();
    if (sent % 20_000 === 0) await new Promise((r) => setTimeout(r, 0));
  }
  await Promise.all(inflight);
  const rate = acked / ((performance.now() - started) / 1000);
  const commits = spool.counters.commits;
  const bytes = spool.usedBytes() / acked;
  spool.close();

  // The bare ceiling: the same rows through node:sqlite, same durability and commit size.
  const db = new DatabaseSync(`${dir}/bare.db`);
  db.exec(
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE s(seq INTEGER PRIMARY KEY, series INTEGER, ts INTEGER, value REAL)",
  );
  const ins = db.prepare("INSERT INTO s VALUES (?, ?, ?, ?)");
  const perCommit = Math.max(1000, Math.round(rate / 10));
  let n = 0;
  const bareStart = performance.now();
  while (performance.now() - bareStart < seconds * 1000) {
    db.exec("BEGIN");
    for (let i = 0; i < perCommit; i++, n++) ins.run(n, n % 10_000, n * 1000, n % 997);
    db.exec("COMMIT");
  }
  const bare = n / ((performance.now() - bareStart) / 1000);
  db.close();
  emit("spool_append", rate, "samples/s", ">= 300000", { fsyncs_per_s: commits / seconds });
  emit("spool_append_ratio_to_bare_sqlite", rate / bare, "ratio", ">= 0.7", { bare_samples_per_s: Math.round(bare) });
  emit("spool_bytes_per_sample", bytes, "bytes", "<= 32");
}

async function forwardRate(dir: string) {
  const pg = await startPostgres({ timescaledb: false, fsync: true });
  try {
    const config = pgConfig(pg, dir, { spool_path: `${dir}/fwd.db`, spool_max_bytes: 2 ** 40 });
    await setupDatabase(config);
    const rows = 1_000_000;
    const spool = openSpool(config);
    for (let i = 0; i < rows; i += 50_000) await spool.append(batch(50_000, i));
    const fwd = new Forwarder({ spool, endpoint: endpointOf(config), config });
    const started = performance.now();
    await fwd.drain({ deadlineMs: performance.now() + 600_000 });
    const rate = rows / ((performance.now() - started) / 1000);
    await fwd.close();
    spool.close();
    // Bare COPY of the same rows by the same client, same batch size, no ledger, no spool.
    const admin = pg.admin("kwdb");
    await admin`TRUNCATE metrics`;
    const sql = connect(endpointOf(config));
    const bareStart = performance.now();
    for (let i = 0; i < rows; i += 20_000) {
      const text = batch(20_000, i).map(copyRow).join("");
      await sql.begin(async (tx) => {
        const w = await tx`COPY metrics ("timestamp", device_id, metric_id, value, labels) FROM STDIN`.writable();
        await new Promise<void>((resolve, reject) => {
          w.once("finish", () => resolve());
          w.once("error", reject);
          for (let o = 0; o < text.length; o += 65536) w.write(text.slice(o, o + 65536));
          w.end();
        });
      });
    }
    const bare = rows / ((performance.now() - bareStart) / 1000);
    await sql.end();
    emit("forward_rate", rate, "rows/s", ">= 150000");
    emit("forward_ratio_to_bare_copy", rate / bare, "ratio", ">= 0.7", { bare_rows_per_s: Math.round(bare) });
  } finally {
    await destroyPostgres(pg);
  }
}

/** Resident memory of a process in MB, from /proc. */
function processRssMb(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

/**
 * The real collector (`kwollector run`, a child process) restarted on a spool holding a large
 * backlog, while it polls 10,000 metrics at 1 Hz: time to first forward, drain time, and its
 * RSS sampled every second from /proc.
 */
async function drainWhilePolling(dir: string) {
  const pg = await startPostgres({ timescaledb: false, fsync: true });
  const lines = Array.from({ length: 10_000 }, (_, i) => `node_power_watt{psu="${i}"} ${i}`).join("\n") + "\n";
  const exporter = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => new Response(lines));
  try {
    const config = pgConfig(pg, dir, { spool_path: `${dir}/drain/spool.db`, spool_max_bytes: 2 ** 40 });
    await setupDatabase(config);
    const spool = openSpool(config);
    const fillStart = performance.now();
    for (let i = 0; i < BACKLOG; i += 50_000) await spool.append(batch(50_000, i));
    const fillS = (performance.now() - fillStart) / 1000;
    spool.close();
    await Deno.mkdir(`${dir}/metrics.d`, { recursive: true });
    await Deno.writeTextFile(
      `${dir}/metrics.d/rack.yaml`,
      `- name: p\n  device_id: rack-1\n  url: prometheus://127.0.0.1:${exporter.addr.port}/node_power_watt\n  update_every: 1000\n`,
    );
    const yaml = `${dir}/kwollector.yaml`;
    await Deno.writeTextFile(
      yaml,
      `metrics_dir: ${dir}/metrics.d\ndb_host: 127.0.0.1\ndb_port: ${pg.port}\ndb_sslmode: disable\nspool_path: ${config.spool_path}\n`,
    );
    const admin = pg.admin("kwdb");
    const started = performance.now();
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", ...V8_FLAGS, new URL("../../main.ts", import.meta.url).pathname, "run", yaml],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const rss: number[] = [];
    let firstForwardS: number | undefined;
    let drainS: number | undefined;
    while (performance.now() - started < 3_600_000) {
      await new Promise((r) => setTimeout(r, firstForwardS === undefined ? 100 : 1000));
      rss.push(processRssMb(child.pid));
      const [row] = await admin`SELECT count(*)::int AS n FROM kwollect_ledger`;
      if (firstForwardS === undefined && row!.n > 0) firstForwardS = (performance.now() - started) / 1000;
      const reader = openSpool(config, "reader");
      const left = reader.stats().rows;
      reader.close();
      if (left < 20_000) {
        drainS = (performance.now() - started) / 1000;
        break;
      }
    }
    child.kill("SIGTERM");
    await child.status;
    const [central] = await admin`SELECT count(*)::int AS n FROM metrics`;
    const steady = rss.slice(Math.min(5, rss.length - 1));
    steady.sort((a, b) => a - b);
    emit("backlog_fill", BACKLOG / fillS, "samples/s", undefined, { samples: BACKLOG });
    emit("restart_to_first_forward", firstForwardS ?? NaN, "s", "<= 2", { backlog: BACKLOG });
    emit("drain_time_while_polling_10k_per_s", drainS ?? NaN, "s", undefined, {
      backlog: BACKLOG,
      central_rows: central!.n,
    });
    emit("drain_rate_net", central!.n / (drainS ?? Infinity), "rows/s", ">= 130000");
    emit("collector_rss_during_drain_max", steady.at(-1) ?? NaN, "MB", "<= 120");
    emit("collector_rss_during_drain_spread", (steady.at(-1)! - steady[0]!) / steady[0]!, "ratio", "<= 0.10 (flat)");
  } finally {
    await exporter.shutdown();
    await destroyPostgres(pg);
  }
}

async function idleCollectorRss(dir: string) {
  await Deno.mkdir(`${dir}/idle.d`, { recursive: true });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../../main.ts", import.meta.url).pathname,
      "run",
      "--metrics_dir",
      `${dir}/idle.d`,
      "--spool_path",
      `${dir}/idle/spool.db`,
      "--db_port",
      "1",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await new Promise((r) => setTimeout(r, 3000));
  emit("collector_rss_idle", processRssMb(child.pid), "MB", "<= 60");
  child.kill("SIGTERM");
  await child.status;
}

const dir = await Deno.makeTempDir({ prefix: "kwollector-bench-" });
try {
  const only = Deno.env.get("BENCH_ONLY");
  if (!only || only === "idle") await idleCollectorRss(dir);
  if (!only || only === "append") await spoolAppend(dir);
  if (!only || only === "forward") await forwardRate(dir);
  if (!only || only === "drain") await drainWhilePolling(dir);
} finally {
  await Deno.remove(dir, { recursive: true });
}
