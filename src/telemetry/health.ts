import { statfsSync } from "node:fs";
import { dirname } from "node:path";
import type { Clock } from "../clock.ts";
import { errorMessage, logger } from "../log.ts";
import type { Sample } from "../sample.ts";
import {
  CLOCK_STEPPED,
  INGEST_RATE,
  LAST_FORWARD_AGE,
  OLDEST_UNSENT_AGE,
  OUTAGE_BUDGET,
  SAMPLES_LOST,
  SPOOL_BYTES,
  SPOOL_FREE_BYTES,
  SPOOL_ROWS,
} from "./events.ts";
import type { Telemetry } from "./telemetry.ts";

/** A wall clock that moved this much more (or less) than the monotonic clock was stepped. */
const CLOCK_STEP_MS = 1000;
/** The ingest rate is the average over the last minute (since the start, at first)... */
const RATE_WINDOW_MS = 60_000;
/** ... measured over at least this long, from points taken at least this far apart. */
const RATE_MIN_SPAN_MS = 2000;
/** Samples appended in a window of pure growth before its bytes per sample are trusted. */
const GROWTH_WINDOW_MIN_SAMPLES = 10_000;

/** What the health sampler measures of the spool, as committed. */
export interface SpoolGauges {
  /** The spool file (its filesystem's free space bounds the budget). */
  readonly path: string;
  stats(): {
    rows: number;
    bytes: number;
    fileBytes: number;
    oldestTimestampMs: number | undefined;
    lastForwardAtMs: number | undefined;
  };
  /** Samples this process appended, and removed (forwarded, dropped as oldest, quarantined). */
  appended(): number;
  removed(): number;
}

export interface HealthOptions {
  telemetry: Telemetry;
  spool: SpoolGauges;
  /** Disk bytes a sample is taken to cost until a window of pure growth measured it. */
  sampleBytesEstimate: number;
  clock: Clock;
  edgeId: string;
  maxBytes: number;
  /** When the forwarder last committed a batch (undefined before the first one). */
  lastForwardAtMs(): number | undefined;
  /** Hands the telemetry samples to the spool, like any producer; resolves when they are durable. */
  deliver(samples: Sample[]): Promise<void>;
}

/**
 * Measures the collector's health (spool depth and age, ingest rate, how long an outage the free
 * budget covers, wall-clock steps) into the telemetry gauges, and turns every telemetry figure
 * into samples of device `<edge_id>`, which travel through the spool like any other sample: it
 * only reads gauges and calls `deliver`.
 */
export class HealthSampler {
  #opts: HealthOptions;
  #wallOffset: number | undefined;
  /** (monotonic ms, samples appended) points of the last RATE_WINDOW_MS, oldest first. */
  #ratePoints: { mono: number; appended: number }[] = [];
  /** Start of the current window in which the spool only grew (nothing forwarded or dropped). */
  #growth: { bytes: number; appended: number; removed: number } | undefined;
  /** Disk bytes one more sample costs, measured in the last window of pure growth. */
  #bytesPerSample: number;

  constructor(opts: HealthOptions) {
    this.#opts = opts;
    this.#bytesPerSample = opts.sampleBytesEstimate;
  }

  /**
   * Reports a step of the wall clock since the last call (the wall clock moved more or less than
   * the monotonic one). Cheap: call it every second or so.
   */
  watchClock(): void {
    const { clock } = this.#opts;
    const wallOffset = clock.now() - clock.monotonic();
    if (this.#wallOffset !== undefined && Math.abs(wallOffset - this.#wallOffset) > CLOCK_STEP_MS) {
      this.#opts.telemetry.emit(CLOCK_STEPPED, { step_s: Math.round((wallOffset - this.#wallOffset) / 1000) });
    }
    this.#wallOffset = wallOffset;
  }

  /** Updates the gauges. */
  refresh(): void {
    const { telemetry: t, spool, clock } = this.#opts;
    const mono = clock.monotonic();
    const now = clock.now();
    const stats = spool.stats();
    const appended = spool.appended();
    t.set(SPOOL_ROWS, stats.rows);
    t.set(SPOOL_BYTES, stats.bytes);
    t.set(
      OLDEST_UNSENT_AGE,
      stats.oldestTimestampMs === undefined ? 0 : Math.max(0, (now - stats.oldestTimestampMs) / 1000),
    );
    const lastForward = this.#opts.lastForwardAtMs() ?? stats.lastForwardAtMs;
    if (lastForward !== undefined) t.set(LAST_FORWARD_AGE, Math.max(0, (now - lastForward) / 1000));

    const free = this.#freeBytes(stats.bytes, stats.fileBytes);
    t.set(SPOOL_FREE_BYTES, free);
    this.#measureGrowth(stats.bytes, appended);
    const rate = this.#ingestRate(mono, appended);
    if (rate === undefined) return;
    t.set(INGEST_RATE, rate);
    t.set(OUTAGE_BUDGET, rate > 0 ? free / (rate * this.#bytesPerSample) / 3600 : Infinity);
  }

  /** Samples spooled per second over the last minute; undefined until first measured. */
  #ingestRate(mono: number, appended: number): number | undefined {
    const points = this.#ratePoints;
    const last = points.at(-1);
    if (!last || mono - last.mono >= RATE_MIN_SPAN_MS) points.push({ mono, appended });
    while (points.length > 2 && mono - points[1]!.mono >= RATE_WINDOW_MS) points.shift();
    const first = points[0]!;
    if (mono - first.mono < RATE_MIN_SPAN_MS) return undefined;
    return (appended - first.appended) / ((mono - first.mono) / 1000);
  }

  /**
   * The marginal disk cost of a sample: bytes grown over samples appended while nothing left
   * the spool (during an outage, exactly what the prediction is about), measured over successive
   * windows so that the latest one is free of one-off growth (the schema, the series dictionary
   * of a new exporter). Whole-spool averages would overstate it by a third.
   */
  #measureGrowth(bytes: number, appended: number): void {
    const removed = this.#opts.spool.removed();
    const w = this.#growth;
    if (!w || w.removed !== removed || bytes < w.bytes) {
      this.#growth = { bytes, appended, removed };
      return;
    }
    if (appended - w.appended >= GROWTH_WINDOW_MIN_SAMPLES && bytes > w.bytes) {
      this.#bytesPerSample = (bytes - w.bytes) / (appended - w.appended);
      this.#growth = { bytes, appended, removed };
    }
  }

  /** Every telemetry figure as a sample of device `<edge_id>`, timestamped now. */
  samples(): Sample[] {
    const timestampMs = this.#opts.clock.now();
    return this.#opts.telemetry.snapshot().map((p) => ({
      timestampMs,
      deviceId: this.#opts.edgeId,
      metricId: p.name,
      value: p.value,
      labels: { ...p.labels },
    }));
  }

  /** Refreshes the gauges and spools the telemetry samples; never throws. */
  async record(): Promise<void> {
    let samples: Sample[];
    try {
      this.refresh();
      samples = this.samples();
    } catch (err) {
      logger.warning("Cannot measure the collector's health", { error: errorMessage(err) });
      return;
    }
    try {
      await this.#opts.deliver(samples);
    } catch (err) {
      this.#opts.telemetry.emit(SAMPLES_LOST, { samples: samples.length, error: errorMessage(err) }, {
        labels: { protocol: "telemetry" },
        n: samples.length,
      });
    }
  }

  /** Bytes the spool may still grow: its budget's rest, unless the disk has less room. */
  #freeBytes(usedBytes: number, fileBytes: number): number {
    const budgetLeft = Math.max(0, this.#opts.maxBytes - usedBytes);
    let diskLeft = Infinity;
    try {
      const fs = statfsSync(dirname(this.#opts.spool.path));
      // Free pages inside the spool file are reused before the file grows.
      diskLeft = Number(fs.bavail) * Number(fs.bsize) + Math.max(0, fileBytes - usedBytes);
    } catch {
      // Not every filesystem answers statfs: the budget alone then bounds the estimate.
    }
    return Math.min(budgetLeft, diskLeft);
  }
}
