/**
 * setup-db-oar against a second database holding OAR's tables (the columns Kwollect reads, with
 * OAR 2.5's types), with a finished and a running job.
 */
import assert from "node:assert/strict";
import { setupOar } from "../../src/central/oar.ts";
import { at, T0_EPOCH } from "./fixture.ts";
import { pgError, request, rpc, rpcBody, startCentral, withToken } from "./harness.ts";
import { createOarDatabase, oarConfig } from "./oar_fixture.ts";

Deno.test("setup-db-oar fills nodetime_per_job and job promotion from OAR's database", async (t) => {
  const c = await startCentral("plain");
  try {
    await createOarDatabase(c.pg);
    const oar = oarConfig(c.config, c.pg);
    await c.admin`INSERT INTO metrics VALUES
      (${at(0)}, 'node-1', 'bmc_node_power_watt', 100, '{}'), (${at(600)}, 'node-1', 'bmc_node_power_watt', 110, '{}'),
      (${at(601)}, 'node-1', 'bmc_node_power_watt', 999, '{}'),
      (now() - interval '1 minute', 'node-2', 'bmc_node_power_watt', 200, '{}')`;

    await t.step("nodetime_per_job lists each started job's nodes, stop_time NULL while running", async () => {
      const result = await setupOar(oar);
      assert.deepEqual(result, { jobs: 2, nodes: 2 });
      const rows = await request(
        c.authenticator,
        {},
        (tx) =>
          tx`SELECT job_id, extract(epoch FROM start_time)::int AS start_s, stop_time, node
           FROM nodetime_per_job ORDER BY job_id`,
      );
      assert.equal(rows.length, 2);
      assert.deepEqual({ ...rows[0] }, {
        job_id: 100,
        start_s: T0_EPOCH,
        stop_time: new Date(at(600)),
        node: "node-1",
      });
      assert.equal(rows[1]!.job_id, 101);
      assert.equal(rows[1]!.stop_time, null);
      assert.equal(rows[1]!.node, "node-2");
      const alias = await request(c.authenticator, {}, (tx) => tx`SELECT count(*)::int AS n FROM nodetime_by_job`);
      assert.equal(alias[0]!.n, 2);
    });

    await t.step("get_metrics and metrics_by_job follow OAR's job windows", async () => {
      const finished = await rpc(c.authenticator, "get_metrics", { job_id: "100" });
      assert.deepEqual(finished.map((r) => r.value), [100, 110]);
      const running = await rpc(c.authenticator, "get_metrics", { job_id: "101" });
      assert.deepEqual(running.map((r) => [r.device_id, r.value]), [["node-2", 200]]);
      const byJob = await request(
        c.authenticator,
        {},
        (tx) => tx`SELECT job_id, device_id, value FROM metrics_by_job ORDER BY job_id, "timestamp"`,
      );
      assert.deepEqual(byJob.map((r) => [r.job_id, r.device_id, r.value]), [
        [100, "node-1", 100],
        [100, "node-1", 110],
        [
          101,
          "node-2",
          200,
        ],
      ]);
    });

    await t.step("update_promoted_metrics promotes monitor=<regex> of running jobs and drops ended ones", async () => {
      await c.admin`INSERT INTO promoted_metrics (device_id, metric_id) VALUES ('node-9', 'prom_.*')`;
      const call = () =>
        request(
          c.authenticator,
          withToken(),
          (tx) => tx`SELECT device_id, metric_id, job_id FROM api.update_promoted_metrics()`,
        );
      assert.deepEqual([...await call()], [{ device_id: "node-2", metric_id: "wattmetre_power_watt", job_id: 101 }]);
      await c.pg.admin("oar2")`UPDATE job_types SET type = 'monitor' WHERE job_id = 101 AND type LIKE 'monitor=%'`;
      assert.deepEqual([...await call()], [{ device_id: "node-2", metric_id: ".*", job_id: 101 }]);
      const e = await pgError(
        request(c.authenticator, { method: "POST" }, (tx) => tx`SELECT * FROM api.update_promoted_metrics()`),
      );
      assert.equal(e.code, "42501", "the anonymous role cannot promote");
    });

    await t.step("insert_user_metrics accepts the running job's node and refuses the finished job's", async () => {
      const [key] = await c.admin<{ value: string }[]>`SELECT value FROM kwollect_secrets WHERE name = 'proxy_key'`;
      const headers = (client: string) => ({ "x-kwollect-proxy-key": key!.value, "x-kwollect-client": client });
      const ok = await rpcBody(c.authenticator, "insert_user_metrics", { metric_id: "my_custom_metric", value: 42 }, {
        headers: headers("node-2.lyon.grid5000.fr"),
      });
      assert.deepEqual(ok.map((r) => [r.device_id, r.value]), [["node-2", 42]]);
      const e = await pgError(rpcBody(c.authenticator, "insert_user_metrics", { metric_id: "x", value: 1 }, {
        headers: headers("node-1.lyon.grid5000.fr"),
      }));
      assert.equal(e.code, "42501");
      assert.match(e.message, /node node-1 is not in a running job/);
    });

    await t.step("running setup-db-oar again keeps every view working", async () => {
      // Ended a second from now, so that the rows inserted above lie within the job.
      const stop = Math.ceil(Date.now() / 1000) + 1;
      await c.pg.admin("oar2")`UPDATE jobs SET state = 'Terminated', stop_time = ${stop} WHERE job_id = 101`;
      assert.deepEqual(await setupOar(oar), { jobs: 2, nodes: 2 });
      const running = await request(
        c.authenticator,
        {},
        (tx) => tx`SELECT count(*)::int AS n FROM nodetime_per_job WHERE stop_time IS NULL`,
      );
      assert.equal(running[0]!.n, 0);
      const promoted = await request(
        c.authenticator,
        withToken(),
        (tx) => tx`SELECT * FROM api.update_promoted_metrics()`,
      );
      assert.equal(promoted.length, 0);
      const left = await c.admin`SELECT device_id FROM promoted_metrics`;
      assert.deepEqual(left.map((r) => r.device_id), ["node-9"], "the operator's row stays");
      const byJob = await request(c.authenticator, {}, (tx) => tx`SELECT count(*)::int AS n FROM metrics_by_job`);
      assert.equal(byJob[0]!.n, 4);
    });

    await t.step("an unreachable OAR database is an error that names it, without the password", async () => {
      await assert.rejects(setupOar({ ...oar, oardb_port: 1 }), (e: Error) => {
        assert.match(e.message, new RegExp(`Cannot read OAR's database oarreader@${c.pg.host}:1/oar2`));
        assert.ok(!e.message.includes("read-pw"));
        return true;
      });
      const still = await rpc(c.authenticator, "get_metrics", { job_id: "100" });
      assert.equal(still.length, 2, "the previous integration is kept");
    });
  } finally {
    await c.close();
  }
});
