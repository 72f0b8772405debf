/**
 * What a forwarder may do with the spool (src/spool/lease.ts, invariants 3, 4 and 6 of
 * src/spool/spool.ts): read runs of consecutive seqs, acknowledge them, set samples aside, and
 * do so next to a running writer from a lease of its own.
 */
import assert from "node:assert/strict";
import { openSpoolLease } from "../../src/spool/spool.ts";
import { open, readAll, samples, tempSpoolPath } from "./fixtures/spool.ts";
import { syncsOf } from "./fixtures/sync_trace.ts";
import { READ_CHUNK_ROWS, SERIES_CACHE_MAX, SERIES_READ_PER_CALL } from "../../src/spool/lease.ts";

Deno.test("spool.read() stops before a missing seq, so a batch never spans a seq that left another way", async () => {
  const spool = open(await tempSpoolPath());
  await spool.writer.append(samples(10));
  spool.lease.removeForwarded(4, 5); // e.g. sent by the live lane
  assert.deepEqual(spool.lease.read(0, 100).map((s) => s.seq), [1, 2, 3]);
  assert.deepEqual(spool.lease.read(3, 100).map((s) => s.seq), [6, 7, 8, 9, 10]);
  spool.close();
});

Deno.test("spool.read() reads a long run in parts of READ_CHUNK_ROWS, and stops before a missing seq in a later part", async () => {
  const spool = open(await tempSpoolPath());
  try {
    const n = READ_CHUNK_ROWS * 2 + 10;
    await spool.writer.append(samples(n));
    const missing = READ_CHUNK_ROWS + 7;
    spool.lease.removeForwarded(missing, missing);
    const first = spool.lease.read(0, n);
    assert.deepEqual(first.map((s) => s.seq), Array.from({ length: missing - 1 }, (_, i) => i + 1));
    const rest = spool.lease.read(missing, n);
    assert.deepEqual([rest.length, rest[0]!.seq, rest.at(-1)!.seq], [n - missing, missing + 1, n]);
    assert.deepEqual(rest.map((s) => s.value), samples(n).slice(missing).map((s) => s.value));
    assert.equal(spool.lease.read(0, READ_CHUNK_ROWS + 1).length, READ_CHUNK_ROWS + 1, "a limit inside a part is kept");
  } finally {
    spool.close();
  }
});

Deno.test("a sample read from the spool gives the device, metric and labels it was written with, escapes included", async () => {
  const spool = open(await tempSpoolPath());
  try {
    const written = [
      { timestampMs: 1_800_000_000_000, deviceId: "rack\\1\t", metricId: "m\nx", value: 1, labels: { a: "t\tb\\" } },
      { timestampMs: 1_800_000_000_001, deviceId: "é-1", metricId: "power_watt", value: 2, labels: {} },
    ];
    await spool.writer.append(written);
    const read = spool.lease.read(0, 10);
    assert.deepEqual(
      read.map((s) => [s.deviceId, s.metricId, s.labels]),
      written.map((s) => [s.deviceId, s.metricId, s.labels]),
    );
  } finally {
    spool.close();
  }
});

Deno.test("spool lease without the writer acknowledges next to it, and both keep one count of rows", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  await spool.writer.append(samples(100));
  const flush = openSpoolLease(path);
  try {
    assert.equal(flush.spoolId, spool.spoolId);
    assert.equal(flush.lease.ownSeqs, undefined, "only the writer's lease may move seqs");
    assert.equal(spool.lease.ownSeqs?.openedAtSeq, 1);
    const batch = flush.lease.read(0, 50);
    assert.equal(flush.lease.removeForwarded(batch[0]!.seq, batch.at(-1)!.seq), 50);
    await spool.writer.append(samples(10, 100));
    assert.equal(flush.lease.lastSeq(), 110, "the lease sees the seqs the writer committed");
    assert.equal(spool.view.rowCount(), 60);
    assert.equal(flush.view.rowCount(), 60);
    assert.deepEqual(spool.lease.read(0, 1000).map((s) => s.seq)[0], 51);
  } finally {
    flush.close();
    spool.close();
  }
  const again = open(path);
  assert.equal(again.view.stats().rows, 60);
  again.close();
});

Deno.test("spool quarantine sets samples aside with their reason until the ledger has them", async () => {
  const spool = open(await tempSpoolPath());
  await spool.writer.append(samples(5));
  const [, second, third] = spool.lease.read(0, 5);
  spool.lease.quarantine([second!, third!], "rejected: value out of range");
  assert.deepEqual(spool.lease.unreportedQuarantine(), [
    { seq: 2, reason: "rejected: value out of range" },
    { seq: 3, reason: "rejected: value out of range" },
  ]);
  assert.equal(spool.lease.rowCount(), 3);
  spool.lease.markQuarantineReported(2);
  assert.deepEqual(spool.lease.unreportedQuarantine().map((q) => q.seq), [3]);
  assert.equal(spool.view.stats().quarantined, 2, "reported or not, a quarantined sample is kept");
  assert.deepEqual(spool.lease.read(0, 5).map((s) => s.seq), [1], "a batch stops before a seq set aside");
  spool.close();
});

Deno.test("spool handles close once: closing one again does nothing", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  await spool.writer.append(samples(3));
  const flush = openSpoolLease(path);
  flush.close();
  flush.close();
  spool.close();
  spool.close();
  const again = open(path);
  assert.equal(again.view.rowCount(), 3);
  again.close();
});

Deno.test("spool.read() gives every sample its own series when the spool holds more series than the lease caches", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  const series = SERIES_CACHE_MAX + 500;
  const written = samples(series * 2, 0, series);
  await spool.writer.append(written);
  for (let round = 0; round < 2; round++) {
    const read = readAll(spool.lease);
    assert.equal(read.length, written.length);
    for (let i = 0; i < read.length; i += 97) {
      assert.deepEqual([read[i]!.deviceId, read[i]!.labels], [written[i]!.deviceId, written[i]!.labels]);
    }
  }
  spool.close();
});

Deno.test("spool.read() looks up at most SERIES_READ_PER_CALL uncached series per call, and the next read goes on from there", async () => {
  const spool = open(await tempSpoolPath());
  const series = SERIES_READ_PER_CALL * 2 + 10;
  await spool.writer.append(samples(series, 0, series));
  const first = spool.lease.read(0, 100_000);
  assert.equal(first.length, SERIES_READ_PER_CALL);
  const second = spool.lease.read(first.at(-1)!.seq, 100_000);
  assert.equal(second[0]!.seq, SERIES_READ_PER_CALL + 1);
  assert.equal(second.length, SERIES_READ_PER_CALL);
  assert.equal(readAll(spool.lease).length, series, "every sample is read in the end");
  assert.equal(spool.lease.read(0, 100_000).length, series, "cached series are not counted");
  spool.close();
});

Deno.test("spool.read() of a backlog caches its series apart, so a drain never keeps fresh series out of the cache", async () => {
  const spool = open(await tempSpoolPath());
  try {
    // A backlog of as many series as the cache holds, read by bounded reads, as the backfill does.
    await spool.writer.append(samples(SERIES_CACHE_MAX, 0, SERIES_CACHE_MAX));
    const backlogEnd = SERIES_CACHE_MAX;
    let read = 0;
    for (let run = spool.lease.read(0, 100_000, backlogEnd); run.length > 0;) {
      read += run.length;
      run = spool.lease.read(run.at(-1)!.seq, 100_000, backlogEnd);
    }
    assert.equal(read, backlogEnd);
    // Then polls of other series, read by unbounded reads, as the live lane does.
    const series = SERIES_READ_PER_CALL + 500;
    const poll = (k: number) =>
      Array.from({ length: series }, (_, i) => ({
        timestampMs: 1_800_000_000_000 + k * 1000,
        deviceId: `rack-${i}`,
        metricId: "power_watt",
        value: i,
        labels: {},
      }));
    await spool.writer.append(poll(1));
    const first = spool.lease.read(backlogEnd, 100_000);
    assert.equal(first.length, SERIES_READ_PER_CALL, "series seen for the first time are read in parts");
    const rest = spool.lease.read(first.at(-1)!.seq, 100_000);
    assert.equal(first.length + rest.length, series);
    await spool.writer.append(poll(2));
    const second = spool.lease.read(rest.at(-1)!.seq, 100_000);
    assert.equal(second.length, series, "a poll of series read before comes whole, the backlog's cache full or not");
    assert.equal(spool.lease.read(0, 100_000, backlogEnd).length, backlogEnd, "the backlog's series stay cached");
  } finally {
    spool.close();
  }
});

Deno.test("spool.read() gives the series without labels one shared labels object", async () => {
  const spool = open(await tempSpoolPath());
  try {
    const sample = (deviceId: string, labels: Record<string, string>) => ({
      timestampMs: 1_800_000_000_000,
      deviceId,
      metricId: "power_watt",
      value: 1,
      labels,
    });
    await spool.writer.append([sample("a", {}), sample("b", {}), sample("c", { psu: "1" }), sample("d", { psu: "1" })]);
    const [a, b, c] = spool.lease.read(0, 10);
    assert.deepEqual([a!.labels, c!.labels], [{}, { psu: "1" }]);
    assert.equal(a!.labels, b!.labels);
  } finally {
    spool.close();
  }
});

Deno.test("forwarded samples are removed without an fsync of their own, and the sample commits after them still sync", async () => {
  // A removal a power cut undoes leaves what a crash before it leaves: reconciliation removes it.
  const syncs = await syncsOf("removal");
  assert.equal(syncs.unsynced, 0, "five removals of forwarded samples");
  assert.ok(syncs.samples >= 3, `three sample commits synced ${syncs.samples} times`);
});
