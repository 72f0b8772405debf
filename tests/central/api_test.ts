/**
 * The API functions of schema api, called as PostgREST calls them, over known-answer data, on
 * plain PostgreSQL and on TimescaleDB.
 */
import assert from "node:assert/strict";
import {
  type Backend,
  type Central,
  pgError,
  request,
  rpc,
  rpcBody,
  startCentral,
  timescaleAvailable,
  withToken,
} from "./harness.ts";
import { at, fixtureRows, loadFixture, README_JOBMETRICS_REQUESTS, T0_EPOCH } from "./fixture.ts";

type Row = Record<string, unknown>;

/** [ISO time, device, metric, value] of each row, for comparisons. */
function tuples(rows: Row[]): [string, string, string, number | null][] {
  return rows.map((
    r,
  ) => [(r.timestamp as Date).toISOString(), r.device_id as string, r.metric_id as string, r.value as number | null]);
}

function close(actual: unknown, expected: number, what: string): void {
  assert.ok(typeof actual === "number" && Math.abs(actual - expected) < 1e-9, `${what}: ${actual} != ${expected}`);
}

async function proxyKey(c: Central): Promise<string> {
  const [row] = await c.admin<{ value: string }[]>`SELECT value FROM kwollect_secrets WHERE name = 'proxy_key'`;
  return row!.value;
}

async function apiSuite(backend: Backend, t: Deno.TestContext): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kwollector-api-" });
  const requests = `${dir}/jobmetrics.sql`;
  await Deno.writeTextFile(requests, README_JOBMETRICS_REQUESTS);
  const c = await startCentral(backend, { jobmetrics_requests_path: requests });
  const api = c.authenticator;
  try {
    await loadFixture(c.admin);

    await t.step("get_metrics with start_time only returns the five minutes after it, bounds included", async () => {
      const rows = await rpc(api, "get_metrics", {
        devices: "node-1",
        metrics: "bmc_node_power_watt",
        start_time: at(0),
      });
      assert.deepEqual(
        tuples(rows),
        [0, 1, 2, 3, 4, 5].map((k) => [at(k * 60), "node-1", "bmc_node_power_watt", 100 + k]),
      );
    });

    await t.step("get_metrics with end_time only returns the five minutes before it", async () => {
      const rows = await rpc(api, "get_metrics", {
        devices: "node-1",
        metrics: "bmc_node_power_watt",
        end_time: at(600),
      });
      assert.deepEqual(rows.map((r) => r.value), [105, 106, 107, 108, 109, 110]);
    });

    await t.step("get_metrics without times returns the last five minutes", async () => {
      const rows = await rpc(api, "get_metrics", { devices: "node-1", metrics: "bmc_node_power_watt" });
      assert.deepEqual(rows.map((r) => r.value), [7]);
    });

    await t.step("get_metrics reads epoch seconds, fractions included", async () => {
      const rows = await rpc(api, "get_metrics", {
        devices: "node-1",
        metrics: "network_ifacein_bytes_total",
        start_time: String(T0_EPOCH),
        end_time: String(T0_EPOCH + 10.5),
      });
      assert.deepEqual(rows.map((r) => r.value), [100, 200]);
    });

    await t.step("get_metrics merges nodes and devices, cuts FQDNs and orders by time", async () => {
      const rows = await rpc(api, "get_metrics", {
        nodes: "node-1.lyon.grid5000.fr",
        devices: " node-3 ,",
        metrics: "bmc_node_power_watt, temp_celsius",
        start_time: at(0),
        end_time: at(60),
      });
      assert.deepEqual(tuples(rows), [
        [at(0), "node-1", "bmc_node_power_watt", 100],
        [at(0), "node-3", "temp_celsius", 1],
        [at(60), "node-1", "bmc_node_power_watt", 101],
        [at(60), "node-3", "temp_celsius", 2],
      ]);
      assert.deepEqual(rows[1]!.labels, { sensor: "a", _metric_scrape_time: T0_EPOCH + 0.25 });
    });

    await t.step("get_metrics sums a timestamp's alias rows and lists their sources", async () => {
      const rows = await rpc(api, "get_metrics", {
        devices: "node-2",
        metrics: "wattmetre_power_watt",
        start_time: at(0),
        end_time: at(1),
      });
      assert.deepEqual(tuples(rows), [[at(0), "node-2", "wattmetre_power_watt", 30], [
        at(1),
        "node-2",
        "wattmetre_power_watt",
        33,
      ]]);
      for (const r of rows) assert.deepEqual(r.labels, { _device_orig: ["wattmetre1-port1", "wattmetre1-port2"] });
      const port = await rpc(api, "get_metrics", { devices: "wattmetre1-port1", start_time: at(0), end_time: at(1) });
      assert.deepEqual(port.map((r) => [r.value, r.labels]), [[10, {}], [11, {}]]);
    });

    await t.step("get_metrics takes the window and nodes of a finished job, unless given", async () => {
      const rows = await rpc(api, "get_metrics", { job_id: "7" });
      const expected = fixtureRows().filter((r) => ["node-1", "node-2"].includes(r.device) && r.t <= 120).length + 2;
      assert.equal(rows.length, expected);
      assert.deepEqual(new Set(rows.map((r) => r.device_id)), new Set(["node-1", "node-2"]));
      assert.equal((rows[0]!.timestamp as Date).toISOString(), at(0));
      assert.equal((rows.at(-1)!.timestamp as Date).toISOString(), at(120));
      const later = await rpc(api, "get_metrics", { job_id: "7", start_time: at(60), metrics: "bmc_node_power_watt" });
      assert.deepEqual(later.map((r) => r.value), [101, 102]);
      const other = await rpc(api, "get_metrics", { job_id: "7", devices: "node-3", metrics: "temp_celsius" });
      assert.deepEqual(other.map((r) => r.value), [1, 2, 3]);
    });

    await t.step("get_metrics of a job whose nodes are FQDNs returns the host names' metrics", async () => {
      const rows = await rpc(api, "get_metrics", { job_id: "9" });
      assert.equal(rows.length, 10);
      assert.deepEqual(new Set(rows.map((r) => r.device_id)), new Set(["node-3"]));
      assert.deepEqual(new Set(rows.map((r) => r.metric_id)), new Set(["temp_celsius", "energy_joules_total"]));
      const view = await request(
        api,
        {},
        (tx) =>
          tx<{ n: number }[]>`SELECT count(*)::int AS n FROM metrics_by_job WHERE job_id = 9 AND device_id = 'node-3'`,
      );
      assert.equal(view[0]!.n, 10);
      const available = await rpc(api, "available_metrics", { at: at(30), params: { job_id: "9" } });
      assert.deepEqual(available.map((r) => `${r.device_id} ${r.metric_id}`), [
        "node-3 energy_joules_total",
        "node-3 temp_celsius",
      ]);
    });

    await t.step("get_metrics answers positional calls in Kwollect's parameter order", async () => {
      const call = (args: string, params: unknown[]) =>
        request(api, {}, (tx) =>
          tx.unsafe<{ timestamp: Date; device_id: string; metric_id: string; value: number }[]>(
            `SELECT * FROM api.get_metrics(${args})`,
            params as never[],
          ));
      // get_metrics(job_id, nodes, devices, metrics, start_time, end_time, summary, as_rate)
      const job = await call("7", []);
      assert.equal(job.length, (await rpc(api, "get_metrics", { job_id: "7" })).length);
      const window = await call("NULL, $1, NULL, $2, $3, $4", ["node-1", "bmc_node_power_watt", at(0), at(120)]);
      assert.deepEqual(window.map((r) => r.value), [100, 101, 102]);
      const devices = await call("NULL, NULL, 'node-3', 'temp_celsius', $1, $2, true", [at(0), at(600)]);
      assert.deepEqual(devices.map((r) => r.value), [3, 10]);
      const rates = await call("NULL, 'node-1', NULL, 'network_ifacein_bytes_total', $1, $2, false, 'true'", [
        at(0),
        at(30),
      ]);
      assert.deepEqual(rates.map((r) => r.value), [null, 10, 5, 10]);
      const named = await call("job_id => 7, metrics => 'bmc_node_power_watt', start_time => $1", [at(60)]);
      assert.deepEqual(named.map((r) => r.value), [101, 102]);
    });

    await t.step("get_metrics of a running job ends now", async () => {
      const rows = await rpc(api, "get_metrics", { job_id: "8" });
      assert.deepEqual(rows.map((r) => [r.device_id, r.value]), [["node-4", 40]]);
    });

    await t.step("get_metrics of an unknown job is a 404 error", async () => {
      const e = await pgError(rpc(api, "get_metrics", { job_id: "99" }));
      assert.equal(e.code, "P0002");
      assert.match(e.message, /Unknown job_id 99/);
    });

    await t.step("as_rate=1 gives per-second rates of every series across a counter reset", async () => {
      for (const asRate of ["1", "true", "on", "yes"]) {
        const rows = await rpc(api, "get_metrics", {
          devices: "node-1",
          metrics: "network_ifacein_bytes_total",
          start_time: at(0),
          end_time: at(30),
          as_rate: asRate,
        });
        assert.deepEqual(rows.map((r) => r.value), [null, 10, 5, 10]);
      }
      const power = await rpc(api, "get_metrics", {
        devices: "node-1",
        metrics: "bmc_node_power_watt",
        start_time: at(0),
        end_time: at(60),
        as_rate: "1",
      });
      assert.deepEqual(power.map((r) => r.value), [null, 1 / 60]);
    });

    await t.step("as_rate after a second counter reset is the new value per second", async () => {
      await c.admin`INSERT INTO metrics ("timestamp", device_id, metric_id, value)
        SELECT to_timestamp(${T0_EPOCH} + 10 * k), 'node-11', 'x_bytes_total', v
        FROM unnest(ARRAY[100, 200, 50, 150, 20]) WITH ORDINALITY u(v, k)`;
      const rows = await rpc(api, "get_metrics", {
        devices: "node-11",
        start_time: String(T0_EPOCH),
        end_time: String(T0_EPOCH + 60),
        as_rate: "1",
      });
      // Kwollect's running MAX gives (200 - 150 + 20) / 10 = 7 for the last one.
      assert.deepEqual(rows.map((r) => r.value), [null, 10, 5, 10, 2]);
      await c.admin`DELETE FROM metrics WHERE device_id = 'node-11'`;
    });

    await t.step("as_rate=auto gives rates of _total counters only", async () => {
      const rows = await rpc(api, "get_metrics", {
        devices: "node-1",
        metrics: "bmc_node_power_watt,network_ifacein_bytes_total",
        start_time: at(0),
        end_time: at(60),
        as_rate: "auto",
      });
      assert.deepEqual(rows.map((r) => [r.metric_id, r.value]), [
        ["bmc_node_power_watt", 100],
        ["network_ifacein_bytes_total", null],
        ["network_ifacein_bytes_total", 10],
        ["network_ifacein_bytes_total", 5],
        ["network_ifacein_bytes_total", 10],
        ["bmc_node_power_watt", 101],
      ]);
    });

    await t.step("summary=true returns 5-minute MAX of counters, AVG of the rest, without scrape times", async () => {
      for (const summary of ["true", "1"]) {
        const rows = await rpc(api, "get_metrics", {
          devices: "node-3",
          start_time: at(0),
          end_time: at(600),
          summary,
        });
        assert.deepEqual(tuples(rows), [
          [at(0), "node-3", "energy_joules_total", 50],
          [at(0), "node-3", "temp_celsius", 3],
          [at(300), "node-3", "temp_celsius", 10],
        ]);
        assert.deepEqual(rows.map((r) => r.labels), [{}, { sensor: "a" }, { sensor: "a" }]);
      }
      const alias = await rpc(api, "get_metrics", {
        devices: "node-2",
        metrics: "wattmetre_power_watt",
        start_time: at(0),
        end_time: at(0),
        summary: "true",
      });
      assert.deepEqual(alias.map((r) => [r.value, r.labels]), [[31.5, {
        _device_orig: ["wattmetre1-port1", "wattmetre1-port2"],
      }]]);
    });

    await t.step("get_metrics refuses missing devices, unreadable times and reversed windows", async () => {
      const missing = await pgError(rpc(api, "get_metrics", { metrics: "x" }));
      assert.equal(missing.code, "22023");
      assert.match(missing.message, /Missing 'devices', 'nodes' or 'job_id' argument/);
      const time = await pgError(rpc(api, "get_metrics", { devices: "node-1", start_time: "yesterday-ish" }));
      assert.equal(time.code, "22023");
      assert.match(time.message, /Cannot parse start_time 'yesterday-ish'/);
      const reversed = await pgError(
        rpc(api, "get_metrics", { devices: "node-1", start_time: at(60), end_time: at(0) }),
      );
      assert.equal(reversed.code, "22023");
      const rate = await pgError(rpc(api, "get_metrics", { devices: "node-1", as_rate: "sometimes" }));
      assert.match(rate.message, /Invalid as_rate 'sometimes'/);
    });

    await t.step("a request that hits the statement timeout gets a clear error", async () => {
      await c.admin.begin(async (tx) => {
        await tx`LOCK TABLE metrics IN ACCESS EXCLUSIVE MODE`;
        const e = await pgError(rpc(api, "get_metrics", { devices: "node-1" }, { statementTimeoutMs: 300 }));
        assert.equal(e.code, "57014");
        assert.equal(e.message, "Request timeout, too much data to process");
      });
    });

    await t.step("available_metrics lists the last minute's pairs in natural device order", async () => {
      const rows = await rpc(api, "available_metrics", { at: at(30) });
      assert.deepEqual(rows.map((r) => `${r.device_id} ${r.metric_id}`), [
        "node-1 bmc_node_power_watt",
        "node-1 network_ifacein_bytes_total",
        "node-1 prom_node_cpu_seconds_total",
        "node-2 network_ifaceout_bytes_total",
        "node-2 wattmetre_power_watt",
        "node-3 energy_joules_total",
        "node-3 temp_celsius",
        "node-10 fan_rpm",
        "wattmetre1-port1 wattmetre_power_watt",
        "wattmetre1-port2 wattmetre_power_watt",
      ]);
      const some = await rpc(api, "available_metrics", { at: at(30), params: JSON.stringify({ devices: ["node-2"] }) });
      assert.deepEqual(some.map((r) => r.metric_id), ["network_ifaceout_bytes_total", "wattmetre_power_watt"]);
      const job = await rpc(api, "available_metrics", { at: at(30), params: { job_id: "7" } });
      assert.deepEqual(new Set(job.map((r) => r.device_id)), new Set(["node-1", "node-2"]));
      const noJob = await rpc(api, "available_metrics", { at: at(30), params: { job_id: "" } });
      assert.equal(noJob.length, rows.length);
      const e = await pgError(rpc(api, "available_metrics", { params: JSON.stringify({ devices: "node-2" }) }));
      assert.match(e.message, /Cannot parse params->devices, should be JSON array/);
    });

    await t.step("insert_metrics with the token inserts one object or an array", async () => {
      const one = await rpcBody(api, "insert_metrics", {
        timestamp: "2020-01-06 14:00:00+00",
        device_id: "node-5",
        metric_id: "example_metric",
        value: 42,
      }, withToken());
      assert.deepEqual(tuples(one), [["2020-01-06T14:00:00.000Z", "node-5", "example_metric", 42]]);
      const many = await rpcBody(api, "insert_metrics", [
        { device_id: "node-6", metric_id: "example_metric1", value: 42, timestamp: 1700000000 },
        { device_id: "node-6", metric_id: "example_metric2", labels: { _device_alias: "node-7" } },
      ], withToken());
      assert.equal(many.length, 2);
      assert.equal((many[0]!.timestamp as Date).toISOString(), "2023-11-14T22:13:20.000Z");
      assert.ok(Number.isNaN(many[1]!.value as number));
      const [stored] = await c.admin`SELECT count(*)::int AS n FROM metrics WHERE device_id IN ('node-5', 'node-6')`;
      assert.equal(stored!.n, 3);
    });

    await t.step("insert_metrics takes the Kwollect README's bodies as written, and one in SQL", async () => {
      const one = await rpcBody(api, "insert_metrics", {
        "timestamp": "2020-01-06 14:00:00",
        "device_id": "node-1",
        "metric_id": "example_metric",
        "value": 42,
      }, withToken());
      const [local] = await c.admin<{ t: Date }[]>`SELECT '2020-01-06 14:00:00'::timestamptz AS t`;
      assert.deepEqual(one.map((r) => [r.timestamp, r.device_id, r.value]), [[local!.t, "node-1", 42]]);
      const many = await rpcBody(api, "insert_metrics", [
        { "device_id": "node-2", "metric_id": "example_metric1", "value": 42 },
        { "device_id": "node-2", "metric_id": "example_metric2", "value": 22 },
      ], withToken());
      assert.deepEqual(many.map((r) => [r.metric_id, r.value]), [["example_metric1", 42], ["example_metric2", 22]]);
      const sql = await request(
        api,
        withToken(),
        (tx) =>
          tx`SELECT * FROM api.insert_metrics(${
            JSON.stringify({ device_id: "node-3", metric_id: "m", value: 1 })
          }::text::jsonb)`,
      );
      assert.deepEqual(sql.map((r) => [r.device_id, r.value]), [["node-3", 1]]);
      await c.admin`DELETE FROM metrics WHERE device_id IN ('node-1', 'node-2', 'node-3')
                      AND metric_id IN ('example_metric', 'example_metric1', 'example_metric2', 'm')`;
    });

    await t.step("insert_metrics names the item and key it cannot use", async () => {
      const cases: [unknown, RegExp][] = [
        [[{ device_id: "a", metric_id: "m" }, { device_id: "a" }], /item 2: 'metric_id' must be a non-empty string/],
        [{ device_id: "a", metric_id: "m", valeur: 1 }, /item 1: unknown key 'valeur'/],
        [{ device_id: "a", metric_id: "m", labels: [1] }, /'labels' must be a JSON object/],
        [{ device_id: "a", metric_id: "m", value: "high" }, /'value' must be a number, got "high"/],
        [{ device_id: "a", metric_id: "m", timestamp: "soon" }, /Cannot parse timestamp 'soon'/],
        ["text", /must be a JSON object or an array/],
      ];
      for (const [body, message] of cases) {
        const e = await pgError(rpcBody(api, "insert_metrics", body, withToken()));
        assert.equal(e.code, "22023");
        assert.match(e.message, message);
      }
    });

    await t.step("insert_user_metrics files a running job's node's metric under its own device id", async () => {
      const key = await proxyKey(c);
      await c.admin`INSERT INTO kwollect_node_addresses VALUES ('10.0.0.4', 'node-4'), ('10.0.0.1', 'node-1')`;
      const byAddress = await rpcBody(api, "insert_user_metrics", { metric_id: "my_custom_metric", value: 42 }, {
        headers: { "x-kwollect-proxy-key": key, "x-kwollect-client": "10.0.0.4" },
      });
      assert.deepEqual(byAddress.map((r) => [r.device_id, r.metric_id, r.value]), [["node-4", "my_custom_metric", 42]]);
      const byName = await rpcBody(api, "insert_user_metrics", [{ metric_id: "a", value: 1 }, {
        metric_id: "b",
        device_id: "node-4",
      }], {
        headers: { "x-kwollect-proxy-key": key, "x-kwollect-client": "node-4.lyon.grid5000.fr" },
      });
      assert.deepEqual(byName.map((r) => r.device_id), ["node-4", "node-4"]);
    });

    await t.step("insert_user_metrics refuses nodes outside running jobs, spoofing and foreign devices", async () => {
      const key = await proxyKey(c);
      const body = { metric_id: "my_custom_metric", value: 1 };
      const refusals: [Record<string, string>, unknown, RegExp][] = [
        [{ "x-kwollect-proxy-key": key, "x-kwollect-client": "10.0.0.1" }, body, /node node-1 is not in a running job/],
        [
          { "x-kwollect-proxy-key": key, "x-kwollect-client": "10.9.9.9" },
          body,
          /address 10.9.9.9 is not a known node/,
        ],
        [{ "x-kwollect-client": "10.0.0.4" }, body, /only available through the Kwollect reverse proxy/],
        [{ "x-kwollect-proxy-key": "guess", "x-kwollect-client": "10.0.0.4" }, body, /only available through/],
        [{ "x-kwollect-proxy-key": key }, body, /did not say who the client is/],
        [
          { "x-kwollect-proxy-key": key, "x-kwollect-client": "10.0.0.4" },
          { ...body, device_id: "node-1" },
          /is not the calling node/,
        ],
        [{ "x-kwollect-proxy-key": key, "x-kwollect-client": "10.0.0.4" }, {
          ...body,
          labels: { _device_alias: "node-1" },
        }, /may not start with _device_/],
        [
          { "x-kwollect-proxy-key": key, "x-kwollect-client": "10.0.0.4" },
          { ...body, timestamp: at(0) },
          /between the job's start/,
        ],
      ];
      for (const [headers, b, message] of refusals) {
        const e = await pgError(rpcBody(api, "insert_user_metrics", b, { headers }));
        assert.equal(e.code, "42501", String(message));
        assert.match(e.message, message);
      }
      const [n] = await c.admin`SELECT count(*)::int AS n FROM metrics WHERE metric_id = 'my_custom_metric'`;
      assert.equal(n!.n, 1);
    });

    await t.step("get_job_metrics runs the README's example requests over the job's metrics", async () => {
      const rows = await rpc(api, "get_job_metrics", { job_id: "7" });
      assert.deepEqual(rows.map((r) => r.metric_id), [
        "job_energy_watthour",
        "jobnode_maxpower_watt",
        "job_cpu_avgusage_percent",
        "job_cpu_maxusage_percent",
        "job_network_avginput_mbps",
        "jobnode_network_maxinput_mbps",
      ]);
      const v = rows.map((r) => r.value);
      close(v[0], 101 * 120 / 3600, "energy (Wh)");
      close(v[1], 102, "max power");
      close(v[2], 0.15, "average CPU usage");
      close(v[3], 0.2, "max CPU usage");
      close(v[4], 100000 * 8 / 1024 / 1024, "average network");
      close(v[5], 100000 * 8 / 1024 / 1024, "max network");
      const e = await pgError(rpc(api, "get_job_metrics", { job_id: "99" }));
      assert.equal(e.code, "P0002");
    });

    await t.step("update_promoted_metrics follows the jobs and leaves the operator's rows", async () => {
      await c.admin`INSERT INTO promoted_metrics (device_id, metric_id) VALUES ('node-9', 'prom_.*')`;
      await c.admin`CREATE TABLE test_monitor (job_id integer, node text, metric_id text)`;
      await c.admin`CREATE OR REPLACE VIEW promoted_metrics_job AS SELECT job_id, node, metric_id FROM test_monitor`;
      await c.admin`INSERT INTO test_monitor VALUES (8, 'node-4', '.*'), (9, 'node-5', 'wattmetre_power_watt')`;
      const call = () =>
        request(api, withToken(), (tx) => tx`SELECT device_id, metric_id, job_id FROM api.update_promoted_metrics()`);
      assert.deepEqual([...await call()], [
        { device_id: "node-4", metric_id: ".*", job_id: 8 },
        { device_id: "node-5", metric_id: "wattmetre_power_watt", job_id: 9 },
      ]);
      await c.admin`DELETE FROM test_monitor WHERE job_id = 9`;
      assert.deepEqual([...await call()], [{ device_id: "node-4", metric_id: ".*", job_id: 8 }]);
      const all = await c.admin`SELECT device_id, metric_id, job_id FROM promoted_metrics ORDER BY device_id`;
      assert.deepEqual([...all], [
        { device_id: "node-4", metric_id: ".*", job_id: 8 },
        { device_id: "node-9", metric_id: "prom_.*", job_id: null },
      ]);
    });

    await t.step("quotes, semicolons and SQL in every text parameter are only data", async () => {
      const [before] = await c.admin`SELECT count(*)::int AS n FROM metrics`;
      const hostile = [
        "node-1'; DROP TABLE metrics; --",
        "node-1' OR '1'='1",
        '"); DELETE FROM metrics; --',
        "x') UNION SELECT now(), current_user, 'm', 1, '{}'::jsonb --",
        "$$; DROP TABLE metrics; $$",
      ];
      for (const h of hostile) {
        for (const p of ["devices", "nodes", "metrics"]) {
          const args: Record<string, string> = { devices: "node-3", start_time: at(0), end_time: at(600), [p]: h };
          const rows = await rpc(api, "get_metrics", args);
          for (const r of rows) assert.equal(r.device_id, "node-3", `${p}=${h}`);
        }
        for (const p of ["start_time", "end_time", "as_rate"]) {
          const e = await pgError(rpc(api, "get_metrics", { devices: "node-1", [p]: h }));
          assert.equal(e.code, "22023", `${p}=${h}`);
        }
        for (const p of ["job_id", "summary"]) {
          const e = await pgError(rpc(api, "get_metrics", { devices: "node-1", [p]: h }));
          assert.equal(e.code, "22P02", `${p}=${h}`);
        }
        assert.deepEqual(
          await rpc(api, "available_metrics", { at: at(30), params: JSON.stringify({ devices: [h] }) }),
          [],
        );
        const job = await rpc(api, "available_metrics", { at: at(30), params: JSON.stringify({ job_id: h }) });
        assert.equal(job.length, 10, "a job_id that is not digits is ignored");
        await pgError(rpc(api, "get_job_metrics", { job_id: h }));
        await pgError(rpc(api, "available_metrics", { at: h }));
        await pgError(
          rpcBody(api, "insert_user_metrics", { metric_id: h }, {
            headers: { "x-kwollect-proxy-key": h, "x-kwollect-client": h },
          }),
        );
      }
      const stored = await rpcBody(
        api,
        "insert_metrics",
        hostile.map((h) => ({ device_id: h, metric_id: h, labels: { [h]: h } })),
        withToken(),
      );
      assert.deepEqual(stored.map((r) => r.device_id), hostile);
      const [after] = await c.admin`SELECT count(*)::int AS n FROM metrics`;
      assert.equal(after!.n, before!.n + hostile.length);
    });

    await t.step("the anonymous role can neither write nor call write functions", async () => {
      const attempts = [
        "INSERT INTO metrics (device_id, metric_id, value) VALUES ('x', 'y', 1)",
        "UPDATE metrics SET value = 0",
        "DELETE FROM metrics",
        "TRUNCATE metrics",
        "INSERT INTO promoted_metrics (device_id) VALUES ('x')",
        "DELETE FROM promoted_metrics",
        "UPDATE kwollect_node_addresses SET node = 'x'",
        "INSERT INTO kwollect_jobmetrics_requests VALUES (100, 'SELECT 1')",
        "SELECT * FROM kwollect_secrets",
        "SELECT * FROM kwollect_proxy_key",
        "DELETE FROM kwollect_ledger",
        'SELECT * FROM api.insert_metrics(\'{"device_id": "x", "metric_id": "y"}\')',
        "SELECT * FROM api.update_promoted_metrics()",
        "SELECT kwollect_claim(gen_random_uuid(), 'e', 1, 1, 1, 'data', now(), now(), 'v')",
        "CREATE TABLE public.mine (a int)",
        "CREATE FUNCTION api.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "ALTER FUNCTION api.insert_user_metrics(jsonb) SECURITY INVOKER",
        backend === "plain" ? "SELECT * FROM kwollect_maintenance()" : "CALL kwollect_archive_chunks(0, '{}')",
      ];
      for (const statement of attempts) {
        const e = await pgError(request(api, { method: "POST" }, (tx) => tx.unsafe(statement)));
        assert.equal(e.code, "42501", `${statement}: ${e.message}`);
      }
    });

    await t.step("the token's role cannot read secrets or change the schema", async () => {
      for (
        const statement of [
          "SELECT * FROM kwollect_secrets",
          "DROP TABLE metrics",
          "ALTER TABLE metrics ADD COLUMN x int",
          "DELETE FROM metrics",
          "CREATE OR REPLACE FUNCTION api.get_metrics() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        ]
      ) {
        const e = await pgError(request(api, withToken(), (tx) => tx.unsafe(statement)));
        assert.equal(e.code, "42501", `${statement}: ${e.message}`);
      }
    });
  } finally {
    await c.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the api schema answers as Kwollect's on plain PostgreSQL", async (t) => {
  await apiSuite("plain", t);
});

Deno.test({
  name: "the api schema answers as Kwollect's on TimescaleDB",
  ignore: !timescaleAvailable(),
  fn: async (t) => {
    await apiSuite("timescaledb", t);
  },
});
