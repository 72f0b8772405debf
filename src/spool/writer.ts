/**
 * # The writer: the one place samples enter the spool
 *
 * Held by the collector (`run`, `wattmetre`) only, next to the store's writer lock:
 *
 * - **Group commit** (invariant 1): `append()` queues samples and resolves once the transaction
 *   holding them has committed. The next commit is due `commitIntervalMs` after the start of the
 *   previous one, on the clock: at most one commit (one fsync) per interval at any load.
 * - **A commit only stores rows**: the series of appended samples are found when they are
 *   appended (in the dictionary, those no cache knows in one statement per append), so the
 *   commit, which holds the event loop for every sample queued in the interval, writes rows and
 *   creates only the series that are new. A garbage collection, a renumbering or a failed commit
 *   in between makes the commit find them again.
 * - **Seqs** (invariant 2): each sample gets the next seq in commit order, and `meta.next_seq`
 *   is written in the same transaction. Only the writer assigns or moves seqs (`renumberAfter`).
 * - **The series dictionary**: (device, metric, labels) stored once per series, with a lower
 *   bound of its last seq kept within SERIES_SEQ_SLACK of the truth, so `collectGarbage()` never
 *   removes a series still in use. The dictionary is the truth; what the writer knows of a series
 *   (its id, that bound) is cached in the sample's series identity when it has one
 *   (`Sample.series.spool`, valid while it carries this writer's current token: a garbage
 *   collection, a renumbering or a failed commit forgets them all at once), else in a bounded
 *   cache by key; the series missing from both cost one lookup in the dictionary.
 * - **Fresh rows**: the rows of a commit that fits FRESH_ROWS_MAX are handed, once committed, to
 *   this process's lease (fresh_rows.ts), which reads them from memory; whatever else the writer
 *   does to rows or seqs (drop_oldest, renumbering, a restored file) drops them first.
 * - **The full-spool policy** (invariant 5): before each commit, when the used bytes would pass
 *   `maxBytes`, `drop_newest` refuses the new samples and `drop_oldest` frees the oldest rows
 *   (recorded as a gap), never a row leased to this process's forwarder. Logged as an error and
 *   counted either way.
 */
import { batchSize, type Sample, type SampleBatch, type SeriesIdentity } from "../sample.ts";
import { errorMessage } from "../log.ts";
import { type Clock, systemClock, type TimerId } from "../clock.ts";
import { ROWS_DROPPED, SPOOL_FULL } from "../telemetry/events.ts";
import { Telemetry } from "../telemetry/telemetry.ts";
import { type LeaseTable, type OwnSeqs, SERIES_CACHE_MAX, SERIES_CACHE_ROUND_SAMPLES } from "./lease.ts";
import { BoundedCache } from "../bounded_cache.ts";
import type { SpoolStore } from "./store.ts";
import { FRESH_ROWS_MAX, FreshBlock, type FreshRows } from "./fresh_rows.ts";

/** See "The series dictionary": how stale a series' recorded last_seq may be. */
const SERIES_SEQ_SLACK = 100_000;
/** Samples per INSERT statement: one call into SQLite per 64 samples instead of per sample. */
const ROWS_PER_INSERT = 64;
/** Conservative bytes one sample takes on disk (measured: about 21), for room and budget estimates. */
export const SAMPLE_BYTES_ESTIMATE = 40;
/**
 * The spool-full condition lasts until the forwarder has brought the spool back under this share
 * of its budget: drop_oldest's trims (5% of the budget each) then read as one condition.
 */
const SPOOL_FULL_CLEARS_AT = 0.5;

const INSERT_SAMPLE = "INSERT INTO samples(seq, series, ts, value) VALUES (?, ?, ?, ?)";
const INSERT_SAMPLES = `INSERT INTO samples(seq, series, ts, value) VALUES ${
  Array(ROWS_PER_INSERT).fill("(?, ?, ?, ?)").join(", ")
}`;
/** Series by (device, metric, labels), given as a JSON array of triples: each found one with its index. */
const FIND_SERIES = `SELECT j.key, s.id, s.last_seq FROM json_each(?) AS j
  JOIN series AS s ON s.device_id = j.value ->> 0 AND s.metric_id = j.value ->> 1 AND s.labels = j.value ->> 2`;
/** Adds a series; one that exists already (see #createSeries) is returned as it is. */
const CREATE_SERIES = `INSERT INTO series(device_id, metric_id, labels, last_seq) VALUES (?, ?, ?, ?)
  ON CONFLICT(device_id, metric_id, labels) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)
  RETURNING id, last_seq`;
const INSERT_GAP = "INSERT INTO gaps(first_seq, last_seq, rows, reason, at_ms) VALUES (?, ?, ?, ?, ?)";
const OLDEST_AFTER = "SELECT seq FROM samples WHERE seq > ? ORDER BY seq LIMIT 1 OFFSET ?";

export type FullPolicy = "drop_oldest" | "drop_newest";

export interface WriterOptions {
  maxBytes: number;
  fullPolicy: FullPolicy;
  commitIntervalMs: number;
  /** Where samples dropped by the full-spool policy are logged and counted. */
  telemetry?: Telemetry;
  clock?: Clock;
}

export interface WriterCounters {
  appended: number;
  commits: number;
  droppedOldest: number;
  droppedNewest: number;
}

/** What the writer knows of a series of the dictionary: its id, and a lower bound of its last seq. */
interface SeriesEntry {
  readonly writer: object;
  readonly id: number;
  lastSeq: number;
}

interface Pending {
  samples: SampleBatch;
  /** The series of each sample found at append (undefined: new), valid while `owner` is the writer's token. */
  series: (SeriesEntry | undefined)[];
  owner: object;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class SpoolWriter implements OwnSeqs {
  readonly counters: WriterCounters = { appended: 0, commits: 0, droppedOldest: 0, droppedNewest: 0 };
  readonly openedAtSeq: number;
  readonly openedAtMs: number;
  #store: SpoolStore;
  #leases: LeaseTable;
  /** The rows of the last commits, for this process's lease (fresh_rows.ts). */
  #fresh: FreshRows;
  #opts: WriterOptions;
  #clock: Clock;
  #telemetry: Telemetry;
  #nextSeq: number;
  #pending: Pending[] = [];
  #timer: TimerId | undefined;
  /** Monotonic time when the last group commit started. */
  #lastCommitAt = -Infinity;
  #closed = false;
  /** Series of samples without an identity; a round is SERIES_CACHE_ROUND_SAMPLES samples. */
  #seriesByKey = new BoundedCache<string, SeriesEntry>(SERIES_CACHE_MAX);
  #samplesInRound = 0;
  /**
   * Marks the series entries that are valid: entries kept in a sample's series identity
   * (`Sample.series.spool`) count only while they carry this token; a new token forgets them all.
   */
  #cacheOwner: object = {};

  constructor(store: SpoolStore, leases: LeaseTable, fresh: FreshRows, opts: WriterOptions) {
    this.#store = store;
    this.#leases = leases;
    this.#fresh = fresh;
    this.#opts = opts;
    this.#clock = opts.clock ?? systemClock;
    this.#telemetry = opts.telemetry ?? new Telemetry();
    this.openedAtSeq = store.openedAtSeq;
    this.openedAtMs = store.openedAtMs;
    this.#nextSeq = store.openedAtSeq;
  }

  /**
   * Queues samples (objects, or a poll's known series as columns: `SampleBatch`) for the next
   * group commit; resolves once they are durable. Under the `drop_newest` policy a full spool
   * resolves without writing them (they are counted as dropped and logged).
   */
  append(samples: SampleBatch): Promise<void> {
    if (this.#closed) return Promise.reject(new Error(`Spool '${this.#store.path}' is closed`));
    if (batchSize(samples) === 0) return Promise.resolve();
    const owner = this.#cacheOwner;
    let series: (SeriesEntry | undefined)[];
    try {
      series = this.#findSeries(samples);
    } catch {
      // Not found now (the dictionary could not be read): the commit finds them, and reports why not.
      series = [];
    }
    return new Promise((resolve, reject) => {
      this.#pending.push({ samples, series, owner: series.length > 0 ? owner : {}, resolve, reject });
      // The next commit is due commitIntervalMs after the start of the previous one, not after
      // this append: under load commits follow each other with no idle wait, and samples that
      // come after a quiet spell commit at once. Still at most one commit per interval.
      this.#timer ??= this.#clock.setTimeout(() => {
        this.#timer = undefined;
        this.commitPending();
      }, Math.max(0, this.#lastCommitAt + this.#opts.commitIntervalMs - this.#clock.monotonic()));
    });
  }

  /** Commits everything queued now (also called on shutdown and before a crash exit). */
  commitPending(): void {
    if (this.#timer !== undefined) {
      this.#clock.clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    const batch = this.#pending;
    if (batch.length === 0) return;
    this.#pending = [];
    const count = batch.reduce((n, p) => n + batchSize(p.samples), 0);
    this.#lastCommitAt = this.#clock.monotonic();
    try {
      const admitted = this.#makeRoom(count);
      if (admitted) this.#write(batch);
      for (const p of batch) p.resolve();
    } catch (err) {
      const e = new Error(`Cannot commit ${count} samples to spool '${this.#store.path}': ${errorMessage(err)}`);
      for (const p of batch) p.reject(e);
    }
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
    if (shift <= 0) return 0;
    this.commitPending();
    const store = this.#store;
    store.transaction(() => {
      // Through negative values, so no updated key ever meets one not yet moved.
      for (const [table, key] of [["samples", "seq"], ["quarantine", "seq"], ["gaps", "first_seq"]]) {
        const extra = table === "gaps" ? ", last_seq = last_seq + ?" : "";
        const args = table === "gaps" ? [shift, shift, from] : [shift, from];
        store.statement(`UPDATE ${table} SET ${key} = -(${key} + ?)${extra} WHERE ${key} >= ?`).run(...args);
        store.statement(`UPDATE ${table} SET ${key} = -${key} WHERE ${key} < 0`).run();
      }
      store.statement("UPDATE series SET last_seq = last_seq + ? WHERE last_seq >= ?").run(
        shift,
        from - SERIES_SEQ_SLACK,
      );
      store.statement(INSERT_GAP).run(from, lastClaimedSeq, 0, reason, Date.now());
      store.setMeta("next_seq", this.#nextSeq + shift);
    });
    this.#nextSeq += shift;
    this.#forgetSeries();
    this.#leases.clear();
    this.#fresh.clear();
    return shift;
  }

  /**
   * Deletes series that no sample can still reference (see SERIES_SEQ_SLACK). Cheap: uses the
   * index on series.last_seq.
   */
  collectGarbage(): number {
    const min = this.#store.minSeq() ?? this.#nextSeq;
    const limit = min - SERIES_SEQ_SLACK - 1;
    if (limit <= 0) return 0;
    const n = Number(this.#store.statement("DELETE FROM series WHERE last_seq < ?").run(limit).changes);
    if (n > 0) {
      this.#forgetSeries();
      this.#store.seriesDeleted();
    }
    return n;
  }

  /** Whether the file at the spool's path is still the database open here (it may be deleted or replaced). */
  fileState(): "ok" | "missing" | "replaced" {
    return this.#store.fileState();
  }

  /**
   * Writes the spool back to its path after the file was deleted or replaced under it (spool.ts
   * "Recovery"), with what is queued committed first. Throws a `refused` SpoolError when the disk
   * will not take the copy: the open database keeps every sample meanwhile.
   */
  restoreFile(): void {
    if (this.#store.fileState() === "ok") return;
    this.commitPending();
    this.#fresh.clear();
    this.#store.restore();
  }

  /** Commits what is queued; later appends are refused. The store is closed by its owner. */
  close(): void {
    if (this.#closed) return;
    this.commitPending();
    this.#closed = true;
  }

  /** Forgets every series entry kept, here and in series identities. */
  #forgetSeries(): void {
    this.#seriesByKey.clear();
    this.#cacheOwner = {};
  }

  #write(batch: Pending[]): void {
    const store = this.#store;
    const insertSamples = store.statement(INSERT_SAMPLES);
    const insertSample = store.statement(INSERT_SAMPLE);
    const touchSeries = store.statement("UPDATE series SET last_seq = ? WHERE id = ?");
    const firstSeq = this.#nextSeq;
    let seq = firstSeq;
    /** Series whose recorded last seq moves: id, last seq, id, last seq... (no pair per series). */
    const touched: number[] = [];
    const count = batch.reduce((n, p) => n + batchSize(p.samples), 0);
    // A commit larger than what FreshRows keeps is read back from the file: not copied for nothing.
    const fresh = count <= FRESH_ROWS_MAX ? new FreshBlock(firstSeq, count) : undefined;
    // One array of a statement's parameters, filled in place: emptied and grown again for each
    // statement, it was half of a commit's garbage (194 -> 99 bytes of heap per sample).
    const params: (number | null)[] = new Array(ROWS_PER_INSERT * 4).fill(0);
    let filled = 0;
    const epochMs = store.epochMs;
    try {
      store.transaction(() => {
        /** Series created by this commit, by key (a cache may have had no room for them). */
        const created = new Map<string, SeriesEntry>();
        const put = (entry: SeriesEntry, tsUs: number, value: number) => {
          const seriesId = this.#touch(entry, seq, touched);
          params[filled++] = seq;
          params[filled++] = seriesId;
          params[filled++] = tsUs;
          params[filled++] = Number.isNaN(value) ? null : value;
          fresh?.push(seriesId, epochMs + tsUs / 1000, value);
          if (filled === params.length) {
            insertSamples.run(...params);
            filled = 0;
          }
          seq++;
        };
        for (const p of batch) {
          const samples = p.samples;
          const found = p.owner === this.#cacheOwner ? p.series : this.#findSeries(samples);
          if (Array.isArray(samples)) {
            for (let i = 0; i < samples.length; i++) {
              const s = samples[i]!;
              const entry = found[i] ?? this.#createSeries(seriesRef(s), seq, created);
              put(entry, Math.round((s.timestampMs - epochMs) * 1000), s.value);
            }
          } else {
            // Columns: one timestamp for all (see SeriesSamples), each series an identity.
            const tsUs = Math.round((samples.timestampMs - epochMs) * 1000);
            const { series, values } = samples;
            for (let i = 0; i < series.length; i++) {
              put(found[i] ?? this.#createSeries(identityRef(series[i]!), seq, created), tsUs, values[i]!);
            }
          }
        }
        for (let i = 0; i < filled; i += 4) {
          insertSample.run(params[i]!, params[i + 1]!, params[i + 2]!, params[i + 3]!);
        }
        for (let i = 0; i < touched.length; i += 2) touchSeries.run(touched[i + 1]!, touched[i]!);
        store.setMeta("next_seq", seq);
        store.setMeta("rows", store.committedRows() + seq - firstSeq);
      });
    } catch (err) {
      // Series ids created in the failed transaction do not exist: forget the cache.
      this.#forgetSeries();
      throw err;
    }
    this.#nextSeq = seq;
    if (fresh) this.#fresh.add(fresh);
    else this.#fresh.clear();
    this.counters.appended += seq - firstSeq;
    this.counters.commits++;
  }

  /**
   * The series of each of `samples` (undefined: not in the dictionary yet). Known to its identity
   * or to the cache: a lookup in memory; the others are found in the dictionary all at once, one
   * statement (one call into SQLite, not one per series), and cached where there is room.
   */
  #findSeries(batch: SampleBatch): (SeriesEntry | undefined)[] {
    const n = batchSize(batch);
    this.#samplesInRound += n;
    if (this.#samplesInRound >= SERIES_CACHE_ROUND_SAMPLES) {
      this.#seriesByKey.nextRound();
      this.#samplesInRound = 0;
    }
    const found: (SeriesEntry | undefined)[] = new Array(n);
    /** Series no cache knows, by key, with the positions of their samples. */
    const unknown = new Map<string, { ref: SeriesRef; positions: number[] }>();
    for (let i = 0; i < n; i++) {
      let series: SeriesIdentity | undefined;
      let s: Sample | undefined;
      if (Array.isArray(batch)) series = (s = batch[i]!).series;
      else series = batch.series[i]!;
      let known = series?.spool?.writer === this.#cacheOwner ? series.spool : undefined;
      if (!known) {
        const ref = s ? seriesRef(s) : identityRef(series!);
        known = this.#seriesByKey.get(ref.key);
        if (!known) {
          let u = unknown.get(ref.key);
          if (!u) unknown.set(ref.key, u = { ref, positions: [] });
          u.positions.push(i);
          continue;
        }
        if (series) series.spool = known;
      }
      found[i] = known;
    }
    if (unknown.size === 0) return found;
    const list = [...unknown.values()];
    const rows = this.#store.arrayStatement(FIND_SERIES).all(
      JSON.stringify(list.map(({ ref }) => [ref.deviceId, ref.metricId, ref.labels])),
    ) as unknown as [index: number, id: number, lastSeq: number][];
    for (const [index, id, lastSeq] of rows) {
      const u = list[Number(index)]!;
      const entry = this.#remember(u.ref, Number(id), Number(lastSeq));
      for (const at of u.positions) found[at] = entry;
    }
    return found;
  }

  /**
   * Adds the series `ref` to the dictionary, first used by `seq` (inside the commit's
   * transaction); a series this commit already created, or one created since it was looked for,
   * is taken as it is.
   */
  #createSeries(ref: SeriesRef, seq: number, created: Map<string, SeriesEntry>): SeriesEntry {
    const done = created.get(ref.key);
    if (done) return done;
    const [id, lastSeq] = this.#store.arrayStatement(CREATE_SERIES).get(
      ref.deviceId,
      ref.metricId,
      ref.labels,
      seq,
    ) as unknown as [
      id: number,
      lastSeq: number,
    ];
    const entry = this.#remember(ref, Number(id), Number(lastSeq));
    created.set(ref.key, entry);
    return entry;
  }

  /** Keeps what the writer knows of a series in its identity, or else in the cache. */
  #remember(ref: SeriesRef, id: number, lastSeq: number): SeriesEntry {
    const entry = { writer: this.#cacheOwner, id, lastSeq };
    // A series with an identity keeps its entry there (its producer bounds how many it keeps).
    if (ref.series) ref.series.spool = entry;
    else this.#seriesByKey.set(ref.key, entry);
    return entry;
  }

  /** Keeps the entry's last seq within SERIES_SEQ_SLACK of `seq` (see "The series dictionary"); returns its id. */
  #touch(entry: SeriesEntry, seq: number, touched: number[]): number {
    if (seq - entry.lastSeq > SERIES_SEQ_SLACK) {
      entry.lastSeq = seq;
      touched.push(entry.id, seq);
    }
    return entry.id;
  }

  /** Applies the full-spool policy; returns false when the new samples must be dropped. */
  #makeRoom(incoming: number): boolean {
    const store = this.#store;
    const { path } = store;
    const { maxBytes, fullPolicy } = this.#opts;
    const estimate = incoming * SAMPLE_BYTES_ESTIMATE;
    const t = this.#telemetry;
    const policy = { labels: { policy: fullPolicy } };
    const used = store.usedBytes();
    if (used + estimate <= maxBytes) {
      if (used + estimate <= maxBytes * SPOOL_FULL_CLEARS_AT && t.isActive(SPOOL_FULL, path)) {
        t.end(SPOOL_FULL, path, { spool: path, dropped_total: t.total(ROWS_DROPPED.counter) });
      }
      return true;
    }
    const full = { spool: path, policy: fullPolicy, max_bytes: maxBytes };
    if (fullPolicy === "drop_newest") {
      this.counters.droppedNewest += incoming;
      t.emit(ROWS_DROPPED, { ...full, samples: incoming }, { ...policy, n: incoming });
      t.begin(SPOOL_FULL, path, full);
      return false;
    }
    // drop_oldest: free about 5% of the budget (at least room for this commit) plus any excess
    // (a commit larger than that may have overshot), oldest first, never touching rows leased to
    // the forwarder.
    const target = Math.max(estimate * 2, maxBytes * 0.05) + Math.max(0, used - maxBytes);
    // Rows to free at the measured ~21 bytes per sample: dividing by more would free too little.
    const rowsToDrop = Math.max(incoming, Math.ceil(target / 20));
    const oldestAfter = store.statement(OLDEST_AFTER);
    // Start after any lease that sits at the old end of the spool.
    let lo = 0;
    for (let moved = true; moved;) {
      moved = false;
      const next = oldestAfter.get(lo, 0) as { seq: number } | undefined;
      for (const [first, last] of this.#leases.ranges()) {
        if (next && first <= Number(next.seq) && last >= Number(next.seq)) {
          lo = last;
          moved = true;
        }
      }
    }
    const edge = oldestAfter.get(lo, rowsToDrop - 1) as { seq: number } | undefined;
    let hi = edge ? Number(edge.seq) : this.#nextSeq - 1;
    // Nor into a lease further on (the live lane's batch in flight).
    for (const [first] of this.#leases.ranges()) if (first > lo && first <= hi) hi = first - 1;
    const range = store.statement(
      "SELECT count(*) AS n, min(seq) AS lo, max(seq) AS hi FROM samples WHERE seq > ? AND seq <= ?",
    ).get(lo, hi) as { n: number; lo: number | null; hi: number | null };
    if (!range.n || range.lo === null || range.hi === null) return true;
    const { lo: first, hi: last } = range;
    this.#fresh.clear();
    const deleted = store.transaction(() => {
      const deleted = Number(store.statement("DELETE FROM samples WHERE seq BETWEEN ? AND ?").run(first, last).changes);
      store.statement(INSERT_GAP).run(first, last, deleted, "spool full (drop_oldest)", Date.now());
      store.setMeta("rows", store.committedRows() - deleted);
      return deleted;
    });
    this.counters.droppedOldest += deleted;
    const fields = { ...full, samples: deleted, first_seq: first, last_seq: last };
    t.emit(ROWS_DROPPED, fields, { ...policy, n: deleted });
    t.begin(SPOOL_FULL, path, fields);
    return true;
  }
}

/**
 * A series as the dictionary stores it (its labels as JSON), the key of it in the writer's caches,
 * and its identity when it has one.
 */
interface SeriesRef {
  readonly deviceId: string;
  readonly metricId: string;
  readonly labels: string;
  readonly key: string;
  readonly series: SeriesIdentity | undefined;
}

function seriesRef(s: Sample): SeriesRef {
  if (s.series) return identityRef(s.series);
  const labels = JSON.stringify(s.labels);
  return {
    deviceId: s.deviceId,
    metricId: s.metricId,
    labels,
    key: `${s.deviceId}\u0000${s.metricId}\u0000${labels}`,
    series: undefined,
  };
}

function identityRef(series: SeriesIdentity): SeriesRef {
  return { deviceId: series.deviceId, metricId: series.metricId, labels: labelsOf(series), key: series.key, series };
}

/** The labels' JSON of an identity: its key is device, metric and that JSON, joined by NUL. */
function labelsOf(series: SeriesIdentity): string {
  return series.key.slice(series.deviceId.length + series.metricId.length + 2);
}
