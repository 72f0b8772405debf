/**
 * Benchmarks of the lossless core (issues 3 and 6), one JSON line per figure, each next to the
 * raw ceiling measured in the same run:
 *
 * 1. Idle collector RSS.
 * 2. Spool append with durable group commit (the collector's defaults: synchronous=FULL, a commit
 *    per 100 ms at most), against bare `node:sqlite` insert loops writing the same samples with
 *    the same durability and the same rows per commit: the same rows as plain columns (device,
 *    metric, labels JSON, timestamp, value), and the spool's own encoded rows (4 integers, no
 *    per-sample work: SQLite's ceiling for that table).
 * 3. Forward rate to a local PostgreSQL, against a bare COPY of the same rows by the same client.
 * 4. The live lane's read of the writer's last commit (one poll of SERIES samples), from memory as
 *    the collector's lease reads it (src/spool/fresh_rows.ts), against the same rows read from the
 *    file (a lease without the writer's rows, on the same connection).
 * 5. Restart on a spool holding a large backlog (BENCH_BACKLOG, a comma-separated list, default
 *    1,000,000 and 10,000,000: one run each, figures suffixed _1m, _10m) while polling 10,000
 *    metrics at 1 Hz: first poll, first forward, drain time, freshness of the live lane during
 *    the drain (sample timestamp → commit in the central table), RSS all along, and a check that
 *    every backlog sample landed exactly once.
 *
 *   deno run -A scripts/bench/core.ts            (BENCH_ONLY=idle|append|read|forward|drain for one)
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { spoolOptions } from "../../src/cli/runtime.ts";
import { openSpool } from "../../src/spool/spool.ts";
import type { Sample } from "../../src/sample.ts";
import { Forwarder } from "../../src/forward/forwarder.ts";
import { connect, endpointOf } from "../../src/central/connect.ts";
import { copyRow } from "../../src/forward/copy_text.ts";
import { setLogSink } from "../../src/log.ts";
import { report } from "./report.ts";
import { destroyPostgres } from "../peers/postgres.ts";
import { pgConfig, testConfig } from "../harness/config.ts";
import {
  firstLedgerCommitMs,
  LIVE_METRICS,
  liveArrival,
  processCpuMs,
  processRssMb,
  spawnCollector,
  startBenchCentral,
  startLiveRig,
} from "./collector.ts";
import { sleep } from "../harness/collector.ts";

setLogSink(() => {});
const BACKLOGS = (Deno.env.get("BENCH_BACKLOG") ?? "1000000,10000000").split(",").map(Number);
const SERIES = 10_000;
/** Metric of the backlog samples (the live ones are the exporter's, the collector's own are its telemetry). */
const BACKLOG_METRIC = "bmc_node_power_watt";
const count = new Intl.NumberFormat("en-US");
/**
 * The central database of the forward and drain runs, sized as docs/OPERATIONS.md tells operators
 * to size it for its devices: `shared_buffers` of at least 2 × 8 KB per device (the last leaf page
 * of each of the two indexes of `metrics` by device and by alias), 160 MB for the SERIES devices
 * of the backlog, rounded up to 256 MB for the heap's, the BRIN's and the inner index pages.
 * PostgreSQL's default, 128 MB, bound the 10M drain (docs/PERFORMANCE.md, `drainfwd`). The bare
 * COPY ceiling runs on the same cluster.
 */
const CENTRAL_SETTINGS = { shared_buffers: "256MB" };

/**
 * `n` samples of SERIES series (device, metric, labels like a BMC power reading), numbered from
 * `from`; sample k of `total` is taken at 10,000 samples/s ending now, like an outage's backlog.
 */
function batch(n: number, from: number, total = from + n): Sample[] {
  const out: Sample[] = new Array(n);
  const end = Date.now();
  for (let i = 0; i < n; i++) {
    const k = from + i;
    out[i] = {
      timestampMs: end - (total - k) / 10,
      deviceId: `node-${k % SERIES}`,
      metricId: BACKLOG_METRIC,
      value: k % 997,
      labels: { _device_alias: `n${k % SERIES}` },
    };
  }
  return out;
}

async function idleCollectorRss(dir: string) {
  await Deno.mkdir(`${dir}/idle.d`, { recursive: true });
  const child = spawnCollector([
    "--metrics_dir",
    `${dir}/idle.d`,
    "--spool_path",
    `${dir}/idle/spool.db`,
    "--db_port",
    "1",
  ]);
  const pid = await child.pid();
  try {
    await sleep(3000);
    report({
      name: "collector_rss_idle",
      figure: "collector RSS, idle (no metric, central database unreachable)",
      value: processRssMb(pid),
      unit: "MB",
      goal: { op: "<=", value: 50 },
    });
  } finally {
    await child.stop();
  }
}

/**
 * Polls of SERIES samples are committed one by one, each then read back as the live lane reads it
 * (`spool.lease.readRows`, from memory) and from the file (`spool.view.readRows`), each first in turn, and
 * removed.
 * The first ROUNDS_WARM polls warm the series caches and are not counted.
 */
async function liveRead(dir: string) {
  const ROUNDS = 60;
  const ROUNDS_WARM = 10;
  const spool = openSpool(spoolOptions(testConfig({ spool_path: `${dir}/read.db`, spool_max_bytes: 2 ** 40 })));
  const spentMs = { memory: 0, file: 0 };
  try {
    for (let round = 0; round < ROUNDS; round++) {
      await spool.writer.append(batch(SERIES, round * SERIES));
      const ways = [["memory", spool.lease], ["file", spool.view]] as const;
      // Each first in turn: neither always finds the pages the other one read.
      for (const [way, reader] of round % 2 ? [ways[1], ways[0]] : ways) {
        const started = performance.now();
        // A read takes at most SERIES_READ_PER_CALL series the caches lack: the first polls take several.
        let read = 0;
        for (
          let rows = reader.readRows(0, 2 * SERIES);
          rows.length > 0;
          rows = reader.readRows(rows.lastSeq, 2 * SERIES)
        ) {
          read += rows.length;
        }
        if (read !== SERIES) throw new Error(`read ${read} rows of a poll of ${SERIES}`);
        if (round >= ROUNDS_WARM) spentMs[way] += performance.now() - started;
      }
      spool.lease.removeForwarded(round * SERIES + 1, (round + 1) * SERIES);
    }
  } finally {
    spool.close();
  }
  const perThousand = (ms: number) => ms / ((ROUNDS - ROUNDS_WARM) * SERIES / 1000);
  report({
    name: "spool_live_read_ms_per_1000_rows",
    figure: `the live lane's read of the writer's last commit (${count.format(SERIES)} samples), from memory: ` +
      "time per 1,000 rows",
    value: perThousand(spentMs.memory),
    unit: "ms",
  });
  report({
    name: "spool_file_read_ms_per_1000_rows",
    figure: "the same rows read from the spool file: time per 1,000 rows",
    value: perThousand(spentMs.file),
    unit: "ms",
  });
}

/**
 * Samples are built before the clock starts (in the collector the sources build them) and
 * appended from a pool of 100 batches of 1,000. The producer keeps up to QUEUED samples waiting,
 * as the polls of a busy collector do while a commit runs.
 */
async function spoolAppend(dir: string) {
  const SECONDS = 10;
  const QUEUED = 250_000;
  const pool = Array.from({ length: 100 }, (_, b) => batch(1000, b * 1000));
  const config = testConfig({ spool_path: `${dir}/append.db`, spool_max_bytes: 2 ** 40 });
  const spool = openSpool(spoolOptions(config));
  let queued = 0;
  let acked = 0;
  let next = 0;
  const started = performance.now();
  await new Promise<void>((done) => {
    const pump = () => {
      if (performance.now() - started >= SECONDS * 1000) return done();
      for (let n = 0; n < 100 && queued - acked < QUEUED; n++) {
        const b = pool[next++ % pool.length]!;
        queued += b.length;
        spool.writer.append(b).then(() => {
          acked += b.length;
        });
      }
      setTimeout(pump, 0);
    };
    pump();
  });
  while (acked < queued) await sleep(1);
  const elapsedS = (performance.now() - started) / 1000;
  const rate = acked / elapsedS;
  const commits = spool.writer.counters.commits;
  const bytes = spool.view.usedBytes() / acked;
  spool.close();
  const rowsPerCommit = Math.round(acked / commits);

  /** A bare loop: BEGIN, rowsPerCommit single-row INSERTs of a prepared statement, COMMIT. */
  function bareLoop(
    name: string,
    schema: string,
    insert: string,
    write: (ins: StatementSync, s: Sample, n: number) => void,
  ): number {
    const db = new DatabaseSync(`${dir}/bare-${name}.db`);
    db.exec(`PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; ${schema}`);
    const ins = db.prepare(insert);
    let n = 0;
    let b = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < SECONDS * 1000) {
      db.exec("BEGIN");
      for (let inCommit = 0; inCommit < rowsPerCommit; b++) {
        for (const s of pool[b % pool.length]!) {
          write(ins, s, n);
          n++;
          inCommit++;
        }
      }
      db.exec("COMMIT");
    }
    const r = n / ((performance.now() - t0) / 1000);
    db.close();
    return r;
  }
  const bareSameRows = bareLoop(
    "same-rows",
    "CREATE TABLE s(seq INTEGER PRIMARY KEY, ts REAL, device_id TEXT, metric_id TEXT, labels TEXT, value REAL)",
    "INSERT INTO s(ts, device_id, metric_id, labels, value) VALUES (?, ?, ?, ?, ?)",
    (ins, s) => ins.run(s.timestampMs, s.deviceId, s.metricId, JSON.stringify(s.labels), s.value),
  );
  const bareEncoded = bareLoop(
    "encoded",
    "CREATE TABLE s(seq INTEGER PRIMARY KEY, series INTEGER, ts INTEGER, value REAL)",
    "INSERT INTO s VALUES (?, ?, ?, ?)",
    (ins, s, n) => ins.run(n, n % SERIES, n * 1000, s.value),
  );
  report({
    name: "spool_append",
    figure: `spool append, durable group commit (synchronous=FULL, commit interval 100 ms, ${
      count.format(QUEUED)
    } samples queued at most)`,
    value: rate,
    unit: "samples/s",
    goal: { op: ">=", value: 300_000 },
  });
  report({
    name: "spool_commit_interval_mean",
    figure: "spool append: mean time between two group commits at that rate",
    value: (elapsedS * 1000) / commits,
    unit: "ms",
    goal: { op: "<=", value: 250 },
  });
  report({
    name: "spool_commits_per_s",
    figure: "spool append: group commits (WAL fsyncs) per second at that rate",
    value: commits / elapsedS,
    unit: "commits/s",
    goal: { op: "<=", value: 10 },
  });
  report({
    name: "spool_append_bare_same_rows",
    figure: `ceiling: bare node:sqlite loop, the same samples as plain rows (device, metric, labels JSON), ` +
      `same durability, ${count.format(rowsPerCommit)} rows per commit`,
    value: bareSameRows,
    unit: "samples/s",
  });
  report({
    name: "spool_append_ratio_to_bare_sqlite",
    figure: "spool append / bare node:sqlite loop writing the same rows",
    value: rate / bareSameRows,
    unit: "ratio",
    goal: { op: ">=", value: 0.7 },
  });
  report({
    name: "spool_append_bare_encoded_rows",
    figure: "ceiling: bare node:sqlite loop of the spool's encoded rows (4 integers, nothing to encode), " +
      "same durability and rows per commit",
    value: bareEncoded,
    unit: "samples/s",
  });
  report({
    name: "spool_append_ratio_to_bare_encoded_rows",
    figure: "spool append / bare loop of pre-encoded rows (what the dictionary encoding costs)",
    value: rate / bareEncoded,
    unit: "ratio",
  });
  report({
    name: "spool_bytes_per_sample",
    figure: "spool size on disk per sample",
    value: bytes,
    unit: "bytes",
    goal: { op: "<=", value: 32 },
  });
}

async function forwardRate(dir: string) {
  const pg = await startBenchCentral(CENTRAL_SETTINGS);
  try {
    const config = pgConfig(pg, dir, { spool_path: `${dir}/fwd.db`, spool_max_bytes: 2 ** 40 });
    const rows = 1_000_000;
    const filled = openSpool(spoolOptions(config));
    for (let i = 0; i < rows; i += 50_000) await filled.writer.append(batch(50_000, i, rows));
    filled.close();
    // Reopened, as after a restart: the rows are a backlog (the backfill lane), not fresh samples.
    const spool = openSpool(spoolOptions(config));
    const fwd = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config });
    const started = performance.now();
    await fwd.drain({ deadlineMs: performance.now() + 600_000 });
    const rate = rows / ((performance.now() - started) / 1000);
    await fwd.close();
    spool.close();
    // Bare COPY of the same rows by the same client, same batch size, no ledger, no spool.
    const admin = pg.admin("kwdb");
    await admin`TRUNCATE metrics`;
    const sql = connect(endpointOf(config));
    const batchRows = config.forward_batch_rows;
    const bareStart = performance.now();
    for (let i = 0; i < rows; i += batchRows) {
      const text = batch(batchRows, i, rows).map(copyRow).join("");
      await sql.begin(async (tx) => {
        const w = await tx`COPY metrics (device_id, metric_id, labels, "timestamp", value) FROM STDIN`.writable();
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
    report({
      name: "forward_rate",
      figure: `forward a restarted spool's backlog to a local PostgreSQL (${
        count.format(batchRows)
      }-row COPY batches, ${config.forward_pipeline_batches} in flight, ledger, spool deletes)`,
      value: rate,
      unit: "rows/s",
      goal: { op: ">=", value: 150_000 },
    });
    report({
      name: "forward_bare_copy",
      figure: "ceiling: bare COPY of the same rows by the same client (postgres.js), same batch size",
      value: bare,
      unit: "rows/s",
    });
    report({
      name: "forward_ratio_to_bare_copy",
      figure: "forward rate / bare COPY",
      value: rate / bare,
      unit: "ratio",
      goal: { op: ">=", value: 0.95 },
    });
  } finally {
    await destroyPostgres(pg);
  }
}

/**
 * The real collector restarted on a spool holding `backlogSize` samples while it polls 10,000 metrics
 * at 1 Hz. The drain is over when the central ledger covers seqs 1..backlogSize; its end is that
 * ledger row's commit time.
 */
async function drainWhilePolling(root: string, backlogSize: number) {
  // Figure names carry the backlog: drain_time_while_polling_10m.
  const suffix = backlogSize % 1_000_000 === 0 ? `_${backlogSize / 1_000_000}m` : `_${backlogSize}`;
  const dir = `${root}/drain${suffix}`;
  await Deno.mkdir(dir);
  const rig = await startLiveRig(
    dir,
    { spool_path: `${dir}/drain/spool.db`, spool_max_bytes: 2 ** 40 },
    CENTRAL_SETTINGS,
  );
  const { pg, config, yaml } = rig;
  try {
    const spool = openSpool(spoolOptions(config));
    for (let i = 0; i < backlogSize;) {
      const appends: Promise<void>[] = [];
      for (let n = 0; n < 5 && i < backlogSize; n++, i += 50_000) {
        appends.push(spool.writer.append(batch(Math.min(50_000, backlogSize - i), i, backlogSize)));
      }
      await Promise.all(appends);
    }
    spool.close();
    const admin = pg.admin("kwdb");
    const startedMs = Date.now();
    const child = spawnCollector([yaml]);
    const pid = await child.pid();
    const rss: number[] = [];
    let drained = false;
    /** The collector's CPU time from its start until the drain was seen over (at most 1 s after its end). */
    let cpuMs = NaN;
    try {
      for (let waited = 0; waited < 3_600_000 && !drained; waited += 1000) {
        await sleep(1000);
        rss.push(processRssMb(pid));
        cpuMs = processCpuMs(pid);
        const [row] = await admin`
          SELECT coalesce(sum(least(last_seq, ${backlogSize}) - first_seq + 1), 0)::float8 AS covered
          FROM kwollect_ledger WHERE first_seq <= ${backlogSize}`;
        drained = (row as { covered: number }).covered >= backlogSize;
      }
      // Let the live samples of the last polls of the drain land before stopping.
      await sleep(3000);
    } finally {
      await child.stop();
    }
    const [end] = await admin`
      SELECT (extract(epoch FROM max(pg_xact_commit_timestamp(xmin))) * 1000)::float8 AS ms
      FROM kwollect_ledger WHERE first_seq <= ${backlogSize}`;
    const drainEndMs = drained ? (end as { ms: number }).ms : NaN;
    const drainS = (drainEndMs - startedMs) / 1000;
    const firstForwardMs = await firstLedgerCommitMs(admin);
    const live = await liveArrival(admin, startedMs, drained ? drainEndMs : Date.now());
    const [backlogRows] = await admin`SELECT count(*)::int AS n FROM metrics WHERE metric_id = ${BACKLOG_METRIC}`;
    const delivered = (backlogRows as { n: number }).n;
    const steady = rss.slice(Math.min(5, rss.length - 1)).sort((a, b) => a - b);
    const backlog = count.format(backlogSize);
    report({
      name: `restart_to_first_poll${suffix}`,
      figure: `restart with a ${backlog}-sample spool: process start → first poll (first sample timestamp)`,
      value: live.firstSampleMs === undefined ? NaN : (live.firstSampleMs - startedMs) / 1000,
      unit: "s",
      goal: { op: "<=", value: 2 },
    });
    report({
      name: `restart_to_first_forward${suffix}`,
      figure: `restart with a ${backlog}-sample spool: process start → first batch committed centrally`,
      value: firstForwardMs === undefined ? NaN : (firstForwardMs - startedMs) / 1000,
      unit: "s",
      goal: { op: "<=", value: 2 },
    });
    report({
      name: `drain_time_while_polling${suffix}`,
      figure: `drain of a ${backlog}-sample backlog while polling ${count.format(LIVE_METRICS)} metrics at 1 Hz: ` +
        `process start → last backlog batch committed`,
      value: drainS,
      unit: "s",
    });
    report({
      name: `drain_rate_net${suffix}`,
      figure: "drain: backlog and live rows committed per second of drain",
      value: (delivered + live.rows) / drainS,
      unit: "rows/s",
      goal: { op: ">=", value: 110_000 },
    });
    report({
      name: `drain_collector_cpu_per_1000_rows${suffix}`,
      figure: "drain: collector CPU time (start → drain over, its own polls and startup included) " +
        "per 1,000 backlog and live rows committed",
      value: cpuMs / ((delivered + live.rows) / 1000),
      unit: "ms",
    });
    report({
      name: `drain_live_freshness_p50${suffix}`,
      figure: "drain: live lane freshness p50 (sample timestamp → commit in the central table)",
      value: live.p50S,
      unit: "s",
    });
    report({
      name: `drain_live_freshness_p99${suffix}`,
      figure: "drain: live lane freshness p99 (goal: 2 poll periods)",
      value: live.p99S,
      unit: "s",
      goal: { op: "<=", value: 2 },
    });
    report({
      name: `drain_live_freshness_max${suffix}`,
      figure: "drain: live lane freshness, worst sample",
      value: live.maxS,
      unit: "s",
    });
    report({
      name: `drain_live_polls${suffix}`,
      figure: `drain: polls of ${count.format(LIVE_METRICS)} samples that landed during the drain ` +
        `(one per second of drain if none was skipped)`,
      value: live.polls,
      unit: `polls in ${Math.round(drainS)} s`,
    });
    report({
      name: `drain_backlog_delivered_exactly_once${suffix}`,
      figure: "drain: backlog rows in the central table / backlog size",
      value: delivered / backlogSize,
      unit: "ratio",
      goal: { op: "==", value: 1 },
    });
    report({
      name: `collector_rss_during_drain_max${suffix}`,
      figure: `collector RSS during the drain, max (sampled every second, first 5 s left out)`,
      value: steady.at(-1) ?? NaN,
      unit: "MB",
      goal: { op: "<=", value: 110 },
    });
    report({
      name: `collector_rss_during_drain_spread${suffix}`,
      figure: "collector RSS during the drain, (max − min) / min",
      value: steady.length > 0 ? (steady.at(-1)! - steady[0]!) / steady[0]! : NaN,
      unit: "ratio",
      goal: { op: "<=", value: 0.1 },
    });
  } finally {
    await rig.close();
  }
}

const dir = await Deno.makeTempDir({ prefix: "kwollector-bench-" });
try {
  const only = Deno.env.get("BENCH_ONLY");
  if (!only || only === "idle") await idleCollectorRss(dir);
  if (!only || only === "append") await spoolAppend(dir);
  if (!only || only === "read") await liveRead(dir);
  if (!only || only === "forward") await forwardRate(dir);
  if (!only || only === "drain") { for (const backlog of BACKLOGS) await drainWhilePolling(dir, backlog); }
} finally {
  await Deno.remove(dir, { recursive: true });
}
