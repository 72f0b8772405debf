/**
 * The anonymous role's work is bounded: get_metrics returns at most api_max_rows rows to readers
 * (and refuses, rather than truncates, a larger answer), PostgREST's printed configuration caps
 * responses at the same number, and anonymous requests run under api_anonymous_timeout_s. Calls
 * are made as PostgREST makes them (harness.ts: the role's settings, SET LOCAL ROLE, the claims
 * and headers), so the statement timeout is the one PostgREST applies.
 */
import assert from "node:assert/strict";
import { at, loadFixture } from "./fixture.ts";
import { type Backend, pgError, request, rpc, startCentral, timescaleAvailable, withToken } from "./harness.ts";

async function boundsSuite(backend: Backend, t: Deno.TestContext): Promise<void> {
  const c = await startCentral(backend, { api_max_rows: 5, api_anonymous_timeout_s: 1, request_timeout_min: 7 });
  const api = c.authenticator;
  try {
    await loadFixture(c.admin);
    const power = (args: Record<string, string>) => ({
      devices: "node-1",
      metrics: "bmc_node_power_watt",
      start_time: at(0),
      ...args,
    });

    await t.step("the printed PostgREST configuration caps responses at api_max_rows", () => {
      assert.match(c.setup.postgrestConfig, /^db-max-rows = 5$/m);
    });

    await t.step(
      "anonymous requests run under api_anonymous_timeout_s, the token's under request_timeout_min",
      async () => {
        const show = (req: Parameters<typeof request>[1]) =>
          request(api, req, (tx) => tx<{ statement_timeout: string }[]>`SHOW statement_timeout`);
        assert.equal((await show({}))[0]!.statement_timeout, "1s");
        assert.equal((await show(withToken()))[0]!.statement_timeout, "7min");
      },
    );

    await t.step("readers get at most api_max_rows rows from get_metrics, the token any number", async () => {
      assert.equal((await rpc(api, "get_metrics", power({ end_time: at(240) }))).length, 5);
      const e = await pgError(rpc(api, "get_metrics", power({ end_time: at(600) })));
      assert.equal(e.code, "54000");
      assert.equal(e.message, "Too much data: more than 5 rows match this request");
      const summary = await rpc(api, "get_metrics", {
        devices: "node-3",
        start_time: at(0),
        end_time: at(600),
        summary: "1",
      });
      assert.equal(summary.length, 3, "the summary's rows count, not the raw rows they stand for");
      const all = await rpc(api, "get_metrics", power({ end_time: at(600) }), withToken({ method: "GET" }));
      assert.equal(all.length, 11);
    });

    await t.step("an anonymous request that outlasts api_anonymous_timeout_s gets the timeout error", async () => {
      let refused: Promise<{ code: string; message: string }> | undefined;
      await c.admin.begin(async (tx) => {
        await tx`LOCK TABLE metrics IN ACCESS EXCLUSIVE MODE`;
        refused = pgError(rpc(api, "get_metrics", power({ end_time: at(60) })));
        // Without the bound the request would wait for the lock: it is released after 30 s, the
        // request then succeeds, and pgError fails the test.
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([refused, new Promise((resolve) => timer = setTimeout(resolve, 30_000))]);
        clearTimeout(timer);
      });
      const e = await refused!;
      assert.equal(e.code, "57014");
      assert.equal(e.message, "Request timeout, too much data to process");
    });
  } finally {
    await c.close();
  }
}

Deno.test("the anonymous role's get_metrics is bounded in rows and time on plain PostgreSQL", async (t) => {
  await boundsSuite("plain", t);
});

Deno.test({
  name: "the anonymous role's get_metrics is bounded in rows and time on TimescaleDB",
  ignore: !timescaleAvailable(),
  fn: async (t) => {
    await boundsSuite("timescaledb", t);
  },
});
