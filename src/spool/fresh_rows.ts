/**
 * # Fresh rows: the writer's last commits, kept for the live lane's read
 *
 * The live lane reads back, within a second, the rows the writer of this process has just
 * committed. Read from SQLite, each row was an array of four columns and boxed numbers, made and
 * dropped: about a tenth of the collector's CPU under workload A (10,000 samples a second, `perf`
 * in docs/PERFORMANCE.md, `fresh11`). The writer hands the rows of each commit here, as numbers,
 * and the lease's unbounded read (lease.ts `readRows()`) takes them from here, in the layout of its
 * own rows: seq, timestamp and value, three numbers per row, and the series id apart.
 *
 * ## Guarantee
 *
 * What `take()` returns is, row for row, what a read of the spool file would return at that
 * moment for the same seqs (seq, series id, timestamp in ms as the file's microseconds give it,
 * value with NaN for NULL and −0 as 0), or nothing:
 *
 * - Rows come in only after the commit that stored them (`add`), in seq order, one run without
 *   a hole; a block that does not continue the run replaces it.
 * - Whatever may have changed those rows in the file drops them here first: this process's
 *   removal of forwarded rows (`forget`, up to the last removed seq), anything else this process
 *   does to rows or seqs (`clear`: quarantine, drop_oldest, renumbering, a restored file), and any
 *   commit by another connection (a `flush` next to the collector), seen through SQLite's
 *   `PRAGMA data_version`, which changes with other connections' commits only.
 * - Dropping rows is always safe: the read falls back to the file for them.
 * - Bounded: FRESH_ROWS_MAX rows at most (the oldest blocks go first), outside V8's heap.
 */

/**
 * Rows kept at most (32 bytes each, 640 KB): two polls of workload A's exporter (10,000 series).
 * The writer does not copy the rows of a larger commit (a wide exporter's): the file has them.
 */
export const FRESH_ROWS_MAX = 20_000;

/** A run of fresh rows: rows `at` to `at + count - 1` of `seriesIds` and `numbers` (three per row). */
export interface FreshRun {
  seriesIds: Float64Array;
  numbers: Float64Array;
  at: number;
  count: number;
}

/**
 * The rows of one commit, filled row by row by the writer, then handed to `FreshRows.add`:
 * `numbers` holds seq, timestamp (ms) and value for each, `seriesIds` their series.
 */
export class FreshBlock {
  readonly seriesIds: Float64Array;
  readonly numbers: Float64Array;
  #count = 0;

  constructor(readonly first: number, capacity: number) {
    this.seriesIds = new Float64Array(capacity);
    this.numbers = new Float64Array(3 * capacity);
  }

  get count(): number {
    return this.#count;
  }

  /** The next row, as the file keeps it: `timestampMs` from its microseconds, NULL for NaN, −0 as 0. */
  push(seriesId: number, timestampMs: number, value: number): void {
    const i = this.#count++;
    this.seriesIds[i] = seriesId;
    this.numbers[3 * i] = this.first + i;
    this.numbers[3 * i + 1] = timestampMs;
    this.numbers[3 * i + 2] = value === 0 ? 0 : value;
  }
}

export class FreshRows {
  #blocks: FreshBlock[] = [];
  #rows = 0;
  /** Rows below this seq are not handed out: they may have left the file. */
  #from = 0;
  #dataVersion: () => number;
  #seenVersion: number;

  /** `dataVersion` reads `PRAGMA data_version` on the connection that commits the rows. */
  constructor(dataVersion: () => number) {
    this.#dataVersion = dataVersion;
    this.#seenVersion = dataVersion();
  }

  /** Rows kept now. */
  get size(): number {
    return this.#rows;
  }

  /** Keeps the rows of a commit that has just succeeded. */
  add(block: FreshBlock): void {
    if (block.count === 0) return;
    const last = this.#blocks.at(-1);
    if (last && last.first + last.count !== block.first) this.clear();
    this.#blocks.push(block);
    this.#rows += block.count;
    while (this.#rows > FRESH_ROWS_MAX) this.#rows -= this.#blocks.shift()!.count;
  }

  /** Forgets the rows up to `lastSeq`, removed from the file (forwarded). */
  forget(lastSeq: number): void {
    this.#from = Math.max(this.#from, lastSeq + 1);
    while (this.#blocks.length > 0 && this.#blocks[0]!.first + this.#blocks[0]!.count <= this.#from) {
      this.#rows -= this.#blocks.shift()!.count;
    }
  }

  /** Forgets every row kept. */
  clear(): void {
    this.#blocks = [];
    this.#rows = 0;
  }

  /**
   * Where a read from seq `afterSeq + 1` on finds its first row, when the file holds no row but
   * those kept here (`fileRows`, its row count as committed, equals their number) and the first
   * of them comes later: the live lane's read from the start of the file then begins here.
   */
  firstRowAfter(afterSeq: number, fileRows: number): number | undefined {
    if (!this.#current()) return undefined;
    const first = this.#blocks[0]!;
    const from = Math.max(first.first, this.#from);
    if (from <= afterSeq + 1 || from >= first.first + first.count) return undefined;
    return this.#rows - (from - first.first) === fileRows ? from : undefined;
  }

  /**
   * Up to `limit` rows from seq `afterSeq + 1` on, no further than `throughSeq`, all of one
   * commit; undefined when that row is not kept (the file has it, or nothing does).
   */
  take(afterSeq: number, limit: number, throughSeq: number): FreshRun | undefined {
    if (!this.#current()) return undefined;
    const seq = afterSeq + 1;
    if (seq < this.#from || seq > throughSeq) return undefined;
    for (const b of this.#blocks) {
      if (seq < b.first || seq >= b.first + b.count) continue;
      const at = seq - b.first;
      const count = Math.min(limit, b.count - at, throughSeq - seq + 1);
      return { seriesIds: b.seriesIds, numbers: b.numbers, at, count };
    }
    return undefined;
  }

  /** Whether rows are kept, after dropping them all when another connection has committed since the last look. */
  #current(): boolean {
    if (this.#blocks.length === 0) return false;
    const version = this.#dataVersion();
    if (version === this.#seenVersion) return true;
    this.#seenVersion = version;
    this.clear();
    return false;
  }
}
