/**
 * setup-db on a database built by Kwollect 1.3 (kwollect13.ts) upgrades it in place: every row is
 * still served, the site's job definition stays the source of jobs, the summary and its policies,
 * the roles, promoted_metrics and the archive are kept, one function per api name remains, a
 * second run changes nothing, and a failed upgrade leaves the Kwollect database as it was. On
 * TimescaleDB (the hypertable and continuous aggregate) and on plain PostgreSQL (a plain table and
 * view in their place).
 */
import assert from "node:assert/strict";
import { connect, type Sql } from "../../src/central/connect.ts";
import { MIGRATIONS } from "../../src/central/migrations.ts";
import { setupOar } from "../../src/central/oar.ts";
import { setupDatabase } from "../../src/central/setup.ts";
import type { Config } from "../../src/config/defaults.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { destroyPostgres, type PgCluster, startPostgres } from "../../scripts/peers/postgres.ts";
import { catalogState, runJob, schemaDump } from "./catalog.ts";
import { at, T0_EPOCH } from "./fixture.ts";
import { type Backend, PASSWORD, pgError, request, RO, rpc, timescaleAvailable, USER, withToken } from "./harness.ts";
import { createKwollect13, KW_PASSWORD_RO, rawRows } from "./kwollect13.ts";
import { createOarDatabase, oarConfig } from "./oar_fixture.ts";

const DEVICES = "node-1,node-2,node-3,wattmetre1-port1,wattmetre1-port2";

/** Every non-alias row get_metrics returns for DEVICES since the fixture's first row, as rawRows() has them. */
async function servedRows(api: Sql): Promise<string[]> {
  // A positional call, in Kwollect's parameter order, by the Kwollect user (no row limit).
  const rows = await request(api, withToken({ method: "GET" }), (tx) =>
    tx<{ row: string }[]>`
      SELECT json_build_array(to_char(g."timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS'), g.device_id,
                              g.metric_id, g.value, g.labels)::text AS row
      FROM api.get_metrics(NULL, NULL, ${DEVICES}, NULL, ${String(T0_EPOCH - 86400)}, ${String(Date.now() / 1000)}) g
      WHERE NOT g.labels ? '_device_orig' ORDER BY 1`);
  return rows.map((r) => r.row);
}

/** The continuous aggregate as Kwollect's setup left it, for comparison after the upgrade. */
async function summaryState(admin: Sql): Promise<Record<string, unknown>> {
  const [cagg] = await admin`
    SELECT materialization_hypertable_name AS hypertable, compression_enabled FROM timescaledb_information.continuous_aggregates
    WHERE view_name = 'metrics_summary'`;
  const [compressed] = await admin`
    SELECT count(*)::int AS n FROM timescaledb_information.chunks
    WHERE hypertable_name = ${cagg!.hypertable} AND is_compressed`;
  const rows = await admin`
    SELECT "timestamp", device_id, metric_id, value, labels FROM metrics_summary
    WHERE "timestamp" >= to_timestamp(${T0_EPOCH - 86400}) AND "timestamp" < to_timestamp(${T0_EPOCH + 86400})
    ORDER BY 1, 2, 3, labels::text`;
  return { ...cagg, compressedChunks: compressed!.n, rows: rows.length, sample: JSON.stringify(rows.slice(0, 50)) };
}

async function snapshot(pg: PgCluster, database: string, timescale: boolean): Promise<unknown[]> {
  return [await schemaDump(pg, database), await catalogState(pg.admin(database), timescale)];
}

function login(pg: PgCluster, user: string, password: string): Sql {
  return connect(pg.endpoint({ user, password }), { max: 1 });
}

async function upgradeSuite(backend: Backend, t: Deno.TestContext): Promise<void> {
  const timescale = backend === "timescaledb";
  const pg = await startPostgres({ timescaledb: timescale });
  const dir = await Deno.makeTempDir({ prefix: "kwollector-upgrade-" });
  const sessions: Sql[] = [];
  try {
    await Deno.chmod(dir, 0o755);
    const archiveDir = `${dir}/archive`;
    if (timescale) {
      await Deno.mkdir(archiveDir);
      const chown = await new Deno.Command("chown", { args: ["postgres:postgres", archiveDir] }).output();
      assert.ok(chown.success);
    }
    await createKwollect13(pg, {
      database: "kwdb",
      timescaledb: timescale,
      archiveDir: timescale ? archiveDir : undefined,
    });
    const admin = pg.admin("kwdb");
    const rows = await rawRows(admin);
    const [byJob] = await admin<{ oid: number; def: string }[]>`
      SELECT 'nodetime_by_job'::regclass::oid::int AS oid, pg_get_viewdef('nodetime_by_job') AS def`;
    const summaryBefore = timescale ? await summaryState(admin) : undefined;
    const config: Config = pgConfig(pg, dir, {
      kwollect_password: PASSWORD,
      archive_path: timescale ? archiveDir : "",
    });

    await t.step("setup-db upgrades a Kwollect 1.3 database in place, every migration in one run", async () => {
      const result = await setupDatabase(config);
      assert.equal(result.timescaledb, timescale);
      assert.equal(result.migrations.adoptedKwollect, true);
      assert.deepEqual(result.migrations.applied, MIGRATIONS.map((m) => m.name));
    });
    const api = connect(pg.endpoint({ user: USER, password: PASSWORD }), { max: 2 });
    sessions.push(api);

    await t.step("every row is still served by get_metrics, called positionally in Kwollect's order", async () => {
      assert.equal(rows.length, 3 * 2881 + 2 * 2881 + 2 * 61 + 120);
      assert.deepEqual(await servedRows(api), rows);
    });

    await t.step("the job's metrics come back, its nodes given as FQDNs", async () => {
      const [expected] = await admin<{ n: number }[]>`
        SELECT ((SELECT count(*) FROM metrics WHERE device_id IN ('node-1', 'node-2')
                  AND "timestamp" BETWEEN to_timestamp(${T0_EPOCH}) AND to_timestamp(${T0_EPOCH + 3600}))
             + (SELECT count(DISTINCT "timestamp") FROM metrics WHERE labels->>'_device_alias' = 'node-2'
                  AND "timestamp" BETWEEN to_timestamp(${T0_EPOCH}) AND to_timestamp(${T0_EPOCH + 3600})))::int AS n`;
      const job = await rpc(api, "get_metrics", { job_id: "1234" });
      assert.equal(job.length, expected!.n);
      assert.deepEqual(new Set(job.map((r) => r.device_id)), new Set(["node-1", "node-2"]));
      const watts = job.find((r) => r.metric_id === "wattmetre_power_watt");
      assert.deepEqual([(watts!.timestamp as Date).toISOString(), watts!.device_id, watts!.value], [
        at(0),
        "node-2",
        30,
      ]);
      const byJobView = await request(
        api,
        {},
        (tx) => tx<{ n: number }[]>`SELECT count(*)::int AS n FROM metrics_by_job WHERE job_id = 1234`,
      );
      assert.equal(byJobView[0]!.n, expected!.n, "metrics_by_job matches FQDN nodes too, bounds included");
      const running = await rpc(api, "get_metrics", { job_id: "1235" });
      assert.ok(running.length >= 59, `${running.length} rows of the running job`);
      assert.deepEqual(new Set(running.map((r) => r.device_id)), new Set(["node-3"]));
    });

    await t.step("one function per api name remains, the site's own kept, and named calls resolve", async () => {
      const names = await admin`
        SELECT proname, count(*)::int AS n, bool_and(pg_get_userbyid(proowner) <> ${USER} OR proname = 'insert_user_metrics') AS not_kwuser
        FROM pg_proc WHERE pronamespace = 'api'::regnamespace GROUP BY 1 ORDER BY 1`;
      assert.deepEqual(names.map((r) => [r.proname, r.n, r.not_kwuser]), [
        ["available_metrics", 1, true],
        ["get_job_metrics", 1, true],
        ["get_metrics", 1, true],
        ["insert_metrics", 1, true],
        ["insert_user_metrics", 1, true],
        ["site_version", 1, true],
        ["update_promoted_metrics", 1, true],
      ]);
      const named = await request(
        api,
        {},
        (tx) => tx<{ n: number }[]>`SELECT count(*)::int AS n FROM api.get_metrics(job_id => 1234)`,
      );
      assert.ok(named[0]!.n > 0);
      const site = await request(api, {}, (tx) => tx`SELECT api.site_version() AS v`);
      assert.equal(site[0]!.v, "site 7");
    });

    await t.step("the site's nodetime_by_job stays the source of jobs", async () => {
      const [after] = await admin<{ oid: number; def: string }[]>`
        SELECT 'nodetime_by_job'::regclass::oid::int AS oid, pg_get_viewdef('nodetime_by_job') AS def`;
      assert.deepEqual(after, byJob, "the same view, unchanged");
      await admin`INSERT INTO site_jobs VALUES (1236, to_timestamp(${T0_EPOCH}), to_timestamp(${T0_EPOCH + 60}),
                                               'node-3.lyon.grid5000.fr')`;
      const job = await rpc(api, "get_metrics", { job_id: "1236", metrics: "bmc_node_power_watt" });
      assert.deepEqual(job.map((r) => [(r.timestamp as Date).toISOString(), r.device_id]), [
        [at(0), "node-3"],
        [at(60), "node-3"],
      ]);
      await admin`DELETE FROM site_jobs WHERE job_id = 1236`;
    });

    await t.step("the summary keeps its rows and policies, and answers with MAX of counters", async () => {
      const summary = await rpc(api, "get_metrics", {
        devices: "node-1",
        metrics: "network_ifacein_bytes_total",
        start_time: at(0),
        end_time: at(0),
        summary: "true",
      });
      assert.deepEqual(summary.map((r) => r.value), [1000 * (1440 + 4)]);
      if (!timescale) return;
      assert.deepEqual(await summaryState(admin), summaryBefore, "the same aggregate, its rows and compressed chunks");
      const [cagg] = await admin`
        SELECT materialized_only FROM timescaledb_information.continuous_aggregates WHERE view_name = 'metrics_summary'`;
      assert.equal(cagg!.materialized_only, false, "real-time");
      const jobs = await admin`
        SELECT proc_name, owner::text, config - 'mat_hypertable_id' - 'hypertable_id' AS config FROM timescaledb_information.jobs
        WHERE hypertable_name = ${summaryBefore!.hypertable as string} ORDER BY 1`;
      assert.deepEqual(jobs.map((r) => [r.proc_name, r.owner, r.config]), [
        ["policy_compression", "postgres", { compress_after: "2 days" }],
        ["policy_refresh_continuous_aggregate", "postgres", { end_offset: "00:10:00", start_offset: null }],
      ]);
    });

    await t.step("promoted_metrics keeps its rows and the site's promoted_metrics_job drives promotion", async () => {
      const promoted = await request(
        api,
        withToken(),
        (tx) => tx`SELECT device_id, metric_id, job_id FROM api.update_promoted_metrics()`,
      );
      assert.deepEqual([...promoted], [{ device_id: "node-3", metric_id: "wattmetre_power_watt", job_id: 1235 }]);
      const all = await admin`SELECT device_id, metric_id, job_id FROM promoted_metrics ORDER BY device_id`;
      assert.deepEqual(all.map((r) => [r.device_id, r.metric_id, r.job_id]), [
        ["node-3", "wattmetre_power_watt", 1235],
        ["node-7", "prom_.*", null],
        ["node-8", null, null],
      ]);
    });

    await t.step("the roles log in with the given passwords and may no longer rewrite history", async () => {
      const kwuser = login(pg, USER, PASSWORD);
      const ro = login(pg, RO, KW_PASSWORD_RO);
      sessions.push(kwuser, ro);
      for (
        const statement of [
          "DELETE FROM metrics",
          "DROP TABLE metrics",
          "ALTER TABLE metrics ADD COLUMN x int",
          "CREATE FUNCTION api.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
          "CREATE SCHEMA mine",
          "CREATE TABLE public.mine (a int)",
          "DROP VIEW metrics_by_device",
        ]
      ) {
        const e = await pgError(kwuser.unsafe(statement));
        assert.equal(e.code, "42501", `kwuser: ${statement}: ${e.message}`);
      }
      const e = await pgError(ro.unsafe("CREATE TABLE public.mine (a int)"));
      assert.equal(e.code, "42501", e.message);
      const [n] = await ro<
        { n: number }[]
      >`SELECT count(*)::int AS n FROM metrics_by_device WHERE device_id = 'node-2'`;
      assert.ok(n!.n > 0);
    });

    if (timescale) {
      await t.step("the archive tablespace is adopted and archiving moves raw chunks there too", async () => {
        const jobs = await admin`
          SELECT proc_name, config FROM timescaledb_information.jobs
          WHERE proc_name IN ('kwollect_archive_chunks', 'move_chunks_to_archive')`;
        assert.deepEqual(jobs.map((r) => [r.proc_name, r.config]), [[
          "kwollect_archive_chunks",
          { older_than: "8 days", tablespace: "archive" },
        ]]);
        await runJob(admin, "kwollect_archive_chunks");
        const spaces = await admin`
          SELECT hypertable_name = 'metrics' AS raw, chunk_tablespace, count(*)::int AS n FROM timescaledb_information.chunks
          WHERE range_end < now() - interval '8 days' GROUP BY 1, 2 ORDER BY 1`;
        assert.deepEqual(spaces.map((r) => [r.raw, r.chunk_tablespace]), [[false, "archive"], [true, "archive"]]);
        assert.deepEqual(await servedRows(api), rows);
      });
    }

    await t.step("a second setup-db changes nothing", async () => {
      const before = await snapshot(pg, "kwdb", timescale);
      const again = await setupDatabase(config);
      assert.deepEqual(again.migrations.applied, []);
      assert.equal(again.migrations.adoptedKwollect, false);
      assert.deepEqual(await snapshot(pg, "kwdb", timescale), before);
    });

    await t.step("setup-db-oar connects OAR to the upgraded database in place of the site's jobs", async () => {
      await createOarDatabase(pg);
      assert.deepEqual(await setupOar(oarConfig(config, pg)), { jobs: 2, nodes: 2 });
      const job = await rpc(api, "get_metrics", { job_id: "100" });
      assert.equal(job.length, 3 * 11, "node-1's three metrics every minute over ten minutes");
      const byJobView = await request(api, {}, (tx) => tx`SELECT count(*)::int AS n FROM nodetime_by_job`);
      assert.equal(byJobView[0]!.n, 2);
      const promoted = await request(
        api,
        withToken(),
        (tx) => tx`SELECT device_id, metric_id, job_id FROM api.update_promoted_metrics()`,
      );
      assert.deepEqual([...promoted], [{ device_id: "node-2", metric_id: "wattmetre_power_watt", job_id: 101 }]);
    });

    await t.step("a failed upgrade changes nothing, says why, and Kwollect's api still answers", async () => {
      await createKwollect13(pg, { database: "kwfail", timescaledb: timescale });
      const failing = pg.admin("kwfail");
      await failing`CREATE VIEW site_power AS SELECT * FROM api.get_metrics(NULL, 'node-1', NULL, NULL,
                                                                          '2024-03-01 12:00:00+00', '2024-03-01 12:01:00+00')`;
      const before = await snapshot(pg, "kwfail", timescale);
      await assert.rejects(setupDatabase({ ...config, kwollect_db_name: "kwfail" }), (e: Error) => {
        assert.match(
          e.message,
          /^Cannot upgrade this Kwollect database in place: cannot drop function api\.get_metrics/,
        );
        assert.match(e.message, /view site_power depends on function api\.get_metrics/);
        assert.match(e.message, /Nothing was changed \(the upgrade runs in one transaction\)$/);
        return true;
      });
      assert.deepEqual(await snapshot(pg, "kwfail", timescale), before);
      const [power] = await failing<{ n: number }[]>`SELECT count(*)::int AS n FROM site_power`;
      assert.equal(power!.n, 3 * 2, "node-1's three metrics at 12:00 and 12:01");
    });

    if (timescale) {
      await t.step("Kwollect 1.2's summary (AVG of counters too) is replaced by one that takes their MAX", async () => {
        await createKwollect13(pg, { database: "kw12", timescaledb: true, summary: "avg" });
        await setupDatabase({ ...config, kwollect_db_name: "kw12", archive_path: "" });
        const kw12 = connect(pg.endpoint({ user: USER, password: PASSWORD, database: "kw12" }), { max: 1 });
        sessions.push(kw12);
        const summary = await rpc(kw12, "get_metrics", {
          devices: "node-1",
          metrics: "network_ifacein_bytes_total",
          start_time: at(0),
          end_time: at(0),
          summary: "true",
        });
        assert.deepEqual(summary.map((r) => r.value), [1000 * (1440 + 4)]);
        const caggs = await pg.admin("kw12")`SELECT view_name FROM timescaledb_information.continuous_aggregates`;
        assert.deepEqual(caggs.map((r) => r.view_name), ["metrics_summary"]);
      });
    } else {
      await t.step("a site-defined nodetime_per_job (Kwollect 1.8) keeps its query", async () => {
        await createKwollect13(pg, { database: "kw18", timescaledb: false, jobView: "nodetime_per_job" });
        await setupDatabase({ ...config, kwollect_db_name: "kw18" });
        const kw18 = pg.admin("kw18");
        const [view] = await kw18<{ def: string }[]>`SELECT pg_get_viewdef('nodetime_per_job') AS def`;
        assert.match(view!.def, /site_jobs/);
        const [alias] = await kw18<{ n: number }[]>`SELECT count(*)::int AS n FROM nodetime_by_job`;
        assert.equal(alias!.n, 3, "nodetime_by_job reads nodetime_per_job");
        const api18 = connect(pg.endpoint({ user: USER, password: PASSWORD, database: "kw18" }), { max: 1 });
        sessions.push(api18);
        const job = await rpc(api18, "get_metrics", { job_id: "1234", metrics: "bmc_node_power_watt" });
        assert.equal(job.length, 2 * 61);
      });
    }
  } finally {
    await Promise.all(sessions.map((s) => s.end({ timeout: 0 })));
    await destroyPostgres(pg);
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("setup-db upgrades a Kwollect 1.3 database on plain PostgreSQL in place", async (t) => {
  await upgradeSuite("plain", t);
});

Deno.test({
  name: "setup-db upgrades a Kwollect 1.3 TimescaleDB database in place",
  ignore: !timescaleAvailable(),
  fn: async (t) => {
    await upgradeSuite("timescaledb", t);
  },
});
