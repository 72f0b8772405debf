/**
 * A small batch claimed and written in one statement (src/forward/batch_writer.ts
 * `sendInOneStatement`, ledger.ts `claimIfFree`) against a real PostgreSQL: its rows land with
 * their ledger row or not at all; an overlapping range, a held ledger lock and a refused row
 * each leave nothing behind; hostile names and labels go as parameters, stored as they are.
 */
import assert from "node:assert/strict";
import { connect, endpointOf, type Sql } from "../../src/central/connect.ts";
import { setupDatabase } from "../../src/central/setup.ts";
import { spoolOptions } from "../../src/cli/runtime.ts";
import type { Config } from "../../src/config/defaults.ts";
import { batchClaim, sendInOneStatement } from "../../src/forward/batch_writer.ts";
import { Ledger } from "../../src/forward/ledger.ts";
import type { Sample } from "../../src/sample.ts";
import { openSpool, type Spool, type SpooledSample } from "../../src/spool/spool.ts";
import { Telemetry } from "../../src/telemetry/telemetry.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { destroyPostgres, type PgCluster, startPostgres } from "../../scripts/peers/postgres.ts";

const pgReady = startPostgres({ timescaledb: false }).then(async (pg) => {
  const dir = await Deno.makeTempDir();
  await setupDatabase(pgConfig(pg, dir));
  await Deno.remove(dir, { recursive: true });
  return pg;
});

/** Device names and label values an array literal or a statement's text would choke on. */
const HOSTILE = [
  `quote"d`,
  "back\\slash",
  "{braces,comma}",
  "NULL",
  "'); DROP TABLE metrics; --",
  "tab\there",
  "ünïcødé ✓",
];

function samples(n: number, tag: string): Sample[] {
  return Array.from({ length: n }, (_, i) => ({
    timestampMs: Date.now() - 60_000 + i,
    deviceId: `${tag}-${HOSTILE[i % HOSTILE.length]}`,
    metricId: i % 3 === 0 ? `m"${i}` : "power_watt",
    value: i === 1 ? NaN : i + 0.5,
    labels: { port: HOSTILE[(i + 1) % HOSTILE.length]!, 'k\\"ey': String(i) },
  }));
}

/** A spool of its own, a connection with a short lock_timeout (a wait fails instead of hanging). */
async function fixture(pg: PgCluster) {
  const dir = await Deno.makeTempDir();
  const config: Config = pgConfig(pg, dir);
  const spool = openSpool({ ...spoolOptions(config), commitIntervalMs: 1 });
  const sql = connect(endpointOf(config), { parameters: { lock_timeout: 1000 } });
  const ledger = new Ledger({
    lease: spool.lease,
    edgeId: config.edge_id,
    bounded: (p) => p,
    telemetry: new Telemetry(),
  });
  const send = (batch: SpooledSample[]) => sendInOneStatement(sql, batch, ledger.claimIfFree(sql, batchClaim(batch)));
  const close = async () => {
    spool.close();
    await sql.end();
    await Deno.remove(dir, { recursive: true });
  };
  return { config, spool, sql, send, close };
}

async function ledgerRows(sql: Sql, spool: Spool): Promise<[string, number, number, number][]> {
  const rows = await sql<{ kind: string; first: number; last: number; rows: number }[]>`
    SELECT kind, first_seq::int AS first, last_seq::int AS last, rows FROM kwollect_ledger
    WHERE spool_id = ${spool.spoolId} ORDER BY first_seq`;
  return rows.map((r) => [r.kind, r.first, r.last, r.rows]);
}

async function metricRows(sql: Sql, tag: string) {
  return await sql<{ device_id: string; metric_id: string; value: number; labels: Record<string, string> }[]>`
    SELECT device_id, metric_id, value, labels FROM metrics WHERE device_id LIKE ${tag + "-%"}
    ORDER BY "timestamp"`;
}

Deno.test("sendInOneStatement() commits a batch's rows with its ledger row, names and labels as they are", async () => {
  const pg = await pgReady;
  const { spool, sql, send, close } = await fixture(pg);
  try {
    const written = samples(20, "one");
    await spool.writer.append(written);
    const batch = spool.lease.read(0, 20);
    assert.equal(await send(batch), true);
    assert.deepEqual(await ledgerRows(sql, spool), [["data", 1, 20, 20]]);
    const rows = await metricRows(sql, "one");
    assert.deepEqual(rows.map((r) => r.device_id), written.map((s) => s.deviceId));
    assert.deepEqual(rows.map((r) => r.metric_id), written.map((s) => s.metricId));
    assert.deepEqual(rows.map((r) => r.labels), written.map((s) => s.labels));
    assert.ok(Number.isNaN(rows[1]!.value));
    assert.equal(rows[2]!.value, 2.5);
    assert.equal((await sql`SELECT to_regclass('metrics') IS NOT NULL AS ok`)[0]!.ok, true);
  } finally {
    await close();
  }
});

Deno.test("sendInOneStatement() writes nothing for a range already claimed, in whole or in part", async () => {
  const pg = await pgReady;
  const { spool, sql, send, close } = await fixture(pg);
  try {
    await spool.writer.append(samples(30, "overlap"));
    assert.equal(await send(spool.lease.read(0, 20)), true);
    assert.equal(await send(spool.lease.read(0, 20)), false);
    assert.equal(await send(spool.lease.read(10, 20)), false);
    assert.deepEqual(await ledgerRows(sql, spool), [["data", 1, 20, 20]]);
    assert.equal((await metricRows(sql, "overlap")).length, 20);
    assert.equal(await send(spool.lease.read(20, 20)), true);
    assert.deepEqual(await ledgerRows(sql, spool), [["data", 1, 20, 20], ["data", 21, 30, 10]]);
    assert.equal((await metricRows(sql, "overlap")).length, 30);
  } finally {
    await close();
  }
});

Deno.test("sendInOneStatement() writes nothing, without waiting, while another session holds the ledger lock", async () => {
  const pg = await pgReady;
  const { spool, sql, config, send, close } = await fixture(pg);
  const holder = connect(endpointOf(config), { applicationName: "kwollector one-statement test" });
  let release!: () => void;
  const released = new Promise<void>((r) => release = r);
  let locked!: () => void;
  const holding = new Promise<void>((r) => locked = r);
  try {
    await spool.writer.append(samples(10, "held"));
    const batch = spool.lease.read(0, 10);
    const held = holder.begin(async (tx) => {
      await tx`SELECT pg_advisory_xact_lock(hashtextextended(${spool.spoolId}::uuid::text, 0))`;
      locked();
      await released;
    });
    await holding;
    // A wait would end in lock_timeout's error (1 s) instead of this answer.
    assert.equal(await send(batch), false);
    release();
    await held;
    assert.deepEqual(await ledgerRows(sql, spool), []);
    assert.equal((await metricRows(sql, "held")).length, 0);
    assert.equal(await send(batch), true);
    assert.deepEqual(await ledgerRows(sql, spool), [["data", 1, 10, 10]]);
  } finally {
    release();
    await holder.end();
    await close();
  }
});

Deno.test("sendInOneStatement() rolls its claim back with a row the server refuses", async () => {
  const pg = await pgReady;
  const admin = pg.admin("kwdb");
  await admin`ALTER TABLE metrics ADD CONSTRAINT no_poison_one CHECK (metric_id <> 'poison-one')`;
  const { spool, sql, send, close } = await fixture(pg);
  try {
    const batch = samples(10, "refused");
    batch[6] = { ...batch[6]!, metricId: "poison-one" };
    await spool.writer.append(batch);
    await assert.rejects(send(spool.lease.read(0, 10)), (err) => {
      assert.equal((err as { code?: string }).code, "23514");
      return true;
    });
    assert.deepEqual(await ledgerRows(sql, spool), []);
    assert.equal((await metricRows(sql, "refused")).length, 0);
    // The rows before the refused one go through alone, as the forwarder's bisection sends them.
    assert.equal(await send(spool.lease.read(0, 6)), true);
    assert.deepEqual(await ledgerRows(sql, spool), [["data", 1, 6, 6]]);
  } finally {
    await admin`ALTER TABLE metrics DROP CONSTRAINT no_poison_one`;
    await close();
  }
});

Deno.test("one-statement test cluster shuts down", async () => {
  await destroyPostgres(await pgReady);
});
