import type { Clock } from "../clock.ts";

/**
 * # The backfill's pace: how much of a backlog may be sent now
 *
 * The forwarder asks `allowance()` before it starts a backfill batch and tells `observe()` how
 * long each one took, from its first statement to its COMMIT. Guarantees:
 *
 * - **Never a batch under the minimum.** A batch smaller than BACKFILL_MIN_ROWS is never
 *   started to spend a rate cap (`forward_backfill_rows_per_s`): the cap's bucket holds at least
 *   that many rows, and the allowance stays 0 until it has them. (Only the tail of a backlog, when
 *   fewer rows are left, goes out smaller.)
 * - **A slow central database gets pauses, not only smaller batches.** A batch slower than
 *   BACKFILL_SLOW_MS halves the batch (down to the minimum), and pauses the backfill for as long
 *   as that batch took, so this collector's backfill occupies the database at most half the time
 *   while it is slow. At the minimum size, each further slow batch doubles the pause, up to
 *   BACKFILL_PAUSE_MAX_MS. While slow, one backfill batch at a time is in flight.
 * - **A fast one gets the full pace back.** A batch faster than BACKFILL_FAST_MS ends the pause,
 *   doubles the batch back towards `forward_batch_rows` and, once there, allows
 *   `forward_pipeline_batches` in flight again.
 * - **A backlog starts slow.** The first batch holds BACKFILL_START_ROWS (and one batch is in
 *   flight) until fast answers have doubled it to `forward_batch_rows`: a fleet returning together
 *   sends a first wave the database takes in about a second (20 collectors × 5,000 rows),
 *   not 20 × 2 × 20,000 rows that would keep every live lane waiting for seconds. A collector
 *   alone is at full pace after two fast batches.
 *
 * So a fleet returning together converges on what the database can take: each slow answer
 * spreads the fleet's backfill further apart in time, and the live lanes (never paced) find the
 * database free between them.
 */

export const BACKFILL_SLOW_MS = 2000;
export const BACKFILL_FAST_MS = 1000;
export const BACKFILL_MIN_ROWS = 500;
export const BACKFILL_PAUSE_MAX_MS = 10_000;
export const BACKFILL_START_ROWS = 5000;

export interface BackfillPaceOptions {
  /** forward_batch_rows: the largest batch. */
  maxRows: number;
  /** forward_backfill_rows_per_s (0: no cap). */
  capRowsPerS: number;
  /** forward_pipeline_batches: batches in flight at once while the database is fast. */
  pipeline: number;
  clock: Clock;
}

export class BackfillPace {
  #opts: BackfillPaceOptions;
  #rows: number;
  /** Whether a slow answer was seen and full pace not reached again since. */
  #slow = false;
  #pausedUntil = 0;
  #pauseMs = 0;
  #tokens = 0;
  #refilledAt: number;

  constructor(opts: BackfillPaceOptions) {
    this.#opts = opts;
    this.#rows = Math.min(opts.maxRows, Math.max(BACKFILL_START_ROWS, BACKFILL_MIN_ROWS));
    this.#refilledAt = opts.clock.monotonic();
  }

  /** The current batch size. */
  get rows(): number {
    return this.#rows;
  }

  /** Whether the central database answered slowly, and the full pace is not back yet. */
  get slow(): boolean {
    return this.#slow;
  }

  /** Backfill batches that may be in flight at once: the pipeline only at full pace. */
  get inFlightMax(): number {
    return this.#rows === this.#opts.maxRows && this.#pauseMs === 0 ? Math.max(1, this.#opts.pipeline) : 1;
  }

  /** Monotonic time until which the backfill waits (0: not paused). */
  get pausedUntil(): number {
    return this.#pausedUntil;
  }

  /** Rows the next backfill batch may hold now; 0 while paused or while the cap's bucket refills. */
  allowance(): number {
    const now = this.#opts.clock.monotonic();
    if (now < this.#pausedUntil) return 0;
    const cap = this.#opts.capRowsPerS;
    if (cap <= 0) return this.#rows;
    const least = Math.min(BACKFILL_MIN_ROWS, this.#opts.maxRows);
    this.#tokens = Math.min(Math.max(cap, least), this.#tokens + ((now - this.#refilledAt) / 1000) * cap);
    this.#refilledAt = now;
    const rows = Math.min(this.#rows, Math.floor(this.#tokens));
    return rows >= least ? rows : 0;
  }

  /** A backfill batch of `rows` was started. */
  spent(rows: number): void {
    if (this.#opts.capRowsPerS > 0) this.#tokens -= rows;
  }

  /**
   * A backfill batch committed after `elapsedMs`. Returns "slow" when this answer made the
   * database slow, "fast" when it ended a slow period, otherwise undefined.
   */
  observe(elapsedMs: number): "slow" | "fast" | undefined {
    const wasSlow = this.#slow;
    const max = this.#opts.maxRows;
    if (elapsedMs > BACKFILL_SLOW_MS) {
      this.#slow = true;
      const least = Math.min(BACKFILL_MIN_ROWS, max);
      if (this.#rows > least) {
        this.#rows = Math.max(least, Math.floor(this.#rows / 2));
        this.#pauseMs = Math.max(this.#pauseMs, elapsedMs);
      } else this.#pauseMs = Math.max(elapsedMs, this.#pauseMs * 2);
      this.#pauseMs = Math.min(BACKFILL_PAUSE_MAX_MS, this.#pauseMs);
      this.#pausedUntil = this.#opts.clock.monotonic() + this.#pauseMs;
    } else if (elapsedMs < BACKFILL_FAST_MS) {
      this.#pauseMs = 0;
      this.#pausedUntil = 0;
      this.#rows = Math.min(max, this.#rows * 2);
      if (this.#rows === max) this.#slow = false;
    }
    if (!wasSlow && this.#slow) return "slow";
    if (wasSlow && !this.#slow) return "fast";
    return undefined;
  }
}
