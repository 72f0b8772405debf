/**
 * A small batch claimed and written in one statement (src/forward/batch_writer.ts
 * `sendInOneStatement`, ledger.ts `claimIfFree`) against a real PostgreSQL: its rows land with
 * their ledger row or not at all; an overlapping range, a held ledger lock and a refused row
 * each leave nothing behind; hostile names and labels go as parameters, stored as they are.
 * `send()` answers true only when the INSERT's count is the batch's length (false when it is 0;
 * any other count throws), so each `true` below also checks the count.
 *
 * Every case runs on plain PostgreSQL and again on TimescaleDB, where `metrics` is the hypertable
 * setup-db makes (as on Kwollect's sites), which adds the cases only a hypertable has: a batch
 * across two chunks that the statement creates, and one into a compressed chunk. A full batch and
 * the prepared statement's generic plan (which any live batch after the fifth may run) are
 * checked on both.
 */
import assert from "node:assert/strict";
import { connect, endpointOf, type Sql } from "../../src/central/connect.ts";
import { spoolOptions } from "../../src/cli/runtime.ts";
import type { Config } from "../../src/config/defaults.ts";
import { batchClaim, ONE_STATEMENT_ROWS_MAX, sendInOneStatement } from "../../src/forward/batch_writer.ts";
import { Ledger } from "../../src/forward/ledger.ts";
import type { Sample } from "../../src/sample.ts";
import { openSpool, type Spool, type SpooledRows } from "../../src/spool/spool.ts";
import { Telemetry } from "../../src/telemetry/telemetry.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { startCentral } from "../../scripts/peers/central.ts";
import { destroyPostgres, type PgCluster } from "../../scripts/peers/postgres.ts";
import { timescaleAvailable } from "../central/harness.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";

const pgReady = startCentral({ timescaledb: false });

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

/** `n` samples of devices `<tag>-...`, one a millisecond from `startMs` (default: a minute ago). */
function samples(n: number, tag: string, startMs = Date.now() - 60_000): Sample[] {
  return Array.from({ length: n }, (_, i) => ({
    timestampMs: startMs + i,
    deviceId: `${tag}-${HOSTILE[i % HOSTILE.length]}`,
    metricId: i % 3 === 0 ? `m"${i}` : "power_watt",
    value: i === 1 ? NaN : i + 0.5,
    labels: { port: HOSTILE[(i + 1) % HOSTILE.length]!, 'k\\"ey': String(i) },
  }));
}

/**
 * A spool of its own, a connection with a short lock_timeout (a wait fails instead of hanging)
 * and `parameters`.
 */
async function fixture(pg: PgCluster, parameters: Record<string, string> = {}) {
  const dir = await tempDir("kwollector-test-");
  const config: Config = pgConfig(pg, dir);
  const spool = openSpool({ ...spoolOptions(config), commitIntervalMs: 1 });
  const sql = connect(endpointOf(config), { parameters: { lock_timeout: "1000", ...parameters } });
  const ledger = new Ledger({
    lease: spool.lease,
    edgeId: config.edge_id,
    bounded: (p) => p,
    telemetry: new Telemetry(),
  });
  const send = (batch: SpooledRows) => sendInOneStatement(sql, batch, ledger.claimIfFree(sql, batchClaim(batch)));
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

/** A case run on both backends (each on a spool of its own, with devices of its own). */
interface Case {
  name: string;
  fn: (pg: PgCluster) => Promise<void>;
}

const CASES: Case[] = [];

CASES.push({
  name: "sendInOneStatement() commits a batch's rows with its ledger row, names and labels as they are",
  fn: async (pg) => {
    const { spool, sql, send, close } = await fixture(pg);
    try {
      const written = samples(20, "one");
      await spool.writer.append(written);
      const batch = spool.lease.readRows(0, 20);
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
  },
});

CASES.push({
  name: "sendInOneStatement() writes nothing for a range already claimed, in whole or in part",
  fn: async (pg) => {
    const { spool, sql, send, close } = await fixture(pg);
    try {
      await spool.writer.append(samples(30, "overlap"));
      assert.equal(await send(spool.lease.readRows(0, 20)), true);
      assert.equal(await send(spool.lease.readRows(0, 20)), false);
      assert.equal(await send(spool.lease.readRows(10, 20)), false);
      assert.deepEqual(await ledgerRows(sql, spool), [["data", 1, 20, 20]]);
      assert.equal((await metricRows(sql, "overlap")).length, 20);
      assert.equal(await send(spool.lease.readRows(20, 20)), true);
      assert.deepEqual(await ledgerRows(sql, spool), [["data", 1, 20, 20], ["data", 21, 30, 10]]);
      assert.equal((await metricRows(sql, "overlap")).length, 30);
    } finally {
      await close();
    }
  },
});

CASES.push({
  name: "sendInOneStatement() writes nothing, without waiting, while another session holds the ledger lock",
  fn: async (pg) => {
    const { spool, sql, config, send, close } = await fixture(pg);
    const holder = connect(endpointOf(config), { applicationName: "kwollector one-statement test" });
    let release!: () => void;
    const released = new Promise<void>((r) => release = r);
    let locked!: () => void;
    const holding = new Promise<void>((r) => locked = r);
    try {
      await spool.writer.append(samples(10, "held"));
      const batch = spool.lease.readRows(0, 10);
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
  },
});

CASES.push({
  name: "sendInOneStatement() rolls its claim back with a row the server refuses",
  fn: async (pg) => {
    const admin = pg.admin("kwdb");
    await admin`ALTER TABLE metrics ADD CONSTRAINT no_poison_one CHECK (metric_id <> 'poison-one')`;
    const { spool, sql, send, close } = await fixture(pg);
    try {
      const batch = samples(10, "refused");
      batch[6] = { ...batch[6]!, metricId: "poison-one" };
      await spool.writer.append(batch);
      await assert.rejects(send(spool.lease.readRows(0, 10)), (err) => {
        assert.equal((err as { code?: string }).code, "23514");
        return true;
      });
      assert.deepEqual(await ledgerRows(sql, spool), []);
      assert.equal((await metricRows(sql, "refused")).length, 0);
      // The rows before the refused one go through alone, as the forwarder's bisection sends them.
      assert.equal(await send(spool.lease.readRows(0, 6)), true);
      assert.deepEqual(await ledgerRows(sql, spool), [["data", 1, 6, 6]]);
    } finally {
      await admin`ALTER TABLE metrics DROP CONSTRAINT no_poison_one`;
      await close();
    }
  },
});

CASES.push({
  name: "sendInOneStatement() writes a batch of ONE_STATEMENT_ROWS_MAX rows whole",
  fn: async (pg) => {
    const { spool, sql, send, close } = await fixture(pg);
    try {
      await spool.writer.append(samples(ONE_STATEMENT_ROWS_MAX, "full"));
      assert.equal(await send(spool.lease.readRows(0, ONE_STATEMENT_ROWS_MAX)), true);
      assert.deepEqual(await ledgerRows(sql, spool), [["data", 1, ONE_STATEMENT_ROWS_MAX, ONE_STATEMENT_ROWS_MAX]]);
      assert.equal((await metricRows(sql, "full")).length, ONE_STATEMENT_ROWS_MAX);
    } finally {
      await close();
    }
  },
});

for (const planCacheMode of ["auto", "force_generic_plan"]) {
  CASES.push({
    name:
      `sendInOneStatement() keeps its claim's gate in the prepared statement's plan (plan_cache_mode ${planCacheMode})`,
    fn: async (pg) => {
      // Every live batch runs the same prepared statement: after five, PostgreSQL may run its
      // generic plan, which force_generic_plan makes certain.
      const { spool, sql, send, close } = await fixture(pg, { plan_cache_mode: planCacheMode });
      const tag = `plan-${planCacheMode}`;
      try {
        await spool.writer.append(samples(80, tag));
        for (let i = 0; i < 8; i++) assert.equal(await send(spool.lease.readRows(i * 10, 10)), true, `batch ${i + 1}`);
        assert.equal(await send(spool.lease.readRows(30, 10)), false);
        assert.equal(await send(spool.lease.readRows(75, 10)), false);
        assert.deepEqual(
          await ledgerRows(sql, spool),
          Array.from({ length: 8 }, (_, i) => ["data", i * 10 + 1, i * 10 + 10, 10]),
        );
        assert.equal((await metricRows(sql, tag)).length, 80);
      } finally {
        await close();
      }
    },
  });
}

for (const c of CASES) Deno.test(c.name, async () => await c.fn(await pgReady));

// A hook, not a test: a filtered run (`deno test --filter`) stops the cluster too.
Deno.test.afterAll(async () => {
  await destroyPostgres(await pgReady);
});

const CHUNK_MS = 6 * 3600_000;

/** Start of the chunk interval (setup-db's default, 6 hours) `ageMs` ago. */
function chunkStart(ageMs: number): number {
  return Math.floor((Date.now() - ageMs) / CHUNK_MS) * CHUNK_MS;
}

/** The chunks of metrics holding devices `<tag>-...`, and whether each is compressed. */
async function chunksOf(admin: Sql, tag: string): Promise<[string, boolean][]> {
  const rows = await admin<{ chunk: string; compressed: boolean }[]>`
    SELECT format('%I.%I', c.chunk_schema, c.chunk_name) AS chunk, c.is_compressed AS compressed
    FROM timescaledb_information.chunks c
    WHERE format('%I.%I', c.chunk_schema, c.chunk_name)::regclass IN (
      SELECT DISTINCT tableoid FROM metrics WHERE device_id LIKE ${tag + "-%"})
    ORDER BY c.range_start`;
  return rows.map((r) => [r.chunk, r.compressed]);
}

/** Cases only a hypertable has: chunks made by the statement, and compressed chunks. */
const HYPERTABLE_CASES: Case[] = [{
  name: "sendInOneStatement() writes a batch across two chunks it creates whole, and nothing for its range again",
  fn: async (pg) => {
    const admin = pg.admin("kwdb");
    const { spool, sql, send, close } = await fixture(pg);
    try {
      const boundary = chunkStart(2 * 86_400_000);
      await spool.writer.append(samples(20, "across", boundary - 10));
      const [before] = await admin<{ n: number }[]>`
        SELECT count(*)::int AS n FROM timescaledb_information.chunks
        WHERE hypertable_name = 'metrics' AND range_end > ${new Date(boundary - 10)}
          AND range_start <= ${new Date(boundary + 9)}`;
      assert.equal(before!.n, 0, "no chunk there yet");
      assert.equal(await send(spool.lease.readRows(0, 20)), true);
      assert.equal((await chunksOf(admin, "across")).length, 2);
      assert.equal(await send(spool.lease.readRows(0, 20)), false);
      assert.deepEqual(await ledgerRows(sql, spool), [["data", 1, 20, 20]]);
      assert.equal((await metricRows(sql, "across")).length, 20);
    } finally {
      await close();
    }
  },
}, {
  name: "sendInOneStatement() writes a batch into a compressed chunk whole, and nothing for its range again",
  fn: async (pg) => {
    const admin = pg.admin("kwdb");
    const { spool, sql, send, close } = await fixture(pg);
    try {
      const start = chunkStart(3 * 86_400_000) + 3600_000;
      await spool.writer.append(samples(20, "packed", start));
      assert.equal(await send(spool.lease.readRows(0, 10)), true);
      const [chunk] = await chunksOf(admin, "packed");
      await admin`SELECT compress_chunk(${chunk![0]}::regclass)`;
      assert.deepEqual(await chunksOf(admin, "packed"), [[chunk![0], true]]);
      assert.equal(await send(spool.lease.readRows(10, 10)), true);
      assert.equal(await send(spool.lease.readRows(10, 10)), false);
      assert.equal(await send(spool.lease.readRows(5, 10)), false);
      assert.deepEqual(await ledgerRows(sql, spool), [["data", 1, 10, 10], ["data", 11, 20, 10]]);
      const rows = await metricRows(sql, "packed");
      assert.deepEqual(rows.map((r) => r.labels), samples(20, "packed", start).map((s) => s.labels));
    } finally {
      await close();
    }
  },
}];

Deno.test({
  name:
    "sendInOneStatement() passes the same cases into the hypertable metrics of TimescaleDB, and those of its chunks",
  ignore: !timescaleAvailable(),
  fn: async (t) => {
    const pg = await startCentral({ timescaledb: true });
    try {
      const [hypertable] = await pg.admin("kwdb")<{ n: number }[]>`
        SELECT count(*)::int AS n FROM timescaledb_information.hypertables WHERE hypertable_name = 'metrics'`;
      assert.equal(hypertable!.n, 1, "metrics is a hypertable");
      for (const c of [...CASES, ...HYPERTABLE_CASES]) await t.step(c.name, () => c.fn(pg));
    } finally {
      await destroyPostgres(pg);
    }
  },
});
