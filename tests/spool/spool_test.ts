import assert from "node:assert/strict";
import { type FullPolicy, Spool } from "../../src/spool/spool.ts";
import type { Sample } from "../../src/sample.ts";
import { setLogLevel, setLogSink } from "../../src/log.ts";
import { Telemetry } from "../../src/telemetry/telemetry.ts";

async function tempSpoolPath(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "kwollector-spool-" });
  return `${dir}/state/spool.db`;
}

function open(
  path: string,
  opts: { maxBytes?: number; fullPolicy?: FullPolicy; telemetry?: Telemetry } = {},
): Spool {
  return Spool.open({
    path,
    maxBytes: opts.maxBytes ?? 1024 ** 3,
    fullPolicy: opts.fullPolicy ?? "drop_oldest",
    synchronous: "full",
    commitIntervalMs: 1,
    ...(opts.telemetry && { telemetry: opts.telemetry }),
  });
}

function samples(n: number, from = 0, series = 10): Sample[] {
  return Array.from({ length: n }, (_, i) => ({
    timestampMs: 1_790_000_000_000 + (from + i) * 1000 + 0.123,
    deviceId: `node-${(from + i) % series}`,
    metricId: "power_watt",
    value: from + i,
    labels: { _device_alias: `alias-${(from + i) % series}` },
  }));
}

Deno.test("spool.append() resolves once durable and read() returns samples in seq order", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  const odd: Sample[] = [
    { timestampMs: 1_790_000_000_123.456, deviceId: "a\tb", metricId: "m", value: NaN, labels: { value_str: "on" } },
    { timestampMs: 1_790_000_000_124, deviceId: "a", metricId: "m", value: Infinity, labels: {} },
    { timestampMs: 1_790_000_000_125, deviceId: "a", metricId: "m", value: -Infinity, labels: {} },
  ];
  await spool.append(odd);
  await spool.append(samples(5));
  const got = spool.read(0, 100);
  assert.deepEqual(got.map((s) => s.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.ok(Number.isNaN(got[0]!.value));
  assert.equal(got[0]!.deviceId, "a\tb");
  assert.equal(got[0]!.timestampMs, 1_790_000_000_123.456);
  assert.deepEqual(got[0]!.labels, { value_str: "on" });
  assert.equal(got[1]!.value, Infinity);
  assert.equal(got[2]!.value, -Infinity);
  assert.equal(spool.stats().rows, 8);
  spool.close();
});

Deno.test("spool never reuses a seq, even after it was emptied and reopened, and keeps its id", async () => {
  const path = await tempSpoolPath();
  let spool = open(path);
  const id = spool.spoolId;
  assert.match(id, /^[0-9a-f-]{36}$/);
  await spool.append(samples(10));
  assert.equal(spool.removeForwarded(1, 10), 10);
  assert.equal(spool.stats().rows, 0);
  spool.close();
  spool = open(path);
  assert.equal(spool.spoolId, id);
  await spool.append(samples(3));
  assert.deepEqual(spool.read(0, 10).map((s) => s.seq), [11, 12, 13]);
  spool.close();
});

Deno.test("spool keeps a sample under 32 bytes on disk", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  const n = 200_000;
  for (let i = 0; i < n; i += 10_000) await spool.append(samples(10_000, i, 500));
  const perSample = spool.usedBytes() / n;
  spool.close();
  assert.ok(perSample <= 32, `${perSample.toFixed(1)} bytes per sample`);
});

Deno.test("spool under drop_oldest gives up its oldest samples, records the gap and logs it", async () => {
  const logs: string[] = [];
  setLogSink((l) => logs.push(l));
  try {
    const path = await tempSpoolPath();
    const spool = open(path, { maxBytes: 1024 * 1024, fullPolicy: "drop_oldest" });
    for (let i = 0; i < 120_000; i += 5000) await spool.append(samples(5000, i));
    assert.ok(spool.usedBytes() <= 1024 * 1024 + 5000 * 40, `used ${spool.usedBytes()}`);
    const gaps = spool.gaps();
    assert.ok(gaps.length > 0);
    assert.equal(gaps[0]!.firstSeq, 1);
    const dropped = gaps.reduce((n, g) => n + g.rows, 0);
    assert.equal(spool.counters.droppedOldest, dropped);
    // Every seq is accounted for: kept rows plus dropped rows is what was appended.
    assert.equal(spool.stats().rows + dropped, 120_000);
    const newest = spool.read(0, 1_000_000).at(-1)!;
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
    for (let i = 0; i < 120_000; i += 5000) await spool.append(samples(5000, i));
    const rows = spool.stats().rows;
    assert.ok(rows < 120_000);
    assert.equal(rows + spool.counters.droppedNewest, 120_000);
    assert.equal(
      telemetry.value("kwollector_rows_dropped_total", { policy: "drop_newest" }),
      spool.counters.droppedNewest,
    );
    assert.equal(spool.read(0, 1)[0]!.seq, 1);
    assert.deepEqual(spool.gaps(), []);
    assert.equal(logs.filter((l) => l.startsWith("ERROR Spool full")).length, 1);
    // Room comes back once the forwarder removes the backlog: the condition ends, logged once.
    spool.removeForwarded(1, rows);
    spool.collectGarbage();
    await spool.append(samples(10, 0));
    assert.equal(logs.filter((l) => l.startsWith("INFO Spool has room again")).length, 1);
    spool.close();
  } finally {
    setLogLevel("warning");
    setLogSink((l) => console.error(l));
  }
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
  await spool.append(samples(10));
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
    const values = spool.read(0, 10_000_000).map((s) => s.value);
    spool.close();
    assert.ok(values.length >= lastAcked, `acked ${lastAcked}, found ${values.length}`);
    for (let v = 1; v <= lastAcked; v++) assert.equal(values[v - 1], v);
  }
});

Deno.test("spool garbage collection removes only series no sample can reference", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  await spool.append([{ timestampMs: 1, deviceId: "old", metricId: "m", value: 1, labels: {} }]);
  for (let i = 0; i < 300_000; i += 50_000) await spool.append(samples(50_000, i, 3));
  spool.removeForwarded(1, 250_000);
  assert.equal(spool.collectGarbage(), 1);
  await spool.append(samples(10, 0, 3));
  const rows = spool.read(0, 1_000_000);
  assert.ok(rows.every((s) => s.deviceId.startsWith("node-")));
  spool.close();
});

Deno.test("spool.read() stops before a missing seq, so a batch never spans a seq that left another way", async () => {
  const spool = open(await tempSpoolPath());
  await spool.append(samples(10));
  spool.removeForwarded(4, 5); // e.g. sent by the live lane
  assert.deepEqual(spool.read(0, 100).map((s) => s.seq), [1, 2, 3]);
  assert.deepEqual(spool.read(3, 100).map((s) => s.seq), [6, 7, 8, 9, 10]);
  spool.close();
});

Deno.test("spool under drop_oldest never drops a leased row, even past the old end or after a bisected send", async () => {
  setLogSink(() => {});
  try {
    const spool = open(await tempSpoolPath(), { maxBytes: 1024 * 1024, fullPolicy: "drop_oldest" });
    await spool.append(samples(20_000));
    // A batch sent in parts around a rejected sample leaves no lease behind it...
    const bisected = spool.read(0, 100);
    spool.removeForwarded(1, 50);
    spool.quarantine(bisected.slice(50, 51), "rejected");
    spool.removeForwarded(52, 100);
    // ...while the live lane's batch (the newest rows) is in flight.
    const live = spool.read(19_900, 50);
    await spool.append(samples(30_000, 20_000));
    const gaps = spool.gaps();
    assert.ok(gaps.length > 0 && gaps[0]!.firstSeq === 101, JSON.stringify(gaps));
    assert.ok(gaps.every((g) => g.lastSeq < 19_901 || g.firstSeq > 19_950), JSON.stringify(gaps));
    assert.deepEqual(spool.read(19_900, 50).map((s) => s.seq), live.map((s) => s.seq));
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
    await spool.append(samples(60_000));
    assert.ok(spool.usedBytes() > maxBytes, `one commit of 60000 samples uses ${spool.usedBytes()} B`);
    await spool.append(samples(100, 60_000));
    assert.ok(spool.usedBytes() <= maxBytes + 100 * 40 + 4 * 4096, `${spool.usedBytes()} B used`);
    spool.close();
  } finally {
    setLogSink((l) => console.error(l));
  }
});
