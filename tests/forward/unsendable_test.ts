/**
 * What the forwarder does with what it cannot send: a sample that cannot be written centrally
 * is set aside alone, a spool whose disk refuses is reported as the spool's trouble, and a
 * programming error ends the loop instead of being retried as an outage.
 */
import assert from "node:assert/strict";
import { Forwarder } from "../../src/forward/forwarder.ts";
import { openSpool, type Spool } from "../../src/spool/spool.ts";
import { endpointOf, type Sql } from "../../src/central/connect.ts";
import { setupDatabase } from "../../src/central/setup.ts";
import type { Sample } from "../../src/sample.ts";
import { setLogLevel, setLogSink } from "../../src/log.ts";
import { destroyPostgres, startPostgres } from "../../scripts/peers/postgres.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { mountSmallFs } from "../../scripts/peers/small_fs.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";

function samples(n: number, from = 0): Sample[] {
  return Array.from({ length: n }, (_, i) => ({
    timestampMs: Date.now() - 60_000 + (from + i) * 10,
    deviceId: `node-${(from + i) % 7}`,
    metricId: "power_watt",
    value: from + i,
    labels: {},
  }));
}

function open(path: string): Spool {
  return openSpool({ path, maxBytes: 1 << 30, fullPolicy: "drop_oldest", synchronous: "full", commitIntervalMs: 1 });
}

/** Captures every log line, recoveries (info) included, until `restoreLogs()`. */
function captureLogs(): string[] {
  const logs: string[] = [];
  setLogSink((l) => logs.push(l));
  setLogLevel("info");
  return logs;
}

function restoreLogs(): void {
  setLogSink((l) => console.error(l));
  setLogLevel("warning");
}

Deno.test("forwarder sets aside a spooled sample with an impossible timestamp and delivers every other one", async () => {
  const pg = await startPostgres({ timescaledb: false });
  const logs = captureLogs();
  try {
    const dir = await tempDir("kwollector-test-");
    const config = pgConfig(pg, dir, { forward_batch_rows: 100 });
    await setupDatabase(config);
    const spool = open(config.spool_path);
    // Written as an older kwollector did, before the door checked samples: nanoseconds.
    await spool.writer.append([...samples(50), { ...samples(1, 50)[0]!, timestampMs: 1_733_380_000_000_000_000 }]);
    await spool.writer.append([{ ...samples(1, 51)[0]!, timestampMs: 99_999_999_999_999_999 }, ...samples(48, 52)]);
    const forwarder = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config });
    assert.equal(await forwarder.drain({ deadlineMs: performance.now() + 30_000 }), true, logs.join("\n"));
    await forwarder.close();
    const admin = pg.admin("kwdb");
    const [{ n }] = await admin`SELECT count(*)::int AS n FROM metrics` as unknown as [{ n: number }];
    assert.equal(n, 98);
    const [{ gaps }] = await admin`SELECT count(*)::int AS gaps FROM kwollect_ledger_gaps
                                    WHERE spool_id = ${spool.spoolId}` as unknown as [{ gaps: number }];
    assert.equal(gaps, 0, "every seq is in the ledger, the two set aside as quarantined");
    const q = await admin`SELECT first_seq::int AS seq FROM kwollect_ledger
                          WHERE spool_id = ${spool.spoolId} AND kind = 'quarantined' ORDER BY 1`;
    assert.deepEqual(q.map((r) => r.seq), [51, 52]);
    assert.ok(logs.some((l) => /quarantined.*looks like nanoseconds/.test(l)), logs.join("\n"));
    assert.equal(spool.view.rowCount(), 0);
    spool.close();
  } finally {
    restoreLogs();
    await destroyPostgres(pg);
  }
});

Deno.test("forwarder reports a full disk under the spool as the spool's trouble and delivers once space returns", async () => {
  const pg = await startPostgres({ timescaledb: false });
  const fs = await mountSmallFs(6 * 1024 * 1024);
  const logs = captureLogs();
  try {
    const config = pgConfig(pg, fs.dir, { forward_batch_rows: 2000, forward_retry_max_ms: 50 });
    await setupDatabase(config);
    const spool = open(config.spool_path);
    await spool.writer.append(samples(6000));
    fs.fill();
    const forwarder = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config });
    assert.equal(await forwarder.drain({ deadlineMs: performance.now() + 3000 }), false);
    assert.equal(forwarder.lastFailure?.kind, "local", JSON.stringify(forwarder.lastFailure));
    assert.ok(logs.some((l) => l.includes("Spool refuses the forwarder")), logs.join("\n"));
    assert.ok(!logs.some((l) => l.includes("Central database unreachable")), logs.join("\n"));
    fs.free();
    assert.equal(await forwarder.drain({ deadlineMs: performance.now() + 30_000 }), true, logs.join("\n"));
    await forwarder.close();
    const admin = pg.admin("kwdb");
    const values = await admin`SELECT value FROM metrics ORDER BY value`;
    assert.deepEqual(values.map((r) => r.value), Array.from({ length: 6000 }, (_, i) => i), "exactly once");
    assert.ok(logs.some((l) => l.includes("Spool accepts the forwarder again")));
    spool.close();
  } finally {
    restoreLogs();
    await fs.close();
    await destroyPostgres(pg);
  }
});

Deno.test("forwarder.run() ends on a programming error instead of retrying it as an outage", async () => {
  const dir = await tempDir("kwollector-test-");
  const config = pgConfig({ host: "127.0.0.1", port: 1 } as Parameters<typeof pgConfig>[0], dir);
  const spool = open(config.spool_path);
  await spool.writer.append(samples(3));
  const logs = captureLogs();
  const broken = Object.assign(() => {
    throw new TypeError("Cannot read properties of undefined (reading 'seq')");
  }, { end: () => Promise.resolve() }) as unknown as Sql;
  const forwarder = new Forwarder({
    lease: spool.lease,
    endpoint: endpointOf(config),
    config,
    connectFn: () => broken,
  });
  try {
    const controller = new AbortController();
    await assert.rejects(forwarder.run(controller.signal), TypeError);
    assert.ok(!logs.some((l) => l.includes("Central database unreachable")), logs.join("\n"));
  } finally {
    restoreLogs();
    await forwarder.close();
    spool.close();
  }
});
