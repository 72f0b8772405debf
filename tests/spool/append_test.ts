/**
 * The writer's invariants (src/spool/spool.ts 1 and 2, src/spool/writer.ts): acknowledged means
 * durable, seqs are never reused, one writer at a time, private files, and a series dictionary
 * whose garbage collection never removes a series still in use.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { type Sample, samplesOf, type SeriesSamples } from "../../src/sample.ts";
import { makeIdentity } from "../../src/collect/series_identity.ts";
import { open, readAll, samples, tempSpoolPath } from "./fixtures/spool.ts";

Deno.test("spool.append() resolves once durable and read() returns samples in seq order", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  const odd: Sample[] = [
    { timestampMs: 1_790_000_000_123.456, deviceId: "a\tb", metricId: "m", value: NaN, labels: { value_str: "on" } },
    { timestampMs: 1_790_000_000_124, deviceId: "a", metricId: "m", value: Infinity, labels: {} },
    { timestampMs: 1_790_000_000_125, deviceId: "a", metricId: "m", value: -Infinity, labels: {} },
  ];
  await spool.writer.append(odd);
  await spool.writer.append(samples(5));
  const got = spool.lease.read(0, 100);
  assert.deepEqual(got.map((s) => s.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.ok(Number.isNaN(got[0]!.value));
  assert.equal(got[0]!.deviceId, "a\tb");
  assert.equal(got[0]!.timestampMs, 1_790_000_000_123.456);
  assert.deepEqual(got[0]!.labels, { value_str: "on" });
  assert.equal(got[1]!.value, Infinity);
  assert.equal(got[2]!.value, -Infinity);
  assert.equal(spool.view.stats().rows, 8);
  spool.close();
});

Deno.test("spool stores samples handed as columns (series identity, value) as it stores the same samples as objects", async () => {
  const identities = [
    makeIdentity("a", "m", { k: "1" }),
    makeIdentity("a", "m", {}),
    makeIdentity("b", "n", { k: "2" }),
  ];
  const batches: SeriesSamples[] = [
    { timestampMs: 1_790_000_000_000.5, series: identities.slice(0, 2), values: [1.5, NaN] },
    // A series the spool knows from the batch before, and a new one, and a sample without an identity between.
    { timestampMs: 1_790_000_001_000, series: [identities[1]!, identities[2]!], values: [-Infinity, 42] },
  ];
  const plain: Sample = { timestampMs: 1_790_000_000_900, deviceId: "a", metricId: "m", value: 7, labels: { k: "1" } };
  const asColumns = open(await tempSpoolPath());
  const asObjects = open(await tempSpoolPath());
  await Promise.all([asColumns.writer.append(batches[0]!), asColumns.writer.append([plain])]);
  await asColumns.writer.append(batches[1]!);
  // Objects without identities: the spool finds their series by their keys.
  const objects = batches.map((b) => samplesOf(b).map(({ series: _, ...s }) => s));
  await Promise.all([asObjects.writer.append(objects[0]!), asObjects.writer.append([plain])]);
  await asObjects.writer.append(objects[1]!);
  const rows = (spool: typeof asColumns) =>
    readAll(spool.lease).map((s) => [s.timestampMs, s.deviceId, s.metricId, s.labels, s.value] as const);
  const stored = rows(asColumns);
  assert.equal(stored.length, 5);
  assert.deepEqual(stored, rows(asObjects));
  assert.deepEqual(stored.map((s) => s[4]), [1.5, NaN, 7, -Infinity, 42]);
  assert.deepEqual(stored.map((s) => s[3]), [{ k: "1" }, {}, { k: "1" }, {}, { k: "2" }]);
  assert.equal(stored[0]![0], 1_790_000_000_000.5);
  asColumns.close();
  asObjects.close();
});

Deno.test("spool never reuses a seq, even after it was emptied and reopened, and keeps its id", async () => {
  const path = await tempSpoolPath();
  let spool = open(path);
  const id = spool.spoolId;
  assert.match(id, /^[0-9a-f-]{36}$/);
  await spool.writer.append(samples(10));
  assert.equal(spool.lease.removeForwarded(1, 10), 10);
  assert.equal(spool.view.stats().rows, 0);
  spool.close();
  spool = open(path);
  assert.equal(spool.spoolId, id);
  await spool.writer.append(samples(3));
  assert.deepEqual(spool.lease.read(0, 10).map((s) => s.seq), [11, 12, 13]);
  spool.close();
});

Deno.test("spool refuses a second writer while the first one holds it", async () => {
  const path = await tempSpoolPath();
  const first = open(path);
  assert.throws(() => open(path), /is in use by another kwollector process \(pid \d+\)/);
  first.close();
  open(path).close();
});

Deno.test("spool creates its directory and files readable by their owner only", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  await spool.writer.append(samples(10));
  assert.equal(Deno.statSync(path).mode! & 0o777, 0o600);
  assert.equal(Deno.statSync(`${path}-wal`).mode! & 0o777, 0o600);
  assert.equal(Deno.statSync(path.replace(/\/spool\.db$/, "")).mode! & 0o777, 0o700);
  spool.close();
});

Deno.test("spool acknowledges only durable samples: kill -9 of the writer loses none of them", async () => {
  for (let round = 0; round < 3; round++) {
    const path = await tempSpoolPath();
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("./fixtures/writer.ts", import.meta.url).pathname, path],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    let lastAcked = 0;
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const deadline = Date.now() + 300 + round * 400;
    let buffer = "";
    while (Date.now() < deadline || lastAcked === 0) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      const lines = buffer.split("\n");
      buffer = lines.pop()!;
      for (const l of lines) if (l.startsWith("acked ")) lastAcked = Number(l.slice(6));
    }
    child.kill("SIGKILL");
    await child.status;
    await reader.cancel();
    const spool = open(path);
    const values = spool.lease.read(0, 10_000_000).map((s) => s.value);
    spool.close();
    assert.ok(values.length >= lastAcked, `acked ${lastAcked}, found ${values.length}`);
    for (let v = 1; v <= lastAcked; v++) assert.equal(values[v - 1], v);
  }
});

Deno.test("spool garbage collection removes only series no sample can reference", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  await spool.writer.append([{ timestampMs: 1, deviceId: "old", metricId: "m", value: 1, labels: {} }]);
  for (let i = 0; i < 300_000; i += 50_000) await spool.writer.append(samples(50_000, i, 3));
  spool.lease.removeForwarded(1, 250_000);
  assert.equal(spool.writer.collectGarbage(), 1);
  await spool.writer.append(samples(10, 0, 3));
  const rows = spool.lease.read(0, 1_000_000);
  assert.ok(rows.every((s) => s.deviceId.startsWith("node-")));
  spool.close();
});

Deno.test("a series identity keeps its spool series id only while the series dictionary holds it", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  const series = makeIdentity("old", "m", { k: "v" });
  const sample = (ts: number): Sample => ({
    timestampMs: ts,
    deviceId: "old",
    metricId: "m",
    value: 1,
    labels: series.labels,
    series,
  });
  await spool.writer.append([sample(1)]);
  const id = series.spool?.id;
  assert.ok(id !== undefined);
  // The same series without an identity is the same row of the dictionary.
  await spool.writer.append([{ timestampMs: 2, deviceId: "old", metricId: "m", value: 1, labels: { k: "v" } }]);
  for (let i = 0; i < 300_000; i += 50_000) await spool.writer.append(samples(50_000, i, 3));
  spool.lease.removeForwarded(1, 250_001);
  assert.equal(spool.writer.collectGarbage(), 1);
  // Its series row is gone: the identity's id is not used again, the series is written anew.
  await spool.writer.append([sample(3)]);
  assert.notEqual(series.spool?.id, id);
  const last = spool.lease.read(spool.lease.lastSeq() - 1, 10).at(-1)!;
  assert.deepEqual([last.deviceId, last.metricId, last.labels, last.timestampMs], ["old", "m", { k: "v" }, 3]);
  assert.equal(spool.lease.counters.quarantined, 0);
  spool.close();
});

Deno.test("spool stores two appends of one new series, queued for the same commit, under one series", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  const sample = (value: number): Sample => ({
    timestampMs: 1_790_000_000_000 + value,
    deviceId: "new-1",
    metricId: "m",
    value,
    labels: { a: "1" },
  });
  await Promise.all([spool.writer.append([sample(1)]), spool.writer.append([sample(2), sample(3)])]);
  assert.deepEqual(spool.lease.read(0, 10).map((s) => [s.deviceId, s.value]), [["new-1", 1], ["new-1", 2], [
    "new-1",
    3,
  ]]);
  spool.close();
  const db = new DatabaseSync(path, { readOnly: true });
  assert.equal((db.prepare("SELECT count(*) AS n FROM series").get() as { n: number }).n, 1);
  db.close();
});

Deno.test("spool finds a series again when a garbage collection removed it between the append and the commit", async () => {
  const spool = open(await tempSpoolPath());
  const old: Sample = { timestampMs: 1_790_000_000_000, deviceId: "old-1", metricId: "m", value: 1, labels: {} };
  await spool.writer.append([old]);
  // Other series until the old one is past the garbage collection's slack, every row forwarded.
  for (let i = 0; i < 3; i++) await spool.writer.append(samples(50_000, i * 50_000, 10));
  spool.lease.removeForwarded(1, spool.lease.lastSeq());
  await spool.writer.append(samples(1, 150_000, 10));
  const appended = spool.writer.append([{ ...old, value: 2 }]); // found in the dictionary now
  assert.ok(spool.writer.collectGarbage() > 0, "the old series was removed before the commit");
  await appended;
  const stored = spool.lease.read(spool.lease.lastSeq() - 1, 10).at(-1)!;
  assert.deepEqual([stored.deviceId, stored.value], ["old-1", 2]);
  spool.close();
});
