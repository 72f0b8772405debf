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
import { destroyPostgres, type PgCluster, startPostgres } from "../peers/postgres.ts";
import type { Sql } from "../../src/central/connect.ts";

/** Device id of the live samples polled from the exporter (backlog samples use other ids). */
export const LIVE_DEVICE = "rack-1";
export const LIVE_METRICS = 10_000;

export interface ExporterOptions {
  /** Series served (default LIVE_METRICS). */
  series?: number;
  /** Series i is `node_power_watt_<i>` (one metric name each) instead of `node_power_watt{psu="<i>"}`. */
  namePerSeries?: boolean;
  /** Called with the arrival time (ms since the epoch) of every request, before it is answered. */
  onScrape?: (atMs: number) => void;
}

/** An HTTP exporter on 127.0.0.1 serving `series` samples of `node_power_watt` (LIVE_METRICS by default). */
export function startExporter(opts: ExporterOptions = {}): { port: number; shutdown(): Promise<void> } {
  const line = opts.namePerSeries
    ? (i: number) => `node_power_watt_${i} ${i}`
    : (i: number) => `node_power_watt{psu="${i}"} ${i}`;
  const body = Array.from({ length: opts.series ?? LIVE_METRICS }, (_, i) => line(i)).join("\n") + "\n";
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    opts.onScrape?.(Date.now());
    return new Response(body);
  });
  return { port: server.addr.port, shutdown: () => server.shutdown() };
}

/** PostgreSQL 15 as the benchmarks use it: plain tables, fsync on, commit timestamps tracked. */
export async function startBenchPostgres(): Promise<PgCluster> {
  const pg = await startPostgres({ timescaledb: false, fsync: true });
  try {
    await pg.psql("ALTER SYSTEM SET track_commit_timestamp = on");
    await pg.stop();
    await pg.start();
    return pg;
  } catch (err) {
    await destroyPostgres(pg);
    throw err;
  }
}

/** Stops and removes a cluster of startBenchPostgres. */
export function destroyBenchPostgres(pg: PgCluster): Promise<void> {
  return destroyPostgres(pg);
}

/** Writes metrics.d (one Prometheus entry polled every second) and kwollector.yaml; returns its path. */
export async function writeCollectorConfig(
  dir: string,
  pg: PgCluster,
  spoolPath: string,
  exporterPort: number,
): Promise<string> {
  await Deno.mkdir(`${dir}/metrics.d`, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/metrics.d/rack.yaml`,
    `- name: p\n  device_id: ${LIVE_DEVICE}\n  url: prometheus://127.0.0.1:${exporterPort}/node_power_watt\n` +
      `  update_every: 1000\n`,
  );
  const yaml = `${dir}/kwollector.yaml`;
  await Deno.writeTextFile(
    yaml,
    `metrics_dir: ${dir}/metrics.d\ndb_host: 127.0.0.1\ndb_port: ${pg.port}\ndb_sslmode: disable\n` +
      `spool_path: ${spoolPath}\n`,
  );
  return yaml;
}

/**
 * V8 flags of the collector under test: those of the `kwollector` task of deno.json (the
 * compiled binary embeds the same ones), unless BENCH_V8_FLAGS gives others.
 */
export function collectorV8Flags(): string[] {
  const override = Deno.env.get("BENCH_V8_FLAGS");
  if (override !== undefined) return override.split(" ").filter((f) => f !== "");
  const denoJson = JSON.parse(Deno.readTextFileSync(new URL("../../deno.json", import.meta.url)));
  const task = String(denoJson.tasks?.kwollector ?? "");
  return task.split(" ").filter((a) => a.startsWith("--v8-flags="));
}

/** Starts `kwollector run` with `args`, its output discarded. */
export function spawnCollector(args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ...collectorV8Flags(), new URL("../../main.ts", import.meta.url).pathname, "run", ...args],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

export async function stopCollector(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch { /* already exited */ }
  await child.status;
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
