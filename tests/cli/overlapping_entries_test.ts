/**
 * Grid'5000's node files carry two optional entries on one node exporter: prom_default_metrics (a
 * list of names) and prom_all_metrics (everything). With both promoted, each exporter line must
 * reach the central table once per scrape, as with Kwollect. The real collector process polls a
 * counting exporter whose every line carries the scrape's number, and the central PostgreSQL
 * table is counted per scrape.
 */
import assert from "node:assert/strict";
import { finalDrain, sleep, startCollector } from "../../scripts/harness/collector.ts";
import { startCentral } from "../../scripts/peers/central.ts";
import { destroyPostgres } from "../../scripts/peers/postgres.ts";
import { startCountingExporter } from "../../scripts/peers/prometheus_exporter.ts";
import { checkDelivery } from "../../scripts/torture/delivery_check.ts";
import { writeRig } from "../../scripts/torture/rig.ts";

Deno.test("two overlapping promoted Prometheus entries store each exporter line once per scrape", async () => {
  const pg = await startCentral();
  const exporter = startCountingExporter({ series: 4 });
  try {
    const rig = await writeRig({ pg, exporter, settings: { promoted_refresh_ms: 200 } });
    const url = `prometheus://127.0.0.1:${exporter.port}`;
    await Deno.writeTextFile(
      `${rig.dir}/metrics.d/exporter.yaml`,
      [
        "- name: prom_default_metrics",
        "  device_id: exporter-1",
        `  url: ${url}/scrape_count-node_load1`,
        "  labels: {}",
        "  update_every: 200",
        "  optional: true",
        "",
        "- name: prom_all_metrics",
        "  device_id: exporter-1",
        `  url: ${url}/`,
        "  labels: {}",
        "  update_every: 200",
        "  optional: true",
        "",
      ].join("\n"),
    );
    const admin = pg.admin("kwdb");
    await admin`INSERT INTO promoted_metrics (device_id, metric_id) VALUES ('exporter-1', 'prom_')`;
    const collector = startCollector(["run", rig.config]);
    try {
      for (let i = 0; i < 300 && exporter.served() < 15; i++) await sleep(100);
      assert.ok(exporter.served() >= 15, `${exporter.served()} scrapes: ${collector.logs().join("\n")}`);
    } finally {
      const problems = await finalDrain(collector, rig.config);
      assert.deepEqual(problems, [], collector.logs().join("\n"));
    }
    const check = await checkDelivery(pg, rig.spoolPath, exporter);
    assert.deepEqual(check.problems, []);
    assert.deepEqual(check.missingValues, []);
    assert.equal(check.duplicateRows, 0);
    assert.equal(check.partialPolls, 0, "every scrape stored exactly its 4 lines");
    const [rows] = await admin<{ n: number; scrapes: number }[]>`
      SELECT count(*)::int AS n, count(DISTINCT value)::int AS scrapes FROM metrics WHERE device_id = 'exporter-1'`;
    assert.equal(rows!.scrapes, check.served);
    assert.equal(rows!.n, 4 * check.served);
  } finally {
    await exporter.close();
    await destroyPostgres(pg);
  }
});
