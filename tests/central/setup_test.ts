/**
 * setup-db as a whole: idempotence, upgrades from the previous migration set, the API token and
 * the printed PostgREST configuration, and its option errors.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { signJwt, verifyJwt } from "../../src/central/jwt.ts";
import { migrate } from "../../src/central/migrate.ts";
import { MIGRATIONS } from "../../src/central/migrations.ts";
import { setupDatabase } from "../../src/central/setup.ts";
import { setLogSink } from "../../src/log.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { destroyPostgres, type PgCluster, startPostgres } from "../../scripts/peers/postgres.ts";
import { catalogState, schemaDump } from "./catalog.ts";
import { at, loadFixture } from "./fixture.ts";
import { type Backend, PASSWORD, rpc, timescaleAvailable } from "./harness.ts";

/** A database with only the first migration, as the previous release left it, holding data. */
async function previousRelease(pg: PgCluster, database: string, timescale: boolean): Promise<void> {
  const server = pg.admin("postgres");
  await server.unsafe(`CREATE DATABASE ${database}`);
  const db = pg.admin(database);
  if (timescale) await db`CREATE EXTENSION timescaledb`;
  await migrate(db, {
    user: "kwuser",
    user_ro: "kwuser_ro",
    db_name: database,
    timescaledb: timescale ? "on" : "off",
    chunk_interval_hour: "6",
    chunk_compress_hour: "24",
    request_timeout_min: "5",
  }, MIGRATIONS.slice(0, 1));
  await db.unsafe(`GRANT CONNECT ON DATABASE ${database} TO kwuser, kwuser_ro`);
  // Forwarded as the collector does: a ledger claim and the rows, as the Kwollect user.
  const collector = postgres({
    host: pg.host,
    port: pg.port,
    database,
    username: "kwuser",
    password: PASSWORD,
    max: 1,
  });
  try {
    await collector.begin(async (tx) => {
      await tx`SELECT kwollect_claim('00000000-0000-0000-0000-000000000001', 'edge', 1, 3, 3, 'data', ${at(0)}, ${
        at(20)
      }, 'old')`;
      await tx`INSERT INTO metrics ("timestamp", device_id, metric_id, value, labels) VALUES
        (${at(0)}, 'node-1', 'old_metric_total', 1, '{}'), (${at(10)}, 'node-1', 'old_metric_total', 5, '{}'),
        (${at(20)}, 'wattmetre-port1', 'wattmetre_power_watt', 50, '{"_device_alias": "node-1"}')`;
    });
  } finally {
    await collector.end();
  }
}

async function setupSuite(backend: Backend, t: Deno.TestContext): Promise<void> {
  const pg = await startPostgres({ timescaledb: backend === "timescaledb" });
  const dir = await Deno.makeTempDir({ prefix: "kwollector-setup-" });
  const timescale = backend === "timescaledb";
  try {
    const requests = `${dir}/jobmetrics.sql`;
    await Deno.writeTextFile(requests, "# job energy\nSELECT count(*) AS samples FROM jobmetrics;\n\n");
    const config = pgConfig(pg, dir, { kwollect_password: PASSWORD, jobmetrics_requests_path: requests });

    await t.step("setup-db run twice leaves the same schema, policies and settings", async () => {
      const first = await setupDatabase(config);
      assert.equal(first.timescaledb, timescale);
      const admin = pg.admin("kwdb");
      const dump = await schemaDump(pg, "kwdb");
      const state = await catalogState(admin, timescale);
      const second = await setupDatabase(config);
      assert.deepEqual(second.migrations.applied, []);
      assert.deepEqual(second.migrations.alreadyApplied, [
        "0001_core",
        "0002_views_summary",
        "0003_api",
        "0004_kwollect_compat",
      ]);
      assert.equal(await schemaDump(pg, "kwdb"), dump);
      assert.deepEqual(await catalogState(admin, timescale), state);
      assert.equal(second.apiToken, first.apiToken);
      assert.equal(second.reverseProxyConfig, first.reverseProxyConfig);
    });

    await t.step("upgrading a database of the previous migration set keeps its data", async () => {
      await previousRelease(pg, "kwold", timescale);
      const result = await setupDatabase({ ...config, kwollect_db_name: "kwold" });
      assert.deepEqual(result.migrations.applied, ["0002_views_summary", "0003_api", "0004_kwollect_compat"]);
      const api = postgres({
        host: pg.host,
        port: pg.port,
        database: "kwold",
        username: "kwuser",
        password: PASSWORD,
        max: 1,
      });
      try {
        const rows = await rpc(api, "get_metrics", {
          devices: "node-1",
          start_time: at(0),
          end_time: at(20),
          as_rate: "auto",
        });
        assert.deepEqual(rows.map((r) => [r.metric_id, r.value]), [
          ["old_metric_total", null],
          ["old_metric_total", 0.4],
          ["wattmetre_power_watt", 50],
        ]);
        const summary = await rpc(api, "get_metrics", {
          devices: "node-1",
          start_time: at(0),
          end_time: at(0),
          summary: "true",
        });
        assert.deepEqual(summary.map((r) => [r.metric_id, r.value]), [["old_metric_total", 5], [
          "wattmetre_power_watt",
          50,
        ]]);
        const admin = pg.admin("kwold");
        const [ledger] = await admin`SELECT rows, edge_id FROM kwollect_ledger`;
        assert.deepEqual({ ...ledger }, { rows: 3, edge_id: "edge" });
      } finally {
        await api.end();
      }
    });

    if (timescale) {
      await t.step("an archive_path the server cannot use is a clear error", async () => {
        await assert.rejects(
          setupDatabase({ ...config, archive_path: `${dir}/missing` }),
          /Cannot create tablespace kwollect_archive at archive_path '.*\/missing': .*must exist on the database server/,
        );
      });
      return;
    }

    await t.step("the API token verifies as PostgREST would; forged and expired tokens do not", async () => {
      const [row] = await pg.admin("kwdb")<
        { value: string }[]
      >`SELECT value FROM kwollect_secrets WHERE name = 'jwt_secret'`;
      const secret = row!.value;
      const result = await setupDatabase(config);
      assert.match(result.postgrestConfig, new RegExp(`^jwt-secret = "${secret}"$`, "m"));
      assert.deepEqual(await verifyJwt(result.apiToken, secret), { role: "kwuser" });
      assert.equal(await verifyJwt(await signJwt({ role: "kwuser" }, "a guessed secret"), secret), undefined);
      const [header, , signature] = result.apiToken.split(".");
      const body = btoa(JSON.stringify({ role: "postgres" })).replace(/=+$/, "");
      assert.equal(await verifyJwt(`${header}.${body}.${signature}`, secret), undefined, "tampered claims");

      const expiring = await setupDatabase({ ...config, api_token_expiry_days: 1 });
      const now = Date.now() / 1000;
      assert.deepEqual((await verifyJwt(expiring.apiToken, secret, now))?.role, "kwuser");
      assert.equal(await verifyJwt(expiring.apiToken, secret, now + 2 * 86400), undefined);
    });

    await t.step("a token naming any other role cannot be used: the authenticator cannot switch to it", async () => {
      // PostgREST's own connection, from the db-uri printed by setup-db.
      const uri = (await setupDatabase(config)).postgrestConfig.match(/^db-uri = "(.*)"$/m)?.[1];
      assert.ok(uri);
      const authenticator = postgres(uri, { max: 1, onnotice: () => {} });
      try {
        const roles = await pg.admin("kwdb")<{ rolname: string }[]>`
          SELECT rolname FROM pg_roles WHERE rolname NOT IN ('kwuser', 'kwuser_ro')`;
        assert.ok(roles.length > 5);
        for (const { rolname } of roles) {
          await assert.rejects(
            authenticator.begin(async (tx) => await tx.unsafe(`SET LOCAL ROLE "${rolname}"`)),
            (e: { code?: string }) => e.code === "42501",
            rolname,
          );
        }
        for (const allowed of ["kwuser", "kwuser_ro"]) {
          await authenticator.begin(async (tx) => await tx.unsafe(`SET LOCAL ROLE ${allowed}`));
        }
      } finally {
        await authenticator.end();
      }
    });

    await t.step("the printed configuration puts PostgREST on 127.0.0.1 behind the proxy", async () => {
      const printed = await setupDatabase(config);
      assert.match(printed.postgrestConfig, /^db-schemas = "api"$/m);
      assert.match(printed.postgrestConfig, /^db-anon-role = "kwuser_ro"$/m);
      assert.match(printed.postgrestConfig, /^server-host = "127.0.0.1"$/m);
      const [key] = await pg.admin("kwdb")<
        { value: string }[]
      >`SELECT value FROM kwollect_secrets WHERE name = 'proxy_key'`;
      assert.match(printed.reverseProxyConfig, /proxy_set_header X-Kwollect-Client \$remote_addr;/);
      assert.ok(printed.reverseProxyConfig.includes(`proxy_set_header X-Kwollect-Proxy-Key "${key!.value}";`));
    });

    await t.step("jobmetrics_requests_path errors name the file and the line", async () => {
      const bad = `${dir}/bad.sql`;
      const cases: [string, RegExp][] = [
        ["SELECT 1 AS one\nSELECT nonsense FROM jobmetrics\n", /line 2: column "nonsense" does not exist/],
        ["SELECT device_id FROM jobmetrics LIMIT 1\n", /line 1: columns must be numbers, not device_id \(text\)/],
      ];
      for (const [text, message] of cases) {
        await Deno.writeTextFile(bad, text);
        await assert.rejects(setupDatabase({ ...config, jobmetrics_requests_path: bad }), (e: Error) => {
          assert.ok(
            e.message.startsWith(`Invalid jobmetrics_requests_path '${bad}': jobmetrics request on line`),
            e.message,
          );
          assert.match(e.message, message);
          return true;
        });
      }
      await assert.rejects(
        setupDatabase({ ...config, jobmetrics_requests_path: `${dir}/none.sql` }),
        /Cannot read jobmetrics_requests_path/,
      );
      const admin = pg.admin("kwdb");
      const kept = await admin`SELECT line, request FROM kwollect_jobmetrics_requests`;
      assert.deepEqual([...kept], [{ line: 2, request: "SELECT count(*) AS samples FROM jobmetrics" }]);
      await setupDatabase({ ...config, jobmetrics_requests_path: "" });
      assert.equal((await admin`SELECT * FROM kwollect_jobmetrics_requests`).length, 1, "no path keeps the requests");
      await Deno.writeTextFile(bad, "-- none for now\n");
      await setupDatabase({ ...config, jobmetrics_requests_path: bad });
      assert.equal((await admin`SELECT * FROM kwollect_jobmetrics_requests`).length, 0, "an empty file clears them");
    });

    await t.step(
      "archive_path without TimescaleDB is reported, and TimescaleDB arriving later keeps the plain schema",
      async () => {
        const lines: string[] = [];
        setLogSink((line) => lines.push(line));
        try {
          await setupDatabase({ ...config, archive_path: dir });
          assert.ok(
            lines.some((l) => l.includes("archive_path is set but TimescaleDB is not in use: nothing is archived")),
          );
          if (timescaleAvailable()) {
            await pg.psql("ALTER SYSTEM SET shared_preload_libraries = 'timescaledb'");
            await pg.stop();
            await pg.start();
            const again = await setupDatabase(config);
            assert.equal(again.timescaledb, false);
            assert.ok(
              lines.some((l) => l.includes("this database was set up without it: keeping plain PostgreSQL tables")),
            );
          }
          const admin = pg.admin("kwdb");
          await loadFixture(admin);
          const rows = await rpc(pg.admin("kwdb"), "get_metrics", {
            devices: "node-3",
            start_time: at(0),
            end_time: at(0),
            summary: "1",
          });
          assert.equal(rows.length, 2);
        } finally {
          setLogSink((line) => console.error(line));
        }
      },
    );
  } finally {
    await destroyPostgres(pg);
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("every sql/NNNN_*.sql file is a listed migration, in order", async () => {
  const files: string[] = [];
  for await (const e of Deno.readDir(new URL("../../sql/", import.meta.url))) {
    if (/^\d{4}_.*\.sql$/.test(e.name)) files.push(e.name.replace(/\.sql$/, ""));
  }
  assert.deepEqual(MIGRATIONS.map((m) => m.name), files.sort());
  MIGRATIONS.forEach((m, i) => assert.equal(m.name.slice(0, 4), String(i + 1).padStart(4, "0")));
});

Deno.test("setup-db on plain PostgreSQL is idempotent, upgrades, and issues tokens as PostgREST expects", async (t) => {
  await setupSuite("plain", t);
});

Deno.test({
  name: "setup-db on TimescaleDB is idempotent and upgrades",
  ignore: !timescaleAvailable(),
  fn: async (t) => {
    await setupSuite("timescaledb", t);
  },
});
