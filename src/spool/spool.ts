/**
 * # The spool: every sample is written here first
 *
 * ## Invariants
 *
 * 1. **Acknowledged means durable.** `append()` resolves only after the SQLite transaction that
 *    holds the samples has committed with `synchronous=FULL` (the default; `normal` is an opt-in
 *    that may lose the last commit on a power cut, never on a process crash). Commits are grouped:
 *    at most one per `commitIntervalMs`, so fsyncs stay ≤ 1000/commitIntervalMs per second at any
 *    load.
 * 2. **Sequence numbers are never reused.** Each sample gets the next `seq`, strictly increasing in
 *    commit order. `meta.next_seq` is written in the same transaction as the samples, so a spool
 *    emptied by forwarding, reopened, or rebuilt by salvage continues after the last seq it ever
 *    gave. A spool has an id of its own (`meta.spool_id`, a UUID created with it); (spool id, seq)
 *    names one sample for ever.
 * 3. **Rows leave only after the central commit that contains them.** `removeForwarded()` is called
 *    by the forwarder after the central transaction holding those seqs (and their ledger row)
 *    committed. A crash between the two leaves the rows here; the forwarder's reconciliation with
 *    the central ledger removes them before anything is re-sent.
 * 4. **Every seq is accounted for.** A seq is either still here, forwarded (central ledger row of
 *    kind `data`), set aside in `quarantine` (ledger kind `quarantined`), or given up under the
 *    full-spool policy (a `gaps` row, forwarded as ledger kind `dropped`). So the central ledger
 *    of a spool tiles 1..next_seq-1 without holes once the spool is drained. `read()` returns a run
 *    of consecutive seqs, so the ledger range of a batch never covers a seq that left another way.
 * 5. **Bounded.** The bytes in use never exceed `maxBytes` by more than one commit; when they would,
 *    the policy (`drop_oldest` or `drop_newest`) applies, is logged as an error and counted.
 * 6. **One writer.** A writer holds an exclusive lock on `<spool>.lock` for its lifetime; readers
 *    (`status`, `flush` reading only) use SQLite's WAL snapshot isolation.
 *
 * ## On-disk format (SQLite, WAL mode, `PRAGMA user_version` = SCHEMA_VERSION)
 *
 * - `meta(key, value)`: spool_id, epoch_ms (origin of sample timestamps), next_seq, rows,
 *   created_at_ms, last_forward_at_ms.
 * - `series(id, device_id, metric_id, labels, last_seq)`: dictionary of (device, metric, labels
 *   JSON). `last_seq` is a lower bound of the last seq that uses the series, kept within
 *   SERIES_SEQ_SLACK of the truth so garbage collection never removes a series still in use.
 * - `samples(seq INTEGER PRIMARY KEY, series, ts, value)`: `ts` in microseconds since
 *   `meta.epoch_ms` (6-byte integers for 4 years), `value` REAL with NaN stored as NULL. About
 *   25–30 bytes per sample on disk.
 * - `gaps(first_seq, last_seq, rows, reason, at_ms)`: ranges given up when the spool was full.
 * - `quarantine(seq, ..., reported)`: samples the central database rejected, with the reason;
 *   `reported` once the central ledger has a `quarantined` row for the seq.
 * - `devices(key, ...)`: last poll and error per device group, for `status`.
 * - `promoted(device_id, metric_id)`: last known content of the central promoted_metrics.
 * - `tls_pins(endpoint, fingerprint256, ...)`: certificates pinned for https metric urls; created
 *   and kept by tls_pins.ts over its own connection, not by this module.
 *
 * ## Recovery
 *
 * At open, `PRAGMA quick_check` runs. What fails is told apart (errors.ts):
 *
 * - **The disk or the OS refused** (full disk, I/O error, permission, read-only file system):
 *   the file may be perfectly sound. `open()` throws a `refused` SpoolError and touches nothing;
 *   the caller retries in place, logging the path.
 * - **The file is damaged** (fails the check, is not a database): it is moved aside and a new
 *   spool (with a new id) starts at once, so a damaged spool never causes a crash loop. The file
 *   moved aside is salvaged into a retired spool with its own id and seqs and forwarded like this
 *   one, exactly once, salvage retried until it succeeds (aside.ts).
 *
 * While the collector runs, `fileState()` tells whether the spool file was deleted or replaced
 * under it; `restoreFile()` writes the open database back to its path (a replacement is moved
 * aside and drained as a retired spool), so its unsent samples are not lost when it stops.
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import { dirname } from "node:path";
import type { Labels, Sample } from "../sample.ts";
import { errorMessage, logger } from "../log.ts";
import { createPrivateFile, moveAside, salvagePending } from "./aside.ts";
import { SpoolError, spoolTrouble } from "./errors.ts";
import { initializeSchema, readMeta } from "./schema.ts";
import { ROWS_DROPPED, SPOOL_FULL } from "../telemetry/events.ts";
import { Telemetry } from "../telemetry/telemetry.ts";

/** See invariant "series.last_seq": how stale a series' recorded last_seq may be. */
const SERIES_SEQ_SLACK = 100_000;
/** Samples per INSERT statement: one call into SQLite per 64 samples instead of per sample. */
const ROWS_PER_INSERT = 64;
/**
 * The series dictionary caches are cleared beyond this many entries, to bound memory: the
 * collector runs with a 64 MB V8 heap (deno.json), which keeps its RSS flat during a drain.
 */
const SERIES_CACHE_MAX = 50_000;
/** Conservative bytes one sample takes on disk (measured: about 21), for room and budget estimates. */
export const SAMPLE_BYTES_ESTIMATE = 40;
/**
 * The spool-full condition lasts until the forwarder has brought the spool back under this share
 * of its budget: drop_oldest's trims (5% of the budget each) then read as one condition.
 */
const SPOOL_FULL_CLEARS_AT = 0.5;

export type FullPolicy = "drop_oldest" | "drop_newest";

export interface SpoolOptions {
  path: string;
  maxBytes: number;
  fullPolicy: FullPolicy;
  synchronous: "full" | "normal";
  commitIntervalMs: number;
  /**
   * `writer` (run, wattmetre): takes the writer lock, checks and salvages, appends.
   * `forwarder` (flush): forwards and removes rows next to a running writer; no lock, no salvage.
   * `reader` (status): read only.
   */
  mode?: "writer" | "forwarder" | "reader";
  /** Where samples dropped by the full-spool policy are logged and counted. */
  telemetry?: Telemetry;
}

/** A sample read back for forwarding. */
export interface SpooledSample extends Sample {
  seq: number;
}

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

export interface GapRange {
  firstSeq: number;
  lastSeq: number;
  rows: number;
  reason: string;
}

export interface DeviceStatus {
  key: string;
  deviceId: string;
  lastPollAtMs: number | undefined;
  lastOkAtMs: number | undefined;
  lastError: string | undefined;
  pollsOk: number;
  pollsFailed: number;
  pollsSkipped: number;
}

export interface SpoolCounters {
  appended: number;
  commits: number;
  droppedOldest: number;
  droppedNewest: number;
  forwarded: number;
  quarantined: number;
}

interface Pending {
  samples: Sample[];
  resolve: () => void;
  reject: (err: Error) => void;
}

export class SpoolFullError extends Error {}

export class Spool {
  readonly path: string;
  readonly spoolId: string;
  /** next_seq when this process opened the spool, and when: every later seq is its own. */
  readonly openedAtSeq: number;
  readonly openedAtMs: number;
  readonly counters: SpoolCounters = {
    appended: 0,
    commits: 0,
    droppedOldest: 0,
    droppedNewest: 0,
    forwarded: 0,
    quarantined: 0,
  };
  #db: DatabaseSync;
  #opts: SpoolOptions;
  #lock: Deno.FsFile | undefined;
  #epochMs: number;
  #nextSeq: number;
  #rows: number;
  #pending: Pending[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** performance.now() when the last group commit started. */
  #lastCommitAt = -Infinity;
  #closed = false;
  #seriesByKey = new Map<string, { id: number; lastSeq: number }>();
  #seriesById = new Map<number, { deviceId: string; metricId: string; labels: Labels }>();
  #st: Record<string, StatementSync> = {};
  /**
   * Seq ranges handed to the forwarder of this process and not yet removed (at most one per
   * lane): drop_oldest never drops inside them, so a batch in flight is never also reported as
   * dropped.
   */
  #leases = new Map<number, number>();
  #pageSize: number;
  #telemetry: Telemetry;
  /** Device and inode of the spool file when it was opened: tells a deleted or replaced file. */
  #fileId: { dev: number; ino: number } | undefined;

  private constructor(db: DatabaseSync, opts: SpoolOptions, lock: Deno.FsFile | undefined) {
    this.#db = db;
    this.#opts = opts;
    this.#telemetry = opts.telemetry ?? new Telemetry();
    this.#lock = lock;
    this.path = opts.path;
    const meta = readMeta(db);
    this.spoolId = meta.get("spool_id") ?? "";
    this.#epochMs = Number(meta.get("epoch_ms"));
    const maxSeq = Number((db.prepare("SELECT coalesce(max(seq), 0) AS m FROM samples").get() as { m: number }).m);
    this.#nextSeq = Math.max(Number(meta.get("next_seq") ?? 1), maxSeq + 1);
    this.openedAtSeq = this.#nextSeq;
    this.openedAtMs = Date.now();
    this.#rows = Number(meta.get("rows") ?? 0);
    this.#pageSize = Number((db.prepare("PRAGMA page_size").get() as { page_size: number }).page_size);
    this.#fileId = fileIdentity(opts.path);
    this.#prepare();
  }

  /**
   * Opens (creating if needed) the spool at `opts.path`. A damaged spool is moved aside and
   * salvaged; the returned spool is always usable.
   */
  static open(opts: SpoolOptions): Spool {
    const mode = opts.mode ?? "writer";
    if (mode !== "writer") {
      Deno.statSync(opts.path); // a missing spool is an error here, not a new spool
      const db = new DatabaseSync(opts.path, { readOnly: mode === "reader" });
      db.exec("PRAGMA busy_timeout = 10000");
      return new Spool(db, opts, undefined);
    }
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
      const spool = new Spool(openStore(opts), opts, lock);
      salvageAside(opts.path);
      return spool;
    } catch (err) {
      lock.close();
      throw err;
    }
  }

  /** Whether the file at `path` is still the database open here (it may be deleted or replaced). */
  fileState(): "ok" | "missing" | "replaced" {
    const id = fileIdentity(this.path);
    if (!id) return "missing";
    return id.dev === this.#fileId?.dev && id.ino === this.#fileId?.ino ? "ok" : "replaced";
  }

  /**
   * Writes the open spool back to its path after the file was deleted or replaced under us (see
   * Recovery). The write-ahead log is emptied first, so no stale frame of it can ever be applied
   * to another file; a replacement file is moved aside, to be salvaged and forwarded as a retired
   * spool; the copy goes to a temporary file renamed when complete. Throws a `refused` SpoolError
   * when the disk will not take the copy: the open database keeps every sample meanwhile.
   */
  restoreFile(): void {
    const state = this.fileState();
    if (state === "ok" || !this.isWriter) return;
    this.commitPending();
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
    for (const suffix of ["-wal", "-shm"]) {
      try {
        Deno.removeSync(this.path + suffix);
      } catch { /* SQLite removed it on close */ }
    }
    Deno.renameSync(tmp, this.path);
    const db = new DatabaseSync(this.path);
    configure(db, this.#opts);
    this.#db = db;
    this.#prepare();
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

  #prepare(): void {
    const db = this.#db;
    this.#st = {
      insertSample: db.prepare("INSERT INTO samples(seq, series, ts, value) VALUES (?, ?, ?, ?)"),
      insertSamples: db.prepare(
        `INSERT INTO samples(seq, series, ts, value) VALUES ${Array(ROWS_PER_INSERT).fill("(?, ?, ?, ?)").join(", ")}`,
      ),
      findSeries: db.prepare("SELECT id, last_seq FROM series WHERE device_id = ? AND metric_id = ? AND labels = ?"),
      insertSeries: db.prepare(
        "INSERT INTO series(device_id, metric_id, labels, last_seq) VALUES (?, ?, ?, ?) RETURNING id",
      ),
      touchSeries: db.prepare("UPDATE series SET last_seq = ? WHERE id = ?"),
      setMeta: db.prepare(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
      ),
      seriesById: db.prepare("SELECT device_id, metric_id, labels FROM series WHERE id = ?"),
      readAfter: db.prepare("SELECT seq, series, ts, value FROM samples WHERE seq > ? ORDER BY seq LIMIT ?"),
      deleteRange: db.prepare("DELETE FROM samples WHERE seq BETWEEN ? AND ?"),
      deleteSeq: db.prepare("DELETE FROM samples WHERE seq = ?"),
      oldestRange: db.prepare("SELECT seq FROM samples WHERE seq > ? ORDER BY seq LIMIT 1 OFFSET ?"),
      countRange: db.prepare(
        "SELECT count(*) AS n, min(seq) AS lo, max(seq) AS hi FROM samples WHERE seq > ? AND seq <= ?",
      ),
      insertGap: db.prepare("INSERT INTO gaps(first_seq, last_seq, rows, reason, at_ms) VALUES (?, ?, ?, ?, ?)"),
      pageCount: db.prepare("PRAGMA page_count"),
      freelist: db.prepare("PRAGMA freelist_count"),
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Writing

  /**
   * Queues samples for the next group commit; resolves once they are durable. Under the
   * `drop_newest` policy a full spool resolves without writing them (they are counted as
   * dropped and logged).
   */
  append(samples: Sample[]): Promise<void> {
    if (this.#closed) return Promise.reject(new Error(`Spool '${this.path}' is closed`));
    if (samples.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#pending.push({ samples, resolve, reject });
      // The next commit is due commitIntervalMs after the start of the previous one, not after
      // this append: under load commits follow each other with no idle wait, and samples that
      // come after a quiet spell commit at once. Still at most one commit per interval.
      this.#timer ??= setTimeout(() => {
        this.#timer = undefined;
        this.commitPending();
      }, Math.max(0, this.#lastCommitAt + this.#opts.commitIntervalMs - performance.now()));
    });
  }

  /** Whether this process appends to the spool (and so assigns seqs). */
  get isWriter(): boolean {
    return (this.#opts.mode ?? "writer") === "writer";
  }

  /**
   * Moves every seq assigned since the spool was opened past `lastClaimedSeq`, and records the
   * seqs in between as a gap. Needed when the spool lost commits it had already forwarded (its
   * write-ahead log deleted or damaged): it then handed those seqs out again, and the central
   * ledger, which holds them, would take the new samples for the old ones. One transaction;
   * returns how far the seqs moved (0 when nothing overlaps).
   */
  renumberAfter(lastClaimedSeq: number, reason: string): number {
    const from = this.openedAtSeq;
    const shift = lastClaimedSeq + 1 - from;
    if (shift <= 0 || !this.isWriter) return 0;
    this.commitPending();
    const db = this.#db;
    db.exec("BEGIN IMMEDIATE");
    try {
      // Through negative values, so no updated key ever meets one not yet moved.
      for (const [table, key] of [["samples", "seq"], ["quarantine", "seq"], ["gaps", "first_seq"]]) {
        const extra = table === "gaps" ? ", last_seq = last_seq + ?" : "";
        const args = table === "gaps" ? [shift, shift, from] : [shift, from];
        db.prepare(`UPDATE ${table} SET ${key} = -(${key} + ?)${extra} WHERE ${key} >= ?`).run(...args);
        db.prepare(`UPDATE ${table} SET ${key} = -${key} WHERE ${key} < 0`).run();
      }
      db.prepare("UPDATE series SET last_seq = last_seq + ? WHERE last_seq >= ?").run(shift, from - SERIES_SEQ_SLACK);
      this.#st.insertGap!.run(from, lastClaimedSeq, 0, reason, Date.now());
      this.#st.setMeta!.run("next_seq", String(this.#nextSeq + shift));
      db.exec("COMMIT");
    } catch (err) {
      db.exec("ROLLBACK");
      throw err;
    }
    this.#nextSeq += shift;
    this.#seriesByKey.clear();
    this.#leases.clear();
    return shift;
  }

  /** Number of samples waiting for the next group commit. */
  get pendingCount(): number {
    let n = 0;
    for (const p of this.#pending) n += p.samples.length;
    return n;
  }

  /** Commits everything queued now (also called on shutdown). */
  commitPending(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    const batch = this.#pending;
    if (batch.length === 0) return;
    this.#pending = [];
    this.#lastCommitAt = performance.now();
    const count = batch.reduce((n, p) => n + p.samples.length, 0);
    try {
      const admitted = this.#makeRoom(count);
      if (admitted) this.#write(batch);
      for (const p of batch) p.resolve();
    } catch (err) {
      const e = new Error(`Cannot commit ${count} samples to spool '${this.path}': ${errorMessage(err)}`);
      for (const p of batch) p.reject(e);
    }
  }

  #write(batch: Pending[]): void {
    const db = this.#db;
    const st = this.#st;
    const firstSeq = this.#nextSeq;
    let seq = firstSeq;
    const touched: [number, number][] = [];
    const params: (number | null)[] = [];
    db.exec("BEGIN IMMEDIATE");
    try {
      for (const p of batch) {
        for (const s of p.samples) {
          const seriesId = this.#seriesFor(s, seq, touched);
          const tsUs = Math.round((s.timestampMs - this.#epochMs) * 1000);
          params.push(seq, seriesId, tsUs, Number.isNaN(s.value) ? null : s.value);
          if (params.length === ROWS_PER_INSERT * 4) {
            st.insertSamples!.run(...params);
            params.length = 0;
          }
          seq++;
        }
      }
      for (let i = 0; i < params.length; i += 4) {
        st.insertSample!.run(params[i]!, params[i + 1]!, params[i + 2]!, params[i + 3]!);
      }
      for (const [id, lastSeq] of touched) st.touchSeries!.run(lastSeq, id);
      const written = seq - firstSeq;
      st.setMeta!.run("next_seq", String(seq));
      const rows = this.#readRows() + written;
      st.setMeta!.run("rows", String(rows));
      db.exec("COMMIT");
      this.#nextSeq = seq;
      this.#rows = rows;
      this.counters.appended += written;
      this.counters.commits++;
    } catch (err) {
      try {
        db.exec("ROLLBACK");
      } catch { /* the transaction may already be rolled back by SQLite */ }
      // Series ids created in the failed transaction do not exist: forget the cache.
      this.#seriesByKey.clear();
      throw err;
    }
  }

  #seriesFor(s: Sample, seq: number, touched: [number, number][]): number {
    const labels = JSON.stringify(s.labels);
    const key = `${s.deviceId}\u0000${s.metricId}\u0000${labels}`;
    let entry = this.#seriesByKey.get(key);
    if (!entry) {
      const row = this.#st.findSeries!.get(s.deviceId, s.metricId, labels) as
        | { id: number; last_seq: number }
        | undefined;
      if (row) entry = { id: Number(row.id), lastSeq: Number(row.last_seq) };
      else {
        const ins = this.#st.insertSeries!.get(s.deviceId, s.metricId, labels, seq) as { id: number };
        entry = { id: Number(ins.id), lastSeq: seq };
      }
      if (this.#seriesByKey.size >= SERIES_CACHE_MAX) this.#seriesByKey.clear();
      this.#seriesByKey.set(key, entry);
    }
    if (seq - entry.lastSeq > SERIES_SEQ_SLACK) {
      entry.lastSeq = seq;
      touched.push([entry.id, seq]);
    }
    return entry.id;
  }

  /** Applies the full-spool policy; returns false when the new samples must be dropped. */
  #makeRoom(incoming: number): boolean {
    const estimate = incoming * SAMPLE_BYTES_ESTIMATE;
    const t = this.#telemetry;
    const policy = { labels: { policy: this.#opts.fullPolicy } };
    const used = this.usedBytes();
    if (used + estimate <= this.#opts.maxBytes) {
      if (used + estimate <= this.#opts.maxBytes * SPOOL_FULL_CLEARS_AT && t.isActive(SPOOL_FULL, this.path)) {
        t.end(SPOOL_FULL, this.path, { spool: this.path, dropped_total: t.total(ROWS_DROPPED.counter) });
      }
      return true;
    }
    const full = { spool: this.path, policy: this.#opts.fullPolicy, max_bytes: this.#opts.maxBytes };
    if (this.#opts.fullPolicy === "drop_newest") {
      this.counters.droppedNewest += incoming;
      t.emit(ROWS_DROPPED, { ...full, samples: incoming }, { ...policy, n: incoming });
      t.begin(SPOOL_FULL, this.path, full);
      return false;
    }
    // drop_oldest: free about 5% of the budget (at least room for this commit) plus any excess
    // (a commit larger than that may have overshot), oldest first, never touching rows leased to
    // the forwarder.
    const target = Math.max(estimate * 2, this.#opts.maxBytes * 0.05) + Math.max(0, used - this.#opts.maxBytes);
    // Rows to free at the measured ~21 bytes per sample: dividing by more would free too little.
    const rowsToDrop = Math.max(incoming, Math.ceil(target / 20));
    // Start after any lease that sits at the old end of the spool.
    let lo = 0;
    for (let moved = true; moved;) {
      moved = false;
      const next = this.#st.oldestRange!.get(lo, 0) as { seq: number } | undefined;
      for (const [first, last] of this.#leases) {
        if (next && first <= Number(next.seq) && last >= Number(next.seq)) {
          lo = last;
          moved = true;
        }
      }
    }
    const edge = this.#st.oldestRange!.get(lo, rowsToDrop - 1) as { seq: number } | undefined;
    let hi = edge ? Number(edge.seq) : this.#nextSeq - 1;
    // Nor into a lease further on (the live lane's batch in flight).
    for (const [first] of this.#leases) if (first > lo && first <= hi) hi = first - 1;
    const range = this.#st.countRange!.get(lo, hi) as { n: number; lo: number | null; hi: number | null };
    if (!range.n || range.lo === null || range.hi === null) return true;
    const now = Date.now();
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      const deleted = Number(this.#st.deleteRange!.run(range.lo, range.hi).changes);
      this.#st.insertGap!.run(range.lo, range.hi, deleted, "spool full (drop_oldest)", now);
      const rows = this.#readRows() - deleted;
      this.#st.setMeta!.run("rows", String(rows));
      this.#db.exec("COMMIT");
      this.#rows = rows;
      this.counters.droppedOldest += deleted;
      const fields = { ...full, samples: deleted, first_seq: range.lo, last_seq: range.hi };
      t.emit(ROWS_DROPPED, fields, { ...policy, n: deleted });
      t.begin(SPOOL_FULL, this.path, fields);
    } catch (err) {
      this.#db.exec("ROLLBACK");
      throw err;
    }
    return true;
  }

  // ---------------------------------------------------------------------------------------------
  // Reading for the forwarder

  /**
   * Reads up to `limit` samples with seq > `afterSeq`, oldest first, stopping before the first
   * missing seq. The rows stay in the spool (leased) until removeForwarded() or quarantine().
   */
  read(afterSeq: number, limit: number): SpooledSample[] {
    const rows = this.#st.readAfter!.all(afterSeq, limit) as {
      seq: number;
      series: number;
      ts: number;
      value: number | null;
    }[];
    const out: SpooledSample[] = [];
    for (const r of rows) {
      const seq = Number(r.seq);
      // A batch is a run of consecutive seqs, so its central claim [first, last] covers its own
      // rows only, never a seq that left by another way (sent by the live lane, dropped,
      // quarantined): a claim spanning one of those would be refused again at every retry.
      if (out.length > 0 && seq !== out.at(-1)!.seq + 1) break;
      const series = this.#series(Number(r.series));
      if (!series) {
        // A sample whose series row is gone (a damaged spool) cannot be rebuilt: it is set aside
        // alone, so it never holds up the others.
        if (out.length > 0) break;
        this.#setAsideOrphan(seq, Number(r.ts), r.value, `series ${r.series} is missing from the spool`);
        continue;
      }
      out.push({
        seq,
        timestampMs: this.#epochMs + Number(r.ts) / 1000,
        deviceId: series.deviceId,
        metricId: series.metricId,
        value: r.value === null ? NaN : Number(r.value),
        labels: series.labels,
      });
    }
    const first = out[0];
    const last = out.at(-1);
    if (first && last) this.#leases.set(first.seq, last.seq);
    return out;
  }

  #series(id: number): { deviceId: string; metricId: string; labels: Labels } | undefined {
    let s = this.#seriesById.get(id);
    if (!s) {
      const row = this.#st.seriesById!.get(id) as { device_id: string; metric_id: string; labels: string } | undefined;
      if (!row) return undefined;
      s = { deviceId: row.device_id, metricId: row.metric_id, labels: JSON.parse(row.labels) as Labels };
      if (this.#seriesById.size >= SERIES_CACHE_MAX) this.#seriesById.clear();
      this.#seriesById.set(id, s);
    }
    return s;
  }

  /** Ranges given up under the full-spool policy, not yet reported to the central ledger. */
  gaps(): GapRange[] {
    return (this.#db.prepare("SELECT first_seq, last_seq, rows, reason FROM gaps ORDER BY first_seq").all() as {
      first_seq: number;
      last_seq: number;
      rows: number;
      reason: string;
    }[]).map((g) => ({
      firstSeq: Number(g.first_seq),
      lastSeq: Number(g.last_seq),
      rows: Number(g.rows),
      reason: g.reason,
    }));
  }

  /**
   * Removes the samples with seq in [firstSeq, lastSeq] after their central commit, and any gap
   * rows inside that range. Returns the number of samples removed.
   */
  removeForwarded(firstSeq: number, lastSeq: number): number {
    const db = this.#db;
    db.exec("BEGIN IMMEDIATE");
    try {
      const deleted = Number(this.#st.deleteRange!.run(firstSeq, lastSeq).changes);
      db.prepare("DELETE FROM gaps WHERE first_seq >= ? AND last_seq <= ?").run(firstSeq, lastSeq);
      this.#unlease(firstSeq, lastSeq);
      const rows = this.#readRows() - deleted;
      this.#st.setMeta!.run("rows", String(rows));
      this.#st.setMeta!.run("last_forward_at_ms", String(Date.now()));
      db.exec("COMMIT");
      this.#rows = rows;
      this.counters.forwarded += deleted;
      return deleted;
    } catch (err) {
      db.exec("ROLLBACK");
      throw err;
    }
  }

  /**
   * Shrinks the leases as their rows leave: a batch sent in parts (bisected around a rejected
   * sample) keeps its unsent part protected, and no lease outlives its rows.
   */
  #unlease(firstSeq: number, lastSeq: number): void {
    for (const [first, last] of [...this.#leases]) {
      if (lastSeq < first || firstSeq > last) continue;
      if (firstSeq <= first) {
        this.#leases.delete(first);
        if (lastSeq < last) this.#leases.set(lastSeq + 1, last);
      } else if (lastSeq >= last) {
        this.#leases.set(first, firstSeq - 1);
      }
    }
  }

  /** Forgets the leases of batches that were not sent (the forwarder will read them again). */
  releaseLeases(): void {
    this.#leases.clear();
  }

  /** Moves samples the central database rejected to the quarantine table, with the reason. */
  quarantine(samples: SpooledSample[], reason: string): void {
    const db = this.#db;
    const ins = db.prepare(
      "INSERT OR REPLACE INTO quarantine(seq, ts_ms, device_id, metric_id, value, labels, reason, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    );
    const now = Date.now();
    db.exec("BEGIN IMMEDIATE");
    try {
      let deleted = 0;
      for (const s of samples) {
        ins.run(
          s.seq,
          s.timestampMs,
          s.deviceId,
          s.metricId,
          Number.isNaN(s.value) ? null : s.value,
          JSON.stringify(s.labels),
          reason,
          now,
        );
        deleted += Number(this.#st.deleteSeq!.run(s.seq).changes);
        this.#unlease(s.seq, s.seq);
      }
      const rows = this.#readRows() - deleted;
      this.#st.setMeta!.run("rows", String(rows));
      db.exec("COMMIT");
      this.#rows = rows;
      this.counters.quarantined += samples.length;
    } catch (err) {
      db.exec("ROLLBACK");
      throw err;
    }
  }

  #setAsideOrphan(seq: number, tsUs: number, value: number | null, reason: string): void {
    this.quarantine([{
      seq,
      timestampMs: this.#epochMs + tsUs / 1000,
      deviceId: "",
      metricId: "",
      value: value ?? NaN,
      labels: {},
    }], reason);
  }

  /** Quarantined seqs not yet recorded in the central ledger (kind `quarantined`). */
  unreportedQuarantine(): { seq: number; reason: string }[] {
    return (this.#db.prepare("SELECT seq, reason FROM quarantine WHERE reported = 0 ORDER BY seq").all() as {
      seq: number;
      reason: string;
    }[]).map((r) => ({ seq: Number(r.seq), reason: r.reason }));
  }

  markQuarantineReported(seq: number): void {
    this.#db.prepare("UPDATE quarantine SET reported = 1 WHERE seq = ?").run(seq);
  }

  /** Forgets a gap once the central ledger has it. */
  removeGap(firstSeq: number): void {
    this.#db.prepare("DELETE FROM gaps WHERE first_seq = ?").run(firstSeq);
  }

  /** The last seq given to a sample (0 for a new spool). */
  lastSeq(): number {
    const row = this.#db.prepare("SELECT value FROM meta WHERE key = 'next_seq'").get() as
      | { value: string }
      | undefined;
    return Number(row?.value ?? 1) - 1;
  }

  /** Samples in the spool (a counter kept in the same transactions as the rows: no scan). */
  rowCount(): number {
    return this.#readRows();
  }

  /** The rows counter as committed (another process, e.g. `flush`, may have changed it). */
  #readRows(): number {
    const row = this.#db.prepare("SELECT value FROM meta WHERE key = 'rows'").get() as { value: string } | undefined;
    return Number(row?.value ?? 0);
  }

  /** Lowest seq still in the spool, or undefined when it is empty. */
  minSeq(): number | undefined {
    const row = this.#db.prepare("SELECT min(seq) AS m FROM samples").get() as { m: number | null };
    const g = this.#db.prepare("SELECT min(first_seq) AS m FROM gaps").get() as { m: number | null };
    const values = [row.m, g.m].filter((v): v is number => v !== null).map(Number);
    return values.length ? Math.min(...values) : undefined;
  }

  // ---------------------------------------------------------------------------------------------
  // Status

  usedBytes(): number {
    const pages = Number((this.#db.prepare("PRAGMA page_count").get() as { page_count: number }).page_count);
    const free = Number((this.#db.prepare("PRAGMA freelist_count").get() as { freelist_count: number }).freelist_count);
    return (pages - free) * this.#pageSize;
  }

  stats(): SpoolStats {
    const meta = readMeta(this.#db);
    const oldest = this.#db.prepare("SELECT ts FROM samples ORDER BY seq LIMIT 1").get() as { ts: number } | undefined;
    const pages = Number((this.#db.prepare("PRAGMA page_count").get() as { page_count: number }).page_count);
    const count = (table: string) =>
      Number((this.#db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n);
    const lastForward = meta.get("last_forward_at_ms");
    return {
      spoolId: this.spoolId,
      rows: Number(meta.get("rows") ?? 0),
      bytes: this.usedBytes(),
      fileBytes: pages * this.#pageSize,
      nextSeq: Number(meta.get("next_seq") ?? 1),
      oldestTimestampMs: oldest ? this.#epochMs + Number(oldest.ts) / 1000 : undefined,
      lastForwardAtMs: lastForward ? Number(lastForward) : undefined,
      gaps: count("gaps"),
      quarantined: count("quarantine"),
    };
  }

  /** Records the latest state of each device group, for `status` (one transaction). */
  writeDeviceStatus(devices: DeviceStatus[]): void {
    if (devices.length === 0) return;
    const db = this.#db;
    const up = db.prepare(
      `INSERT INTO devices(key, device_id, last_poll_at_ms, last_ok_at_ms, last_error, polls_ok, polls_failed, polls_skipped)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(key) DO UPDATE SET device_id = excluded.device_id, last_poll_at_ms = excluded.last_poll_at_ms,
         last_ok_at_ms = excluded.last_ok_at_ms, last_error = excluded.last_error, polls_ok = excluded.polls_ok,
         polls_failed = excluded.polls_failed, polls_skipped = excluded.polls_skipped`,
    );
    db.exec("BEGIN IMMEDIATE");
    try {
      db.prepare("DELETE FROM devices").run();
      for (const d of devices) {
        up.run(
          d.key,
          d.deviceId,
          d.lastPollAtMs ?? null,
          d.lastOkAtMs ?? null,
          d.lastError ?? null,
          d.pollsOk,
          d.pollsFailed,
          d.pollsSkipped,
        );
      }
      db.exec("COMMIT");
    } catch (err) {
      db.exec("ROLLBACK");
      throw err;
    }
  }

  deviceStatus(): DeviceStatus[] {
    return (this.#db.prepare("SELECT * FROM devices ORDER BY key").all() as {
      key: string;
      device_id: string;
      last_poll_at_ms: number | null;
      last_ok_at_ms: number | null;
      last_error: string | null;
      polls_ok: number;
      polls_failed: number;
      polls_skipped: number;
    }[]).map((r) => ({
      key: r.key,
      deviceId: r.device_id,
      lastPollAtMs: r.last_poll_at_ms ?? undefined,
      lastOkAtMs: r.last_ok_at_ms ?? undefined,
      lastError: r.last_error ?? undefined,
      pollsOk: Number(r.polls_ok),
      pollsFailed: Number(r.polls_failed),
      pollsSkipped: Number(r.polls_skipped),
    }));
  }

  /** Replaces the last known content of the central promoted_metrics table. */
  writePromoted(rows: { deviceId: string; metricId: string | null }[]): void {
    const db = this.#db;
    const ins = db.prepare("INSERT INTO promoted(device_id, metric_id) VALUES (?, ?)");
    db.exec("BEGIN IMMEDIATE");
    try {
      db.prepare("DELETE FROM promoted").run();
      for (const r of rows) ins.run(r.deviceId, r.metricId);
      db.exec("COMMIT");
    } catch (err) {
      db.exec("ROLLBACK");
      throw err;
    }
  }

  readPromoted(): { deviceId: string; metricId: string | null }[] {
    return (this.#db.prepare("SELECT device_id, metric_id FROM promoted").all() as {
      device_id: string;
      metric_id: string | null;
    }[]).map((r) => ({ deviceId: r.device_id, metricId: r.metric_id }));
  }

  /**
   * Deletes series that no sample can still reference (see SERIES_SEQ_SLACK). Cheap: uses the
   * index on series.last_seq.
   */
  collectGarbage(): number {
    const min = this.minSeq() ?? this.#nextSeq;
    const limit = min - SERIES_SEQ_SLACK - 1;
    if (limit <= 0) return 0;
    const n = Number(this.#db.prepare("DELETE FROM series WHERE last_seq < ?").run(limit).changes);
    if (n > 0) {
      this.#seriesByKey.clear();
      this.#seriesById.clear();
    }
    return n;
  }

  /** Commits what is queued, then closes the database and releases the writer lock. */
  close(): void {
    if (this.#closed) return;
    if ((this.#opts.mode ?? "writer") === "writer") this.commitPending();
    this.#closed = true;
    this.#db.close();
    this.#lock?.close();
  }
}

// -----------------------------------------------------------------------------------------------
// Opening and recovery

function configure(db: DatabaseSync, opts: SpoolOptions): void {
  db.exec("PRAGMA busy_timeout = 10000");
  db.exec("PRAGMA journal_mode = WAL");
  db.exec(`PRAGMA synchronous = ${opts.synchronous === "normal" ? "NORMAL" : "FULL"}`);
}

/**
 * Opens the live spool file, checked. The disk or the OS refusing throws a `refused` SpoolError
 * and moves nothing; a damaged file is moved aside and a new spool starts (see Recovery).
 */
function openStore(opts: SpoolOptions): DatabaseSync {
  let db: DatabaseSync | undefined;
  let damage: string;
  try {
    createPrivateFile(opts.path);
    db = new DatabaseSync(opts.path);
    configure(db, opts);
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
  return openStore(opts);
}

/**
 * Salvages the spool files moved aside into retired spools, now; a salvage the disk refuses is
 * left for a later call (the forwarder of retired spools retries it).
 */
export function salvageAside(spoolPath: string): { refused: string[] } {
  const { refused } = salvagePending(spoolPath);
  for (const r of refused) logger.warning("Cannot salvage a spool moved aside yet; retrying later", { problem: r });
  return { refused };
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
