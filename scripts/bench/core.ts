/**
 * Benchmarks of the lossless core (issue 3 and 6 goals), one JSON line per figure:
 * spool append (durable group commit) and its ratio to a bare node:sqlite loop with the same
 * durability; forward rate to a local PostgreSQL and its ratio to a bare COPY by the same
 * client; drain of a large backlog while 10,000 metrics are polled at 1 Hz, with RSS sampled all
 * along; idle RSS. Sizes can be reduced with BENCH_BACKLOG (default 10,000,000).
 */
import { DatabaseSync } from "node:sqlite";
import { Spool } from "../../src/spool/spool.ts";
import type { Sample } from "../../src/sample.ts";
import { Forwarder } from "../../src/forward/forwarder.ts";
import { connect, endpointOf } from "../../src/central/connect.ts";
import { setupDatabase } from "../../src/central/setup.ts";
import { copyRow } from "../../src/forward/copy_text.ts";
import { Scheduler } from "../../src/collect/scheduler.ts";
import { buildGroups } from "../../src/collect/groups.ts";
import { systemClock } from "../../src/collect/clock.ts";
import { parseMetricsText } from "../../src/config/metrics_dir.ts";
import { setLogSink } from "../../src/log.ts";
import { destroyPostgres, startPostgres } from "../../tests/helpers/postgres.ts";
import { pgConfig } from "../../tests/helpers/config.ts";

setLogSink(() => {});
const BACKLOG = Number(Deno.env.get("BENCH_BACKLOG") ?? 10_000_000);
const commit = new TextDecoder().decode(
  (await new Deno.Command("git", { args: ["rev-parse", "--short", "HEAD"], stdout: "piped", stderr: "null" }).output()).stdout,
).trim();
const machine = `${Deno.build.os}-${Deno.build.arch} ${navigator.hardwareConcurrency} cores`;

function emit(name: string, value: number, unit: string, goal?: string, extra: Record<string, unknown> = {}) {
  console.log(JSON.stringify({ name, value: Math.round(value * 100) / 100, unit, ...(goal && { goal }), machine, commit, ...extra }));
}

function batch(n: number, from: number, series = 10_000): Sample[] {
  const out: Sample[] = new Array(n);
  const now = Date.now();
  for (let i = 0; i < n; i++) {
    const k = from + i;
    out[i] = { timestampMs: now + k, deviceId: `node-${k % series}`, metricId: "bmc_node_power_watt", value: k % 997, labels: { _device_alias: `n${k % series}` } };
  }
  return out;
}

const rssMb = () => Deno.memoryUsage().rss / 1024 / 1024;

async function spoolAppend(dir: string) {
  const spool = Spool.open({ path: `${dir}/append.db`, maxBytes: 2 ** 40, fullPolicy: "drop_oldest", synchronous: "full", commitIntervalMs: 100 });
  const seconds = 10;
  const end = performance.now() + seconds * 1000;
  let acked = 0;
  let sent = 0;
  const inflight: Promise<void>[] = [];
  const started = performance.now();
  while (performance.now() < end) {
    const b = batch(1000, sent);
    sent += 1000;
    inflight.push(spool.append(b).then(() => {
      acked += 1000;
    }));
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
  db.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE s(seq INTEGER PRIMARY KEY, series INTEGER, ts INTEGER, value REAL)");
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
    const config = pgConfig(pg, dir, { spool_path: `${dir}/fwd.db`, forward_batch_rows: 20_000 });
    await setupDatabase(config);
    const rows = 1_000_000;
    const spool = Spool.open({ path: config.spool_path, maxBytes: 2 ** 40, fullPolicy: "drop_oldest", synchronous: "full", commitIntervalMs: 100 });
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

async function drainWhilePolling(dir: string) {
  const pg = await startPostgres({ timescaledb: false, fsync: true });
  const lines = Array.from({ length: 10_000 }, (_, i) => `node_power_watt{psu="${i}"} ${i}`).join("\n") + "\n";
  const exporter = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => new Response(lines));
  try {
    const config = pgConfig(pg, dir, { spool_path: `${dir}/drain.db`, forward_batch_rows: 20_000 });
    await setupDatabase(config);
    const spool = Spool.open({ path: config.spool_path, maxBytes: 2 ** 40, fullPolicy: "drop_oldest", synchronous: "full", commitIntervalMs: 100 });
    const fillStart = performance.now();
    for (let i = 0; i < BACKLOG; i += 50_000) await spool.append(batch(50_000, i));
    const fillS = (performance.now() - fillStart) / 1000;
    const idleRss = rssMb();
    const { entries } = parseMetricsText(
      `- name: p\n  device_id: rack-1\n  url: prometheus://127.0.0.1:${exporter.addr.port}/node_power_watt\n  update_every: 1000\n`,
      "bench.yaml",
    );
    const { groups } = buildGroups(entries, config);
    const scheduler = new Scheduler({ groups, config, clock: systemClock, deliver: (s) => spool.append(s) });
    const fwd = new Forwarder({ spool, endpoint: endpointOf(config), config });
    const rss: number[] = [];
    const rssTimer = setInterval(() => rss.push(rssMb()), 1000);
    scheduler.start();
    const started = performance.now();
    await fwd.drain({ deadlineMs: performance.now() + 3_600_000 });
    const drainS = (performance.now() - started) / 1000;
    clearInterval(rssTimer);
    await scheduler.stop();
    const polled = scheduler.counters()[0]!.counters.samples;
    await fwd.close();
    spool.close();
    rss.sort((a, b) => a - b);
    emit("backlog_fill", BACKLOG / fillS, "samples/s", undefined, { samples: BACKLOG });
    emit("drain_time_while_polling_10k_per_s", drainS, "s", undefined, { backlog: BACKLOG, polled_during_drain: polled });
    emit("drain_rate_net", (BACKLOG + polled) / drainS, "rows/s", ">= 130000");
    emit("rss_before_drain", idleRss, "MB", "<= 120");
    emit("rss_during_drain_max", rss.at(-1) ?? 0, "MB", "<= 120");
    emit("rss_during_drain_spread", (rss.at(-1)! - rss[0]!) / rss[0]!, "ratio", "<= 0.10 (flat)");
  } finally {
    await exporter.shutdown();
    await destroyPostgres(pg);
  }
}

const dir = await Deno.makeTempDir({ prefix: "kwollector-bench-" });
try {
  emit("rss_idle_runtime", rssMb(), "MB", "<= 60");
  await spoolAppend(dir);
  await forwardRate(dir);
  await drainWhilePolling(dir);
} finally {
  await Deno.remove(dir, { recursive: true });
}
