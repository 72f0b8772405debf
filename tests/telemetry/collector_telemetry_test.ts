/**
 * The collector's own health, end to end: stored as samples of device `<edge_id>` in the central
 * table, served on the optional Prometheus endpoint, and accurate enough to plan by.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { setupDatabase } from "../../src/central/setup.ts";
import { openSpool } from "../../src/spool/spool.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { sleep, startCollector } from "../../scripts/harness/collector.ts";
import { startCountingExporter } from "../../scripts/peers/prometheus_exporter.ts";
import { destroyPostgres, freePort, startPostgres } from "../../scripts/peers/postgres.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";

async function writeRig(
  entries: { name: string; url: string; every: number }[],
  settings: Record<string, string | number>,
): Promise<{ dir: string; config: string }> {
  const dir = await tempDir("kwollector-telemetry-");
  await Deno.mkdir(`${dir}/metrics.d`);
  const yaml = entries.map((e) =>
    `- name: ${e.name}\n  device_id: node-1\n  url: ${e.url}\n  update_every: ${e.every}\n`
  ).join("");
  await Deno.writeTextFile(`${dir}/metrics.d/devices.yaml`, yaml);
  const config = `${dir}/kwollector.yaml`;
  const lines = Object.entries({ metrics_dir: `${dir}/metrics.d`, spool_path: `${dir}/spool/spool.db`, ...settings })
    .map(([k, v]) => `${k}: ${v}`);
  await Deno.writeTextFile(config, lines.join("\n") + "\n");
  return { dir, config };
}

/**
 * Makes a new, empty spool look a day old, as on a rack host: a sample stores its timestamp as
 * microseconds since the spool's creation, which takes a byte more as the spool ages (3 bytes in
 * the first 8 s, 4 up to 35 min, then 6 for years). The growth a prediction measures on a
 * brand-new spool would otherwise understate every later sample's size.
 */
function ageSpool(path: string): void {
  const spool = openSpool({
    path,
    maxBytes: 1 << 30,
    fullPolicy: "drop_oldest",
    synchronous: "full",
    commitIntervalMs: 10,
  });
  spool.close();
  const db = new DatabaseSync(path);
  db.prepare("UPDATE meta SET value = ? WHERE key = 'epoch_ms'").run(String(Date.now() - 86_400_000));
  db.close();
}

async function scrape(port: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const values = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    values.set(line.slice(0, at), line.slice(at + 1) === "+Inf" ? Infinity : Number(line.slice(at + 1)));
  }
  return values;
}

Deno.test({
  name: "collector stores its health as samples of its edge_id and serves the same figures on metrics_listen",
  fn: async () => {
    const pg = await startPostgres({ timescaledb: false });
    const exporter = startCountingExporter();
    const deadPort = freePort();
    const listenPort = freePort();
    try {
      const { dir, config } = await writeRig(
        [
          { name: "counter", url: `prometheus://127.0.0.1:${exporter.port}/scrape_count`, every: 200 },
          { name: "dead", url: `prometheus://127.0.0.1:${deadPort}/metrics`, every: 200 },
        ],
        {
          db_host: "127.0.0.1",
          db_port: pg.port,
          db_sslmode: "disable",
          edge_id: "rack-12-edge",
          telemetry_interval_ms: 500,
          metrics_listen: `127.0.0.1:${listenPort}`,
          forward_interval_ms: 100,
          log_level: "info",
        },
      );
      await setupDatabase(pgConfig(pg, dir));
      const collector = startCollector(["run", config]);
      await sleep(4000);
      const scraped = await scrape(listenPort);
      const other = await fetch(`http://127.0.0.1:${listenPort}/other`);
      await other.body?.cancel();
      assert.equal(other.status, 404);
      const stopped = await collector.stop();
      assert.equal(stopped.code, 0, collector.logs().join("\n"));

      const sql = pg.admin("kwdb");
      const rows = await sql<{ metric_id: string; labels: Record<string, string>; value: number }[]>`
        SELECT DISTINCT ON (metric_id, labels) metric_id, labels, value FROM metrics
        WHERE device_id = 'rack-12-edge' ORDER BY metric_id, labels, "timestamp" DESC`;
      const same = (a: Record<string, string>, b: Record<string, string>) =>
        JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());
      const latest = (metric: string, labels: Record<string, string> = {}) =>
        rows.find((r) => r.metric_id === metric && same(r.labels, labels))?.value;
      for (
        const metric of [
          "kwollector_spool_rows",
          "kwollector_spool_bytes",
          "kwollector_spool_free_bytes",
          "kwollector_oldest_unsent_age_seconds",
          "kwollector_ingest_samples_per_second",
          "kwollector_outage_budget_hours",
          "kwollector_rows_forwarded_total",
        ]
      ) assert.ok(latest(metric) !== undefined, `${metric} missing from the central table`);
      const ok = latest("kwollector_polls_total", { protocol: "prometheus", result: "ok" });
      const failed = latest("kwollector_polls_total", { protocol: "prometheus", result: "failed" });
      assert.ok(ok !== undefined && ok >= 5, `ok polls ${ok}`);
      assert.ok(failed !== undefined && failed >= 5, `failed polls ${failed}`);
      assert.equal(latest("kwollector_conditions_active", { condition: "device_poll_failing" }), 1);
      assert.ok(latest("kwollector_outage_budget_hours")! > 1, "a 2 GiB budget covers hours at this rate");

      // The endpoint shows the same figures, measured at its own moment (a little earlier).
      const scrapedOk = scraped.get('kwollector_polls_total{protocol="prometheus",result="ok"}');
      // Central samples lag the scrape by up to a telemetry interval, or lead it by the stop.
      assert.ok(
        scrapedOk !== undefined && Math.abs(scrapedOk - ok!) <= 5,
        `scraped ${scrapedOk} ok polls, stored ${ok}`,
      );
      assert.equal(scraped.get('kwollector_conditions_active{condition="device_poll_failing"}'), 1);
      assert.equal(scraped.get('kwollector_conditions_active{condition="central_unreachable"}'), 0);
      assert.ok((scraped.get("kwollector_rows_forwarded_total") ?? 0) > 0);

      // About 20 failed polls, one line when the failure started (it never ended).
      const logs = collector.logs();
      assert.equal(logs.filter((l) => l.includes("Device poll failing")).length, 1, logs.join("\n"));
      assert.equal(logs.filter((l) => l.includes("Device poll recovered")).length, 0);
      assert.ok(logs.some((l) => l.includes("Prometheus endpoint listening")));
    } finally {
      await exporter.close();
      await destroyPostgres(pg);
    }
  },
});

Deno.test({
  name: "outage budget hours predict within 10% how many samples fit before a full spool starts dropping",
  fn: async () => {
    // 1,000 series scraped 4 times a second fill a 2 MiB spool in about 20 s. The prediction is
    // checked in samples (hours × the ingest rate it was computed with, against the samples the
    // spool took until it was full), so a loaded machine that polls more slowly changes nothing.
    const series = Array.from({ length: 1000 }, (_, i) => `load{slot="${i}"} ${i}.5`).join("\n");
    const exporter = startCountingExporter({ extraLines: [`# TYPE load gauge\n${series}`] });
    const listenPort = freePort();
    const closedPort = freePort();
    try {
      const { config, dir } = await writeRig(
        [{ name: "load", url: `prometheus://127.0.0.1:${exporter.port}/load`, every: 250 }],
        {
          db_host: "127.0.0.1",
          db_port: closedPort,
          spool_max_bytes: 2 * 1024 * 1024,
          telemetry_interval_ms: 1000,
          metrics_listen: `127.0.0.1:${listenPort}`,
          log_level: "info",
        },
      );
      ageSpool(`${dir}/spool/spool.db`);
      const collector = startCollector(["run", config]);
      let measured: { rows: number; predictedSamples: number } | undefined;
      let mostRows = 0;
      let full = false;
      const started = performance.now();
      while (performance.now() - started < 120_000 && !full) {
        await sleep(250);
        const m = await scrape(listenPort).catch(() => new Map<string, number>());
        const rows = m.get("kwollector_spool_rows") ?? 0;
        full = collector.logs().some((l) => l.includes("Spool full"));
        if (!full) mostRows = Math.max(mostRows, rows);
        // Once the spool holds enough samples to measure their size (two growth windows: the first
        // one pays for the series dictionary), read the prediction.
        if (measured === undefined && rows >= 30_000 && m.has("kwollector_outage_budget_hours")) {
          const hours = m.get("kwollector_outage_budget_hours")!;
          const rate = m.get("kwollector_ingest_samples_per_second")!;
          measured = { rows, predictedSamples: hours * 3600 * rate };
        }
      }
      await collector.stop();
      assert.ok(measured !== undefined && full, collector.logs().join("\n"));
      const actual = mostRows - measured.rows;
      assert.ok(
        Math.abs(actual - measured.predictedSamples) <= 0.1 * actual,
        `predicted room for ${Math.round(measured.predictedSamples)} more samples, the spool took ${actual}`,
      );
    } finally {
      await exporter.close();
    }
  },
});
