/**
 * The writer's last commits kept for the live lane's read (src/spool/fresh_rows.ts): what the
 * read takes from them is what the file holds, row for row, or nothing.
 */
import assert from "node:assert/strict";
import type { Sample } from "../../src/sample.ts";
import { FRESH_ROWS_MAX, FreshBlock, FreshRows } from "../../src/spool/fresh_rows.ts";
import { open, samples, tempSpoolPath } from "./fixtures/spool.ts";

/** A block of `count` rows from seq `first` on, row i of series 100 + i, valued i. */
function block(first: number, count: number): FreshBlock {
  const b = new FreshBlock(first, count);
  for (let i = 0; i < count; i++) b.push(100 + i, 1_790_000_000_000 + i, i);
  return b;
}

/** The seqs `take` hands out from `afterSeq + 1` on (one commit at most), or undefined. */
function seqsTaken(fresh: FreshRows, afterSeq: number, limit = 1_000_000): number[] | undefined {
  const run = fresh.take(afterSeq, limit, Number.MAX_SAFE_INTEGER);
  return run && Array.from({ length: run.count }, (_, i) => run.numbers[3 * (run.at + i)]!);
}

Deno.test("the lease's read of the writer's last commits gives, row for row, what a read of the file gives", async () => {
  const spool = open(await tempSpoolPath());
  try {
    const values = [NaN, -0, 0, Infinity, -Infinity, 1e300, 5e-324, -1.5, 2 ** 53 + 2, 0.1];
    const written: Sample[] = values.map((value, i) => ({
      // Below the microsecond, as an exporter's milliseconds with a fraction can be.
      timestampMs: 1_790_000_000_000.123_456_7 + i * 997.000_3,
      deviceId: i % 2 ? "rack\\1\t" : "é-node",
      metricId: "power_watt",
      value,
      labels: i % 3 ? { a: "t\tb\\", n: String(i % 3) } : {},
    }));
    await spool.writer.append(written.slice(0, 4));
    await spool.writer.append(written.slice(4));
    // The view reads the file through a lease of its own, on the same connection.
    const fromFile = spool.view.read(0, 100);
    const fromLease = spool.lease.read(0, 100);
    const fields = (s: (typeof fromFile)[number]) => [
      s.seq,
      s.timestampMs,
      s.value,
      s.spooledSeries?.id,
      s.spooledSeries?.copyPrefix,
      s.deviceId,
      s.metricId,
      s.labels,
    ];
    assert.equal(fromLease.length, values.length);
    for (let i = 0; i < values.length; i++) {
      const [a, b] = [fields(fromLease[i]!), fields(fromFile[i]!)];
      for (let k = 0; k < a.length; k++) {
        if (typeof a[k] === "number") assert.ok(Object.is(a[k], b[k]), `row ${i}, field ${k}: ${a[k]} against ${b[k]}`);
        else assert.deepEqual(a[k], b[k], `row ${i}, field ${k}`);
      }
    }
  } finally {
    spool.close();
  }
});

Deno.test("after a renumbering the lease reads the moved seqs from the file, not the old ones kept", async () => {
  const spool = open(await tempSpoolPath());
  try {
    await spool.writer.append(samples(10));
    assert.equal(spool.writer.renumberAfter(20, "test: the ledger holds seqs 1-20"), 20);
    const read = spool.lease.read(0, 100);
    assert.deepEqual(read.map((s) => s.seq), Array.from({ length: 10 }, (_, i) => 21 + i));
    assert.deepEqual(read.map((s) => s.value), samples(10).map((s) => s.value));
  } finally {
    spool.close();
  }
});

Deno.test("after drop_oldest the lease reads the rows the file kept, not the dropped ones", async () => {
  const spool = open(await tempSpoolPath(), { maxBytes: 256 * 1024, fullPolicy: "drop_oldest" });
  try {
    for (let i = 0; i < 20_000; i += 1000) await spool.writer.append(samples(1000, i));
    const gaps = spool.lease.gaps();
    assert.ok(gaps.length > 0 && gaps[0]!.firstSeq === 1, "the oldest rows were dropped");
    const read = spool.lease.read(0, 1_000_000);
    assert.equal(read[0]!.seq, gaps.at(-1)!.lastSeq + 1);
    assert.deepEqual(read.map((s) => s.seq), spool.view.read(0, 1_000_000).map((s) => s.seq));
  } finally {
    spool.close();
  }
});

Deno.test("a read from the start of the file gives the rows of a previous life before the writer's last commits", async () => {
  const path = await tempSpoolPath();
  const before = open(path);
  await before.writer.append(samples(10));
  before.close();
  const spool = open(path);
  try {
    await spool.writer.append(samples(5, 10));
    assert.deepEqual(spool.lease.read(0, 100).map((s) => s.seq), Array.from({ length: 15 }, (_, i) => i + 1));
    spool.lease.removeForwarded(1, 12);
    assert.deepEqual(spool.lease.read(0, 100).map((s) => s.seq), [13, 14, 15]);
  } finally {
    spool.close();
  }
});

Deno.test("a read from before the fresh rows begins at them only when the file holds no other row", () => {
  const fresh = new FreshRows(() => 1);
  assert.equal(fresh.firstRowAfter(0, 0), undefined, "nothing kept");
  fresh.add(block(11, 5));
  fresh.add(block(16, 5));
  assert.equal(fresh.firstRowAfter(0, 10), 11);
  assert.equal(fresh.firstRowAfter(0, 11), undefined, "the file holds a row more: it comes first");
  assert.equal(fresh.firstRowAfter(10, 10), undefined, "the read begins there anyway");
  fresh.forget(12);
  assert.equal(fresh.firstRowAfter(0, 8), 13);
  assert.equal(fresh.firstRowAfter(0, 10), undefined);
});

Deno.test("fresh rows are handed out from the asked seq on, one commit at a time, within the limits asked", () => {
  const fresh = new FreshRows(() => 1);
  assert.equal(seqsTaken(fresh, 0), undefined, "nothing kept, nothing handed out");
  fresh.add(block(1, 5));
  fresh.add(block(6, 3));
  assert.deepEqual(seqsTaken(fresh, 0), [1, 2, 3, 4, 5]);
  assert.deepEqual(seqsTaken(fresh, 2, 2), [3, 4]);
  assert.deepEqual(seqsTaken(fresh, 5), [6, 7, 8]);
  assert.equal(seqsTaken(fresh, 8), undefined, "past the last commit");
  const run = fresh.take(5, 10, 7)!;
  assert.deepEqual([run.at, run.count, run.seriesIds[run.at]], [0, 2, 100], "no further than throughSeq");
});

Deno.test("a commit that does not continue the run kept replaces it", () => {
  const fresh = new FreshRows(() => 1);
  fresh.add(block(1, 5));
  fresh.add(block(20, 2));
  assert.equal(seqsTaken(fresh, 0), undefined);
  assert.deepEqual(seqsTaken(fresh, 19), [20, 21]);
  assert.equal(fresh.size, 2);
});

Deno.test("fresh rows up to a forwarded seq are never handed out again, and the later ones still are", () => {
  const fresh = new FreshRows(() => 1);
  fresh.add(block(1, 5));
  fresh.add(block(6, 5));
  fresh.forget(3);
  assert.equal(seqsTaken(fresh, 0), undefined);
  assert.equal(seqsTaken(fresh, 2), undefined, "seq 3 left the file");
  assert.deepEqual(seqsTaken(fresh, 3), [4, 5]);
  fresh.forget(7);
  assert.equal(fresh.size, 5, "the first commit, all forwarded, is let go");
  assert.equal(seqsTaken(fresh, 5), undefined);
  assert.deepEqual(seqsTaken(fresh, 7), [8, 9, 10]);
});

Deno.test("a commit by another connection drops every fresh row: the file may have changed under them", () => {
  let version = 1;
  const fresh = new FreshRows(() => version);
  fresh.add(block(1, 5));
  version = 2;
  assert.equal(seqsTaken(fresh, 0), undefined);
  assert.equal(fresh.size, 0);
  fresh.add(block(6, 2));
  assert.deepEqual(seqsTaken(fresh, 5), [6, 7], "the commits after it are kept again");
});

Deno.test("at most FRESH_ROWS_MAX fresh rows are kept, the oldest commits going first", () => {
  const fresh = new FreshRows(() => 1);
  const per = FRESH_ROWS_MAX / 4;
  for (let i = 0; i < 6; i++) fresh.add(block(1 + i * per, per));
  assert.equal(fresh.size, FRESH_ROWS_MAX);
  assert.equal(seqsTaken(fresh, 2 * per - 1), undefined, "the first two commits are let go");
  assert.deepEqual(seqsTaken(fresh, 2 * per, 1), [2 * per + 1]);
});

Deno.test("a fresh row keeps NaN, and −0 as the file gives it back: 0", () => {
  const b = new FreshBlock(7, 2);
  b.push(1, 1, NaN);
  b.push(1, 2, -0);
  assert.ok(Number.isNaN(b.numbers[2]));
  assert.ok(Object.is(b.numbers[5], 0));
  assert.deepEqual([b.numbers[0], b.numbers[3], b.count], [7, 8, 2]);
});
