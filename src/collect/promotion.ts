import type { PromotedMetrics, PromotedRow } from "../central/promoted_metrics.ts";
import type { MetricEntry } from "../config/metrics_dir.ts";
import { errorMessage, logger } from "../log.ts";
import type { LocalState } from "../spool/spool.ts";
import { type Clock, deadline, systemClock, type TimerId } from "../clock.ts";

/**
 * Optional metrics (`optional: true`) are polled only while the central `promoted_metrics` table
 * promotes them: a row (device_id, metric_id) where device_id is the entry's device_id or its
 * `_device_alias` label, and metric_id is a regular expression that matches the entry's name,
 * or NULL for every metric. Every row counts (Kwollect kept only the last row of a device).
 *
 * The match is PostgreSQL's `name ~ metric_id`: a search anywhere in the name, not anchored,
 * case-sensitive, as Kwollect's wattmeter collector and any SQL over the table do. Kwollect's
 * kwollector used Python's re.match, anchored at the start, so a row `temp` promotes
 * `bmc_temp_celsius` here and not there; the usual patterns (`.*`, `.*temp.*`, full names) mean
 * the same in both. Patterns are compiled as JavaScript regular expressions in unicode mode,
 * which reads the common syntax as PostgreSQL does and rejects (rather than misreads)
 * PostgreSQL-only syntax such as `\m` or `[[:digit:]]`; a pattern that does not compile is
 * logged once and promotes nothing.
 *
 * The refresher re-reads the table every `promoted_refresh_ms` and keeps a copy in the spool, so
 * a collector that starts while the central database is unreachable polls what was promoted
 * when it was last seen, and an outage never switches optional metrics off. It is given the
 * table's reader (src/central/promoted_metrics.ts) and the spool's local state: it opens nothing
 * itself.
 */

type Matcher = RegExp | "all";

export class PromotionFilter {
  #rows: PromotedRow[] = [];
  #byDevice = new Map<string, Matcher[]>();
  #compiled = new Map<string, RegExp | undefined>();

  constructor(rows: readonly PromotedRow[] = []) {
    this.update(rows);
  }

  get rows(): readonly PromotedRow[] {
    return this.#rows;
  }

  update(rows: readonly PromotedRow[]): void {
    this.#rows = [...rows];
    const byDevice = new Map<string, Matcher[]>();
    for (const row of rows) {
      const matcher = row.metricId === null ? "all" : this.#compile(row);
      if (matcher === undefined) continue;
      const list = byDevice.get(row.deviceId);
      if (list) list.push(matcher);
      else byDevice.set(row.deviceId, [matcher]);
    }
    this.#byDevice = byDevice;
  }

  /** Whether an entry is polled: always when it is not optional, else when a row promotes it. */
  isActive(entry: MetricEntry): boolean {
    if (!entry.optional) return true;
    if (this.#matches(entry.deviceId, entry.name)) return true;
    const alias = entry.labels._device_alias;
    return typeof alias === "string" && this.#matches(alias, entry.name);
  }

  /** Whether `metricId` is promoted for `node` (the wattmeter asks for wattmetre_power_watt). */
  isPromotedNode(node: string, metricId: string): boolean {
    return this.#matches(node, metricId);
  }

  #matches(deviceId: string, name: string): boolean {
    const matchers = this.#byDevice.get(deviceId);
    if (!matchers) return false;
    for (const m of matchers) {
      if (m === "all" || m.test(name)) return true;
    }
    return false;
  }

  #compile(row: PromotedRow): RegExp | undefined {
    const pattern = row.metricId!;
    if (this.#compiled.has(pattern)) return this.#compiled.get(pattern);
    let re: RegExp | undefined;
    try {
      re = new RegExp(pattern, "u");
    } catch (err) {
      logger.error("Invalid regular expression in promoted_metrics: the row promotes nothing", {
        device_id: row.deviceId,
        metric_id: pattern,
        error: errorMessage(err),
      });
    }
    this.#compiled.set(pattern, re);
    return re;
  }
}

export interface PromotionRefresherOptions {
  filter: PromotionFilter;
  /** Where the last known promotions are kept across restarts (the spool's local state). */
  saved: Pick<LocalState, "readPromoted" | "writePromoted">;
  /** The central table; its connection is dropped after a read that failed or timed out. */
  central: PromotedMetrics;
  refreshMs: number;
  /** Longest a read of promoted_metrics may take before its connection is dropped. */
  queryTimeoutMs?: number;
  clock?: Clock;
}

const DEFAULT_QUERY_TIMEOUT_MS = 10_000;

export class PromotionRefresher {
  #opts: PromotionRefresherOptions;
  #clock: Clock;
  #timer: TimerId | undefined;
  #inFlight: Promise<void> | undefined;
  #running = false;
  #failing: string | undefined;
  /** Monotonic: a wall-clock step must not change how long the failure is said to last. */
  #failingSinceMs = 0;
  #saved: string;

  constructor(opts: PromotionRefresherOptions) {
    this.#opts = opts;
    this.#clock = opts.clock ?? systemClock;
    this.#saved = rowsKey(opts.filter.rows);
  }

  /** Loads the last known rows from the spool, then reads the table now and every period. */
  start(): void {
    const saved = this.#opts.saved.readPromoted();
    this.#opts.filter.update(saved);
    this.#saved = rowsKey(saved);
    if (saved.length > 0) logger.info("Promoted metrics loaded from the spool", { rows: saved.length });
    this.#running = true;
    this.#schedule(0);
  }

  /** Stops the timer, waits for a read in progress and closes the connection. */
  async stop(): Promise<void> {
    this.#running = false;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#inFlight;
    await this.#opts.central.drop();
  }

  /** Reads promoted_metrics once; on failure keeps the current state. Returns whether it read. */
  async refresh(): Promise<boolean> {
    let rows: PromotedRow[];
    try {
      rows = await this.#read();
    } catch (err) {
      this.#failed(errorMessage(err));
      return false;
    }
    if (this.#failing !== undefined) {
      logger.info("promoted_metrics reachable again", {
        failing_for_s: Math.round((this.#clock.monotonic() - this.#failingSinceMs) / 1000),
      });
      this.#failing = undefined;
    }
    const key = rowsKey(rows);
    if (key !== this.#saved) {
      this.#opts.filter.update(rows);
      logger.info("Promoted metrics changed", { rows: rows.length });
      try {
        this.#opts.saved.writePromoted(rows);
        this.#saved = key;
      } catch (err) {
        logger.warning(
          "Cannot save promoted metrics in the spool: a restart without the central database would not see them",
          {
            error: errorMessage(err),
          },
        );
      }
    }
    return true;
  }

  #schedule(delayMs: number): void {
    if (!this.#running) return;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.#inFlight = this.refresh().then(() => {
        this.#inFlight = undefined;
        this.#schedule(this.#opts.refreshMs);
      });
    }, delayMs);
  }

  async #read(): Promise<PromotedRow[]> {
    const ms = this.#opts.queryTimeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS;
    const { central } = this.#opts;
    try {
      return await deadline(central.read(), {
        ms,
        message: `Reading promoted_metrics took more than ${ms} ms`,
        clock: this.#clock,
      });
    } catch (err) {
      // The connection may be stuck (a timeout) or broken: the next read opens a new one.
      await central.drop();
      throw err;
    }
  }

  #failed(message: string): void {
    if (this.#failing === undefined) {
      this.#failingSinceMs = this.#clock.monotonic();
      logger.warning("Cannot query promoted_metrics in the central database: keeping the last known promotions", {
        rows: this.#opts.filter.rows.length,
        error: message,
      });
    }
    this.#failing = message;
  }
}

/** An order-independent identity of a set of rows, to tell whether it changed. */
function rowsKey(rows: readonly PromotedRow[]): string {
  return rows.map((r) => JSON.stringify([r.deviceId, r.metricId])).sort().join("\n");
}
