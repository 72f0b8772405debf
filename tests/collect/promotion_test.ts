import assert from "node:assert/strict";
import { connect, endpointOf } from "../../src/central/connect.ts";
import { promotedMetrics } from "../../src/central/promoted_metrics.ts";
import { setupDatabase } from "../../src/central/setup.ts";
import { PromotionFilter, PromotionRefresher } from "../../src/collect/promotion.ts";
import { setLogLevel, setLogSink } from "../../src/log.ts";
import { openSpool, type Spool } from "../../src/spool/spool.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { entryFor } from "../../scripts/harness/entries.ts";
import { destroyPostgres, startPostgres } from "../../scripts/peers/postgres.ts";

const REFRESH_MS = 200;

function optional(name: string, deviceId: string, labels: Record<string, unknown> = {}) {
  return entryFor("prometheus://node:9100/", { name, deviceId, labels, optional: true });
}

async function waitUntil(what: string, condition: () => boolean, timeoutMs = 10 * REFRESH_MS + 2000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`Timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("promotion filter matches rows as PostgreSQL's ~ does, by device or alias, ORing every row", () => {
  const logs: string[] = [];
  setLogSink((l) => logs.push(l));
  try {
    const filter = new PromotionFilter([
      { deviceId: "taurus-1", metricId: "temp" },
      { deviceId: "taurus-1", metricId: "^prom_" },
      { deviceId: "taurus-2", metricId: null },
      { deviceId: "taurus-3", metricId: "([" },
      { deviceId: "taurus-3", metricId: "([" },
      { deviceId: "taurus-3", metricId: "[[:digit:]]" },
    ]);
    assert.equal(filter.isActive(optional("bmc_temp_celsius", "taurus-1")), true, "a search, not anchored");
    assert.equal(filter.isActive(optional("prom_all_metrics", "taurus-1")), true, "the second row counts too");
    assert.equal(filter.isActive(optional("my_prom_metric", "taurus-1")), false);
    assert.equal(filter.isActive(optional("bmc_temp_celsius", "taurus-9")), false);
    assert.equal(filter.isActive(optional("anything", "pdu-1-port-4", { _device_alias: "taurus-2" })), true);
    assert.equal(filter.isActive({ ...optional("anything", "taurus-9"), optional: false }), true);
    assert.equal(filter.isActive(optional("x1", "taurus-3")), false, "invalid patterns promote nothing");
    assert.equal(filter.isPromotedNode("taurus-2", "wattmetre_power_watt"), true);
    assert.equal(filter.isPromotedNode("taurus-1", "wattmetre_power_watt"), false);
    const invalid = logs.filter((l) => /Invalid regular expression in promoted_metrics/.test(l));
    assert.equal(invalid.length, 2, "each invalid pattern is logged once");
    filter.update(filter.rows);
    assert.equal(logs.filter((l) => /Invalid regular expression/.test(l)).length, 2, "and not again on refresh");
  } finally {
    setLogSink((l) => console.error(l));
  }
});

Deno.test("promotion refresher follows promoted_metrics in PostgreSQL and survives its outage", async (t) => {
  const pg = await startPostgres({ timescaledb: false });
  const dir = await Deno.makeTempDir({ prefix: "kwollector-promotion-" });
  const logs: string[] = [];
  setLogLevel("info");
  setLogSink((l) => logs.push(l));
  const config = pgConfig(pg, dir, { promoted_refresh_ms: REFRESH_MS });
  let spool: Spool | undefined;
  let refresher: PromotionRefresher | undefined;
  let admin = pg.admin("kwdb");
  try {
    await setupDatabase(config);
    spool = openSpool({
      path: config.spool_path,
      maxBytes: config.spool_max_bytes,
      fullPolicy: "drop_oldest",
      synchronous: "normal",
      commitIntervalMs: 100,
    });
    const filter = new PromotionFilter();
    const options = {
      saved: spool.state,
      central: promotedMetrics(() => connect(endpointOf(config), { applicationName: "kwollector promotion test" })),
      refreshMs: config.promoted_refresh_ms,
      queryTimeoutMs: 2000,
    };
    refresher = new PromotionRefresher({ ...options, filter });
    refresher.start();

    await t.step("a row switches an optional metric on within a refresh and its deletion switches it off", async () => {
      const temp = optional("bmc_temp_celsius", "taurus-1");
      assert.equal(filter.isActive(temp), false);
      await admin`INSERT INTO promoted_metrics (device_id, metric_id) VALUES ('taurus-1', 'bmc_temp_celsius')`;
      // One period, plus slack for a loaded machine.
      await waitUntil("the row promotes the metric", () => filter.isActive(temp), REFRESH_MS + 1000);
      await admin`DELETE FROM promoted_metrics WHERE device_id = 'taurus-1'`;
      await waitUntil("the deletion switches it off", () => !filter.isActive(temp));
    });

    await t.step("regular expression rows promote every metric they find, unanchored", async () => {
      const temp = optional("bmc_temp_celsius", "taurus-2");
      const power = optional("bmc_node_power_watt", "taurus-2");
      await admin`INSERT INTO promoted_metrics (device_id, metric_id) VALUES ('taurus-2', '.*temp.*')`;
      await waitUntil("the regex promotes the temperature", () => filter.isActive(temp));
      assert.equal(filter.isActive(power), false);
      await admin`INSERT INTO promoted_metrics (device_id, metric_id) VALUES ('taurus-2', 'power')`;
      await waitUntil("an unanchored name promotes the power", () => filter.isActive(power));
      assert.equal(filter.isActive(temp), true, "both rows of the device count");
    });

    await t.step("a row of the node promotes entries aliased to it, and NULL promotes every metric", async () => {
      const pduPort = optional("pdu_outlet_power_watt", "pdu-1-port-7", { _device_alias: "taurus-3" });
      await admin`INSERT INTO promoted_metrics (device_id, metric_id) VALUES ('taurus-3', NULL)`;
      await waitUntil("the alias row promotes the PDU port", () => filter.isActive(pduPort));
      assert.equal(filter.isPromotedNode("taurus-3", "wattmetre_power_watt"), true);
      assert.deepEqual(
        spool!.state.readPromoted().find((r) => r.deviceId === "taurus-3"),
        { deviceId: "taurus-3", metricId: null },
        "the spool keeps a copy",
      );
    });

    await t.step("a stopped PostgreSQL keeps the last known promotions, logged once", async () => {
      const temp = optional("bmc_temp_celsius", "taurus-2");
      await pg.stop();
      await waitUntil("the failure is logged", () => logs.some((l) => /Cannot query promoted_metrics/.test(l)));
      await new Promise((r) => setTimeout(r, 4 * REFRESH_MS));
      assert.equal(filter.isActive(temp), true);
      assert.equal(logs.filter((l) => /Cannot query promoted_metrics/.test(l)).length, 1);
      assert.match(
        logs.find((l) => /Cannot query promoted_metrics/.test(l))!,
        // Refused, reset or closed (postgres.js: `write CONNECTION_CLOSED`) when the query was in flight as the server
        // stopped, or turned away while it stopped.
        /^WARNING .* rows=3 error=".*(ECONNREFUSED|ECONNRESET|CONNECTION_CLOSED|terminating connection|the database system is shutting down)/,
      );
    });

    await t.step("a refresher restarted while PostgreSQL is down loads the promotions from the spool", async () => {
      await refresher!.stop();
      const restarted = new PromotionFilter();
      refresher = new PromotionRefresher({ ...options, filter: restarted });
      refresher.start();
      assert.equal(restarted.isActive(optional("bmc_temp_celsius", "taurus-2")), true);
      assert.equal(restarted.isActive(optional("x", "pdu-1-port-7", { _device_alias: "taurus-3" })), true);
      assert.equal(restarted.isActive(optional("bmc_temp_celsius", "taurus-1")), false);
      await pg.start();
      admin = pg.admin("kwdb"); // stopping the cluster closed the previous one
      await waitUntil("the recovery is logged", () => logs.some((l) => /promoted_metrics reachable again/.test(l)));
      await admin`DELETE FROM promoted_metrics`;
      await waitUntil(
        "the emptied table switches everything off",
        () => !restarted.isActive(optional("bmc_temp_celsius", "taurus-2")),
      );
      assert.deepEqual(spool!.state.readPromoted(), []);
    });
  } finally {
    setLogSink((l) => console.error(l));
    setLogLevel("warning");
    await refresher?.stop();
    spool?.close();
    await admin.end({ timeout: 0 }).catch(() => {});
    await destroyPostgres(pg);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("promotion refresher gives up on a database that never answers and keeps the spool's promotions", async () => {
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for await (const c of silent) held.push(c);
    } catch {
      // closed
    }
  })();
  const dir = await Deno.makeTempDir({ prefix: "kwollector-promotion-" });
  const logs: string[] = [];
  setLogSink((l) => logs.push(l));
  const spool = openSpool({
    path: `${dir}/spool.db`,
    maxBytes: 64 * 1024 * 1024,
    fullPolicy: "drop_oldest",
    synchronous: "normal",
    commitIntervalMs: 100,
  });
  const filter = new PromotionFilter();
  const refresher = new PromotionRefresher({
    filter,
    saved: spool.state,
    central: promotedMetrics(() =>
      connect({
        host: "127.0.0.1",
        port: (silent.addr as Deno.NetAddr).port,
        database: "kwdb",
        user: "kwuser",
        password: "changeme",
        sslmode: "disable",
        sslrootcert: "",
      })
    ),
    refreshMs: REFRESH_MS,
    queryTimeoutMs: 300,
  });
  try {
    spool.state.writePromoted([{ deviceId: "taurus-5", metricId: "wattmetre_power_watt" }]);
    refresher.start();
    try {
      assert.equal(filter.isPromotedNode("taurus-5", "wattmetre_power_watt"), true);
      await waitUntil("the timeout is logged", () => logs.some((l) => /took more than 300 ms/.test(l)));
      assert.equal(filter.isPromotedNode("taurus-5", "wattmetre_power_watt"), true);
    } finally {
      await refresher.stop();
    }
  } finally {
    setLogSink((l) => console.error(l));
    spool.close();
    silent.close();
    for (const c of held) c.close();
    await accepting;
    await Deno.remove(dir, { recursive: true });
  }
});
