/**
 * The spool's recovery rules (src/spool/spool.ts "Recovery", src/spool/aside.ts): a damaged file
 * is moved aside and salvaged into a retired spool with its id and seqs; a disk that refuses is
 * waited for, never taken for damage; a file deleted or replaced under the running collector is
 * written back.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { statfsSync } from "node:fs";
import { openSpoolLease, openSpoolView, type Spool } from "../../src/spool/spool.ts";
import { listAside } from "../../src/spool/aside.ts";
import { SpoolError, spoolTrouble } from "../../src/spool/errors.ts";
import { setLogSink } from "../../src/log.ts";
import { mountSmallFs } from "../../scripts/peers/small_fs.ts";
import { open, readAll, samples, tempSpoolPath } from "./fixtures/spool.ts";

/** Captures the log lines of `fn`. */
async function logsOf(fn: () => Promise<void> | void): Promise<string[]> {
  const logs: string[] = [];
  setLogSink((l) => logs.push(l));
  try {
    await fn();
  } finally {
    setLogSink((l) => console.error(l));
  }
  return logs;
}

Deno.test("spool with damaged pages is moved aside, a new spool starts, and a retired spool keeps the old id and seqs", async () => {
  const path = await tempSpoolPath();
  let spool = open(path);
  const id = spool.spoolId;
  for (let i = 0; i < 100_000; i += 10_000) await spool.writer.append(samples(10_000, i));
  spool.close();
  // Scramble a run of pages in the middle of the file (sample pages), keeping the header.
  const file = await Deno.open(path, { read: true, write: true });
  const size = (await file.stat()).size;
  await file.seek(Math.floor(size / 2), Deno.SeekMode.Start);
  await file.write(crypto.getRandomValues(new Uint8Array(4096 * 3)));
  file.close();
  const logs = await logsOf(() => {
    spool = open(path);
  });
  assert.notEqual(spool.spoolId, id, "the new live spool has an id of its own");
  await spool.writer.append(samples(1));
  assert.deepEqual(readAll(spool.lease).map((s) => s.seq), [1]);
  spool.close();
  const aside = listAside(path);
  assert.equal(aside.damaged.length, 0, "the damaged file was salvaged at once");
  assert.equal(aside.retired.length, 1);
  const retired = openSpoolLease(aside.retired[0]!);
  assert.equal(retired.spoolId, id, "the retired spool keeps the damaged spool's id");
  const kept = readAll(retired.lease);
  assert.ok(kept.length > 50_000 && kept.length < 100_000, `salvaged ${kept.length}`);
  for (const s of kept) assert.equal(s.value, s.seq - 1, "a salvaged sample changed seq");
  retired.close();
  const dir = path.replace(/\/spool\.db$/, "");
  assert.ok([...Deno.readDirSync(dir)].some((e) => /^spool\.db\.salvaged-/.test(e.name)), "the source is kept");
  assert.ok(logs.some((l) => l.includes("Spool is damaged: moved aside")));
  assert.ok(logs.some((l) => /Spool salvage finished.*original spool id/.test(l)));
});

Deno.test("spool that is not a database at all is moved aside and a new spool starts", async () => {
  const path = await tempSpoolPath();
  await Deno.mkdir(path.replace(/\/spool\.db$/, ""), { recursive: true });
  await Deno.writeTextFile(path, "this is not an SQLite file ".repeat(400));
  let spool: Spool | undefined;
  await logsOf(() => {
    spool = open(path);
  });
  await spool!.writer.append(samples(2));
  assert.deepEqual(spool!.lease.read(0, 10).map((s) => s.seq), [1, 2]);
  spool!.close();
});

Deno.test("spool on a full disk at start is left where it is, and opens whole once space returns", async () => {
  const fs = await mountSmallFs(4 * 1024 * 1024);
  try {
    const path = `${fs.dir}/spool.db`;
    const first = open(path);
    const id = first.spoolId;
    await first.writer.append(samples(27));
    first.close(); // clean close, as after `systemctl stop`: no -wal, no -shm
    assert.throws(() => Deno.statSync(`${path}-wal`));
    fs.fill();
    let refused: unknown;
    const logs = await logsOf(() => {
      try {
        open(path).close();
      } catch (err) {
        refused = err;
      }
    });
    assert.ok(refused instanceof SpoolError, `expected a SpoolError, got ${refused}`);
    assert.equal(spoolTrouble(refused), "refused");
    assert.match(String((refused as Error).message), new RegExp(`Cannot open spool '${path}'`));
    assert.deepEqual(listAside(path), { damaged: [], retired: [] }, "a sound spool was moved aside");
    assert.ok(!logs.some((l) => l.includes("damaged")), logs.join("\n"));
    fs.free();
    const again = open(path);
    assert.equal(again.spoolId, id);
    assert.deepEqual(readAll(again.lease).map((s) => s.value), samples(27).map((s) => s.value));
    again.close();
  } finally {
    await fs.close();
  }
});

Deno.test("spool salvage refused by a full disk keeps the damaged file and succeeds once space returns", async () => {
  const fs = await mountSmallFs(8 * 1024 * 1024);
  try {
    const path = `${fs.dir}/spool.db`;
    const first = open(path);
    const id = first.spoolId;
    for (let i = 0; i < 40_000; i += 10_000) await first.writer.append(samples(10_000, i));
    first.close();
    // Damage sample pages, then leave room for a new spool but not for a salvaged copy (~1 MB).
    const file = await Deno.open(path, { read: true, write: true });
    await file.seek(Math.floor((await file.stat()).size / 2), Deno.SeekMode.Start);
    await file.write(crypto.getRandomValues(new Uint8Array(4096)));
    file.close();
    const { bavail, bsize } = statfsSync(fs.dir);
    Deno.writeFileSync(`${fs.dir}/filler`, new Uint8Array(Math.max(0, bavail * bsize - 256 * 1024)));
    let spool: Spool | undefined;
    const logs = await logsOf(() => {
      spool = open(path);
    });
    await spool!.writer.append(samples(3));
    spool!.close();
    assert.equal(listAside(path).damaged.length, 1, "the damaged file waits for its salvage");
    assert.equal(listAside(path).retired.length, 0, "no half-built retired spool is left");
    assert.ok(logs.some((l) => l.includes("Cannot salvage a spool moved aside yet")), logs.join("\n"));
    fs.free();
    const later = await logsOf(() => open(path).close());
    assert.ok(later.some((l) => l.includes("Spool salvage finished")), later.join("\n"));
    const aside = listAside(path);
    assert.deepEqual(aside.damaged, []);
    const retired = openSpoolLease(aside.retired[0]!);
    assert.equal(retired.spoolId, id);
    assert.ok(readAll(retired.lease).length > 30_000);
    retired.close();
  } finally {
    await fs.close();
  }
});

Deno.test("spool file deleted under the writer is written back with every sample and keeps taking appends", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  const id = spool.spoolId;
  await spool.writer.append(samples(500));
  Deno.removeSync(path);
  assert.equal(spool.writer.fileState(), "missing");
  spool.writer.restoreFile();
  assert.equal(spool.writer.fileState(), "ok");
  await spool.writer.append(samples(5, 500));
  const reader = openSpoolView(path);
  assert.equal(reader.view.spoolId, id);
  assert.deepEqual(readAll(reader.view).map((s) => s.value), samples(505).map((s) => s.value));
  reader.close();
  spool.close();
  const again = open(path);
  assert.equal(again.view.rowCount(), 505, "the restored file is the spool at the next start");
  again.close();
});

Deno.test("spool file replaced under the writer is written back, and the replacement is moved aside to be drained", async () => {
  const path = await tempSpoolPath();
  const other = await tempSpoolPath();
  const foreign = open(other);
  const foreignId = foreign.spoolId;
  await foreign.writer.append(samples(7));
  foreign.close();
  const spool = open(path);
  await spool.writer.append(samples(10));
  Deno.renameSync(other, path);
  assert.equal(spool.writer.fileState(), "replaced");
  await logsOf(() => spool.writer.restoreFile());
  await spool.writer.append(samples(1, 10));
  spool.close();
  const live = openSpoolView(path);
  assert.equal(live.view.rowCount(), 11);
  live.close();
  const aside = listAside(path);
  assert.equal(aside.damaged.length, 1, "the replacement waits for its salvage");
  await logsOf(() => open(path).close()); // the next open salvages it
  const retired = openSpoolLease(listAside(path).retired[0]!);
  assert.equal(retired.spoolId, foreignId);
  assert.equal(readAll(retired.lease).length, 7);
  retired.close();
});

Deno.test("spool.read() sets aside a sample whose series is gone, and returns the others", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  await spool.writer.append(samples(3));
  spool.close();
  const db = new DatabaseSync(path);
  const series = db.prepare("SELECT series FROM samples WHERE seq = 2").get() as { series: number };
  db.prepare("DELETE FROM series WHERE id = ?").run(series.series);
  db.close();
  const again = open(path);
  assert.deepEqual(again.lease.read(0, 10).map((s) => s.seq), [1]);
  assert.deepEqual(again.lease.read(1, 10).map((s) => s.seq), [3], "seq 2 is set aside, not in the way");
  assert.deepEqual(again.lease.unreportedQuarantine().map((q) => q.seq), [2]);
  assert.match(again.lease.unreportedQuarantine()[0]!.reason, /series \d+ is missing/);
  again.close();
});
