/**
 * # Crash images of the spool (store-forward.md (d) tests 2 and 8)
 *
 * A writer process (crash_writer.ts) appends to a spool without pause. At random moments the
 * test takes an image of its files and opens it through the collector's real open path
 * (`openSpool`, with its quick_check and salvage):
 *
 * - `clean`: the writer is frozen (SIGSTOP) at a random instant, mid-commit or mid-checkpoint
 *   included, and spool.db and spool.db-wal (and -shm, or not) are copied: the files a SIGKILL
 *   or a crash of the process would leave. Every seq acknowledged before the freeze must be
 *   there, intact.
 * - damaged images: `wal_then_db` / `db_then_wal` (a naive backup copying one file, then the
 *   other while the writer runs), `torn_wal` (the WAL cut at a random byte), `no_wal` (-wal
 *   and -shm deleted), `flip_db` / `flip_wal` (one bit flipped at a random offset),
 *   `scramble_page` (one 4 KB page of spool.db overwritten with garbage, as a lost sector).
 *   No crash leaves these under `synchronous=FULL`: a WAL cut or flipped before frames a
 *   checkpoint already copied into spool.db replays their older pages over newer ones, so the
 *   samples tree links pages of two versions of the file, with rows out of order (a salvage that
 *   trusted the tree's order lost 9,986 of 10,271 readable rows of one such image).
 *
 * Every image must open (never an unopenable spool, never a crash loop: a second open finds it
 * healthy); salvage must keep every row that SQLite can still read from the image, which an
 * independent probe lists beforehand (a damaged image is salvaged into a retired spool with the
 * image's spool id, read back here with the live one); a sample appended after the open must
 * never reuse a (spool id, seq) of the image: same id and a seq above every seq the image holds
 * or announced, or a new spool id. What damage costs is counted, not hidden: rows of
 * acknowledged commits no longer in the image, rows silently altered (SQLite has no checksum on
 * database pages), and images whose next seq went back below what was acknowledged.
 */
import { DatabaseSync } from "node:sqlite";
import { openSpool, openSpoolLease, type Spool, type SpooledSample } from "../../src/spool/spool.ts";
import { listAside } from "../../src/spool/aside.ts";
import { setLogSink } from "../../src/log.ts";
import { LineChild } from "./lines.ts";
import { prng, type ScenarioResult, type ScenarioSize } from "./scenario.ts";

const WRITER = new URL("./crash_writer.ts", import.meta.url).pathname;
const PAGE = 4096;
const VARIANTS = [
  "clean",
  "clean",
  "clean",
  "wal_then_db",
  "db_then_wal",
  "torn_wal",
  "no_wal",
  "flip_db",
  "flip_wal",
  "scramble_page",
  "scramble_page",
] as const;
type Variant = typeof VARIANTS[number];

interface WriterState {
  acked: number;
  /**
   * The last range whose removal started (the writer removes one range at a time, oldest first):
   * seqs up to its end may be gone from an image, seqs from its start may be there.
   */
  removing: [number, number];
}

interface ImageOutcome {
  variant: Variant;
  failures: string[];
  /** Acknowledged seqs (not removed) missing from the opened spool. */
  ackedMissing: number;
  /** Rows the independent probe could read from the image. */
  intact: number;
  /** Rows whose value no longer matches their seq (undetectable damage). */
  altered: number;
  salvaged: boolean;
  salvagedRows: number;
  lostRows: number;
  /** The opened spool's next seq is at or below a seq acknowledged before the image. */
  seqRollback: boolean;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Reads the writer's lines received so far into `state`. */
function absorb(writer: LineChild, state: WriterState): void {
  for (const line of writer.drain()) {
    const [word, a, b] = line.split(" ");
    if (word === "acked") state.acked = Math.max(state.acked, Number(a));
    if (word === "removing") state.removing = [Number(a), Number(b)];
  }
}

async function copyIfExists(from: string, to: string): Promise<boolean> {
  try {
    await Deno.copyFile(from, to);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

async function flipBit(path: string, rand: () => number): Promise<void> {
  const bytes = await Deno.readFile(path);
  if (bytes.length === 0) return;
  const at = Math.floor(rand() * bytes.length);
  bytes[at]! ^= 1 << Math.floor(rand() * 8);
  await Deno.writeFile(path, bytes);
}

/** Takes an image of the writer's spool into `dir`; returns what was acknowledged before it. */
async function takeImage(
  variant: Variant,
  writer: LineChild,
  state: WriterState,
  src: string,
  dir: string,
  rand: () => number,
): Promise<WriterState> {
  const dst = `${dir}/spool.db`;
  if (variant === "wal_then_db" || variant === "db_then_wal") {
    absorb(writer, state);
    const ackedBefore = state.acked;
    const [first, second] = variant === "wal_then_db" ? ["-wal", ""] : ["", "-wal"];
    await copyIfExists(src + first, dst + first);
    await sleep(rand() * 30);
    await copyIfExists(src + second, dst + second);
    absorb(writer, state);
    return { acked: ackedBefore, removing: state.removing };
  }
  writer.signal("SIGSTOP");
  try {
    // Lines written before the freeze may still be in the pipe.
    await sleep(15);
    absorb(writer, state);
    await Deno.copyFile(src, dst);
    await copyIfExists(`${src}-wal`, `${dst}-wal`);
    if (rand() < 0.5) await copyIfExists(`${src}-shm`, `${dst}-shm`);
  } finally {
    writer.signal("SIGCONT");
  }
  const taken = { acked: state.acked, removing: state.removing };
  switch (variant) {
    case "torn_wal": {
      const size = await Deno.stat(`${dst}-wal`).then((s) => s.size).catch(() => 0);
      if (size > 0) await Deno.truncate(`${dst}-wal`, Math.floor(rand() * size));
      break;
    }
    case "no_wal":
      await Deno.remove(`${dst}-wal`).catch(() => {});
      await Deno.remove(`${dst}-shm`).catch(() => {});
      break;
    case "flip_db":
      await flipBit(dst, rand);
      break;
    case "flip_wal":
      await flipBit(`${dst}-wal`, rand).catch(() => {});
      break;
    case "scramble_page": {
      const bytes = await Deno.readFile(dst);
      const pages = Math.floor(bytes.length / PAGE);
      // Never page 1 (the header and schema): that is the "not a database at all" case.
      if (pages > 1) {
        bytes.set(crypto.getRandomValues(new Uint8Array(PAGE)), PAGE * (1 + Math.floor(rand() * (pages - 1))));
      }
      await Deno.writeFile(dst, bytes);
      break;
    }
  }
  return taken;
}

/**
 * What SQLite itself can read from an image, on a copy: seq → value for every row a point read
 * in [from, upTo] returns with its series, plus what range reads outside it return. These are the
 * "intact rows" salvage must keep.
 */
async function probe(
  dir: string,
  from: number,
  upTo: number,
): Promise<{ rows: Map<number, number>; maxSeen: number; spoolId: string | undefined }> {
  const copy = `${dir}/probe`;
  await Deno.mkdir(copy);
  for (const suffix of ["", "-wal", "-shm"]) {
    await copyIfExists(`${dir}/spool.db${suffix}`, `${copy}/spool.db${suffix}`);
  }
  const rows = new Map<number, number>();
  let maxSeen = 0;
  let spoolId: string | undefined;
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(`${copy}/spool.db`);
    try {
      spoolId = (db.prepare("SELECT value FROM meta WHERE key = 'spool_id'").get() as { value: string } | undefined)
        ?.value;
    } catch { /* meta may be unreadable */ }
    try {
      const m = db.prepare("SELECT value FROM meta WHERE key = 'next_seq'").get() as { value: string } | undefined;
      if (m && Number.isInteger(Number(m.value))) maxSeen = Number(m.value) - 1;
    } catch { /* meta may be unreadable */ }
    try {
      const r = db.prepare("SELECT max(seq) AS m FROM samples").get() as { m: number | null };
      maxSeen = Math.max(maxSeen, Number(r.m ?? 0));
    } catch { /* the samples tree may be unreadable */ }
    const joined = "SELECT s.seq AS seq, s.value AS value FROM samples s JOIN series se ON se.id = s.series";
    const point = db.prepare(`${joined} WHERE s.seq = ?`);
    for (let seq = from; seq <= upTo; seq++) {
      try {
        const r = point.get(seq) as { value: number | null } | undefined;
        if (r) rows.set(seq, Number(r.value));
      } catch { /* an unreadable row is not intact */ }
    }
    // Rows outside the range (removed rows back from an older state, or beyond the last ack).
    for (const where of ["s.seq < ?", "s.seq > ?"]) {
      try {
        const found = db.prepare(`${joined} WHERE ${where}`).all(where.includes("<") ? from : upTo) as {
          seq: number;
          value: number | null;
        }[];
        for (const r of found) rows.set(Number(r.seq), Number(r.value));
      } catch { /* damaged pages there: those rows are not counted as intact */ }
    }
  } catch {
    /* an image SQLite cannot open at all has no intact row */
  } finally {
    try {
      db?.close();
    } catch { /* closing a damaged database may fail */ }
  }
  await Deno.remove(copy, { recursive: true });
  return { rows, maxSeen, spoolId };
}

function openImage(path: string): Spool {
  return openSpool({
    path,
    maxBytes: 1024 ** 3,
    fullPolicy: "drop_oldest",
    synchronous: "full",
    commitIntervalMs: 1,
  });
}

/** Every row of an opened spool (read() returns one run of consecutive seqs at a time). */
function readAll(lease: { read(afterSeq: number, limit: number): SpooledSample[] }): Map<number, number> {
  const rows = new Map<number, number>();
  for (let run = lease.read(0, 100_000); run.length > 0; run = lease.read(run.at(-1)!.seq, 100_000)) {
    for (const s of run) rows.set(s.seq, s.value);
  }
  return rows;
}

async function evaluate(variant: Variant, dir: string, taken: WriterState): Promise<ImageOutcome> {
  const outcome: ImageOutcome = {
    variant,
    failures: [],
    ackedMissing: 0,
    intact: 0,
    altered: 0,
    salvaged: false,
    salvagedRows: 0,
    lostRows: 0,
    seqRollback: false,
  };
  const fail = (what: string) => outcome.failures.push(`${variant} image: ${what}`);
  const { rows: intact, maxSeen, spoolId: imageId } = await probe(dir, taken.removing[0], taken.acked + 200);
  for (const [seq, value] of intact) if (value === seq) outcome.intact++;
  const logs: string[] = [];
  setLogSink((l) => logs.push(l));
  try {
    const path = `${dir}/spool.db`;
    let spool: Spool;
    try {
      spool = openImage(path);
    } catch (err) {
      fail(`does not open: ${err instanceof Error ? err.message : err}`);
      return outcome;
    }
    // The image's samples: in the live spool when it kept the image's id, else in the retired
    // spool its salvage made.
    let present: Map<number, number>;
    const sameId = spool.spoolId === imageId;
    try {
      present = sameId ? readAll(spool.lease) : new Map();
      for (const retiredPath of sameId ? [] : listAside(path).retired) {
        const retired = openSpoolLease(retiredPath);
        if (retired.spoolId === imageId || imageId === undefined) {
          for (const [k, v] of readAll(retired.lease)) present.set(k, v);
        }
        retired.close();
      }
    } catch (err) {
      spool.close();
      fail(`opened but cannot be read: ${err instanceof Error ? err.message : err}`);
      return outcome;
    }
    outcome.salvaged = logs.some((l) => l.includes("Spool is damaged"));
    const finished = logs.find((l) => l.includes("Spool salvage finished"));
    outcome.salvagedRows = Number(finished?.match(/samples_salvaged=(\d+)/)?.[1] ?? 0);
    outcome.lostRows = Number(finished?.match(/samples_lost_at_least=(\d+)/)?.[1] ?? 0);
    let missingIntact = 0;
    for (const [seq, value] of intact) if (value === seq && present.get(seq) !== seq) missingIntact++;
    if (missingIntact > 0) fail(`${missingIntact} rows SQLite can read from the image are missing after the open`);
    for (let seq = taken.removing[1] + 1; seq <= taken.acked; seq++) {
      if (present.get(seq) !== seq) outcome.ackedMissing++;
    }
    if (variant === "clean" && outcome.ackedMissing > 0) {
      fail(`${outcome.ackedMissing} acknowledged samples are missing (acked up to ${taken.acked})`);
    }
    let highest = maxSeen;
    for (const [seq, value] of present) {
      if (value !== seq) outcome.altered++;
      highest = Math.max(highest, seq);
    }
    if (outcome.altered > 0 && !["flip_db", "flip_wal", "scramble_page"].includes(variant)) {
      fail(`${outcome.altered} samples changed value without any bit flipped`);
    }
    try {
      await spool.writer.append([{ timestampMs: Date.now(), deviceId: "after", metricId: "m", value: -1, labels: {} }]);
      const seq = spool.lease.lastSeq();
      if (sameId && seq <= highest) {
        fail(`the first append after the open got seq ${seq}, the image holds seq ${highest}`);
      }
      outcome.seqRollback = sameId && seq <= taken.acked;
      if (variant === "clean" && outcome.seqRollback) fail(`seq ${seq} reused: ${taken.acked} was acknowledged`);
      spool.lease.removeForwarded(1, seq);
    } catch (err) {
      fail(`cannot append or forward after the open: ${err instanceof Error ? err.message : err}`);
    }
    spool.close();
    logs.length = 0;
    try {
      openImage(path).close();
      if (logs.some((l) => l.includes("Spool is damaged"))) fail("the second open salvaged again (a crash loop)");
    } catch (err) {
      fail(`the second open failed: ${err instanceof Error ? err.message : err}`);
    }
  } finally {
    setLogSink((l) => console.error(l));
  }
  return outcome;
}

export async function runCrashImages(size: ScenarioSize): Promise<ScenarioResult> {
  const started = performance.now();
  const rand = prng(size.seed);
  const root = await Deno.makeTempDir({ prefix: "kwollector-images-" });
  const src = `${root}/writer/spool.db`;
  const writer = new LineChild(WRITER, [src, String(size.seed)]);
  const state: WriterState = { acked: 0, removing: [1, 0] };
  const outcomes: ImageOutcome[] = [];
  const notes: string[] = [];
  try {
    while (state.acked === 0) {
      const line = await writer.next(30_000);
      if (line === undefined) throw new Error(`The spool writer did not start: ${writer.stderrTail}`);
      if (line.startsWith("acked ")) state.acked = Number(line.slice(6));
    }
    for (let i = 0; i < size.iterations; i++) {
      await sleep(20 + rand() * 150);
      absorb(writer, state);
      const variant = VARIANTS[Math.floor(rand() * VARIANTS.length)] as Variant;
      const dir = `${root}/image-${i}`;
      await Deno.mkdir(dir);
      const taken = await takeImage(variant, writer, state, src, dir, rand);
      const outcome = await evaluate(variant, dir, taken);
      outcomes.push(outcome);
      if (outcome.failures.length === 0) await Deno.remove(dir, { recursive: true });
      else notes.push(`image ${i} kept in ${dir}: ${outcome.failures.join("; ")}`);
    }
  } finally {
    await writer.kill();
  }
  absorb(writer, state);
  const failed = outcomes.filter((o) => o.failures.length > 0);
  if (failed.length === 0) await Deno.remove(root, { recursive: true });
  const by = (v: Variant) => outcomes.filter((o) => o.variant === v).length;
  const sum = (f: (o: ImageOutcome) => number, damagedOnly = false) =>
    outcomes.filter((o) => !damagedOnly || o.variant !== "clean").reduce((n, o) => n + f(o), 0);
  return {
    name: "crash images",
    fault: "Spool files copied while a writer appends: frozen mid-write (a crash image), or copied file by file, " +
      "torn WAL, deleted -wal/-shm, one flipped bit",
    criteria: "Every image opens through openSpool and reopens without salvaging again; clean images hold every " +
      "acknowledged sample; salvage keeps every row SQLite can read; seqs after the open are above every seq in the image",
    passed: failed.length === 0,
    counts: {
      images: outcomes.length,
      images_failed: failed.length,
      clean: by("clean"),
      wal_then_db: by("wal_then_db"),
      db_then_wal: by("db_then_wal"),
      torn_wal: by("torn_wal"),
      no_wal: by("no_wal"),
      flip_db: by("flip_db"),
      flip_wal: by("flip_wal"),
      scramble_page: by("scramble_page"),
      samples_acked_by_writer: state.acked,
      intact_rows_probed: sum((o) => o.intact),
      salvaged_images: outcomes.filter((o) => o.salvaged).length,
      rows_salvaged: sum((o) => o.salvagedRows),
      rows_reported_lost_by_salvage: sum((o) => o.lostRows),
      acked_rows_missing_in_salvaged_images: outcomes.filter((o) => o.salvaged).reduce((n, o) => n + o.ackedMissing, 0),
      acked_rows_missing_in_damaged_images: sum((o) => o.ackedMissing, true),
      damaged_images_missing_acked_rows: outcomes.filter((o) => o.variant !== "clean" && o.ackedMissing > 0).length,
      rows_silently_altered: sum((o) => o.altered),
      damaged_images_with_seq_rollback: outcomes.filter((o) => o.seqRollback).length,
      ...(failed.length ? { first_failure: failed[0]!.failures[0]! } : {}),
    },
    durationMs: Math.round(performance.now() - started),
    notes,
  };
}
