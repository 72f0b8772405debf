/**
 * What salvage keeps of a damaged spool (src/spool/salvage.ts): every row a lookup of its own
 * seq finds in the damaged file, even where the table's tree is out of order, and the row such a
 * lookup finds rather than one whose key a flipped bit changed into the same seq.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { listAside } from "../../src/spool/aside.ts";
import { setLogSink } from "../../src/log.ts";
import { open, samples, tempSpoolPath } from "./fixtures/spool.ts";

const PAGE = 4096;

/** Opens the spool at `path` (salvaging it when damaged); returns the log lines of the open. */
function openLogged(path: string): string[] {
  const logs: string[] = [];
  setLogSink((l) => logs.push(l));
  try {
    open(path).close();
  } finally {
    setLogSink((l) => console.error(l));
  }
  return logs;
}

/** seq → value of every row a lookup of its own seq finds in [1, upTo], read from a copy of the files. */
async function lookups(path: string, upTo: number): Promise<Map<number, number>> {
  const dir = await Deno.makeTempDir({ prefix: "kwollector-probe-" });
  for (const suffix of ["", "-wal"]) {
    await Deno.copyFile(path + suffix, `${dir}/spool.db${suffix}`).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
  }
  const db = new DatabaseSync(`${dir}/spool.db`);
  const found = new Map<number, number>();
  const lookup = db.prepare("SELECT value FROM samples WHERE seq = ?");
  for (let seq = 1; seq <= upTo; seq++) {
    try {
      const r = lookup.get(seq) as { value: number } | undefined;
      if (r) found.set(seq, r.value);
    } catch { /* a damaged page on the way: not readable */ }
  }
  db.close();
  await Deno.remove(dir, { recursive: true });
  return found;
}

/** seq → value of the retired spool salvage made next to `path`. */
function retiredRows(path: string): Map<number, number> {
  const retired = listAside(path).retired;
  assert.equal(retired.length, 1, "the damaged spool was salvaged into one retired spool");
  const db = new DatabaseSync(retired[0]!, { readOnly: true });
  const rows = db.prepare("SELECT seq, value FROM samples").all() as { seq: number; value: number }[];
  db.close();
  return new Map(rows.map((r) => [r.seq, r.value]));
}

async function removeSpoolDirs(...paths: string[]): Promise<void> {
  for (const path of paths) await Deno.remove(path.replace(/\/state\/spool\.db$/, ""), { recursive: true });
}

function readVarint(bytes: Uint8Array, at: number): { value: number; length: number } {
  let value = 0;
  for (let i = 0; i < 8; i++) {
    const b = bytes[at + i]!;
    value = value * 128 + (b & 0x7f);
    if (b < 0x80) return { value, length: i + 1 };
  }
  throw new Error("Varints of 9 bytes are not used by these tests");
}

/** The keys of the table leaf page `page` (1-based), or undefined when it is not a table leaf. */
function leafKeys(bytes: Uint8Array, page: number): { key: number; keyEnd: number }[] | undefined {
  const base = (page - 1) * PAGE;
  const header = base + (page === 1 ? 100 : 0);
  if (bytes[header] !== 0x0d) return undefined;
  const cells = (bytes[header + 3]! << 8) | bytes[header + 4]!;
  return Array.from({ length: cells }, (_, i) => {
    const cell = base + ((bytes[header + 8 + 2 * i]! << 8) | bytes[header + 9 + 2 * i]!);
    const payload = readVarint(bytes, cell);
    const key = readVarint(bytes, cell + payload.length);
    return { key: key.value, keyEnd: cell + payload.length + key.length };
  });
}

/** The child pointers of the interior table page `page` (not page 1), left to right, with their offsets. */
function children(bytes: Uint8Array, page: number): { page: number; at: number }[] {
  const base = (page - 1) * PAGE;
  assert.equal(bytes[base], 0x05, `page ${page} is an interior table page`);
  const cells = (bytes[base + 3]! << 8) | bytes[base + 4]!;
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  return Array.from({ length: cells }, (_, i) => {
    const at = base + view.getUint16(base + 12 + 2 * i);
    return { page: view.getUint32(at), at };
  });
}

/** Flips one bit of the key of the row whose seq is `seq`, in the table leaf page that holds it. */
async function flipKeyBit(path: string, seq: number, bit: number): Promise<void> {
  const bytes = await Deno.readFile(path);
  for (let page = 1; page * PAGE <= bytes.length; page++) {
    const cell = leafKeys(bytes, page)?.find((c) => c.key === seq);
    if (!cell) continue;
    // The key's varint keeps its length: the flipped bit is in its last 7-bit group or the one before.
    bytes[cell.keyEnd - 1 - Math.floor(bit / 7)]! ^= 1 << (bit % 7);
    await Deno.writeFile(path, bytes);
    return;
  }
  throw new Error(`No row with seq ${seq} in a table leaf page of '${path}'`);
}

Deno.test("salvage keeps every row a lookup finds when a torn write-ahead log links pages of another version of the file", async () => {
  const writer = await tempSpoolPath();
  open(writer).close();
  const db = new DatabaseSync(writer);
  db.exec("PRAGMA wal_autocheckpoint = 0");
  const series = (db.prepare(
    "INSERT INTO series(device_id, metric_id, labels, last_seq) VALUES ('node-1', 'power_watt', '{}', 0) RETURNING id",
  ).get() as { id: number }).id;
  const insert = db.prepare("INSERT INTO samples(seq, series, ts, value) VALUES (?, ?, ?, ?)");
  const commit = (first: number, last: number, removeUpTo = 0) => {
    db.exec("BEGIN IMMEDIATE");
    if (removeUpTo > 0) db.prepare("DELETE FROM samples WHERE seq <= ?").run(removeUpTo);
    for (let seq = first; seq <= last; seq++) insert.run(seq, series, seq * 1000, seq);
    db.prepare("UPDATE meta SET value = ? WHERE key = 'next_seq'").run(String(last + 1));
    db.exec("COMMIT");
  };
  commit(1, 3000);
  db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  commit(3001, 3100);
  const torn = (await Deno.stat(`${writer}-wal`)).size;
  // Forwarded rows removed, and their pages reused by new rows; then all of it copied into the file.
  commit(3101, 6000, 1000);
  db.exec("PRAGMA wal_checkpoint(PASSIVE)");
  const image = await tempSpoolPath();
  await Deno.mkdir(image.replace(/\/spool\.db$/, ""), { recursive: true });
  await Deno.copyFile(writer, image);
  await Deno.copyFile(`${writer}-wal`, `${image}-wal`);
  db.close();
  // The write-ahead log cut after its first commit: its older pages replayed over newer ones.
  await Deno.truncate(`${image}-wal`, torn);
  const readable = await lookups(image, 7000);
  assert.ok(readable.size > 1000, `the image holds ${readable.size} rows a lookup finds`);
  const logs = openLogged(image);
  assert.ok(logs.some((l) => l.includes("Spool is damaged")), "the image is damaged");
  const kept = retiredRows(image);
  const missing = [...readable].filter(([seq, value]) => value === seq && kept.get(seq) !== seq).map(([s]) => s);
  assert.equal(missing.length, 0, `rows a lookup finds, missing after salvage: ${missing.slice(0, 5)} ...`);
  await removeSpoolDirs(writer, image);
});

Deno.test("salvage keeps the row a lookup finds when a flipped bit gives another row its seq", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  await spool.writer.append(samples(4000));
  spool.close();
  // Seq 1000 (value 999) becomes a second seq 3048, among the rows of seqs near 1000.
  await flipKeyBit(path, 1000, 11);
  const readable = await lookups(path, 4000);
  assert.equal(readable.get(3048), 3047, "a lookup of seq 3048 finds its own row");
  const logs = openLogged(path);
  assert.ok(logs.some((l) => l.includes("Spool is damaged")), "the flipped key is found damaged");
  const kept = retiredRows(path);
  assert.equal(kept.get(3048), 3047, "seq 3048 keeps its own row, not the one whose key became 3048");
  const wrong = [...kept].filter(([seq, value]) => value !== seq - 1).map(([s]) => s);
  assert.deepEqual(wrong, [], "no salvaged row has another row's value");
  const missing = [...readable.keys()].filter((seq) => !kept.has(seq));
  assert.deepEqual(missing, [], "every row a lookup finds is salvaged");
  await removeSpoolDirs(path);
});

Deno.test("salvage of a tree that links a leaf of rows removed long ago ends, and keeps every row a lookup finds", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  await spool.writer.append(samples(6000));
  spool.lease.removeForwarded(1, 3000);
  spool.close();
  const meta = new DatabaseSync(path, { readOnly: true });
  const root = (meta.prepare("SELECT rootpage FROM sqlite_master WHERE name = 'samples'").get() as { rootpage: number })
    .rootpage;
  meta.close();
  const bytes = await Deno.readFile(path);
  // A freed page that still holds a leaf of removed seqs, as an older version of the file had it.
  let stale: number | undefined;
  for (let page = 2; page * PAGE <= bytes.length && stale === undefined; page++) {
    const keys = leafKeys(bytes, page);
    if (keys && keys.length > 100 && keys.every((k) => k.key <= 3000)) stale = page;
  }
  assert.ok(stale !== undefined, "a freed leaf of removed rows is still in the file");
  // Linked in place of the child where the first run of 1,000 rows ends, so that a walk going on
  // past the last seq of each run goes back to the start of the table, again and again.
  const staleRows = leafKeys(bytes, stale)!.length;
  let before = 0;
  const child = children(bytes, root).find((c) => {
    if (before + staleRows >= 1000) return true;
    before += leafKeys(bytes, c.page)!.length;
    return false;
  })!;
  new DataView(bytes.buffer).setUint32(child.at, stale);
  await Deno.writeFile(path, bytes);
  const readable = await lookups(path, 6000);
  assert.ok(readable.size > 2000, `the image holds ${readable.size} rows a lookup finds`);
  const logs = openLogged(path);
  assert.ok(logs.some((l) => l.includes("Spool is damaged")), "the relinked leaf is found damaged");
  const kept = retiredRows(path);
  const missing = [...readable].filter(([seq, value]) => kept.get(seq) !== value).map(([s]) => s);
  assert.deepEqual(missing, [], "every row a lookup finds is salvaged");
  await removeSpoolDirs(path);
});
