/**
 * The 5-minute summary and the storage lifecycle: the plain PostgreSQL summary table with its
 * refresh, pg_cron job and systemd timer; TimescaleDB's continuous aggregate, compression,
 * retention and archiving. Policies are run with run_job(), never by waiting for the scheduler.
 */
import assert from "node:assert/strict";
import { setupDatabase } from "../../src/central/setup.ts";
import type { Sql } from "../../src/central/connect.ts";
import { destroyPostgres, startPostgres } from "../../scripts/peers/postgres.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { at, loadFixture } from "./fixture.ts";
import { PASSWORD, rpc, startCentral, timescaleAvailable } from "./harness.ts";
import { runJob } from "./catalog.ts";

/** The summary of the fixture's node-2 (aliases) and node-3 over T0..T0+10 min, as get_metrics sees it. */
async function summaryAnswers(api: Sql): Promise<unknown[]> {
  const rows = await rpc(api, "get_metrics", {
    devices: "node-2,node-3",
    start_time: at(0),
    end_time: at(600),
    summary: "1",
  });
  return rows.map((r) => [(r.timestamp as Date).toISOString(), r.device_id, r.metric_id, r.value, r.labels]);
}

const EXPECTED_SUMMARY = [
  [at(0), "node-2", "network_ifaceout_bytes_total", 6000000, {}],
  [at(0), "node-2", "wattmetre_power_watt", 31.5, { _device_orig: ["wattmetre1-port1", "wattmetre1-port2"] }],
  [at(0), "node-3", "energy_joules_total", 50, {}],
  [at(0), "node-3", "temp_celsius", 3, { sensor: "a" }],
  [at(300), "node-3", "temp_celsius", 10, { sensor: "a" }],
];

Deno.test("the plain PostgreSQL summary is materialised by kwollect_maintenance, late rows and retention included", async () => {
  const c = await startCentral("plain");
  try {
    await loadFixture(c.admin);
    assert.equal(c.setup.summaryRefresh, "systemd timer");
    assert.deepEqual(await summaryAnswers(c.authenticator), EXPECTED_SUMMARY, "computed at query time");

    // The fixture lies in 2024 and the recent rows now: two calls, the gap between them skipped.
    for (let i = 0; i < 2; i++) await c.admin`SELECT * FROM kwollect_maintenance()`;
    const [state] = await c.admin<{ caught_up: boolean }[]>`
      SELECT watermark = kwollect_bucket(now() - interval '10 minutes') AS caught_up FROM kwollect_summary_state`;
    assert.ok(state!.caught_up, "the watermark reached the refresh horizon");
    const [materialised] = await c.admin<{ n: number }[]>`
      SELECT count(*)::int AS n FROM metrics_summary_data WHERE "timestamp" < '2025-01-01'`;
    assert.ok(materialised!.n >= EXPECTED_SUMMARY.length);
    assert.deepEqual(await summaryAnswers(c.authenticator), EXPECTED_SUMMARY, "materialised");

    // A late row lands in a materialised bucket, COPYed by a collector draining its spool (as the
    // Kwollect user): the next refresh recomputes that bucket.
    const copy = await c.authenticator`COPY metrics ("timestamp", device_id, metric_id, value, labels) FROM STDIN`
      .writable();
    await new Promise<void>((resolve, reject) => {
      copy.on("error", reject);
      copy.end(`${at(30)}\tnode-3\ttemp_celsius\t100\t{"sensor": "a"}\n`, () => resolve());
    });
    const [pending] = await c.admin`SELECT count(*)::int AS n FROM kwollect_summary_invalidations`;
    assert.equal(pending!.n, 1, "the COPY recorded its time range");
    await c.admin`SELECT * FROM kwollect_maintenance()`;
    const late = await summaryAnswers(c.authenticator);
    assert.deepEqual(late[3], [at(0), "node-3", "temp_celsius", (1 + 2 + 3 + 4 + 5 + 100) / 6, { sensor: "a" }]);
    const [left] = await c.admin`SELECT count(*)::int AS n FROM kwollect_summary_invalidations`;
    assert.equal(left!.n, 0);

    // Retention: raw rows older than a day go, their summary stays.
    await setupDatabase({ ...c.config, retention_days: 1 });
    const [result] = await c.admin<{ deleted_rows: number }[]>`SELECT deleted_rows::int FROM kwollect_maintenance()`;
    assert.ok(result!.deleted_rows > 30, `deleted ${result!.deleted_rows} rows`);
    const [raw] = await c.admin`SELECT count(*)::int AS n FROM metrics WHERE "timestamp" < now() - interval '1 day'`;
    assert.equal(raw!.n, 0);
    assert.deepEqual((await summaryAnswers(c.authenticator))[3], late[3]);
    const recent = await rpc(c.authenticator, "get_metrics", { devices: "node-1", metrics: "bmc_node_power_watt" });
    assert.deepEqual(recent.map((r) => r.value), [7], "recent raw rows are kept");
  } finally {
    await c.close();
  }
});

Deno.test("without TimescaleDB, setup-db schedules kwollect_maintenance with pg_cron when it is preloaded", async () => {
  const pg = await startPostgres({ timescaledb: false });
  const dir = await Deno.makeTempDir({ prefix: "kwollector-cron-" });
  try {
    await pg.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_cron'");
    await pg.stop();
    await pg.start();
    const config = pgConfig(pg, dir, { kwollect_password: PASSWORD });
    for (let run = 0; run < 2; run++) {
      const setup = await setupDatabase(config);
      assert.equal(setup.summaryRefresh, "pg_cron");
    }
    const admin = pg.admin("postgres");
    const jobs = await admin`SELECT jobname, schedule, command, database, username FROM cron.job`;
    assert.deepEqual([...jobs], [{
      jobname: "kwollect-maintenance-kwdb",
      schedule: "*/5 * * * *",
      command: "SELECT * FROM kwollect_maintenance()",
      database: "kwdb",
      username: "postgres",
    }]);
    const out = await pg.psql(jobs[0]!.command, "kwdb");
    assert.match(out, /^\d+\|\d+$/m);
  } finally {
    await destroyPostgres(pg);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the systemd timer runs kwollect_maintenance every 5 minutes", async () => {
  const service = await Deno.readTextFile(new URL("../../config/kwollect-summary-refresh.service", import.meta.url));
  const timer = await Deno.readTextFile(new URL("../../config/kwollect-summary-refresh.timer", import.meta.url));
  assert.match(timer, /^OnCalendar=\*:0\/5$/m);
  const exec = service.match(/^ExecStart=(.*)$/m)?.[1];
  assert.ok(exec, "ExecStart in the service");
  const command = exec.match(/-c "([^"]+)"/)?.[1];
  assert.equal(command, "SELECT * FROM kwollect_maintenance()");
  assert.match(exec, /^\/usr\/bin\/psql .*-d \$\{KWOLLECT_DB_NAME\}/);
  assert.match(service, /^Environment=KWOLLECT_DB_NAME=kwdb$/m);
  const units = ["service", "timer"].map((k) =>
    new URL(`../../config/kwollect-summary-refresh.${k}`, import.meta.url).pathname
  );
  const verify = await new Deno.Command("systemd-analyze", { args: ["verify", ...units], stderr: "piped" }).output();
  assert.ok(verify.success, `systemd-analyze verify: ${new TextDecoder().decode(verify.stderr)}`);

  // The command, run as the unit runs it (postgres, psql) against a plain database.
  const c = await startCentral("plain");
  try {
    await loadFixture(c.admin);
    const out = await new Deno.Command("psql", {
      args: [
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        c.pg.host,
        "-p",
        String(c.pg.port),
        "-U",
        "postgres",
        "-d",
        "kwdb",
        "-c",
        command!,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const [data] = await c.admin`SELECT count(*)::int AS n FROM metrics_summary_data`;
    assert.ok(data!.n > 0);
  } finally {
    await c.close();
  }
});

Deno.test({
  name:
    "on TimescaleDB the summary is a continuous aggregate kept by policies, with compression, archiving and retention",
  ignore: !timescaleAvailable(),
  fn: async () => {
    const c = await startCentral("timescaledb");
    const archive = `${c.pg.dir}/archive`;
    try {
      await Deno.mkdir(archive);
      await new Deno.Command("chown", { args: ["postgres:postgres", archive] }).output();
      assert.equal(c.setup.summaryRefresh, "timescaledb");
      await loadFixture(c.admin);
      assert.deepEqual(await summaryAnswers(c.authenticator), EXPECTED_SUMMARY, "real-time aggregation");

      // setup-db re-creates the policies, so their job ids change: runJob looks them up.
      const runRefresh = () => runJob(c.admin, "policy_refresh_continuous_aggregate");
      await runRefresh();
      const [cagg] = await c.admin<{ name: string }[]>`
        SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) AS name
        FROM timescaledb_information.continuous_aggregates WHERE view_name = 'metrics_summary'`;
      const materialised = await c.admin.unsafe(
        `SELECT value FROM ${
          cagg!.name
        } WHERE device_id = 'node-3' AND metric_id = 'temp_celsius' ORDER BY "timestamp"`,
      );
      assert.deepEqual(materialised.map((r) => r.value), [3, 10]);

      // Compression: the fixture's chunks are older than chunk_compress_hour.
      await runJob(c.admin, "policy_compression", "metrics");
      const [compressed] = await c.admin`
        SELECT count(*)::int AS n FROM timescaledb_information.chunks
        WHERE hypertable_name = 'metrics' AND is_compressed AND range_end < '2025-01-01'`;
      assert.ok(compressed!.n > 0, "old chunks compressed");

      // A late row into a compressed, materialised bucket is folded in by the next refresh.
      await c.admin`INSERT INTO metrics VALUES (${at(30)}, 'node-3', 'temp_celsius', 100, '{"sensor": "a"}')`;
      await runRefresh();
      const late = await summaryAnswers(c.authenticator);
      assert.deepEqual(late[3], [at(0), "node-3", "temp_celsius", (1 + 2 + 3 + 4 + 5 + 100) / 6, { sensor: "a" }]);
      const raw = await rpc(c.authenticator, "get_metrics", {
        devices: "node-3",
        metrics: "temp_celsius",
        start_time: at(0),
        end_time: at(60),
      });
      assert.deepEqual(raw.map((r) => r.value), [1, 100, 2], "compressed chunks still answer");

      // Archiving: chunks older than 8 days, of the raw table and of the summary, move.
      const withArchive = { ...c.config, archive_path: archive };
      await setupDatabase(withArchive);
      await runJob(c.admin, "kwollect_archive_chunks");
      const spaces = await c.admin<{ hypertable_name: string; chunk_tablespace: string | null; old: boolean }[]>`
        SELECT hypertable_name, chunk_tablespace, range_end < now() - interval '8 days' AS old
        FROM timescaledb_information.chunks`;
      const archived = spaces.filter((s) => s.chunk_tablespace === "kwollect_archive");
      assert.ok(archived.some((s) => s.hypertable_name === "metrics"), "raw chunks archived");
      assert.ok(archived.some((s) => s.hypertable_name !== "metrics"), "summary chunks archived");
      assert.ok(spaces.every((s) => s.old === (s.chunk_tablespace === "kwollect_archive")), "only old chunks");
      assert.deepEqual(await summaryAnswers(c.authenticator), late);
      const archivedRaw = await rpc(c.authenticator, "get_metrics", {
        devices: "node-3",
        metrics: "temp_celsius",
        start_time: at(0),
        end_time: at(60),
      });
      assert.deepEqual(archivedRaw, raw);

      // Retention: raw chunks older than a day are dropped, the summary stays.
      await setupDatabase({ ...withArchive, retention_days: 1 });
      await runJob(c.admin, "policy_retention", "metrics");
      await runRefresh();
      const [old] = await c.admin`SELECT count(*)::int AS n FROM metrics WHERE "timestamp" < now() - interval '2 days'`;
      assert.equal(old!.n, 0);
      assert.deepEqual(await summaryAnswers(c.authenticator), late, "summary kept after retention");
    } finally {
      await c.close();
    }
  },
});
