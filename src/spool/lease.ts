/**
 * # The lease: what a forwarder may do with the spool
 *
 * Read runs of samples by seq, and make them leave only the ways invariant 4 (spool.ts) allows:
 * forwarded (`removeForwarded`, after the central commit), set aside (`quarantine`), or recorded
 * as given up (`gaps`, written by the writer's full policy, forgotten here once the central
 * ledger has them). Nothing here appends or assigns a seq.
 *
 * - `readRows()` returns one run of consecutive seqs, so the ledger range of a batch never covers a
 *   seq that left another way (sent by the live lane, dropped, quarantined): a claim spanning one
 *   would be refused again at every retry. A sample whose series row is gone (a damaged spool) is
 *   set aside alone, so it never holds up the others.
 * - What `readRows()` returned is **leased** until it leaves (or `releaseLeases()`): the writer of
 *   this process never drops a leased row under drop_oldest, so a batch in flight is never also
 *   reported as dropped. Leases live in this process only (see invariant 6 for what that means
 *   next to `flush`).
 * - A read not bounded by `throughSeq` (the live lane's) takes the rows of the writer's last
 *   commits from memory when they are kept there (fresh_rows.ts, only with the writer of this
 *   process), the same rows the file holds; every other row comes from the file.
 * - `ownSeqs` is there only when the lease was opened with the writer: the seqs this process
 *   assigned, and how to move them past a ledger that already holds them (renumbering, see
 *   spool.ts "Recovery").
 */
import { type Labels, seriesProblem } from "../sample.ts";
import type { SpoolStore } from "./store.ts";
import { copyPrefix } from "../forward/copy_text.ts";
import { BoundedCache, ownCopy } from "../bounded_cache.ts";
import type { FreshRows } from "./fresh_rows.ts";
import { NO_LABELS, SpooledRows, type SpooledSample, type SpooledSeries } from "./spooled_rows.ts";

export type { SpooledSample, SpooledSeries } from "./spooled_rows.ts";

export interface GapRange {
  firstSeq: number;
  lastSeq: number;
  rows: number;
  reason: string;
}

/** The seqs assigned by this process's writer, which only the writer can move. */
export interface OwnSeqs {
  /** next_seq when the writer opened the spool, and when: every later seq is its own. */
  readonly openedAtSeq: number;
  readonly openedAtMs: number;
  /**
   * Moves every seq assigned since the spool was opened past `lastClaimedSeq`, and records the
   * seqs in between as a gap; returns how far the seqs moved (0 when nothing overlaps).
   */
  renumberAfter(lastClaimedSeq: number, reason: string): number;
}

/**
 * Seq ranges handed to the forwarder of this process and not yet removed (at most one per lane).
 */
export class LeaseTable {
  #leases = new Map<number, number>();

  hold(firstSeq: number, lastSeq: number): void {
    this.#leases.set(firstSeq, lastSeq);
  }

  /**
   * Shrinks the leases as their rows leave: a batch sent in parts (bisected around a rejected
   * sample) keeps its unsent part protected, and no lease outlives its rows.
   */
  release(firstSeq: number, lastSeq: number): void {
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

  clear(): void {
    this.#leases.clear();
  }

  /** The leased ranges, [first, last]. */
  ranges(): IterableIterator<[number, number]> {
    return this.#leases.entries();
  }
}

/**
 * The series dictionary caches hold at most this many entries (src/bounded_cache.ts: full, they
 * keep what they hold rather than thrash), to bound memory: the collector runs with a 64 MB V8
 * heap (deno.json), which keeps its RSS flat during a drain.
 */
export const SERIES_CACHE_MAX = 10_000;
/**
 * Series one read takes from the dictionary (not cached): about 3 µs each (a row, its labels
 * parsed, its COPY prefix rendered), so a read holds the event loop some 6 ms for them.
 */
export const SERIES_READ_PER_CALL = 2_000;
/**
 * Rows one SQLite call of `readRows()` returns at most: a read of a whole batch (20,000 rows) in one
 * call held every row's array (four columns, their numbers) at once, more than V8's young
 * generation (2 MB semi-spaces, scripts/compile.ts), so they were promoted to the old generation
 * and freed only by its full collections; read in parts, each part's arrays die young.
 */
export const READ_CHUNK_ROWS = 2_048;
/**
 * Samples that make one round of the writer's and the lease's series caches (src/bounded_cache.ts
 * sweeps what was not used in the last two rounds). They see commits and reads, not polls, and a
 * commit or a read may hold a part of a large poll only: a round of this many samples spans a
 * whole poll of the largest exporter accepted by default (`prometheus_max_series`), so a series
 * polled every time is never swept out between two of its polls, and the caches keep a stable
 * share of the series instead of churning.
 */
export const SERIES_CACHE_ROUND_SAMPLES = 100_000;

/** A row of READ_AFTER (an array statement: see SpoolStore.arrayStatement). */
type SampleRow = [seq: number, series: number, ts: number, value: number | null];
const READ_AFTER = "SELECT seq, series, ts, value FROM samples WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?";
const SERIES_BY_IDS =
  "SELECT id, device_id, metric_id, labels FROM series WHERE id IN (SELECT value FROM json_each(?))";
const DELETE_RANGE = "DELETE FROM samples WHERE seq BETWEEN ? AND ?";

export class SpoolLease {
  readonly counters = { forwarded: 0, quarantined: 0 };
  /** Present when this lease was opened with the spool's writer (see the module header). */
  readonly ownSeqs: OwnSeqs | undefined;
  #store: SpoolStore;
  #leases: LeaseTable;
  /** Series of the reads of fresh samples (unbounded reads). */
  #seriesById = new BoundedCache<number, SpooledSeries>(SERIES_CACHE_MAX);
  /**
   * Series of the reads of a backlog (bounded by `throughSeq`): a cache of their own, so that a
   * drain of other series never keeps the fresh samples' series out of theirs (see readRows()).
   */
  #backlogSeriesById = new BoundedCache<number, SpooledSeries>(SERIES_CACHE_MAX);
  /** Whether a backlog read ran in the current round: the backlog's cache is dropped after a whole round without. */
  #backlogReadInRound = false;
  /** Rows read since the caches' round began (SERIES_CACHE_ROUND_SAMPLES). */
  #rowsInRound = 0;
  #seriesGeneration: number;
  /** The writer's last commits, when this lease was opened with the writer (fresh_rows.ts). */
  #fresh: FreshRows | undefined;

  constructor(store: SpoolStore, leases: LeaseTable, ownSeqs?: OwnSeqs, fresh?: FreshRows) {
    this.#store = store;
    this.#leases = leases;
    this.ownSeqs = ownSeqs;
    this.#fresh = fresh;
    this.#seriesGeneration = store.seriesGeneration;
  }

  get spoolId(): string {
    return this.#store.spoolId;
  }

  get path(): string {
    return this.#store.path;
  }

  /** next_seq when this process opened the spool: later seqs were taken while it runs. */
  get openedAtSeq(): number {
    return this.#store.openedAtSeq;
  }

  /**
   * Reads up to `limit` samples with seq in (`afterSeq`, `throughSeq`], oldest first, stopping
   * before the first missing seq, and before the first sample whose series would be the
   * SERIES_READ_PER_CALL + 1st one missing from the cache (so one read holds the event loop a
   * bounded time, whatever the number of series). The rows are read READ_CHUNK_ROWS at a time.
   * They stay in the spool (leased) until removeForwarded() or quarantine().
   *
   * A read bounded by `throughSeq` is a backlog's (the forwarder's backfill), and finds its series
   * in a cache apart from the other reads': full of a backlog's series, one shared cache kept the
   * fresh samples' series out for the whole drain, and each poll's rows then went out in batches
   * of SERIES_READ_PER_CALL rows (measured: 10,000 rows a second in 5 transactions). That cache is
   * dropped once a whole round (SERIES_CACHE_ROUND_SAMPLES rows read) went by without a backlog read.
   */
  readRows(afterSeq: number, limit: number, throughSeq = Number.MAX_SAFE_INTEGER): SpooledRows {
    const backlog = throughSeq < Number.MAX_SAFE_INTEGER;
    const epochMs = this.#store.epochMs;
    /** The rows read, in parts: each part's numbers (three per row) and its rows' series. */
    const parts: RowsPart[] = [];
    let count = 0;
    const budget = { series: SERIES_READ_PER_CALL };
    let after = afterSeq;
    let lastSeq = NaN;
    if (!backlog && this.#fresh) {
      // The file holds only the writer's last commits: they are where its read would begin.
      const first = this.#fresh.firstRowAfter(after, this.#store.committedRows());
      if (first !== undefined) after = first - 1;
    }
    while (count < limit) {
      const want = Math.min(limit - count, READ_CHUNK_ROWS);
      const fresh = backlog ? undefined : this.#fresh?.take(after, want, throughSeq);
      if (fresh) {
        // The writer's last commits, as the file holds them (fresh_rows.ts): no row read back.
        const { seriesIds, numbers, at } = fresh;
        const seriesOf = this.#seriesOf((i) => seriesIds[at + i]!, fresh.count, backlog, budget);
        if (seriesOf.includes(undefined)) {
          // A series row missing from the file: the file's read sets its sample aside.
          this.#fresh!.clear();
          continue;
        }
        // The series budget may end before the first row: then nothing of this run is taken.
        const taken = seriesOf.length;
        if (taken === 0) break;
        parts.push({ numbers: numbers.subarray(3 * at, 3 * (at + taken)), series: seriesOf as SpooledSeries[] });
        count += taken;
        after = lastSeq = numbers[3 * (at + taken - 1)]!;
        if (taken < fresh.count) break;
        continue;
      }
      const rows = this.#store.arrayStatement(READ_AFTER).all(after, throughSeq, want) as unknown as SampleRow[];
      const seriesOf = this.#seriesOf((i) => Number(rows[i]![1]), rows.length, backlog, budget);
      const numbers = new Float64Array(3 * seriesOf.length);
      const series = new Array<SpooledSeries>(seriesOf.length);
      /** Rows of this part so far; whether the run ends in this part (a missing seq or series). */
      let k = 0;
      let ended = false;
      for (let i = 0; i < seriesOf.length; i++) {
        // By index: destructuring allocated an iterator result per column in the profile.
        const row = rows[i]!;
        const seq = Number(row[0]);
        const ts = row[2];
        const value = row[3];
        if (count + k > 0 && seq !== lastSeq + 1) {
          ended = true;
          break;
        }
        after = seq;
        const s = seriesOf[i];
        if (!s) {
          ended = count + k > 0;
          if (ended) break;
          this.#setAsideOrphan(seq, Number(ts), value, `series ${row[1]} is missing from the spool`);
          continue;
        }
        lastSeq = seq;
        numbers[3 * k] = seq;
        numbers[3 * k + 1] = epochMs + Number(ts) / 1000;
        numbers[3 * k + 2] = value === null ? NaN : Number(value);
        series[k++] = s;
      }
      if (k === series.length) parts.push({ numbers, series });
      else if (k > 0) parts.push({ numbers: numbers.subarray(0, 3 * k), series: series.slice(0, k) });
      count += k;
      if (ended || rows.length < want || seriesOf.length < rows.length) break;
    }
    const out = joined(parts, count);
    if (out.length > 0) this.#leases.hold(out.firstSeq, out.lastSeq);
    return out;
  }

  /** The rows of `readRows`, as sample objects (for the paths that are not per row). */
  read(afterSeq: number, limit: number, throughSeq = Number.MAX_SAFE_INTEGER): SpooledSample[] {
    return this.readRows(afterSeq, limit, throughSeq).samples();
  }

  /**
   * The series of each of the first of `count` rows, row `i` of series `idOf(i)` (undefined:
   * missing from the spool), as many rows as need at most `budget.series` series the cache lacks
   * (counted down); those are read in one statement (one call into SQLite per chunk, not per
   * series) and cached where there is room.
   */
  #seriesOf(
    idOf: (i: number) => number,
    count: number,
    backlog: boolean,
    budget: { series: number },
  ): (SpooledSeries | undefined)[] {
    if (this.#seriesGeneration !== this.#store.seriesGeneration) {
      this.#seriesById.clear();
      this.#backlogSeriesById.clear();
      this.#seriesGeneration = this.#store.seriesGeneration;
    }
    this.#rowsInRound += count;
    if (this.#rowsInRound >= SERIES_CACHE_ROUND_SAMPLES) {
      this.#seriesById.nextRound();
      this.#backlogSeriesById.nextRound();
      if (!this.#backlogReadInRound) this.#backlogSeriesById.clear();
      this.#backlogReadInRound = false;
      this.#rowsInRound = 0;
    }
    if (backlog) this.#backlogReadInRound = true;
    const cache = backlog ? this.#backlogSeriesById : this.#seriesById;
    // Sized once (its growth by push was copies of it for each chunk), cut where the budget ends.
    const seriesOf = new Array<SpooledSeries | undefined>(count);
    const missing = new Set<number>();
    for (let i = 0; i < count; i++) {
      const id = idOf(i);
      const s = cache.get(id);
      if (!s && !missing.has(id)) {
        if (missing.size === budget.series) {
          seriesOf.length = i;
          break;
        }
        missing.add(id);
      }
      seriesOf[i] = s;
    }
    if (missing.size === 0) return seriesOf;
    budget.series -= missing.size;
    const fetched = new Map<number, SpooledSeries>();
    const found = this.#store.arrayStatement(SERIES_BY_IDS).all(JSON.stringify([...missing])) as unknown as [
      id: number,
      deviceId: string,
      metricId: string,
      labels: string,
    ][];
    for (const [id, deviceId, metricId, labelsJson] of found) {
      const labels = labelsJson === "{}" ? NO_LABELS : JSON.parse(labelsJson) as Labels;
      const s: SpooledSeries = {
        id: Number(id),
        // Flat and its own: a concatenation would keep the texts read from SQLite and its joints.
        copyPrefix: ownCopy(copyPrefix(deviceId, metricId, labelsJson)),
        problem: seriesProblem(deviceId, metricId, labels).problem,
      };
      fetched.set(Number(id), s);
      cache.set(Number(id), s);
    }
    for (let i = 0; i < seriesOf.length; i++) seriesOf[i] ??= fetched.get(idOf(i));
    return seriesOf;
  }

  /** Ranges given up under the full-spool policy, not yet reported to the central ledger. */
  gaps(): GapRange[] {
    return (this.#store.statement("SELECT first_seq, last_seq, rows, reason FROM gaps ORDER BY first_seq").all() as {
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
   * rows inside that range. Returns the number of samples removed. The removal is committed
   * without an fsync of its own (invariant 3 in spool.ts: the central ledger is what records the
   * forwarding; a removal a power cut undoes is redone by the reconciliation).
   */
  removeForwarded(firstSeq: number, lastSeq: number): number {
    const store = this.#store;
    const deleted = store.transaction(() => {
      const deleted = Number(store.statement(DELETE_RANGE).run(firstSeq, lastSeq).changes);
      store.statement("DELETE FROM gaps WHERE first_seq >= ? AND last_seq <= ?").run(firstSeq, lastSeq);
      this.#leases.release(firstSeq, lastSeq);
      store.setMeta("rows", store.committedRows() - deleted);
      store.setMeta("last_forward_at_ms", Date.now());
      return deleted;
    }, { durable: false });
    this.#fresh?.forget(lastSeq);
    this.counters.forwarded += deleted;
    return deleted;
  }

  /** Forgets the leases of batches that were not sent (the forwarder will read them again). */
  releaseLeases(): void {
    this.#leases.clear();
  }

  /** Moves samples the central database rejected to the quarantine table, with the reason. */
  quarantine(samples: SpooledSample[], reason: string): void {
    const store = this.#store;
    const ins = store.statement(
      "INSERT OR REPLACE INTO quarantine(seq, ts_ms, device_id, metric_id, value, labels, reason, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    );
    const now = Date.now();
    this.#fresh?.clear();
    store.transaction(() => {
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
        deleted += Number(store.statement("DELETE FROM samples WHERE seq = ?").run(s.seq).changes);
        this.#leases.release(s.seq, s.seq);
      }
      store.setMeta("rows", store.committedRows() - deleted);
    });
    this.counters.quarantined += samples.length;
  }

  #setAsideOrphan(seq: number, tsUs: number, value: number | null, reason: string): void {
    this.quarantine([{
      seq,
      timestampMs: this.#store.epochMs + tsUs / 1000,
      deviceId: "",
      metricId: "",
      value: value ?? NaN,
      labels: {},
    }], reason);
  }

  /** Quarantined seqs not yet recorded in the central ledger (kind `quarantined`). */
  unreportedQuarantine(): { seq: number; reason: string }[] {
    return (this.#store.statement("SELECT seq, reason FROM quarantine WHERE reported = 0 ORDER BY seq").all() as {
      seq: number;
      reason: string;
    }[]).map((r) => ({ seq: Number(r.seq), reason: r.reason }));
  }

  markQuarantineReported(seq: number): void {
    this.#store.statement("UPDATE quarantine SET reported = 1 WHERE seq = ?").run(seq);
  }

  /** Forgets a gap once the central ledger has it. */
  removeGap(firstSeq: number): void {
    this.#store.statement("DELETE FROM gaps WHERE first_seq = ?").run(firstSeq);
  }

  /** The last seq given to a sample (0 for a new spool), as committed by the writer. */
  lastSeq(): number {
    return this.#store.committedNextSeq() - 1;
  }

  /** Samples in the spool (a counter kept in the same transactions as the rows: no scan). */
  rowCount(): number {
    return this.#store.committedRows();
  }

  /** Lowest seq still in the spool (a sample or an unreported gap), or undefined when it is empty. */
  minSeq(): number | undefined {
    return this.#store.minSeq();
  }
}

/** A part of a read: its rows' numbers (three per row) and their series. */
interface RowsPart {
  numbers: Float64Array;
  series: SpooledSeries[];
}

/** The rows of `parts` (`count` in all), one after the other, as one run. */
function joined(parts: RowsPart[], count: number): SpooledRows {
  if (parts.length === 1) return new SpooledRows(parts[0]!.numbers, parts[0]!.series);
  const numbers = new Float64Array(3 * count);
  const series = new Array<SpooledSeries>(count);
  let at = 0;
  for (const part of parts) {
    numbers.set(part.numbers, 3 * at);
    for (const s of part.series) series[at++] = s;
  }
  return new SpooledRows(numbers, series);
}
