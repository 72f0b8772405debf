/**
 * The no-loss promise under real faults, with the collector as a separate process: the central
 * PostgreSQL stopped and restarted mid-stream, the collector killed with SIGKILL at random
 * moments and exactly between the central COMMIT and the local delete. Every sample is counted.
 */
import assert from "node:assert/strict";
import { destroyPostgres, type PgCluster } from "../../scripts/peers/postgres.ts";
import { startCentral } from "../../scripts/peers/central.ts";
import { startCountingExporter } from "../../scripts/peers/prometheus_exporter.ts";
import { kwollector, sleep, startCollector, within } from "../../scripts/harness/collector.ts";
import { spoolStats } from "../../scripts/torture/delivery_check.ts";
import { writeRig } from "../../scripts/torture/rig.ts";
import { openSpool } from "../../src/spool/spool.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";

async function centralValues(pg: PgCluster): Promise<number[]> {
  const sql = pg.admin("kwdb");
  const rows = await sql<
    { value: number }[]
  >`SELECT value FROM metrics WHERE metric_id = 'prom_scrape_count' ORDER BY value`;
  return rows.map((r) => r.value);
}

async function ledgerChecks(pg: PgCluster, spoolPath: string) {
  const sql = pg.admin("kwdb");
  const { spoolId, nextSeq, rows } = spoolStats(spoolPath);
  const [gaps] = await sql`SELECT count(*)::int AS n FROM kwollect_ledger_gaps WHERE spool_id = ${spoolId}`;
  const [d] = await sql`SELECT coalesce(sum(rows), 0)::int AS rows, coalesce(max(last_seq), 0)::int AS last
                        FROM kwollect_ledger WHERE spool_id = ${spoolId}`;
  const [central] = await sql`SELECT count(*)::int AS n FROM metrics`;
  return { gaps: gaps!.n, ledgerRows: d!.rows, lastSeq: d!.last, nextSeq, spoolRows: rows, centralRows: central!.n };
}

function assertExactlyOnce(values: number[]) {
  const dups = values.filter((v, i) => i > 0 && values[i - 1] === v);
  assert.deepEqual(dups, [], "duplicated samples in the central table");
}

Deno.test({
  name: "collector loses and duplicates nothing while PostgreSQL is stopped and restarted mid-stream",
  fn: async () => {
    const pg = await startCentral({ timescaledb: false });
    const exporter = startCountingExporter();
    try {
      const { config, spoolPath } = await writeRig({ pg, exporter });
      const collector = startCollector(["run", config]);
      await sleep(2000);
      await pg.stop();
      await sleep(4000);
      const status = await kwollector(["status", config, "--json"]);
      assert.equal(status.code, 0);
      const during = JSON.parse(status.stdout);
      assert.ok(during.spool_rows >= 5, `backlog during the outage: ${during.spool_rows}`);
      assert.ok(during.oldest_unsent_age_s > 1);
      assert.equal(during.devices[0].device_id, "exporter-1");
      await pg.start();
      await sleep(3000);
      const code = await collector.stop();
      assert.equal(code.code, 0, collector.logs().join("\n"));
      const flush = await kwollector(["flush", config, "--timeout_s", "30"]);
      assert.equal(flush.code, 0, flush.stderr);
      const values = await centralValues(pg);
      const served = exporter.served();
      const logs = collector.logs().join("\n");
      assertExactlyOnce(values);
      const check = await ledgerChecks(pg, spoolPath);
      assert.equal(check.gaps, 0, "the ledger has a gap");
      assert.equal(check.lastSeq, check.nextSeq - 1, "every seq the spool assigned is in the ledger");
      assert.equal(check.ledgerRows, check.centralRows);
      if (!logs.includes("Device poll failing")) {
        assert.deepEqual(values, Array.from({ length: served }, (_, i) => i + 1), "every served value exactly once");
      } else {
        // A poll that timed out on a loaded machine was served but never received: it cannot
        // be in the spool. Everything that reached the spool is in the ledger (checked above).
        assert.ok(values.length >= served * 0.8, `${values.length} of ${served} served values stored`);
      }
      assert.ok(served >= 50, `served ${served}`);
      assert.match(logs, /Central database unreachable/);
      assert.match(logs, /Central database reachable again/);
      assert.ok(!logs.includes("changeme"), "a password reached the log");
    } finally {
      await exporter.close();
      await destroyPostgres(pg);
    }
  },
});

Deno.test({
  name:
    "collector killed with SIGKILL 24 times, 8 of them between central COMMIT and local delete, leaves no duplicate and no gap",
  fn: async () => {
    const pg = await startCentral({ timescaledb: false });
    const exporter = startCountingExporter();
    try {
      const { config, spoolPath } = await writeRig({ pg, exporter, settings: { forward_batch_rows: 7 } });
      let seed = 20261125;
      const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
      let failpointKills = 0;
      for (let round = 0; round < 24; round++) {
        const atCommit = round % 3 === 0;
        const env: Record<string, string> = atCommit
          ? { KWOLLECTOR_FAILPOINT: `after-central-commit@${1 + (round % 4)}` }
          : {};
        const collector = startCollector(["run", config], { env });
        if (atCommit) {
          const status = await within(collector.status, 15_000);
          assert.ok(status && status.signal === "SIGKILL", `round ${round}: the failpoint did not fire`);
          failpointKills++;
          await collector.stop();
        } else {
          await sleep(150 + random() * 1200);
          const status = await collector.stop("SIGKILL");
          assert.equal(status.signal, "SIGKILL");
        }
      }
      assert.equal(failpointKills, 8);
      // A last life long enough for the exporter to have served 120 scrapes in all, however slow
      // the machine made the short lives above (a life killed before its first poll adds none).
      const last = startCollector(["run", config]);
      await sleep(1500);
      for (let waited = 0; exporter.served() < 120 && waited < 30_000; waited += 100) await sleep(100);
      assert.equal((await last.stop()).code, 0);
      const flush = await kwollector(["flush", config, "--timeout_s", "30"]);
      assert.equal(flush.code, 0, flush.stderr);
      const values = await centralValues(pg);
      assertExactlyOnce(values);
      const check = await ledgerChecks(pg, spoolPath);
      assert.equal(check.gaps, 0, "the ledger has a gap");
      assert.equal(check.spoolRows, 0);
      assert.equal(check.lastSeq, check.nextSeq - 1, "every seq the spool assigned is in the ledger");
      assert.equal(check.ledgerRows, check.centralRows, "every ledger row's samples are in metrics, once");
      assert.equal(check.centralRows, values.length);
      assert.ok(values.length > 100, `only ${values.length} samples`);
    } finally {
      await exporter.close();
      await destroyPostgres(pg);
    }
  },
});

Deno.test("flush exits 3 when the central database is unreachable and keeps the spool", async () => {
  const dir = await tempDir("kwollector-test-");
  const spool = openSpool({
    path: `${dir}/spool.db`,
    maxBytes: 1 << 30,
    fullPolicy: "drop_oldest",
    synchronous: "full",
    commitIntervalMs: 1,
  });
  await spool.writer.append([{ timestampMs: Date.now(), deviceId: "d", metricId: "m", value: 1, labels: {} }]);
  spool.close();
  const flush = await kwollector([
    "flush",
    "--spool_path",
    `${dir}/spool.db`,
    "--db_host",
    "127.0.0.1",
    "--db_port",
    "1",
    "--timeout_s",
    "1.5",
  ]);
  assert.equal(flush.code, 3, flush.stderr);
  assert.match(flush.stderr, /1 samples left/);
  const status = await kwollector(["status", "--spool_path", `${dir}/spool.db`, "--json"]);
  assert.equal(JSON.parse(status.stdout).spool_rows, 1);
});

Deno.test("check reports every configuration error with file, line and key, and exits 2", async () => {
  const dir = await tempDir("kwollector-test-");
  await Deno.mkdir(`${dir}/metrics.d`);
  await Deno.writeTextFile(
    `${dir}/metrics.d/pdu.yaml`,
    "- name: power\n  device_id: pdu-1\n  url: snmpx://public@pdu/1.3.6\n- name: load\n  device_id: n\n  url: prometheus://n/node_load1\n  update_every: fast\n",
  );
  await Deno.writeTextFile(`${dir}/k.yaml`, `metrics_dir: ${dir}/metrics.d\ndb_pasword: x\n`);
  const bad = await kwollector(["check", `${dir}/k.yaml`]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, new RegExp(`${dir}/k.yaml:2: db_pasword: Unknown key`));
  await Deno.writeTextFile(`${dir}/k.yaml`, `metrics_dir: ${dir}/metrics.d\n`);
  const entries = await kwollector(["check", `${dir}/k.yaml`]);
  assert.equal(entries.code, 2);
  assert.match(entries.stderr, new RegExp(`${dir}/metrics.d/pdu.yaml:1: url: Unsupported protocol 'snmpx'`));
  assert.match(entries.stderr, new RegExp(`${dir}/metrics.d/pdu.yaml:7: update_every: Invalid value "fast"`));
  const run = await kwollector(["run", `${dir}/k.yaml`, "--spool_path", `${dir}/s.db`, "--no-such-flag", "1"]);
  assert.equal(run.code, 2);
  assert.match(run.stderr, /no-such-flag/);
});

Deno.test("check --probe --json prints one sample per line without spooling", async () => {
  const exporter = startCountingExporter({ extraLines: ['node_temp{sensor="cpu"} 41.5'] });
  try {
    const dir = await tempDir("kwollector-test-");
    await Deno.mkdir(`${dir}/metrics.d`);
    await Deno.writeTextFile(
      `${dir}/metrics.d/e.yaml`,
      `- name: t\n  device_id: node-3\n  url: prometheus://127.0.0.1:${exporter.port}/node_temp\n  scale_factor: 2\n`,
    );
    const out = await kwollector([
      "check",
      "--metrics_dir",
      `${dir}/metrics.d`,
      "--spool_path",
      `${dir}/s.db`,
      "--probe",
      "--json",
    ]);
    assert.equal(out.code, 0, out.stderr);
    const line = JSON.parse(out.stdout.trim());
    assert.equal(line.device_id, "node-3");
    assert.equal(line.metric_id, "prom_node_temp");
    assert.equal(line.value, 83);
    assert.deepEqual(line.labels, { sensor: "cpu" });
    assert.ok(!Number.isNaN(Date.parse(line.timestamp)));
    assert.throws(() => Deno.statSync(`${dir}/s.db`));
  } finally {
    await exporter.close();
  }
});
