/**
 * The spool stays within its budget (src/spool/spool.ts invariant 5, src/spool/writer.ts "The
 * full-spool policy"): a sample's size on disk, drop_oldest and drop_newest, the leases
 * drop_oldest respects, and a commit larger than the whole budget; and the memory SQLite keeps
 * for the writer's connection (store.ts SPOOL_CACHE_KIB).
 */
import assert from "node:assert/strict";
import { setLogLevel, setLogSink } from "../../src/log.ts";
import { SPOOL_CACHE_KIB, SpoolStore } from "../../src/spool/store.ts";
import { Telemetry } from "../../src/telemetry/telemetry.ts";
import { open, samples, tempSpoolPath } from "./fixtures/spool.ts";

Deno.test("spool keeps a sample under 32 bytes on disk", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  const n = 200_000;
  for (let i = 0; i < n; i += 10_000) await spool.writer.append(samples(10_000, i, 500));
  const perSample = spool.view.usedBytes() / n;
  spool.close();
  assert.ok(perSample <= 32, `${perSample.toFixed(1)} bytes per sample`);
});

Deno.test("spool under drop_oldest gives up its oldest samples, records the gap and logs it", async () => {
  const logs: string[] = [];
  setLogSink((l) => logs.push(l));
  try {
    const path = await tempSpoolPath();
    const spool = open(path, { maxBytes: 1024 * 1024, fullPolicy: "drop_oldest" });
    for (let i = 0; i < 120_000; i += 5000) await spool.writer.append(samples(5000, i));
    assert.ok(spool.view.usedBytes() <= 1024 * 1024 + 5000 * 40, `used ${spool.view.usedBytes()}`);
    const gaps = spool.lease.gaps();
    assert.ok(gaps.length > 0);
    assert.equal(gaps[0]!.firstSeq, 1);
    const dropped = gaps.reduce((n, g) => n + g.rows, 0);
    assert.equal(spool.writer.counters.droppedOldest, dropped);
    // Every seq is accounted for: kept rows plus dropped rows is what was appended.
    assert.equal(spool.view.stats().rows + dropped, 120_000);
    const newest = spool.lease.read(0, 1_000_000).at(-1)!;
    assert.equal(newest.seq, 120_000);
    // A persisting condition: logged once when it starts, however many trims it takes.
    assert.equal(logs.filter((l) => l.startsWith("ERROR Spool full: samples are being dropped")).length, 1);
    spool.close();
  } finally {
    setLogSink((l) => console.error(l));
  }
});

Deno.test("spool under drop_newest keeps its backlog, counts the samples it refuses and logs the condition once", async () => {
  const logs: string[] = [];
  setLogSink((l) => logs.push(l));
  setLogLevel("info");
  try {
    const path = await tempSpoolPath();
    const telemetry = new Telemetry();
    const spool = open(path, { maxBytes: 1024 * 1024, fullPolicy: "drop_newest", telemetry });
    for (let i = 0; i < 120_000; i += 5000) await spool.writer.append(samples(5000, i));
    const rows = spool.view.stats().rows;
    assert.ok(rows < 120_000);
    assert.equal(rows + spool.writer.counters.droppedNewest, 120_000);
    assert.equal(
      telemetry.value("kwollector_rows_dropped_total", { policy: "drop_newest" }),
      spool.writer.counters.droppedNewest,
    );
    assert.equal(spool.lease.read(0, 1)[0]!.seq, 1);
    assert.deepEqual(spool.lease.gaps(), []);
    assert.equal(logs.filter((l) => l.startsWith("ERROR Spool full")).length, 1);
    // Room comes back once the forwarder removes the backlog: the condition ends, logged once.
    spool.lease.removeForwarded(1, rows);
    spool.writer.collectGarbage();
    await spool.writer.append(samples(10, 0));
    assert.equal(logs.filter((l) => l.startsWith("INFO Spool has room again")).length, 1);
    spool.close();
  } finally {
    setLogLevel("warning");
    setLogSink((l) => console.error(l));
  }
});

Deno.test("spool under drop_oldest never drops a leased row, even past the old end or after a bisected send", async () => {
  setLogSink(() => {});
  try {
    const spool = open(await tempSpoolPath(), { maxBytes: 1024 * 1024, fullPolicy: "drop_oldest" });
    const { writer, lease } = spool;
    await writer.append(samples(20_000));
    // A batch sent in parts around a rejected sample leaves no lease behind it...
    const bisected = lease.read(0, 100);
    lease.removeForwarded(1, 50);
    lease.quarantine(bisected.slice(50, 51), "rejected");
    lease.removeForwarded(52, 100);
    // ...while the live lane's batch (the newest rows) is in flight.
    const live = lease.read(19_900, 50);
    await writer.append(samples(30_000, 20_000));
    const gaps = lease.gaps();
    assert.ok(gaps.length > 0 && gaps[0]!.firstSeq === 101, JSON.stringify(gaps));
    assert.ok(gaps.every((g) => g.lastSeq < 19_901 || g.firstSeq > 19_950), JSON.stringify(gaps));
    assert.deepEqual(lease.read(19_900, 50).map((s) => s.seq), live.map((s) => s.seq));
    spool.close();
  } finally {
    setLogSink((l) => console.error(l));
  }
});

Deno.test("spool under drop_oldest gets back under its budget after a commit larger than the budget", async () => {
  setLogSink(() => {});
  try {
    const maxBytes = 1024 * 1024;
    const spool = open(await tempSpoolPath(), { maxBytes, fullPolicy: "drop_oldest" });
    await spool.writer.append(samples(60_000));
    assert.ok(spool.view.usedBytes() > maxBytes, `one commit of 60000 samples uses ${spool.view.usedBytes()} B`);
    await spool.writer.append(samples(100, 60_000));
    assert.ok(spool.view.usedBytes() <= maxBytes + 100 * 40 + 4 * 4096, `${spool.view.usedBytes()} B used`);
    spool.close();
  } finally {
    setLogSink((l) => console.error(l));
  }
});

Deno.test("the writer's connection keeps at most SPOOL_CACHE_KIB of pages in SQLite's cache", async () => {
  const store = SpoolStore.openForWriting({ path: await tempSpoolPath(), synchronous: "full" });
  try {
    // A negative cache_size is a size in KiB; SQLite's default is -2000.
    const row = store.statement("PRAGMA cache_size").get() as { cache_size: number };
    assert.equal(row.cache_size, -SPOOL_CACHE_KIB);
  } finally {
    store.close();
  }
});
