/**
 * The delivery ledger's protocol (src/forward/ledger.ts) against a real PostgreSQL: a range is
 * claimed once, reconciliation removes exactly what the ledger holds, reused seqs are moved
 * past it, and gaps and quarantined seqs are recorded so that the ledger tiles every seq.
 */
import assert from "node:assert/strict";
import { connect, endpointOf, type Sql } from "../../src/central/connect.ts";
import { setupDatabase } from "../../src/central/setup.ts";
import { spoolOptions } from "../../src/cli/runtime.ts";
import type { Config } from "../../src/config/defaults.ts";
import { Ledger, ledgerLockHolder, OverlapError } from "../../src/forward/ledger.ts";
import { setLogSink } from "../../src/log.ts";
import type { Sample } from "../../src/sample.ts";
import { openSpool, type Spool } from "../../src/spool/spool.ts";
import { Telemetry } from "../../src/telemetry/telemetry.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { destroyPostgres, type PgCluster, startPostgres } from "../../scripts/peers/postgres.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";

const pgReady = startPostgres({ timescaledb: false }).then(async (pg) => {
  const dir = await tempDir("kwollector-test-");
  await setupDatabase(pgConfig(pg, dir));
  await Deno.remove(dir, { recursive: true });
  return pg;
});

function samples(n: number, from = 0): Sample[] {
  return Array.from({ length: n }, (_, i) => ({
    timestampMs: Date.now() - 60_000 + from + i,
    deviceId: `node-${(from + i) % 7}`,
    metricId: "power_watt",
    value: from + i,
    labels: {},
  }));
}

/** A spool of its own, the collector's connection to the cluster, and a ledger over both. */
async function fixture(pg: PgCluster, overrides: Record<string, number> = {}) {
  const dir = await tempDir("kwollector-test-");
  const config: Config = pgConfig(pg, dir, overrides);
  const spool = openSpool({ ...spoolOptions(config), commitIntervalMs: 1 });
  const sql = connect(endpointOf(config));
  const telemetry = new Telemetry();
  const ledger = new Ledger({ lease: spool.lease, edgeId: config.edge_id, bounded: (p) => p, telemetry });
  const close = async () => {
    spool.close();
    await sql.end();
    await Deno.remove(dir, { recursive: true });
  };
  return { config, spool, sql, telemetry, ledger, close };
}

/** The ledger rows of a spool: [kind, first, last, rows]. */
async function ledgerRows(sql: Sql, spool: Spool): Promise<[string, number, number, number][]> {
  const rows = await sql<{ kind: string; first: number; last: number; rows: number }[]>`
    SELECT kind, first_seq::int AS first, last_seq::int AS last, rows FROM kwollect_ledger
    WHERE spool_id = ${spool.spoolId} ORDER BY first_seq`;
  return rows.map((r) => [r.kind, r.first, r.last, r.rows]);
}

/** Claims [first, last] as a committed batch of data, as a forwarder whose acknowledgement was lost. */
async function commitClaim(sql: Sql, ledger: Ledger, first: number, last: number): Promise<void> {
  const now = Date.now();
  await sql.begin((tx) => ledger.claimBatch(tx, { first, last, rows: last - first + 1, minTs: now, maxTs: now }));
}

Deno.test("ledger.claimBatch() claims a seq range once: any overlapping claim is refused and writes nothing", async () => {
  const pg = await pgReady;
  const { spool, sql, ledger, close } = await fixture(pg);
  try {
    await commitClaim(sql, ledger, 1, 100);
    for (const [first, last] of [[1, 100], [50, 60], [100, 150], [0, 1]]) {
      await assert.rejects(commitClaim(sql, ledger, first!, last!), (err) => {
        assert.ok(err instanceof OverlapError);
        assert.deepEqual([err.first, err.last], [first, last]);
        return true;
      });
    }
    await commitClaim(sql, ledger, 101, 150);
    assert.deepEqual(await ledgerRows(sql, spool), [["data", 1, 100, 100], ["data", 101, 150, 50]]);
  } finally {
    await close();
  }
});

Deno.test("ledger.reconcile() removes from the spool exactly the ranges the ledger holds", async () => {
  const pg = await pgReady;
  const { spool, sql, ledger, close } = await fixture(pg);
  try {
    await spool.writer.append(samples(100));
    // Two batches committed centrally whose acknowledgements never came back.
    await commitClaim(sql, ledger, 1, 40);
    await commitClaim(sql, ledger, 61, 70);
    assert.equal(await ledger.reconcile(sql), 50);
    assert.deepEqual(
      spool.lease.read(0, 100).map((s) => s.seq),
      Array.from({ length: 20 }, (_, i) => 41 + i),
    );
    assert.deepEqual(spool.lease.read(60, 100).map((s) => s.seq), Array.from({ length: 30 }, (_, i) => 71 + i));
    assert.equal(await ledger.reconcile(sql), 0, "nothing left that the ledger holds");
    assert.equal(spool.view.rowCount(), 50);
  } finally {
    await close();
  }
});

Deno.test("ledger.reconcile() first moves a writer's reused seqs past the ledger, once, instead of removing them", async () => {
  const pg = await pgReady;
  setLogSink(() => {});
  const { spool, sql, ledger, telemetry, close } = await fixture(pg);
  try {
    // The ledger holds seqs 1..30 of this spool, from samples older than this process: the spool
    // lost the commits that gave them (its write-ahead log), and gave seqs 1..10 again.
    await sql`
      INSERT INTO kwollect_ledger (spool_id, edge_id, first_seq, last_seq, rows, kind, min_ts, max_ts)
      VALUES (${spool.spoolId}, 'test-edge', 1, 30, 30, 'data', now() - interval '1 hour', now() - interval '1 hour')`;
    await spool.writer.append(samples(10, 1000));
    assert.equal(await ledger.reconcile(sql), 0, "the new samples are not taken for the old ones");
    const kept = spool.lease.read(0, 100);
    assert.deepEqual(kept.map((s) => s.seq), Array.from({ length: 10 }, (_, i) => 31 + i));
    assert.deepEqual(kept.map((s) => s.value), samples(10, 1000).map((s) => s.value));
    assert.equal(telemetry.total("kwollector_seq_renumberings_total"), 1);
    await ledger.reconcile(sql);
    assert.equal(telemetry.total("kwollector_seq_renumberings_total"), 1, "checked once");
    await spool.writer.append(samples(1, 2000));
    assert.equal(spool.lease.lastSeq(), 41, "later samples follow the moved ones");
  } finally {
    setLogSink((l) => console.error(l));
    await close();
  }
});

Deno.test("ledger.reportGaps() records a gap as dropped, minus what reached the ledger another way", async () => {
  const pg = await pgReady;
  setLogSink(() => {});
  const { spool, sql, ledger, close } = await fixture(pg, { spool_max_bytes: 1024 * 1024 });
  try {
    for (let i = 0; i < 60_000; i += 5000) await spool.writer.append(samples(5000, i));
    const gaps = spool.lease.gaps();
    assert.ok(gaps.length > 0 && gaps[0]!.lastSeq > 20, JSON.stringify(gaps));
    // A concurrent flush delivered seqs 11..20 before the writer gave them up.
    await commitClaim(sql, ledger, 11, 20);
    let reported = 0;
    await ledger.reportGaps(sql, (rows) => reported += rows);
    assert.equal(reported, gaps.reduce((n, g) => n + g.rows, 0));
    assert.deepEqual(spool.lease.gaps(), []);
    const rows = await ledgerRows(sql, spool);
    assert.deepEqual(rows.slice(0, 3), [
      ["dropped", 1, 10, 0],
      ["data", 11, 20, 10],
      ["dropped", 21, gaps[0]!.lastSeq, 0],
    ]);
    for (const g of gaps.slice(1)) {
      assert.ok(
        rows.some(([kind, first, last, n]) =>
          kind === "dropped" && first === g.firstSeq && last === g.lastSeq && n === g.rows
        ),
      );
    }
  } finally {
    setLogSink((l) => console.error(l));
    await close();
  }
});

Deno.test("ledger.reportQuarantine() records each quarantined seq once", async () => {
  const pg = await pgReady;
  const { spool, sql, ledger, close } = await fixture(pg);
  try {
    await spool.writer.append(samples(5));
    const batch = spool.lease.read(0, 5);
    spool.lease.quarantine([batch[1]!, batch[3]!], "rejected");
    await ledger.reportQuarantine(sql);
    await ledger.reportQuarantine(sql);
    assert.deepEqual(await ledgerRows(sql, spool), [["quarantined", 2, 2, 0], ["quarantined", 4, 4, 0]]);
    assert.deepEqual(spool.lease.unreportedQuarantine(), []);
  } finally {
    await close();
  }
});

Deno.test("ledgerLockHolder() names the session holding a spool's ledger lock, and nothing once it is free", async () => {
  const pg = await pgReady;
  const { spool, sql, ledger, config, close } = await fixture(pg);
  const holder = connect(endpointOf(config), { applicationName: "kwollector ledger test" });
  let release!: () => void;
  const released = new Promise<void>((r) => release = r);
  let claimed!: (pid: number) => void;
  const holderPid = new Promise<number>((r) => claimed = r);
  try {
    const holding = holder.begin(async (tx) => {
      const now = Date.now();
      await ledger.claimBatch(tx, { first: 1, last: 1, rows: 1, minTs: now, maxTs: now });
      const [row] = await tx<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
      claimed(row!.pid);
      await released;
    });
    const pid = await holderPid;
    const held = await ledgerLockHolder(sql, spool.spoolId);
    assert.equal(held?.pid, pid);
    assert.equal(held?.application, "kwollector ledger test");
    assert.equal(held?.state, "idle in transaction");
    release();
    await holding;
    assert.equal(await ledgerLockHolder(sql, spool.spoolId), undefined);
  } finally {
    release();
    await holder.end();
    await close();
  }
});

// A hook, not a test: a filtered run (`deno test --filter`) stops the cluster too.
Deno.test.afterAll(async () => {
  await destroyPostgres(await pgReady);
});
