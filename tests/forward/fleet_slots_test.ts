import assert from "node:assert/strict";
import { Forwarder, SLOT_RETRY_MS, SLOT_TURN_BATCHES } from "../../src/forward/forwarder.ts";
import { LOCK_CLASS, takeBackfillSlot } from "../../src/forward/fleet_slots.ts";
import { openSpool } from "../../src/spool/spool.ts";
import { spoolOptions } from "../../src/cli/runtime.ts";
import { endpointOf, type Sql } from "../../src/central/connect.ts";
import { setupDatabase } from "../../src/central/setup.ts";
import type { Config } from "../../src/config/defaults.ts";
import { setLogSink } from "../../src/log.ts";
import { destroyPostgres, startPostgres } from "../../scripts/peers/postgres.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { samples } from "./fixtures.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";
import { FakeClock } from "../helpers/fake_clock.ts";

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

interface SlotRig {
  spool: ReturnType<typeof openSpool>;
  fwd: Forwarder;
  admin: Sql;
  /** A session of its own, playing the rest of the fleet. */
  fleet: Awaited<ReturnType<Sql["reserve"]>>;
  /** Backlog rows (value < FRESH) or fresh ones in the central table. */
  count: (fresh: boolean) => Promise<number>;
  /** Slots held by the forwarder's sessions, as the server sees them. */
  forwarderSlots: () => Promise<number>;
  /** Batches the central ledger holds. */
  batches: () => Promise<number>;
  logs: string[];
}

/**
 * Runs `body` with a forwarder (batches of BATCH rows, 2 fleet slots, `clock` if given) started
 * over a spool holding `backlog` rows, after the fleet session took `fleetHolds` slots.
 */
async function withSlotRig(
  opts: { backlog: number; fleetHolds: number[]; clock?: FakeClock },
  body: (rig: SlotRig) => Promise<void>,
): Promise<void> {
  const pg = await pgReady;
  const dir = await tempDir("kwollector-test-");
  const config: Config = pgConfig(pg, dir, {
    forward_batch_rows: BATCH,
    forward_retry_max_ms: 50,
    forward_timeout_ms: 20_000,
    forward_fleet_backfill_batches: 2,
  });
  const before = openSpool({ ...spoolOptions(config), commitIntervalMs: 1 });
  await before.writer.append(samples(opts.backlog));
  before.close();
  const spool = openSpool({ ...spoolOptions(config), commitIntervalMs: 1 });
  const admin = pg.admin("kwdb");
  const fleetSql = pg.admin("kwdb");
  const fleet = await fleetSql.reserve();
  const logs: string[] = [];
  setLogSink((l) => logs.push(l));
  const fwd = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config, clock: opts.clock });
  const stop = new AbortController();
  let running: Promise<void> | undefined;
  const count = async (fresh: boolean) => {
    const [row] = await admin<
      { n: number }[]
    >`SELECT count(*)::int AS n FROM metrics WHERE (value >= ${FRESH}) = ${fresh}`;
    return row!.n;
  };
  const forwarderSlots = async () => {
    const [row] = await admin<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a USING (pid)
      WHERE l.locktype = 'advisory' AND l.classid = ${LOCK_CLASS} AND l.objsubid = 2 AND l.granted
        AND a.application_name IN ('kwollector forwarder', 'kwollector backfill')`;
    return row!.n;
  };
  const batches = async () => {
    const [row] = await admin<{ n: number }[]>`SELECT count(*)::int AS n FROM kwollect_ledger`;
    return row!.n;
  };
  try {
    await admin`TRUNCATE metrics, kwollect_ledger`;
    for (const slot of opts.fleetHolds) await fleet`SELECT pg_advisory_lock(${LOCK_CLASS}::int, ${slot}::int)`;
    running = fwd.run(stop.signal);
    await body({ spool, fwd, admin, fleet, count, forwarderSlots, batches, logs });
  } finally {
    stop.abort();
    await opts.clock?.advance(60_000);
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
}

/** Waits until the spool is empty, at most 30 s; returns the most slots the forwarder held meanwhile. */
async function drained(rig: SlotRig): Promise<number> {
  let most = 0;
  for (let i = 0; i < 3000 && rig.spool.view.rowCount() > 0; i++) {
    most = Math.max(most, await rig.forwarderSlots());
    await sleep(10);
  }
  assert.equal(rig.spool.view.rowCount(), 0, "the backlog did not drain through the free slot");
  return most;
}

Deno.test("forwarder sends no backfill batch while the fleet holds every slot, lands its fresh samples, then drains once a slot frees", async () => {
  await withSlotRig({ backlog: BACKLOG, fleetHolds: [1, 2] }, async (rig) => {
    const { spool, fwd, fleet, count, admin, logs } = rig;
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
    const most = await drained(rig);
    assert.ok(most <= 1, `the forwarder held ${most} slots, one was free`);
    const rows = await admin<{ value: number }[]>`SELECT value FROM metrics ORDER BY value`;
    assert.deepEqual(rows.map((r) => r.value), [
      ...Array.from({ length: BACKLOG }, (_, i) => i),
      ...fresh.map((s) => s.value),
    ]);
    assert.equal(fwd.counters.retries, 0, logs.join("\n"));
  });
});

Deno.test("a batch waiting for a fleet slot takes the slot its own batch's commit freed, without waiting for its retry", async () => {
  // The clock never moves: a batch that found no slot could only go at its retry, which never
  // comes, unless the commit of this collector's batch in the one free slot sends it.
  await withSlotRig({ backlog: BACKLOG, fleetHolds: [1], clock: new FakeClock() }, async (rig) => {
    const most = await drained(rig);
    assert.ok(most <= 1, `the forwarder held ${most} slots, one was free`);
    assert.equal(await rig.count(false), BACKLOG);
    assert.equal(rig.fwd.counters.retries, 0, rig.logs.join("\n"));
  });
});

Deno.test("a collector lets a freed slot go for one retry wait every SLOT_TURN_BATCHES batches", async () => {
  const clock = new FakeClock();
  // Batches collide for the one free slot only now and then (a batch often settles before the
  // next one tries): a backlog of many turns' worth.
  const backlog = 4 * SLOT_TURN_BATCHES * BATCH;
  await withSlotRig({ backlog, fleetHolds: [1], clock }, async (rig) => {
    // The frozen clock holds back the retry of the batch that waits: the drain stops there.
    let last = -1;
    for (let still = 0, i = 0; i < 600 && still < 20; i++) {
      const n = await rig.batches();
      still = n === last ? still + 1 : 0;
      last = n;
      await sleep(50);
    }
    assert.ok(rig.spool.view.rowCount() > 0, "the backlog drained without the slot ever let go");
    assert.ok(last > SLOT_TURN_BATCHES, `the slot was let go after ${last} batches`);
    for (let i = 0; i < 100 && rig.spool.view.rowCount() > 0; i++) {
      await clock.advance(SLOT_RETRY_MS * 1.5);
      await sleep(100);
    }
    await drained(rig);
    assert.equal(await rig.count(false), backlog);
  });
});

Deno.test("a batch waiting for a fleet slot waits out the pause a slow batch of its collector started", async () => {
  const clock = new FakeClock();
  await withSlotRig({ backlog: 10 * BATCH, fleetHolds: [1], clock }, async (rig) => {
    // The backfill batch holding the value BATCH (after the batch sent alone) stops at that row
    // until the fleet session lets it go; meanwhile the other one finds no slot and waits.
    await rig.admin.unsafe(`
      CREATE FUNCTION pg_temp_hold() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.value = ${BATCH} THEN PERFORM pg_advisory_lock_shared(4242); PERFORM pg_advisory_unlock_shared(4242); END IF;
        RETURN NEW;
      END $$`);
    await rig.admin`CREATE TRIGGER hold BEFORE INSERT ON metrics FOR EACH ROW EXECUTE FUNCTION pg_temp_hold()`;
    try {
      await rig.fleet`SELECT pg_advisory_lock(4242)`;
      const held = async () => {
        const [row] = await rig.admin<{ n: number }[]>`
          SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted`;
        return row!.n === 1;
      };
      assert.ok(await until(held), "the first backfill batch never reached its first row");
      await sleep(500); // the second batch tries for a slot and waits
      // The held batch takes 3 s by the forwarder's clock: slow, so the backfill pauses 3 s.
      clock.stall(3000);
      await rig.fleet`SELECT pg_advisory_unlock(4242)`;
      // Which batch stopped at the row depends on which of the two got the slot first.
      const heldLanded = async () => {
        const [row] = await rig.admin<{ n: number }[]>`
          SELECT count(*)::int AS n FROM metrics WHERE value = ${BATCH}`;
        return row!.n === 1;
      };
      assert.ok(await until(heldLanded), "the held batch never committed");
      const landed = await rig.batches();
      for (let i = 0; i < 20; i++) {
        assert.equal(await rig.batches(), landed, "a batch went within the pause");
        await sleep(50);
      }
      for (let i = 0; i < 100 && rig.spool.view.rowCount() > 0; i++) {
        await clock.advance(1000);
        await sleep(100);
      }
      await drained(rig);
      assert.equal(await rig.count(false), 10 * BATCH);
    } finally {
      await rig.admin`DROP TRIGGER hold ON metrics`;
      await rig.admin`DROP FUNCTION pg_temp_hold()`;
    }
  });
});

// A hook, not a test: a filtered run (`deno test --filter`) stops the cluster too.
Deno.test.afterAll(async () => {
  await destroyPostgres(await pgReady);
});
