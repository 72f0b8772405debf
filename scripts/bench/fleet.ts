/**
 * Fleet fairness (issue 15): N collector processes (`kwollector run`, BENCH_FLEET_N, default 20)
 * returning together to one PostgreSQL. Each finds a spool holding a backlog of
 * BENCH_FLEET_BACKLOG samples (default 200,000, left by a previous run) and polls 100 live series
 * every second from one exporter. All start while the database is down; it starts
 * BENCH_FLEET_DOWN_S seconds later (default 20), the moment the figures count from. Then the same
 * total backlog (N × BENCH_FLEET_BACKLOG) is drained by one collector alone, in the same way, on
 * the same database: the aggregate drain of the fleet is compared with it. Before both, that lone
 * drain is run once unreported, so that both rounds find the cluster's WAL segments made.
 *
 * Arrival is measured by PostgreSQL (`track_commit_timestamp`, see collector.ts):
 *
 * - reconnect: a collector's first ledger commit after the database's start;
 * - live freshness: for each collector, sample timestamp → commit of every live sample taken
 *   from its reconnect until the whole fleet's backlog is drained; the figure is the worst
 *   collector's p99 (goal: 2 s, two poll periods);
 * - aggregate drain: the backlog rows ÷ (the round's first commit → its last backlog batch's
 *   commit): the wait for the first reconnection (a jittered backoff of up to
 *   forward_retry_max_ms, during which nothing can be sent) is left out of both rounds, so that a
 *   lucky or unlucky draw of the lone collector does not decide the ratio;
 * - duplicates: rows beyond one per (device, metric, timestamp, labels), over every row;
 * - poll slots: the collector's own telemetry (`kwollector_polls_total`, every result, stored as
 *   samples of device <edge_id>) at its last report, against the slots of its 1 s grid from its
 *   first poll to that report; the figure is the worst collector's slots not accounted for (one
 *   poll may be in flight at the report).
 *
 * Each collector runs in a session of its own (setsid), as each runs in its own systemd service
 * (a cgroup of its own) on its own host. This machine schedules by autogroup (one per session,
 * /proc/sys/kernel/sched_autogroup_enabled): with the collectors in the benchmark's session, the
 * kernel gave all twenty together the CPU share of one process, the same as PostgreSQL's, so each
 * collector had a twentieth of what one collector alone gets, and its live samples waited for
 * their own process (docs/PERFORMANCE.md, `fleet3`). BENCH_FLEET_SHARED_SESSION=1 measures that
 * way again.
 *
 *   deno run -A scripts/bench/fleet.ts
 */
import { spoolOptions } from "../../src/cli/runtime.ts";
import type { Sql } from "../../src/central/connect.ts";
import { setLogSink } from "../../src/log.ts";
import type { Sample } from "../../src/sample.ts";
import { openSpool } from "../../src/spool/spool.ts";
import { type CollectorProcess, sleep, startCollector } from "../harness/collector.ts";
import { metricsEntry, pgConfig, writeCollectorConfig } from "../harness/config.ts";
import { destroyPostgres, type PgCluster } from "../peers/postgres.ts";
import { collectorEnv, collectorV8Flags, startBenchCentral, startPowerExporter } from "./collector.ts";
import { percentile, report } from "./report.ts";

setLogSink(() => {});
const N = Number(Deno.env.get("BENCH_FLEET_N") ?? 20);
const BACKLOG = Number(Deno.env.get("BENCH_FLEET_BACKLOG") ?? 200_000);
const DOWN_S = Number(Deno.env.get("BENCH_FLEET_DOWN_S") ?? 20);
const SHARED_SESSION = Deno.env.get("BENCH_FLEET_SHARED_SESSION") === "1";
const NEIGHBOURS = Deno.env.get("BENCH_FLEET_NEIGHBOURS") === "1";
const LIVE_SERIES = 100;
const BACKLOG_METRIC = "bmc_node_power_watt";
const count = new Intl.NumberFormat("en-US");

interface Member {
  index: number;
  spoolId: string;
  yaml: string;
  edgeId: string;
  liveDevice: string;
}

/** `n` backlog samples of collector `c`, 100 series, taken at 10,000 samples/s ending now. */
function backlogBatch(c: number, from: number, n: number, total: number): Sample[] {
  const end = Date.now() - 60_000;
  return Array.from({ length: n }, (_, i) => {
    const k = from + i;
    return {
      timestampMs: end - (total - k) / 10,
      deviceId: `backlog-${c}-${k % 100}`,
      metricId: BACKLOG_METRIC,
      value: k % 997,
      labels: { _device_alias: `b${k % 100}` },
    };
  });
}

/** Writes collector `c`'s configuration and a spool holding `backlog` samples. */
async function prepare(root: string, pg: PgCluster, exporterPort: number, c: number, backlog: number) {
  const dir = `${root}/c${c}`;
  await Deno.mkdir(dir, { recursive: true });
  const edgeId = `fleet-edge-${c}`;
  const liveDevice = `live-${c}`;
  const config = pgConfig(pg, dir, { spool_path: `${dir}/spool/spool.db`, spool_max_bytes: 2 ** 40, edge_id: edgeId });
  const spool = openSpool(spoolOptions(config));
  for (let i = 0; i < backlog; i += 50_000) {
    await spool.writer.append(backlogBatch(c, i, Math.min(50_000, backlog - i), backlog));
  }
  const spoolId = spool.spoolId;
  spool.close();
  const yaml = await writeCollectorConfig(dir, {
    metrics: {
      "live.yaml": metricsEntry({
        name: "p",
        deviceId: liveDevice,
        url: `prometheus://127.0.0.1:${exporterPort}/node_power_watt`,
        updateEveryMs: 1000,
      }),
    },
    settings: {
      db_host: "127.0.0.1",
      db_port: pg.port,
      db_sslmode: "disable",
      spool_path: config.spool_path,
      spool_max_bytes: 2 ** 40,
      edge_id: edgeId,
    },
  });
  return { index: c, spoolId, yaml, edgeId, liveDevice };
}

/** `kwollector run` with the bench V8 flags, in a session of its own (see the header). */
function spawnInOwnSession(yaml: string): CollectorProcess {
  return startCollector(["run", yaml], {
    v8Flags: collectorV8Flags(),
    env: collectorEnv(),
    discardOutput: true,
    ownSession: !SHARED_SESSION,
  });
}

/** Backlog seqs (1..backlog) of `spoolId` the ledger covers. */
async function covered(admin: Sql, spoolId: string, backlog: number): Promise<number> {
  const [row] = await admin`
    SELECT coalesce(sum(least(last_seq, ${backlog}) - first_seq + 1), 0)::float8 AS n
    FROM kwollect_ledger WHERE spool_id = ${spoolId} AND first_seq <= ${backlog}`;
  return (row as { n: number }).n;
}

interface Round {
  dbStartMs: number;
  drainEndMs: number;
  reconnectMs: Map<string, number>;
  mostBackends: number;
}

/**
 * Starts the collectors of the members and of the neighbours (live series only) while the database
 * is down, starts it DOWN_S later, waits until every member's backlog is in the ledger, lets the
 * last polls land, and stops the collectors.
 */
async function runRound(pg: PgCluster, members: Member[], backlog: number, neighbours: Member[] = []): Promise<Round> {
  await pg.stop();
  const collectors: CollectorProcess[] = [];
  let admin: Sql | undefined;
  try {
    for (const m of [...members, ...neighbours]) collectors.push(spawnInOwnSession(m.yaml));
    await sleep(DOWN_S * 1000);
    const dbStartMs = Date.now();
    await pg.start();
    admin = pg.admin("kwdb");
    let mostBackends = 0;
    const pending = new Set(members);
    for (let waited = 0; waited < 1_800_000 && pending.size > 0; waited += 1000) {
      await sleep(1000);
      const [b] = await admin`
        SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'kwollector %'`;
      mostBackends = Math.max(mostBackends, (b as { n: number }).n);
      for (const m of [...pending]) if (await covered(admin, m.spoolId, backlog) >= backlog) pending.delete(m);
    }
    if (pending.size > 0) throw new Error(`${pending.size} collectors did not drain their backlog within 30 min`);
    // The live samples of the last polls land before the collectors stop.
    await sleep(3000);
    // The members' backlog batches only: a neighbour's live batches have seqs in 1..backlog too,
    // and go on committing after the drain.
    const [end] = await admin`
      SELECT (extract(epoch FROM max(pg_xact_commit_timestamp(xmin))) * 1000)::float8 AS ms
      FROM kwollect_ledger WHERE spool_id = ANY(${members.map((m) => m.spoolId)}::uuid[]) AND first_seq <= ${backlog}`;
    const firsts = await admin`
      SELECT spool_id::text AS id, (extract(epoch FROM min(pg_xact_commit_timestamp(xmin))) * 1000)::float8 AS ms
      FROM kwollect_ledger GROUP BY spool_id`;
    const reconnectMs = new Map((firsts as unknown as { id: string; ms: number }[]).map((r) => [r.id, r.ms]));
    return { dbStartMs, drainEndMs: (end as { ms: number }).ms, reconnectMs, mostBackends };
  } finally {
    await Promise.all(collectors.map((c) => c.stop()));
    await admin?.end();
  }
}

/** Runs `member`'s drain of `backlog` rows as a round of its own, then empties the tables. */
async function warmUp(pg: PgCluster, member: Member, backlog: number): Promise<void> {
  await runRound(pg, [member], backlog);
  const admin = pg.admin("kwdb");
  await admin`TRUNCATE metrics, kwollect_ledger`;
  await admin.end();
}

/** Per collector: p99 and worst freshness of its live samples taken in [fromMs, toMs). */
async function liveFreshness(admin: Sql, device: string, fromMs: number, toMs: number) {
  const lags = await admin`
    SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - "timestamp")::float8 AS lag
    FROM metrics WHERE device_id = ${device} AND "timestamp" >= ${new Date(fromMs)} AND "timestamp" < ${new Date(
    toMs,
  )}`;
  const values = (lags as unknown as { lag: number }[]).map((r) => r.lag);
  return { p99: percentile(values, 99), max: Math.max(...values), rows: values.length };
}

/** Poll slots of the member's 1 s grid not counted by its telemetry (see the header). */
async function unaccountedSlots(admin: Sql, m: Member): Promise<number> {
  const [first] = await admin`
    SELECT (extract(epoch FROM min("timestamp")) * 1000)::float8 AS ms FROM metrics WHERE device_id = ${m.liveDevice}`;
  const [last] = await admin`
    SELECT (extract(epoch FROM max("timestamp")) * 1000)::float8 AS ms FROM metrics
    WHERE device_id = ${m.edgeId} AND metric_id = 'kwollector_polls_total'`;
  const firstMs = (first as { ms: number | null }).ms;
  const lastMs = (last as { ms: number | null }).ms;
  if (firstMs === null || lastMs === null) return NaN;
  const [polls] = await admin`
    SELECT coalesce(sum(value), 0)::float8 AS n FROM metrics
    WHERE device_id = ${m.edgeId} AND metric_id = 'kwollector_polls_total' AND "timestamp" = ${new Date(lastMs)}`;
  const slots = Math.floor((lastMs - firstMs) / 1000) + 1;
  return Math.max(0, slots - (polls as { n: number }).n);
}

async function duplicates(admin: Sql): Promise<number> {
  const [row] = await admin`
    SELECT (count(*) - count(DISTINCT (device_id, metric_id, "timestamp", labels)))::float8 AS n FROM metrics`;
  return (row as { n: number }).n;
}

async function backlogRows(admin: Sql): Promise<number> {
  const [row] = await admin`SELECT count(*)::float8 AS n FROM metrics WHERE metric_id = ${BACKLOG_METRIC}`;
  return (row as { n: number }).n;
}

const root = await Deno.makeTempDir({ prefix: "kwollector-bench-fleet-" });
const pg = await startBenchCentral();
const exporter = startPowerExporter({ series: LIVE_SERIES });
try {
  const total = N * BACKLOG;
  // A drain before the measured rounds, not reported: the cluster's first drain creates its WAL
  // segments (max_wal_size, 64 of them), which every later drain recycles; measured, that made the
  // first round 7 % slower (docs/PERFORMANCE.md, `neighbours16`). Without it that cost fell on
  // the fleet's round alone.
  await warmUp(pg, await prepare(`${root}/warm-up`, pg, exporter.port, N, total), total);
  // The fleet.
  const members: Member[] = [];
  for (let c = 0; c < N; c++) members.push(await prepare(`${root}/fleet`, pg, exporter.port, c, BACKLOG));
  const fleet = await runRound(pg, members, BACKLOG);
  const admin = pg.admin("kwdb");
  const fleetS = (fleet.drainEndMs - fleet.dbStartMs) / 1000;
  const fleetDrainS = (fleet.drainEndMs - Math.min(...fleet.reconnectMs.values())) / 1000;
  const fresh: { p99: number; max: number; rows: number }[] = [];
  const reconnects: number[] = [];
  const unaccounted: number[] = [];
  for (const m of members) {
    const reconnect = fleet.reconnectMs.get(m.spoolId) ?? NaN;
    reconnects.push((reconnect - fleet.dbStartMs) / 1000);
    // From its reconnect to the end of the fleet's drain (5 s at least, for a collector that
    // drained at once).
    fresh.push(await liveFreshness(admin, m.liveDevice, reconnect, Math.max(fleet.drainEndMs, reconnect + 5000)));
    unaccounted.push(await unaccountedSlots(admin, m));
  }
  const fleetDelivered = await backlogRows(admin);
  const fleetDuplicates = await duplicates(admin);
  await admin`TRUNCATE metrics, kwollect_ledger`;
  await admin.end();

  // One collector alone with the same total backlog.
  const alone = await prepare(`${root}/alone`, pg, exporter.port, N, total);
  const single = await runRound(pg, [alone], total);
  const aloneS = (single.drainEndMs - single.dbStartMs) / 1000;
  const aloneDrainS = (single.drainEndMs - Math.min(...single.reconnectMs.values())) / 1000;
  const after = pg.admin("kwdb");
  const aloneDelivered = await backlogRows(after);
  if (NEIGHBOURS) await after`TRUNCATE metrics, kwollect_ledger`;
  await after.end();

  // The same lone collector beside N − 1 live-only collectors (BENCH_FLEET_NEIGHBOURS).
  let besideRate: number | undefined;
  if (NEIGHBOURS) {
    const beside = await prepare(`${root}/beside`, pg, exporter.port, N, total);
    const neighbours: Member[] = [];
    for (let c = N + 1; c < 2 * N; c++) neighbours.push(await prepare(`${root}/beside`, pg, exporter.port, c, 0));
    const round = await runRound(pg, [beside], total, neighbours);
    besideRate = total / ((round.drainEndMs - round.reconnectMs.get(beside.spoolId)!) / 1000);
    const check = pg.admin("kwdb");
    const delivered = await backlogRows(check);
    await check.end();
    if (delivered !== total) {
      throw new Error(`The lone collector beside live neighbours delivered ${delivered} of ${total} backlog rows`);
    }
  }

  const fleetRate = total / fleetDrainS;
  const aloneRate = total / aloneDrainS;
  const who = `${N} collectors, ${count.format(BACKLOG)} backlog and ${LIVE_SERIES} live series at 1 s each`;
  report({
    name: "fleet_live_freshness_p99_worst",
    figure: `fleet (${who}): live freshness after reconnect, p99 of the worst collector`,
    value: Math.max(...fresh.map((f) => f.p99)),
    unit: "s",
    goal: { op: "<=", value: 2 },
  });
  report({
    name: "fleet_live_freshness_max",
    figure: "fleet: live freshness after reconnect, worst sample of any collector",
    value: Math.max(...fresh.map((f) => f.max)),
    unit: "s",
  });
  report({
    name: "fleet_reconnect_max",
    figure: "fleet: database start → a collector's first commit, worst collector",
    value: Math.max(...reconnects),
    unit: "s",
  });
  report({
    name: "fleet_drain_time",
    figure: `fleet: database start → every backlog (${count.format(total)} rows) committed`,
    value: fleetS,
    unit: "s",
  });
  report({
    name: "fleet_drain_rate",
    figure: "fleet: aggregate backlog rows committed per second (first commit → last backlog commit)",
    value: fleetRate,
    unit: "rows/s",
  });
  report({
    name: "fleet_drain_alone_rate",
    figure: `one collector alone with the same total backlog (${
      count.format(total)
    } rows): rows committed per second (first commit → last backlog commit)`,
    value: aloneRate,
    unit: "rows/s",
  });
  report({
    name: "fleet_drain_alone_time",
    figure: "one collector alone: database start → its backlog committed",
    value: aloneS,
    unit: "s",
  });
  report({
    name: "fleet_drain_ratio_to_alone",
    figure: "fleet aggregate drain / one collector alone",
    value: fleetRate / aloneRate,
    unit: "ratio",
    goal: { op: ">=", value: 0.9 },
  });
  if (besideRate !== undefined) {
    report({
      name: "fleet_drain_alone_beside_live_rate",
      figure: `one collector alone with the same total backlog, beside ${N - 1} collectors sending ${LIVE_SERIES} ` +
        "live series each (no backlog) into the same database: rows committed per second",
      value: besideRate,
      unit: "rows/s",
    });
    report({
      name: "fleet_drain_ratio_to_alone_beside_live",
      figure: "fleet aggregate drain / one collector alone beside the same live lanes",
      value: fleetRate / besideRate,
      unit: "ratio",
    });
  }
  report({
    name: "fleet_backlog_delivered_exactly_once",
    figure: "fleet and alone: backlog rows in the central table / backlog size (each run)",
    value: Math.min(fleetDelivered, aloneDelivered) === total && Math.max(fleetDelivered, aloneDelivered) === total
      ? 1
      : Math.min(fleetDelivered, aloneDelivered) / total,
    unit: "ratio",
    goal: { op: "==", value: 1 },
  });
  report({
    name: "fleet_duplicates",
    figure: "fleet: rows beyond one per (device, metric, timestamp, labels), every row",
    value: fleetDuplicates,
    unit: "rows",
    goal: { op: "==", value: 0 },
  });
  report({
    name: "fleet_unaccounted_slots_worst",
    figure: "fleet: poll slots of the 1 s grid not counted in kwollector_polls_total, worst collector " +
      "(one poll may be in flight at its last report)",
    value: Math.max(...unaccounted),
    unit: "slots",
    goal: { op: "<=", value: 1 },
  });
  report({
    name: "fleet_most_backends",
    figure: "fleet: most collector sessions on the database at once (live lane + backfill pipeline)",
    value: fleet.mostBackends,
    unit: "sessions",
  });
} finally {
  await exporter.close();
  await destroyPostgres(pg);
  await Deno.remove(root, { recursive: true });
}
