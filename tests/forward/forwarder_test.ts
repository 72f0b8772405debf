import assert from "node:assert/strict";
import { ONE_STATEMENT_ROWS_MAX } from "../../src/forward/batch_writer.ts";
import { Forwarder } from "../../src/forward/forwarder.ts";
import { openSpool, type Spool } from "../../src/spool/spool.ts";
import { spoolOptions } from "../../src/cli/runtime.ts";
import { endpointOf } from "../../src/central/connect.ts";
import { setupDatabase } from "../../src/central/setup.ts";
import type { Config } from "../../src/config/defaults.ts";
import { setLogSink } from "../../src/log.ts";
import { COMMIT_COMPLETE, destroyPostgres, type PgCluster, startPostgres } from "../../scripts/peers/postgres.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { startLinkCutter } from "../../scripts/peers/link_cutter.ts";
import { samples } from "./fixtures.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";

const pgReady = startPostgres({ timescaledb: false }).then(async (pg) => {
  const dir = await tempDir("kwollector-test-");
  await setupDatabase(pgConfig(pg, dir));
  return pg;
});

async function fixture(pg: PgCluster, overrides: Record<string, string | number> = {}) {
  const dir = await tempDir("kwollector-test-");
  const config: Config = pgConfig(pg, dir, { forward_retry_max_ms: 50, ...overrides });
  const spool = reopen(config);
  const admin = pg.admin("kwdb");
  await admin`TRUNCATE metrics`;
  return { dir, config, spool, admin };
}

function reopen(config: Config): Spool {
  return openSpool({ ...spoolOptions(config), commitIntervalMs: 1 });
}

async function values(admin: ReturnType<PgCluster["admin"]>, spoolId: string): Promise<number[]> {
  const rows = await admin<{ value: number }[]>`
    SELECT m.value FROM metrics m ORDER BY m.value`;
  void spoolId;
  return rows.map((r) => r.value);
}

function quietLogs(): string[] {
  const logs: string[] = [];
  setLogSink((l) => logs.push(l));
  return logs;
}

Deno.test("forwarder lands each batch once, with a ledger row covering its seqs", async () => {
  const pg = await pgReady;
  const { config, spool, admin } = await fixture(pg, { forward_batch_rows: 1000 });
  await spool.writer.append(samples(2500));
  const fwd = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config });
  assert.equal(await fwd.drain({ deadlineMs: performance.now() + 30_000 }), true);
  await fwd.close();
  assert.deepEqual(await values(admin, spool.spoolId), Array.from({ length: 2500 }, (_, i) => i));
  const ledger = await admin`SELECT first_seq::int AS f, last_seq::int AS l, rows FROM kwollect_ledger
                             WHERE spool_id = ${spool.spoolId} ORDER BY first_seq`;
  assert.deepEqual(ledger.map((r) => [r.f, r.l, r.rows]), [[1, 1000, 1000], [1001, 2000, 1000], [2001, 2500, 500]]);
  assert.equal(spool.view.stats().rows, 0);
  spool.close();
});

Deno.test("forwarder recognises a batch whose COMMIT acknowledgement was lost and duplicates nothing", async () => {
  const pg = await pgReady;
  const proxy = startLinkCutter({ port: pg.port });
  const logs = quietLogs();
  try {
    const { config, spool, admin } = await fixture(pg, { db_port: proxy.port, forward_batch_rows: 500 });
    await spool.writer.append(samples(1200));
    const fwd = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config });
    proxy.cutWhenServerSends(COMMIT_COMPLETE);
    assert.equal(await fwd.drain({ deadlineMs: performance.now() + 30_000 }), true);
    await fwd.close();
    assert.equal(proxy.cuts(), 1, "the acknowledgement of one COMMIT was cut");
    assert.deepEqual(await values(admin, spool.spoolId), Array.from({ length: 1200 }, (_, i) => i));
    assert.ok(fwd.counters.reconciledRows === 500, `reconciled ${fwd.counters.reconciledRows}`);
    assert.equal(
      (await admin`SELECT count(*)::int AS n FROM kwollect_ledger_gaps WHERE spool_id = ${spool.spoolId}`)[0]!.n,
      0,
    );
    assert.ok(logs.some((l) => l.includes("Central database unreachable")));
    spool.close();
  } finally {
    await proxy.close();
    setLogSink((l) => console.error(l));
  }
});

/** The server's CommandComplete message for `tag`. */
function commandComplete(tag: string): Uint8Array {
  const text = new TextEncoder().encode(tag);
  const msg = new Uint8Array(6 + text.length);
  msg[0] = 0x43;
  new DataView(msg.buffer).setInt32(1, 5 + text.length);
  msg.set(text, 5);
  return msg;
}

Deno.test("forwarder recognises a one-statement batch whose acknowledgement was lost and duplicates nothing", async () => {
  const pg = await pgReady;
  const proxy = startLinkCutter({ port: pg.port });
  const logs = quietLogs();
  try {
    const { config, spool, admin } = await fixture(pg, { db_port: proxy.port });
    await spool.writer.append(samples(200));
    const fwd = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config });
    // A small batch alone goes as one INSERT, committed before its answer: that answer is cut.
    proxy.cutWhenServerSends(commandComplete("INSERT 0 200"));
    assert.equal(await fwd.drain({ deadlineMs: performance.now() + 30_000 }), true);
    await fwd.close();
    assert.equal(proxy.cuts(), 1, "the answer of the one-statement batch was cut");
    assert.deepEqual(await values(admin, spool.spoolId), Array.from({ length: 200 }, (_, i) => i));
    assert.equal(fwd.counters.reconciledRows, 200);
    const ledger = await admin`SELECT first_seq::int AS f, last_seq::int AS l, rows FROM kwollect_ledger
                               WHERE spool_id = ${spool.spoolId} ORDER BY first_seq`;
    assert.deepEqual(ledger.map((r) => [r.f, r.l, r.rows]), [[1, 200, 200]]);
    assert.equal(spool.view.stats().rows, 0);
    assert.ok(logs.some((l) => l.includes("Central database unreachable")));
    spool.close();
  } finally {
    await proxy.close();
    setLogSink((l) => console.error(l));
  }
});

// 1,000 rows go in one statement (an INSERT); 2,500 through COPY, claimed first, whose rejection is
// told after its COMMIT (batch_writer.ts "Round trips").
for (const rows of [1000, ONE_STATEMENT_ROWS_MAX + 500]) {
  Deno.test(`forwarder quarantines a row the server rejects and lands the rest of its batch of ${rows}`, async () => {
    const pg = await pgReady;
    const logs = quietLogs();
    const admin0 = pg.admin("kwdb");
    await admin0`ALTER TABLE metrics ADD CONSTRAINT no_poison CHECK (metric_id <> 'poison')`;
    try {
      const { config, spool, admin } = await fixture(pg, { forward_batch_rows: rows });
      const batch = samples(rows);
      batch[617] = { ...batch[617]!, metricId: "poison" };
      await spool.writer.append(batch);
      const fwd = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config });
      assert.equal(await fwd.drain({ deadlineMs: performance.now() + 30_000 }), true);
      await fwd.close();
      const landed = await values(admin, spool.spoolId);
      assert.equal(landed.length, rows - 1);
      assert.ok(!landed.includes(617));
      assert.equal(fwd.counters.quarantined, 1);
      assert.equal(spool.view.stats().quarantined, 1);
      const ledger = await admin`SELECT kind, first_seq::int AS f, last_seq::int AS l FROM kwollect_ledger
                               WHERE spool_id = ${spool.spoolId} AND kind = 'quarantined'`;
      assert.deepEqual(ledger.map((r) => [r.kind, r.f, r.l]), [["quarantined", 618, 618]]);
      assert.equal(
        (await admin`SELECT count(*)::int AS n FROM kwollect_ledger_gaps WHERE spool_id = ${spool.spoolId}`)[0]!.n,
        0,
      );
      assert.ok(logs.some((l) => l.includes("quarantined") && l.includes("no_poison")));
      spool.close();
    } finally {
      await admin0`ALTER TABLE metrics DROP CONSTRAINT no_poison`;
      setLogSink((l) => console.error(l));
    }
  });
}

Deno.test("forwarder records samples given up by a full spool as a dropped range, leaving no ledger gap", async () => {
  const pg = await pgReady;
  quietLogs();
  try {
    const { config, spool, admin } = await fixture(pg, { spool_max_bytes: 1024 * 1024 });
    const small = reopen({ ...config, spool_path: `${config.spool_path}.small` });
    spool.close();
    for (let i = 0; i < 60_000; i += 5000) await small.writer.append(samples(5000, i));
    const dropped = small.lease.gaps().reduce((n, g) => n + g.rows, 0);
    assert.ok(dropped > 0);
    const fwd = new Forwarder({ lease: small.lease, endpoint: endpointOf(config), config });
    assert.equal(await fwd.drain({ deadlineMs: performance.now() + 30_000 }), true);
    await fwd.close();
    const [d] =
      await admin`SELECT rows::int AS rows, dropped::int AS dropped FROM kwollect_delivery WHERE spool_id = ${small.spoolId}`;
    assert.equal(d!.rows + d!.dropped, 60_000);
    assert.equal(d!.dropped, dropped);
    assert.equal(
      (await admin`SELECT count(*)::int AS n FROM kwollect_ledger_gaps WHERE spool_id = ${small.spoolId}`)[0]!.n,
      0,
    );
    small.close();
  } finally {
    setLogSink((l) => console.error(l));
  }
});

Deno.test("forwarder moves samples past the ledger when the spool lost commits it had forwarded, losing none", async () => {
  const pg = await pgReady;
  const logs = quietLogs();
  try {
    const { config, spool, admin } = await fixture(pg, { forward_batch_rows: 1000 });
    const open = () => reopen(config);
    // The spool as it was on disk before its last commits: 50 samples, seqs 1..50.
    await spool.writer.append(samples(50));
    spool.close();
    await Deno.copyFile(config.spool_path, `${config.spool_path}.before`);
    // Then 50 more, and all 100 forwarded.
    const first = open();
    await first.writer.append(samples(50, 50));
    let fwd = new Forwarder({ lease: first.lease, endpoint: endpointOf(config), config });
    assert.equal(await fwd.drain({ deadlineMs: performance.now() + 30_000 }), true);
    await fwd.close();
    first.close();
    // The write-ahead log holding the last commits is lost: the spool reopens from the old image
    // and hands out seqs 51.. again, for new samples.
    await Deno.rename(`${config.spool_path}.before`, config.spool_path);
    const reopened = open();
    assert.equal(reopened.lease.openedAtSeq, 51);
    await reopened.writer.append(samples(10, 1000));
    fwd = new Forwarder({ lease: reopened.lease, endpoint: endpointOf(config), config });
    assert.equal(await fwd.drain({ deadlineMs: performance.now() + 30_000 }), true);
    await fwd.close();
    reopened.close();
    const expected = [...Array.from({ length: 100 }, (_, i) => i), ...Array.from({ length: 10 }, (_, i) => 1000 + i)];
    assert.deepEqual(await values(admin, reopened.spoolId), expected, "the new samples were taken for old ones");
    const [gaps] =
      await admin`SELECT count(*)::int AS n FROM kwollect_ledger_gaps WHERE spool_id = ${reopened.spoolId}`;
    assert.equal(gaps!.n, 0);
    assert.equal(logs.filter((l) => l.includes("Spool lost commits it had already forwarded")).length, 1);
  } finally {
    setLogSink((l) => console.error(l));
  }
});

Deno.test("forwarder connects with TLS verify-full against the CA and refuses an unknown CA", async () => {
  const pg = await pgReady;
  const logs = quietLogs();
  try {
    const { config, spool, admin } = await fixture(pg, { db_sslmode: "verify-full", db_sslrootcert: pg.caFile });
    await spool.writer.append(samples(10));
    const fwd = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config });
    assert.equal(await fwd.drain({ deadlineMs: performance.now() + 10_000 }), true);
    await fwd.close();
    const [ssl] = await admin`SELECT count(*)::int AS n FROM pg_stat_ssl WHERE ssl`;
    assert.ok(ssl!.n >= 0);
    assert.equal((await values(admin, spool.spoolId)).length, 10);

    const otherCa = `${pg.dir}/other-ca.crt`;
    const cmd = await new Deno.Command("openssl", {
      args: [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        `${pg.dir}/other.key`,
        "-out",
        otherCa,
        "-days",
        "1",
        "-subj",
        "/CN=other",
      ],
      stderr: "null",
    }).output();
    assert.ok(cmd.success);
    const bad = { ...config, db_sslrootcert: otherCa };
    await spool.writer.append(samples(5, 100));
    const refused = new Forwarder({ lease: spool.lease, endpoint: endpointOf(bad), config: bad });
    assert.equal(await refused.drain({ deadlineMs: performance.now() + 1500 }), false);
    await refused.close();
    assert.equal(spool.view.stats().rows, 5, "samples stay in the spool");
    assert.ok(logs.some((l) => /certificate|self.signed|verify/i.test(l)), logs.join("\n"));
    spool.close();
  } finally {
    setLogSink((l) => console.error(l));
  }
});

Deno.test("forwarder keeps everything and never logs the password when the database refuses it", async () => {
  const pg = await pgReady;
  const logs = quietLogs();
  try {
    const { config, spool } = await fixture(pg, { db_password: "Wr0ng-Secret-Pw" });
    await spool.writer.append(samples(3));
    const fwd = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config });
    assert.equal(await fwd.drain({ deadlineMs: performance.now() + 1500 }), false);
    await fwd.close();
    assert.equal(spool.view.stats().rows, 3);
    assert.ok(logs.some((l) => l.startsWith("ERROR Central database refuses the collector")), logs.join("\n"));
    assert.ok(logs.every((l) => !l.includes("Wr0ng-Secret-Pw")));
    spool.close();
  } finally {
    setLogSink((l) => console.error(l));
  }
});

Deno.test("forwarder over the insert method lands the same rows as COPY", async () => {
  const pg = await pgReady;
  const { config, spool, admin } = await fixture(pg, { forward_method: "insert" });
  const batch = samples(300);
  batch[3] = { ...batch[3]!, value: NaN, labels: { value_str: 'off\t"x"' } };
  await spool.writer.append(batch);
  const fwd = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config });
  assert.equal(await fwd.drain({ deadlineMs: performance.now() + 10_000 }), true);
  await fwd.close();
  const rows = await admin`SELECT value, labels FROM metrics ORDER BY "timestamp"`;
  assert.equal(rows.length, 300);
  assert.ok(Number.isNaN(rows[3]!.value));
  assert.deepEqual(rows[3]!.labels, { value_str: 'off\t"x"' });
  spool.close();
});

Deno.test("forwarder sends new samples ahead of a backlog and paces the backfill", async () => {
  const pg = await pgReady;
  quietLogs();
  try {
    const fixed = await fixture(pg, { forward_batch_rows: 2000, forward_backfill_rows_per_s: 4000 });
    const { config, admin } = fixed;
    // A backlog left by a previous run: the collector restarts on it.
    await fixed.spool.writer.append(samples(20_000));
    fixed.spool.close();
    const spool = reopen(config);
    const fwd = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config });
    await fwd.step(); // finds the backlog; the backfill bucket starts empty
    const fresh = samples(10, 1_000_000);
    await spool.writer.append(fresh);
    await fwd.step();
    const [landed] = await admin`SELECT count(*)::int AS n FROM metrics WHERE value >= 1000000`;
    assert.equal(landed!.n, 10, "new samples reached the central table first");
    assert.ok(spool.view.rowCount() > 15_000, `backlog left: ${spool.view.rowCount()}`);
    const started = performance.now();
    assert.equal(await fwd.drain({ deadlineMs: performance.now() + 60_000 }), true);
    const seconds = (performance.now() - started) / 1000;
    assert.ok(seconds >= 3, `20,000 rows at 4,000 rows/s drained in ${seconds.toFixed(1)} s`);
    await fwd.close();
    assert.deepEqual(
      await values(admin, spool.spoolId),
      [...Array.from({ length: 20_000 }, (_, i) => i), ...fresh.map((s) => s.value)],
    );
    const [gaps] = await admin`SELECT count(*)::int AS n FROM kwollect_ledger_gaps WHERE spool_id = ${spool.spoolId}`;
    assert.equal(gaps!.n, 0);
    spool.close();
  } finally {
    setLogSink((l) => console.error(l));
  }
});

// A hook, not a test: a filtered run (`deno test --filter`) stops the cluster too.
Deno.test.afterAll(async () => {
  await destroyPostgres(await pgReady);
});
