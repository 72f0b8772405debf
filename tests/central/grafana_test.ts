/**
 * Every query of the Grafana dashboard, with Grafana's macros and template variables expanded as
 * its PostgreSQL datasource expands them, run as the datasource's read-only role.
 */
import assert from "node:assert/strict";
import { parse } from "yaml";
import { at, loadFixture, README_JOBMETRICS_REQUESTS } from "./fixture.ts";
import { request, startCentral } from "./harness.ts";

interface Target {
  rawSql: string;
  format: string;
}
interface Panel {
  title: string;
  targets: Target[];
}
interface Variable {
  name: string;
  type: string;
  query: string;
}
interface Dashboard {
  panels: Panel[];
  templating: { list: Variable[] };
}

const DASHBOARD = new URL("../../config/grafana/dashboards/kwollect.json", import.meta.url);

interface Context {
  fromS: number;
  toS: number;
  /** Multi-value variables (quoted lists) and single-value ones (the textbox). */
  vars: Record<string, string[] | string>;
}

function sqlString(v: string): string {
  return `'${v.replaceAll("'", "''")}'`;
}

/** Grafana's expansion for its PostgreSQL datasource. */
function expand(sql: string, ctx: Context): string {
  const iso = (s: number) => new Date(s * 1000).toISOString();
  const out = sql
    .replace(/\$__timeFilter\(([^)]+)\)/g, (_, col) => `${col} BETWEEN '${iso(ctx.fromS)}' AND '${iso(ctx.toS)}'`)
    .replace(/\$__timeFrom\(\)/g, `'${iso(ctx.fromS)}'`)
    .replace(/\$__timeTo\(\)/g, `'${iso(ctx.toS)}'`)
    .replace(/\$__unixEpochFrom\(\)/g, String(Math.floor(ctx.fromS)))
    .replace(/\$__unixEpochTo\(\)/g, String(Math.floor(ctx.toS)))
    .replace(/\$__interval_ms/g, String(Math.max(1, Math.round((ctx.toS - ctx.fromS) / 1000)) * 1000))
    .replace(/\$__interval/g, `${Math.max(1, Math.round((ctx.toS - ctx.fromS) / 1000))}s`)
    .replace(/\$\{(\w+)(?::(\w+))?\}|\$(\w+)/g, (whole, braced, format, bare) => {
      const name = braced ?? bare;
      const value = ctx.vars[name];
      if (value === undefined) return whole;
      const values = Array.isArray(value) ? value : [value];
      switch (format ?? (Array.isArray(value) ? "sqlstring" : "raw")) {
        case "sqlstring":
          return values.map(sqlString).join(",");
        case "csv":
          return values.join(",");
        case "raw":
          return values.join(",");
        default:
          throw new Error(`Unsupported variable format ${format} in ${whole}`);
      }
    });
  assert.doesNotMatch(out, /\$__|\$\{|\$[a-z_]+\b/, `unexpanded macro or variable in:\n${out}`);
  return out;
}

Deno.test("every dashboard query runs with macros expanded and returns the expected columns", async (t) => {
  const dashboard = JSON.parse(await Deno.readTextFile(DASHBOARD)) as Dashboard;
  const dir = await Deno.makeTempDir({ prefix: "kwollector-grafana-" });
  await Deno.writeTextFile(`${dir}/jobmetrics.sql`, README_JOBMETRICS_REQUESTS);
  const c = await startCentral("plain", { jobmetrics_requests_path: `${dir}/jobmetrics.sql` });
  try {
    await loadFixture(c.admin);
    const T0 = Date.parse(at(0)) / 1000;
    /** As Grafana runs them: as the datasource's role, kwuser_ro. */
    const run = async (
      sql: string,
      ctx: Context,
    ) => [...await request(c.authenticator, {}, (tx) => tx.unsafe(expand(sql, ctx)))];
    const variable = (name: string) => dashboard.templating.list.find((v) => v.name === name)!;
    const panel = (title: string) => dashboard.panels.find((p) => p.title === title)!.targets[0]!;
    const selection = {
      device_id: ["node-1", "node-2"],
      metric_id: ["bmc_node_power_watt", "network_ifacein_bytes_total", "wattmetre_power_watt"],
    };
    const short: Context = { fromS: T0 - 900, toS: T0 + 630, vars: { job_str: "", ...selection } };
    const long: Context = { fromS: T0 - 3600, toS: T0 + 7200, vars: { job_str: "", ...selection } };

    await t.step("the job, device and metric variables are there, device and metric as queries", () => {
      assert.deepEqual(dashboard.templating.list.map((v) => [v.name, v.type]), [
        ["job_str", "textbox"],
        ["device_id", "query"],
        ["metric_id", "query"],
      ]);
      assert.equal(dashboard.panels.reduce((n, p) => n + p.targets.length, 0), 3, "every query is covered below");
    });

    await t.step("the device variable lists recent devices, or the job's nodes", async () => {
      const recent = await run(variable("device_id").query, short);
      assert.deepEqual(recent.map((r) => Object.keys(r)), [["device_id"]]);
      assert.deepEqual(recent.map((r) => r.device_id), ["node-1"]);
      const job = await run(variable("device_id").query, { ...short, vars: { ...short.vars, job_str: "7" } });
      assert.deepEqual(job.map((r) => r.device_id), ["node-1", "node-2"]);
      const hostile = await run(variable("device_id").query, {
        ...short,
        vars: { ...short.vars, job_str: "7' OR '1'='1" },
      });
      assert.deepEqual(hostile.map((r) => r.device_id), ["node-1"]);
    });

    await t.step("the metric variable lists the selected devices' metrics", async () => {
      const rows = await run(variable("metric_id").query, short);
      assert.deepEqual(rows.map((r) => Object.keys(r)), [["metric_id"]]);
      assert.deepEqual(rows.map((r) => r.metric_id), ["bmc_node_power_watt"]);
      const job = await run(variable("metric_id").query, {
        fromS: T0,
        toS: T0 + 110,
        vars: { job_str: "7", device_id: ["node-1", "node-2"] },
      });
      assert.deepEqual(job.map((r) => r.metric_id).sort(), ["bmc_node_power_watt", "network_ifaceout_bytes_total"]);
    });

    await t.step("up to 30 minutes the graph shows raw samples, counters as rates, aliases summed", async () => {
      const rows = await run(panel("Metrics").rawSql, short);
      assert.deepEqual(Object.keys(rows[0]!), ["time", "metric", "value"]);
      const series = (name: string) => rows.filter((r) => r.metric === name).map((r) => r.value);
      assert.deepEqual(series("node-1 bmc_node_power_watt"), [100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110]);
      assert.deepEqual(series("node-1 network_ifacein_bytes_total"), [10, 5, 10]);
      assert.deepEqual(series("node-2 wattmetre_power_watt"), [30, 33]);
    });

    await t.step("beyond 30 minutes the graph shows the 5-minute summary", async () => {
      const rows = await run(panel("Metrics").rawSql, long);
      const series = (name: string) => rows.filter((r) => r.metric === name).map((r) => r.value);
      assert.deepEqual(series("node-1 bmc_node_power_watt"), [102, 107, 110]);
      assert.deepEqual(series("node-2 wattmetre_power_watt"), [31.5]);
      assert.deepEqual(series("node-1 network_ifacein_bytes_total"), [], "one bucket gives no rate");
    });

    await t.step("the statistics table reads raw rows or the summary by range", async () => {
      const raw = await run(panel("Statistics over the range").rawSql, short);
      assert.deepEqual(Object.keys(raw[0]!), ["device_id", "metric_id", "min", "mean", "max", "samples"]);
      const power = raw.find((r) => r.metric_id === "bmc_node_power_watt")!;
      assert.deepEqual([power.min, power.mean, power.max, Number(power.samples)], [100, 105, 110, 11]);
      const summary = await run(panel("Statistics over the range").rawSql, long);
      const buckets = summary.find((r) => r.metric_id === "bmc_node_power_watt")!;
      assert.deepEqual([buckets.min, buckets.max, Number(buckets.samples)], [102, 110, 3]);
    });

    await t.step("the job table shows get_job_metrics for a job id, nothing otherwise", async () => {
      const target = panel("Job-wide metrics").rawSql;
      const rows = await run(target, { ...short, vars: { ...short.vars, job_str: "7" } });
      assert.deepEqual(Object.keys(rows[0]!), ["metric_id", "value"]);
      assert.equal(rows.length, 6);
      assert.deepEqual(await run(target, short), []);
      assert.deepEqual(await run(target, { ...short, vars: { ...short.vars, job_str: "1; DROP TABLE metrics" } }), []);
    });

    await t.step("the provisioning files point Grafana at the dashboard and the read-only role", async () => {
      const datasource = parse(
        await Deno.readTextFile(
          new URL("../../config/grafana/provisioning/datasources/kwollect.yaml", import.meta.url),
        ),
      ) as { datasources: { uid: string; type: string; user: string; jsonData: { database: string } }[] };
      const ds = datasource.datasources[0]!;
      assert.deepEqual([ds.uid, ds.type, ds.user, ds.jsonData.database], ["kwollect", "postgres", "kwuser_ro", "kwdb"]);
      const text = await Deno.readTextFile(DASHBOARD);
      assert.deepEqual([...new Set(text.match(/"uid": "[^"]+"/g))], ['"uid": "kwollect"']);
      const provider = parse(
        await Deno.readTextFile(new URL("../../config/grafana/provisioning/dashboards/kwollect.yaml", import.meta.url)),
      ) as { providers: { type: string; options: { path: string } }[] };
      assert.equal(provider.providers[0]!.type, "file");
    });
  } finally {
    await c.close();
    await Deno.remove(dir, { recursive: true });
  }
});
