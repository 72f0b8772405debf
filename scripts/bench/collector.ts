/**
 * Pieces shared by the benchmarks that run the real collector (`kwollector run`, a child process)
 * against a real PostgreSQL: a Prometheus exporter of 10,000 metrics (10,000 samples/s at 1 Hz),
 * the collector's configuration and process, its RSS and CPU from /proc, and the time each
 * sample reached the central table.
 *
 * Arrival is measured by PostgreSQL itself: the bench cluster runs with
 * `track_commit_timestamp = on`, so `pg_xact_commit_timestamp(xmin)` of a row is the moment its
 * batch committed, i.e. became visible in `metrics`. It costs the forwarder nothing (no trigger,
 * no extra column). Sample timestamps come from the collector's clock, commit timestamps from
 * the server's: the same machine, so the same clock.
 */
import type { Sql } from "../../src/central/connect.ts";
import type { Config } from "../../src/config/defaults.ts";
import { GLIBC_TUNABLES, RUNTIME_FLAGS } from "../compile.ts";
import { type CollectorProcess, startCollector } from "../harness/collector.ts";
import { metricsEntry, pgConfig, writeCollectorConfig } from "../harness/config.ts";
import { startCentral } from "../peers/central.ts";
import { destroyPostgres, type PgCluster } from "../peers/postgres.ts";
import { type Exporter, fixedBody, startExporter } from "../peers/prometheus_exporter.ts";

/** Device id of the live samples polled from the exporter (backlog samples use other ids). */
export const LIVE_DEVICE = "rack-1";
export const LIVE_METRICS = 10_000;

/** An exporter on 127.0.0.1 serving `series` samples of `node_power_watt` (LIVE_METRICS by default). */
export function startPowerExporter(opts: { series?: number; namePerSeries?: boolean } = {}): Exporter {
  const line = opts.namePerSeries
    ? (i: number) => `node_power_watt_${i} ${i}`
    : (i: number) => `node_power_watt{psu="${i}"} ${i}`;
  return startExporter({ body: fixedBody(Array.from({ length: opts.series ?? LIVE_METRICS }, (_, i) => line(i))) });
}

/**
 * The central database as the benchmarks run it: plain tables, fsync on, commit timestamps
 * tracked; `settings` adds server settings (a bench sizing the buffer pool for its devices).
 */
export function startBenchCentral(settings: Record<string, string> = {}): Promise<PgCluster> {
  return startCentral({ timescaledb: false, fsync: true, settings: { track_commit_timestamp: "on", ...settings } });
}

/**
 * What the end-to-end benchmarks share: the bench central database, an exporter of LIVE_METRICS
 * series, and the collector's configuration in `dir` (one Prometheus entry of device LIVE_DEVICE
 * polled every second, every other setting at its default). Closing it stops the exporter and
 * destroys the database.
 */
export interface LiveRig extends AsyncDisposable {
  pg: PgCluster;
  exporter: Exporter;
  /** The collector's configuration, resolved (for a spool or forwarder run in this process). */
  config: Config;
  /** Path of kwollector.yaml. */
  yaml: string;
  close(): Promise<void>;
}

export async function startLiveRig(
  dir: string,
  overrides: Record<string, string | number> = {},
  centralSettings: Record<string, string> = {},
): Promise<LiveRig> {
  const pg = await startBenchCentral(centralSettings);
  const exporter = startPowerExporter();
  const close = async () => {
    await exporter.close();
    await destroyPostgres(pg);
  };
  try {
    const config = pgConfig(pg, dir, { spool_path: `${dir}/spool/spool.db`, ...overrides });
    const yaml = await writeCollectorConfig(dir, {
      metrics: {
        "rack.yaml": metricsEntry({
          name: "p",
          deviceId: LIVE_DEVICE,
          url: `prometheus://127.0.0.1:${exporter.port}/node_power_watt`,
          updateEveryMs: 1000,
        }),
      },
      settings: { db_host: "127.0.0.1", db_port: pg.port, db_sslmode: "disable", spool_path: config.spool_path },
    });
    return { pg, exporter, config, yaml, close, [Symbol.asyncDispose]: close };
  } catch (err) {
    await close();
    throw err;
  }
}

/**
 * Runtime flags of the collector under test: those of the `kwollector` task of deno.json and of
 * the compiled binary (compile.ts RUNTIME_FLAGS), unless BENCH_V8_FLAGS gives others.
 */
export function collectorV8Flags(): string[] {
  const override = Deno.env.get("BENCH_V8_FLAGS");
  if (override !== undefined) return override.split(" ").filter((f) => f !== "");
  return [...RUNTIME_FLAGS];
}

/**
 * Environment of the collector under test: glibc's malloc tuned as the systemd units tune it
 * (compile.ts GLIBC_TUNABLES), unless BENCH_GLIBC_TUNABLES gives another value ("" for glibc's
 * defaults).
 */
export function collectorEnv(): Record<string, string> {
  const tunables = Deno.env.get("BENCH_GLIBC_TUNABLES") ?? GLIBC_TUNABLES;
  return tunables === "" ? {} : { GLIBC_TUNABLES: tunables };
}

/** Starts `kwollector run` with `args`, the bench V8 flags and environment, its output discarded. */
export function spawnCollector(args: string[]): CollectorProcess {
  return startCollector(["run", ...args], { v8Flags: collectorV8Flags(), env: collectorEnv(), discardOutput: true });
}

/** Resident memory of a process in MB, from /proc. */
export function processRssMb(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN) / 1024;
}

/** CPU time (user + system) of a process in ms, from /proc (clock ticks of 10 ms). */
export function processCpuMs(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of stat(5), the 12th and 13th after the comm.
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

export interface Arrival {
  /** Live rows sampled in the window that reached the central table. */
  rows: number;
  /** Distinct sample timestamps among them (one per poll). */
  polls: number;
  /** Sample timestamp → commit of its batch, in seconds. */
  p50S: number;
  p99S: number;
  maxS: number;
  /** Earliest live sample timestamp in the window (ms since the epoch), if any. */
  firstSampleMs: number | undefined;
}

/** How long live samples with a timestamp in [fromMs, toMs) took to reach the central table. */
export async function liveArrival(admin: Sql, fromMs: number, toMs: number): Promise<Arrival> {
  const [row] = await admin`
    SELECT count(*)::int AS rows, count(DISTINCT ts)::int AS polls,
           percentile_disc(0.5) WITHIN GROUP (ORDER BY lag)::float8 AS p50,
           percentile_disc(0.99) WITHIN GROUP (ORDER BY lag)::float8 AS p99,
           max(lag)::float8 AS max, (extract(epoch FROM min(ts)) * 1000)::float8 AS first_ms
    FROM (SELECT "timestamp" AS ts, extract(epoch FROM pg_xact_commit_timestamp(xmin) - "timestamp") AS lag
          FROM metrics
          WHERE device_id = ${LIVE_DEVICE} AND "timestamp" >= ${new Date(fromMs)} AND "timestamp" < ${new Date(
    toMs,
  )}) AS live`;
  const r = row as {
    rows: number;
    polls: number;
    p50: number | null;
    p99: number | null;
    max: number | null;
    first_ms: number | null;
  };
  return {
    rows: r.rows,
    polls: r.polls,
    p50S: r.p50 ?? NaN,
    p99S: r.p99 ?? NaN,
    maxS: r.max ?? NaN,
    firstSampleMs: r.first_ms ?? undefined,
  };
}

/** Commit time (ms since the epoch) of the first ledger row of any kind, if any. */
export async function firstLedgerCommitMs(admin: Sql): Promise<number | undefined> {
  const [row] = await admin`
    SELECT (extract(epoch FROM min(pg_xact_commit_timestamp(xmin))) * 1000)::float8 AS ms FROM kwollect_ledger`;
  return (row as { ms: number | null }).ms ?? undefined;
}
