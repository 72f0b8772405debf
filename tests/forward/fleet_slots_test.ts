import assert from "node:assert/strict";
import { Forwarder } from "../../src/forward/forwarder.ts";
import { LOCK_CLASS, takeBackfillSlot } from "../../src/forward/fleet_slots.ts";
import { openSpool } from "../../src/spool/spool.ts";
import { spoolOptions } from "../../src/cli/runtime.ts";
import { endpointOf } from "../../src/central/connect.ts";
import { setupDatabase } from "../../src/central/setup.ts";
import type { Config } from "../../src/config/defaults.ts";
import { setLogSink } from "../../src/log.ts";
import { destroyPostgres, startPostgres } from "../../scripts/peers/postgres.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { samples } from "./fixtures.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";

/**
 * The fleet's backfill slots (src/forward/fleet_slots.ts) against a real PostgreSQL. The test
 * plays the rest of the fleet: a session of its own holds slots, as other collectors' batches
 * would, and the server's own lock table says which slots the forwarder's sessions hold.
 */

const BACKLOG = 20_000;
const BATCH = 2000;
const FRESH = 1_000_000;

const pgReady = startPostgres({ timescaledb: false }).then(async (pg) => {
  const dir = await tempDir("kwollector-test-");
  await setupDatabase(pgConfig(pg, dir));
  await Deno.remove(dir, { recursive: true });
  return pg;
});

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits until `predicate` holds, polling every 20 ms, for at most `ms`. */
async function until(predicate: () => Promise<boolean>, ms = 30_000): Promise<boolean> {
  for (let waited = 0; waited < ms; waited += 20) {
    if (await predicate()) return true;
    await sleep(20);
  }
  return false;
}

Deno.test("a backfill transaction takes a free slot of the fleet, and none when every slot is taken", async () => {
  const pg = await pgReady;
  const other = pg.admin("kwdb");
  const sql = pg.admin("kwdb");
  try {
    const fleet = await other.reserve();
    await fleet`SELECT pg_advisory_lock(${LOCK_CLASS}::int, 1)`;
    const [held] = await sql.begin(async (tx) => {
      const took = await takeBackfillSlot(tx, 2);
      const slots = await tx<{ slot: number }[]>`
        SELECT objid::int AS slot FROM pg_locks
        WHERE locktype = 'advisory' AND classid = ${LOCK_CLASS} AND objsubid = 2 AND pid = pg_backend_pid()`;
      return [{ took, slots: slots.map((r) => r.slot) }];
    });
    assert.deepEqual(held, { took: true, slots: [2] });
    await fleet`SELECT pg_advisory_lock(${LOCK_CLASS}::int, 2)`;
    const [none] = await sql.begin(async (tx) => [await takeBackfillSlot(tx, 2)]);
    assert.equal(none, false);
    // A slot is held until the transaction ends, not longer.
    await fleet`SELECT pg_advisory_unlock_all()`;
    fleet.release();
    const [free] = await sql`
      SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND classid = ${LOCK_CLASS}`;
    assert.equal(free!.n, 0);
  } finally {
    await other.end();
    await sql.end();
  }
});

Deno.test("forwarder sends no backfill batch while the fleet holds every slot, lands its fresh samples, then drains once a slot frees", async () => {
  const pg = await pgReady;
  const dir = await tempDir("kwollector-test-");
  const config: Config = pgConfig(pg, dir, {
    forward_batch_rows: BATCH,
    forward_retry_max_ms: 50,
    forward_timeout_ms: 20_000,
    forward_fleet_backfill_batches: 2,
  });
  const before = openSpool({ ...spoolOptions(config), commitIntervalMs: 1 });
  await before.writer.append(samples(BACKLOG));
  before.close();
  const spool = openSpool({ ...spoolOptions(config), commitIntervalMs: 1 });
  const admin = pg.admin("kwdb");
  const fleetSql = pg.admin("kwdb");
  const fleet = await fleetSql.reserve();
  const logs: string[] = [];
  setLogSink((l) => logs.push(l));
  const fwd = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config });
  const stop = new AbortController();
  let running: Promise<void> | undefined;
  const count = async (fresh: boolean) => {
    const [row] = await admin<
      { n: number }[]
    >`SELECT count(*)::int AS n FROM metrics WHERE (value >= ${FRESH}) = ${fresh}`;
    return row!.n;
  };
  /** Slots held by the forwarder's sessions, as the server sees them. */
  const forwarderSlots = async () => {
    const [row] = await admin<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a USING (pid)
      WHERE l.locktype = 'advisory' AND l.classid = ${LOCK_CLASS} AND l.objsubid = 2 AND l.granted
        AND a.application_name IN ('kwollector forwarder', 'kwollector backfill')`;
    return row!.n;
  };
  try {
    await admin`TRUNCATE metrics, kwollect_ledger`;
    await fleet`SELECT pg_advisory_lock(${LOCK_CLASS}::int, 1), pg_advisory_lock(${LOCK_CLASS}::int, 2)`;
    running = fwd.run(stop.signal);
    // The first batch goes alone on the live connection (it finds out whether the ledger lock is
    // free, fleet_slots.ts), then every backfill batch finds the slots taken.
    assert.ok(await until(async () => await count(false) === BATCH), "the first batch never landed");
    const fresh = samples(10, FRESH);
    await spool.writer.append(fresh);
    assert.ok(await until(async () => await count(true) === 10), "fresh samples waited for a slot");
    for (let i = 0; i < 20; i++) {
      assert.equal(await count(false), BATCH, "a backfill batch was sent without a slot");
      await sleep(50);
    }
    // One slot frees: the backlog drains through it, one batch at a time.
    await fleet`SELECT pg_advisory_unlock(${LOCK_CLASS}::int, 1)`;
    let most = 0;
    for (let i = 0; i < 3000 && spool.view.rowCount() > 0; i++) {
      most = Math.max(most, await forwarderSlots());
      await sleep(10);
    }
    assert.equal(spool.view.rowCount(), 0, "the backlog did not drain through the free slot");
    assert.ok(most <= 1, `the forwarder held ${most} slots, one was free`);
    const rows = await admin<{ value: number }[]>`SELECT value FROM metrics ORDER BY value`;
    assert.deepEqual(rows.map((r) => r.value), [
      ...Array.from({ length: BACKLOG }, (_, i) => i),
      ...fresh.map((s) => s.value),
    ]);
    assert.equal(fwd.counters.retries, 0, logs.join("\n"));
  } finally {
    stop.abort();
    await running;
    await fwd.close();
    await fleet`SELECT pg_advisory_unlock_all()`;
    fleet.release();
    await fleetSql.end();
    await admin.end();
    spool.close();
    setLogSink((l) => console.error(l));
    await Deno.remove(dir, { recursive: true });
  }
});

// A hook, not a test: a filtered run (`deno test --filter`) stops the cluster too.
Deno.test.afterAll(async () => {
  await destroyPostgres(await pgReady);
});
