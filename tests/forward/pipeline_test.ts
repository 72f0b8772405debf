import assert from "node:assert/strict";
import { Forwarder } from "../../src/forward/forwarder.ts";
import { openSpool, type Spool } from "../../src/spool/spool.ts";
import { spoolOptions } from "../../src/cli/runtime.ts";
import { endpointOf } from "../../src/central/connect.ts";
import { setupDatabase } from "../../src/central/setup.ts";
import type { Config } from "../../src/config/defaults.ts";
import { setLogLevel, setLogSink } from "../../src/log.ts";
import { destroyPostgres, type PgCluster, startPostgres } from "../../scripts/peers/postgres.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { samples } from "./fixtures.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";

/**
 * The backfill's pipeline against a real PostgreSQL. A gate holds the backfill's rows inside
 * their COPY: a row trigger on `metrics` makes every backlog row past the first batch
 * (BATCH <= value < FRESH) wait for an advisory lock the test holds, while fresh rows pass. (The
 * first batch goes alone on the live connection: it finds the ledger lock free, which opens the
 * pipeline.) A second gate, closed on demand, holds the fresh rows the same way. So "in flight"
 * and "held up" are states the server shows (pg_stat_activity), not guesses about timing.
 */

const BACKLOG = 20_000;
const BATCH = 2000;
const FRESH = 1_000_000;
const GATE_KEY = 4242;
const FRESH_GATE_KEY = 4343;

const pgReady = startPostgres({ timescaledb: false }).then(async (pg) => {
  const dir = await tempDir("kwollector-test-");
  await setupDatabase(pgConfig(pg, dir));
  const admin = pg.admin("kwdb");
  await admin.unsafe(`
    CREATE FUNCTION test_gate() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM pg_advisory_lock_shared(TG_ARGV[0]::bigint);
      PERFORM pg_advisory_unlock_shared(TG_ARGV[0]::bigint);
      RETURN NEW;
    END $$`);
  await admin.end();
  return pg;
});

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A spool holding BACKLOG samples left by a previous run, reopened (the collector restarted). */
async function restartedOnBacklog(pg: PgCluster, opts: { ledgerLockHeld?: boolean } = {}) {
  const dir = await tempDir("kwollector-test-");
  const config: Config = pgConfig(pg, dir, {
    forward_batch_rows: BATCH,
    forward_retry_max_ms: 50,
    forward_timeout_ms: 20_000,
  });
  const before = openSpool({ ...spoolOptions(config), commitIntervalMs: 1 });
  await before.writer.append(samples(BACKLOG));
  before.close();
  const spool: Spool = openSpool({ ...spoolOptions(config), commitIntervalMs: 1 });
  const admin = pg.admin("kwdb");
  await admin`TRUNCATE metrics`;
  await admin.unsafe(`CREATE TRIGGER test_gate BEFORE INSERT ON metrics FOR EACH ROW
                      WHEN (NEW.value >= ${BATCH} AND NEW.value < ${FRESH}) EXECUTE FUNCTION test_gate(${GATE_KEY})`);
  await admin.unsafe(`CREATE TRIGGER test_fresh_gate BEFORE INSERT ON metrics FOR EACH ROW
                      WHEN (NEW.value >= ${FRESH}) EXECUTE FUNCTION test_gate(${FRESH_GATE_KEY})`);
  // The gate: a session holding the advisory lock every backlog row waits for.
  const gateSql = pg.admin("kwdb");
  const gate = await gateSql.reserve();
  await gate`SELECT pg_advisory_lock(${GATE_KEY})`;
  let open = false;
  const openGate = async () => {
    if (open) return;
    open = true;
    await gate`SELECT pg_advisory_unlock(${GATE_KEY})`;
    gate.release();
    await gateSql.end();
  };
  // Another session holding the spool's ledger lock (an orphan of a previous life), when asked.
  const lockSql = pg.admin("kwdb");
  const locker = await lockSql.reserve();
  const [keyRow] = await locker<{ key: string }[]>`
    SELECT hashtextextended(${spool.spoolId}::uuid::text, 0)::text AS key`;
  const ledgerKey = keyRow!.key;
  let lockHeld = false;
  const holdLedgerLock = async () => {
    await locker`SELECT pg_advisory_lock(${ledgerKey}::bigint)`;
    lockHeld = true;
  };
  const releaseLedgerLock = async () => {
    if (!lockHeld) return;
    lockHeld = false;
    await locker`SELECT pg_advisory_unlock(${ledgerKey}::bigint)`;
  };
  // The fresh rows' gate, open until the test closes it (held by the ledger lock's session).
  let freshGateClosed = false;
  const openFreshGate = async () => {
    if (!freshGateClosed) return;
    freshGateClosed = false;
    await locker`SELECT pg_advisory_unlock(${FRESH_GATE_KEY})`;
  };
  if (opts.ledgerLockHeld) await holdLedgerLock();
  const logs: string[] = [];
  setLogSink((l) => logs.push(l));
  // Info: "Central database slow" is an info line.
  setLogLevel("info");
  const fwd = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config });
  const stop = new AbortController();
  const running = fwd.run(stop.signal);
  return {
    config,
    spool,
    admin,
    fwd,
    logs,
    openGate,
    holdLedgerLock,
    releaseLedgerLock,
    async closeFreshGate(): Promise<void> {
      await locker`SELECT pg_advisory_lock(${FRESH_GATE_KEY})`;
      freshGateClosed = true;
    },
    openFreshGate,
    /** Whether the live lane's backend waits at the fresh rows' gate, inside its COPY. */
    async liveHeldInCopy(): Promise<boolean> {
      const [row] = await admin<{ n: number }[]>`
        SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE a.application_name = 'kwollector forwarder' AND a.query LIKE 'COPY %'
          AND l.locktype = 'advisory' AND NOT l.granted AND l.objid = ${FRESH_GATE_KEY}`;
      return row!.n === 1;
    },
    /** The forwarder's backends, and those of them waiting for a lock, as the server sees them. */
    async backends(): Promise<{ all: number; backfill: number; waiting: number }> {
      const [row] = await admin<{ all: number; backfill: number; waiting: number }[]>`
        SELECT count(*)::int AS all, count(*) FILTER (WHERE application_name = 'kwollector backfill')::int AS backfill,
               count(*) FILTER (WHERE wait_event_type = 'Lock')::int AS waiting
        FROM pg_stat_activity WHERE application_name IN ('kwollector forwarder', 'kwollector backfill')`;
      return row!;
    },
    /** Backfill backends waiting at the gate, as the server sees them. */
    async heldBackends(): Promise<number[]> {
      const rows = await admin<{ pid: number }[]>`
        SELECT pid FROM pg_stat_activity
        WHERE application_name = 'kwollector backfill' AND wait_event_type = 'Lock'`;
      return rows.map((r) => r.pid);
    },
    async count(fresh: boolean): Promise<number> {
      const [row] = await admin<{ n: number }[]>`
        SELECT count(*)::int AS n FROM metrics WHERE (value >= ${FRESH}) = ${fresh}`;
      return row!.n;
    },
    /** Opens the gate, lets the forwarder empty the spool, stops it and cleans up. */
    async finish(): Promise<void> {
      if (stop.signal.aborted) return;
      await releaseLedgerLock();
      await openFreshGate();
      await openGate();
      for (let i = 0; i < 1200 && spool.view.rowCount() > 0; i++) await sleep(50);
      stop.abort();
      await running;
      await fwd.close();
      await admin`DROP TRIGGER test_gate ON metrics`;
      await admin`DROP TRIGGER test_fresh_gate ON metrics`;
      locker.release();
      await lockSql.end();
      spool.close();
      setLogSink((l) => console.error(l));
      setLogLevel("warning");
    },
    async close(): Promise<void> {
      await admin.end();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Waits until `predicate` holds, polling every 20 ms, for at most `ms`. */
async function until(predicate: () => Promise<boolean>, ms = 30_000): Promise<boolean> {
  for (let waited = 0; waited < ms; waited += 20) {
    if (await predicate()) return true;
    await sleep(20);
  }
  return false;
}

/** Every backlog row and every fresh one once, and ledger ranges that tile the seqs without overlap. */
async function assertExactlyOnce(
  admin: ReturnType<PgCluster["admin"]>,
  spoolId: string,
  fresh: number[],
): Promise<void> {
  const rows = await admin<{ value: number }[]>`SELECT value FROM metrics ORDER BY value`;
  assert.deepEqual(rows.map((r) => r.value), [...Array.from({ length: BACKLOG }, (_, i) => i), ...fresh]);
  const ledger = await admin<{ f: number; l: number }[]>`
    SELECT first_seq::int AS f, last_seq::int AS l FROM kwollect_ledger
    WHERE spool_id = ${spoolId} ORDER BY first_seq`;
  for (let i = 1; i < ledger.length; i++) assert.equal(ledger[i]!.f, ledger[i - 1]!.l + 1, "ranges tile the seqs");
  assert.equal(ledger[0]!.f, 1);
  assert.equal(ledger.at(-1)!.l, BACKLOG + fresh.length);
}

Deno.test("forwarder keeps two backfill batches in flight, each on its own connection, and lands every row once", async () => {
  const pg = await pgReady;
  const t = await restartedOnBacklog(pg);
  try {
    assert.ok(await until(async () => (await t.heldBackends()).length === 2), "two batches were never in flight");
    assert.equal(await t.count(false), BATCH, "only the first batch, sent alone, landed");
    // No third batch: the pipeline is forward_pipeline_batches deep.
    const [row] = await t.admin<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'kwollector backfill'`;
    assert.equal(row!.n, t.config.forward_pipeline_batches);
    await t.finish();
    await assertExactlyOnce(t.admin, t.spool.spoolId, []);
    assert.equal(t.fwd.counters.retries, 0, t.logs.join("\n"));
  } finally {
    await t.finish();
    await t.close();
  }
});

Deno.test("forwarder lands fresh samples while its own backfill batches are held up", async () => {
  const pg = await pgReady;
  const t = await restartedOnBacklog(pg);
  try {
    assert.ok(await until(async () => (await t.heldBackends()).length === 2), "the backfill never started");
    const fresh = samples(10, FRESH);
    await t.spool.writer.append(fresh);
    // The live lane's rows do not wait for the backfill's: they land while the gate still holds it.
    const landed = await until(async () => await t.count(true) === 10, 4000);
    assert.equal(await t.count(false), BATCH, "the backfill past its first batch was held all along");
    assert.ok(landed, "fresh samples waited behind the backfill");
    await t.finish();
    await assertExactlyOnce(t.admin, t.spool.spoolId, fresh.map((s) => s.value));
  } finally {
    await t.finish();
    await t.close();
  }
});

Deno.test("forwarder's backfill batches commit while its live lane's batch is held inside its COPY", async () => {
  const pg = await pgReady;
  const t = await restartedOnBacklog(pg);
  try {
    assert.ok(await until(async () => (await t.heldBackends()).length === 2), "two batches were never in flight");
    await t.closeFreshGate();
    const fresh = samples(10, FRESH);
    await t.spool.writer.append(fresh);
    assert.ok(await until(() => t.liveHeldInCopy()), "the live lane's batch never reached its COPY");
    // The backfill's COPYs end; their claims do not queue behind the live lane's COPY (it claims
    // after its rows): both batches commit while it is still held. (Had they queued, they would
    // commit only once lock_timeout, 5 s, cancels the live lane's COPY.)
    await t.openGate();
    await until(async () => await t.count(false) === 3 * BATCH || !(await t.liveHeldInCopy()));
    const { waiting } = await t.backends();
    assert.ok(
      await t.liveHeldInCopy(),
      `the live lane's COPY ended before the backfill committed (${waiting} waiting)`,
    );
    assert.equal(await t.count(false), 3 * BATCH, "the backfill's two batches in flight committed");
    assert.equal(await t.count(true), 0, "the live lane's batch was held all along");
    await t.openFreshGate();
    await t.finish();
    await assertExactlyOnce(t.admin, t.spool.spoolId, fresh.map((s) => s.value));
    assert.equal(t.fwd.counters.retries, 0, t.logs.join("\n"));
  } finally {
    await t.finish();
    await t.close();
  }
});

Deno.test("forwarder whose backfill connections die with two batches in flight reconciles and lands every row once", async () => {
  const pg = await pgReady;
  const t = await restartedOnBacklog(pg);
  try {
    assert.ok(await until(async () => (await t.heldBackends()).length === 2), "two batches were never in flight");
    const pids = await t.heldBackends();
    await t.admin`SELECT pg_terminate_backend(pid) FROM unnest(${pids}::int[]) AS pid`;
    assert.ok(await until(() => Promise.resolve(t.fwd.counters.retries > 0)), "the lost batches were never noticed");
    await t.openGate();
    await t.finish();
    await assertExactlyOnce(t.admin, t.spool.spoolId, []);
    assert.ok(t.logs.some((l) => l.includes("Central database unreachable")), t.logs.join("\n"));
  } finally {
    await t.finish();
    await t.close();
  }
});

Deno.test("forwarder waits for a ledger lock held by another session on one connection, then pipelines its backlog", async () => {
  const pg = await pgReady;
  const logFrom = (await Deno.stat(`${pg.dir}/pg.log`)).size;
  const t = await restartedOnBacklog(pg, { ledgerLockHeld: true });
  try {
    assert.ok(await until(async () => (await t.backends()).waiting === 1), "the forwarder never waited for the lock");
    // Through several lock waits (lock_timeout 5 s here): one backend, no backfill connection.
    let most = { all: 0, backfill: 0, waiting: 0 };
    for (let i = 0; i < 60; i++) {
      const b = await t.backends();
      most = { all: Math.max(most.all, b.all), backfill: Math.max(most.backfill, b.backfill), waiting: b.waiting };
      await sleep(200);
    }
    assert.deepEqual({ all: most.all, backfill: most.backfill }, { all: 1, backfill: 0 });
    assert.ok(t.logs.some((l) => l.includes("Central database lock held by another session")), t.logs.join("\n"));
    assert.equal(await t.count(false), 0);
    // Each wait ends in one error in the server's log, its lock timeout: the batch's COPY, sent with
    // the lock's try, was ended before the claim waited, so the timeout aborts nothing behind it.
    const log = new TextDecoder().decode((await Deno.readFile(`${pg.dir}/pg.log`)).subarray(logFrom));
    const errors = log.split("\n").filter((l) => l.includes("ERROR:"));
    const timeouts = errors.filter((l) => l.includes("canceling statement due to lock timeout"));
    assert.ok(timeouts.length >= 2, log);
    assert.deepEqual(errors, timeouts, log);
    // Once the lock is free, the first batch goes alone, then two are in flight again.
    await t.releaseLedgerLock();
    assert.ok(await until(async () => (await t.heldBackends()).length === 2), "the pipeline never opened again");
    await t.finish();
    await assertExactlyOnce(t.admin, t.spool.spoolId, []);
  } finally {
    await t.finish();
    await t.close();
  }
});

Deno.test("forwarder's backfill batches that waited for the ledger lock do not count as a slow database", async () => {
  const pg = await pgReady;
  const t = await restartedOnBacklog(pg);
  try {
    assert.ok(await until(async () => (await t.heldBackends()).length === 2), "two batches were never in flight");
    // Their COPY ends at once, then their claims wait 3 s for the lock (slow would be over 2 s).
    await t.holdLedgerLock();
    await t.openGate();
    assert.ok(await until(async () => (await t.backends()).waiting >= 1), "no claim waited for the lock");
    await sleep(3000);
    await t.releaseLedgerLock();
    await t.finish();
    await assertExactlyOnce(t.admin, t.spool.spoolId, []);
    assert.ok(!t.logs.some((l) => l.includes("Central database slow")), t.logs.join("\n"));
    assert.equal(t.fwd.counters.retries, 0, t.logs.join("\n"));
  } finally {
    await t.finish();
    await t.close();
  }
});

// A hook, not a test: a filtered run (`deno test --filter`) stops the cluster too.
Deno.test.afterAll(async () => {
  await destroyPostgres(await pgReady);
});
