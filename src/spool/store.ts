/**
 * # The spool's store: one SQLite file, its lock, its checks on open, and its meta
 *
 * Everything the writer, the lease and the local state share lives here, and nothing else:
 *
 * - **The file and its lock.** A writer store holds an exclusive lock on `<spool>.lock` for its
 *   lifetime (a second writer is refused, naming the holder's pid); a shared store (a lease or a
 *   view next to a running writer) takes no lock and relies on SQLite's own locking.
 * - **Checked on open** (spool.ts "Recovery"): a writer store runs `PRAGMA quick_check`; the disk
 *   or the OS refusing throws a `refused` SpoolError and moves nothing; a damaged file is moved
 *   aside, a new spool starts at once, and what was moved aside is salvaged (aside.ts).
 * - **One transaction per change** (`transaction()`, `BEGIN IMMEDIATE`): SQLite lets one
 *   connection change the file at a time, whichever process it belongs to. The rows counter
 *   `meta.rows` is read back as committed inside that transaction (`committedRows()`), never
 *   from a copy kept in memory, so the changes of two processes compose.
 * - **Statements prepared once per connection** (`statement()`, `arrayStatement()`): after
 *   `restore()` swapped the connection, the next call prepares them again on the new one.
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { dirname } from "node:path";
import { errorMessage, logger } from "../log.ts";
import { createPrivateFile, moveAside, salvagePending } from "./aside.ts";
import { SpoolError, spoolTrouble } from "./errors.ts";
import { initializeSchema, readMeta } from "./schema.ts";

/** What `status` and the health sampler read of a spool. */
export interface SpoolStats {
  spoolId: string;
  rows: number;
  bytes: number;
  fileBytes: number;
  nextSeq: number;
  oldestTimestampMs: number | undefined;
  lastForwardAtMs: number | undefined;
  gaps: number;
  quarantined: number;
}

export interface StoreOptions {
  path: string;
  synchronous: "full" | "normal";
}

export class SpoolStore {
  readonly path: string;
  readonly spoolId: string;
  /** Origin of the stored timestamps (microseconds since this instant). */
  readonly epochMs: number;
  /** next_seq when this process opened the spool, and when: every later seq is its writer's. */
  readonly openedAtSeq: number;
  readonly openedAtMs: number;
  #db: DatabaseSync;
  #synchronous: "full" | "normal";
  #lock: Deno.FsFile | undefined;
  #pageSize: number;
  /** Device and inode of the spool file when it was opened: tells a deleted or replaced file. */
  #fileId: { dev: number; ino: number } | undefined;
  #statements = new Map<string, StatementSync>();
  #seriesGeneration = 0;
  #closed = false;

  private constructor(db: DatabaseSync, path: string, synchronous: "full" | "normal", lock: Deno.FsFile | undefined) {
    this.#db = db;
    this.#synchronous = synchronous;
    this.#lock = lock;
    this.path = path;
    const meta = readMeta(db);
    this.spoolId = meta.get("spool_id") ?? "";
    this.epochMs = Number(meta.get("epoch_ms"));
    const maxSeq = Number((db.prepare("SELECT coalesce(max(seq), 0) AS m FROM samples").get() as { m: number }).m);
    this.openedAtSeq = Math.max(Number(meta.get("next_seq") ?? 1), maxSeq + 1);
    this.openedAtMs = Date.now();
    this.#pageSize = Number((db.prepare("PRAGMA page_size").get() as { page_size: number }).page_size);
    this.#fileId = fileIdentity(path);
  }

  /**
   * Opens (creating if needed) the spool at `opts.path` for its one writer: takes the lock,
   * checks the file, and salvages what was moved aside. A damaged spool is moved aside; the
   * returned store is always usable.
   */
  static openForWriting(opts: StoreOptions): SpoolStore {
    let lock: Deno.FsFile;
    try {
      ensurePrivateDir(dirname(opts.path));
      lock = acquireLock(opts.path);
    } catch (err) {
      if (spoolTrouble(err) !== "refused") throw err;
      throw new SpoolError(
        `Cannot open spool '${opts.path}': ${errorMessage(err)} (the disk or the operating system refused)`,
        "refused",
      );
    }
    try {
      const store = new SpoolStore(openChecked(opts), opts.path, opts.synchronous, lock);
      salvageAside(opts.path);
      return store;
    } catch (err) {
      lock.close();
      throw err;
    }
  }

  /**
   * Opens an existing spool next to its writer, without the lock and without checks: a missing
   * spool throws NotFound here, it is never created.
   */
  static openShared(path: string, opts: { readOnly: boolean }): SpoolStore {
    Deno.statSync(path);
    const db = new DatabaseSync(path, { readOnly: opts.readOnly });
    db.exec("PRAGMA busy_timeout = 10000");
    return new SpoolStore(db, path, "full", undefined);
  }

  /** `sql` prepared on the current connection (once). */
  statement(sql: string): StatementSync {
    let st = this.#statements.get(sql);
    if (!st) {
      st = this.#db.prepare(sql);
      this.#statements.set(sql, st);
    }
    return st;
  }

  /**
   * A statement whose rows come back as arrays, in the order of its columns. For the statements
   * that read many rows: node:sqlite gives each row object a hidden class of its own (measured
   * with 4 columns: 1.4 µs and some 250 bytes of heap per row, against 0.3 µs as an array).
   */
  arrayStatement(sql: string): StatementSync {
    const key = `arrays\u0000${sql}`;
    let st = this.#statements.get(key);
    if (!st) {
      st = this.#db.prepare(sql);
      // Deno's node:sqlite has it (as Node 24 has); its type declarations do not yet.
      (st as StatementSync & { setReturnArrays(enabled: boolean): void }).setReturnArrays(true);
      this.#statements.set(key, st);
    }
    return st;
  }

  /**
   * Runs `fn` in one `BEGIN IMMEDIATE` transaction: committed when it returns, rolled back when it
   * throws. With `{ durable: false }` the commit is not synced to disk (`synchronous=NORMAL` for
   * that transaction): a power cut may undo it, never a commit made before it, and the next
   * durable commit syncs it too. For what the process can lose and rebuild (device status).
   */
  transaction<T>(fn: () => T, opts: { durable?: boolean } = {}): T {
    const relaxed = opts.durable === false && this.#synchronous === "full";
    if (relaxed) this.#db.exec("PRAGMA synchronous = NORMAL");
    try {
      return this.#inTransaction(fn);
    } finally {
      if (relaxed) this.#db.exec("PRAGMA synchronous = FULL");
    }
  }

  #inTransaction<T>(fn: () => T): T {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      const result = fn();
      this.#db.exec("COMMIT");
      return result;
    } catch (err) {
      try {
        this.#db.exec("ROLLBACK");
      } catch { /* SQLite may have rolled the transaction back already */ }
      throw err;
    }
  }

  setMeta(key: string, value: string | number): void {
    this.statement(
      "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    ).run(key, String(value));
  }

  /** SQLite's `PRAGMA data_version`: it changes when another connection commits, never with this one's commits. */
  dataVersion(): number {
    return Number((this.statement("PRAGMA data_version").get() as { data_version: number }).data_version);
  }

  /** The rows counter as committed (another process, e.g. `flush`, may have changed it). */
  committedRows(): number {
    const row = this.statement("SELECT value FROM meta WHERE key = 'rows'").get() as { value: string } | undefined;
    return Number(row?.value ?? 0);
  }

  /** The next seq as committed by the writer (1 for a new spool). */
  committedNextSeq(): number {
    const row = this.statement("SELECT value FROM meta WHERE key = 'next_seq'").get() as { value: string } | undefined;
    return Number(row?.value ?? 1);
  }

  /** Lowest seq still in the spool (a sample or a gap not yet reported), or undefined when it is empty. */
  minSeq(): number | undefined {
    const row = this.statement("SELECT min(seq) AS m FROM samples").get() as { m: number | null };
    const g = this.statement("SELECT min(first_seq) AS m FROM gaps").get() as { m: number | null };
    const values = [row.m, g.m].filter((v): v is number => v !== null).map(Number);
    return values.length ? Math.min(...values) : undefined;
  }

  usedBytes(): number {
    const pages = Number((this.statement("PRAGMA page_count").get() as { page_count: number }).page_count);
    const free = Number((this.statement("PRAGMA freelist_count").get() as { freelist_count: number }).freelist_count);
    return (pages - free) * this.#pageSize;
  }

  stats(): SpoolStats {
    const meta = readMeta(this.#db);
    const oldest = this.statement("SELECT ts FROM samples ORDER BY seq LIMIT 1").get() as { ts: number } | undefined;
    const pages = Number((this.statement("PRAGMA page_count").get() as { page_count: number }).page_count);
    const count = (table: string) =>
      Number((this.statement(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n);
    const lastForward = meta.get("last_forward_at_ms");
    return {
      spoolId: this.spoolId,
      rows: Number(meta.get("rows") ?? 0),
      bytes: this.usedBytes(),
      fileBytes: pages * this.#pageSize,
      nextSeq: Number(meta.get("next_seq") ?? 1),
      oldestTimestampMs: oldest ? this.epochMs + Number(oldest.ts) / 1000 : undefined,
      lastForwardAtMs: lastForward ? Number(lastForward) : undefined,
      gaps: count("gaps"),
      quarantined: count("quarantine"),
    };
  }

  /**
   * Changes each time series rows are deleted: a cache of the series dictionary taken at another
   * generation may name ids SQLite gives again to new series.
   */
  get seriesGeneration(): number {
    return this.#seriesGeneration;
  }

  seriesDeleted(): void {
    this.#seriesGeneration++;
  }

  /** Whether the file at the spool's path is still the database open here (it may be deleted or replaced). */
  fileState(): "ok" | "missing" | "replaced" {
    const id = fileIdentity(this.path);
    if (!id) return "missing";
    return id.dev === this.#fileId?.dev && id.ino === this.#fileId?.ino ? "ok" : "replaced";
  }

  /**
   * Writes the open database back to its path after the file was deleted or replaced under it
   * (spool.ts "Recovery"). The write-ahead log is emptied first, so no stale frame of it can ever
   * be applied to another file; a replacement file is moved aside, to be salvaged and forwarded
   * as a retired spool; the copy goes to a temporary file renamed when complete. Throws a
   * `refused` SpoolError when the disk will not take the copy: the open database keeps every
   * sample meanwhile. The caller commits what it holds first.
   */
  restore(): void {
    const state = this.fileState();
    if (state === "ok") return;
    const tmp = `${this.path}.restore`;
    try {
      ensurePrivateDir(dirname(this.path));
      this.#db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
      if (state === "replaced") moveAside(this.path);
      try {
        Deno.removeSync(tmp);
      } catch { /* absent */ }
      createPrivateFile(tmp);
      this.#db.exec(`VACUUM INTO '${tmp.replaceAll("'", "''")}'`);
    } catch (err) {
      try {
        Deno.removeSync(tmp);
      } catch { /* absent */ }
      throw new SpoolError(`Cannot restore spool '${this.path}': ${errorMessage(err)}`, spoolTrouble(err) ?? "refused");
    }
    this.#db.close();
    this.#statements.clear();
    for (const suffix of ["-wal", "-shm"]) {
      try {
        Deno.removeSync(this.path + suffix);
      } catch { /* SQLite removed it on close */ }
    }
    Deno.renameSync(tmp, this.path);
    const db = new DatabaseSync(this.path);
    configure(db, this.#synchronous);
    this.#db = db;
    this.#fileId = fileIdentity(this.path);
    this.#relock();
  }

  /** Takes the writer lock again when its file was deleted or replaced with the spool's. */
  #relock(): void {
    const held = this.#lock?.statSync();
    const now = fileIdentity(`${this.path}.lock`);
    if (held && now && held.dev === now.dev && held.ino === now.ino) return;
    const lock = acquireLock(this.path);
    this.#lock?.close();
    this.#lock = lock;
  }

  /** Closes the database and releases the writer lock (once: later calls do nothing). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#statements.clear();
    this.#db.close();
    this.#lock?.close();
  }
}

/**
 * Pages SQLite keeps in the writer connection's own cache, in KiB (its default is 2,000 KiB).
 * The pages a spool touches again soon are few (the last leaf and inner pages of the samples
 * and their index, the oldest pages a batch reads, the series dictionary's hot pages); the rest
 * come back from the operating system's page cache. Under the hostile benchmark (50,000 series
 * in the dictionary) the default filled up: 512 KiB took 2.8 MB off the collector's peak RSS in
 * six alternated pairs, with no change in workload A's CPU or the 1M drain's beyond their spread
 * (docs/PERFORMANCE.md, "The spool's page cache").
 */
export const SPOOL_CACHE_KIB = 512;

function configure(db: DatabaseSync, synchronous: "full" | "normal"): void {
  db.exec("PRAGMA busy_timeout = 10000");
  db.exec("PRAGMA journal_mode = WAL");
  db.exec(`PRAGMA cache_size = -${SPOOL_CACHE_KIB}`);
  db.exec(`PRAGMA synchronous = ${synchronous === "normal" ? "NORMAL" : "FULL"}`);
}

/**
 * Opens the live spool file, checked. The disk or the OS refusing throws a `refused` SpoolError
 * and moves nothing; a damaged file is moved aside and a new spool starts (see Recovery).
 */
function openChecked(opts: StoreOptions): DatabaseSync {
  let db: DatabaseSync | undefined;
  let damage: string;
  try {
    createPrivateFile(opts.path);
    db = new DatabaseSync(opts.path);
    configure(db, opts.synchronous);
    const rows = db.prepare("PRAGMA quick_check").all() as { quick_check: string }[];
    const result = rows.map((r) => r.quick_check).join("; ");
    if (result === "ok") {
      initializeSchema(db);
      return db;
    }
    damage = `quick_check reported: ${result.slice(0, 300)}`;
  } catch (err) {
    closeQuietly(db);
    const trouble = spoolTrouble(err);
    if (trouble === "refused") {
      throw new SpoolError(
        `Cannot open spool '${opts.path}': ${errorMessage(err)} (the disk or the operating system refused; ` +
          "the file is left as it is)",
        "refused",
      );
    }
    if (trouble !== "damaged") throw err;
    damage = errorMessage(err);
  }
  closeQuietly(db);
  const aside = moveAside(opts.path);
  logger.error("Spool is damaged: moved aside, a new spool starts and the old one is salvaged to be forwarded", {
    spool: opts.path,
    moved_to: aside,
    problem: damage,
  });
  return openChecked(opts);
}

/**
 * Salvages the spool files moved aside into retired spools, now; a salvage the disk refuses is
 * left for a later call (the forwarder of retired spools retries it).
 */
function salvageAside(spoolPath: string): void {
  const { refused } = salvagePending(spoolPath);
  for (const r of refused) logger.warning("Cannot salvage a spool moved aside yet; retrying later", { problem: r });
}

function closeQuietly(db: DatabaseSync | undefined): void {
  try {
    db?.close();
  } catch { /* closing a damaged database may fail too */ }
}

function ensurePrivateDir(dir: string): void {
  try {
    Deno.statSync(dir);
  } catch {
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  }
}

function fileIdentity(path: string): { dev: number; ino: number } | undefined {
  try {
    const st = Deno.statSync(path);
    return { dev: st.dev, ino: st.ino ?? 0 };
  } catch {
    return undefined;
  }
}

function acquireLock(path: string): Deno.FsFile {
  const lockPath = `${path}.lock`;
  const file = Deno.openSync(lockPath, { create: true, read: true, write: true, mode: 0o600 });
  if (!file.tryLockSync(true)) {
    file.close();
    let holder = "";
    try {
      holder = Deno.readTextFileSync(lockPath).trim();
    } catch { /* the holder's pid is informative only */ }
    throw new Error(
      `Spool '${path}' is in use by another kwollector process${holder ? ` (pid ${holder})` : ""}`,
    );
  }
  file.truncateSync(0);
  file.writeSync(new TextEncoder().encode(`${Deno.pid}\n`));
  return file;
}
