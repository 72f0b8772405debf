import type { Labels, Sample } from "../sample.ts";
import { copyPrefixParts } from "../forward/copy_text.ts";

/**
 * # Rows read back for forwarding, as columns
 *
 * What the lease reads (lease.ts `readRows`) and the forwarder sends: each row's seq, timestamp
 * and value are three numbers of a Float64Array (outside V8's heap), its series one reference in
 * an array. No object per row: during a drain the forwarder holds up to three batches of 20,000
 * rows, each in flight long enough for its rows to outlive two scavenges, so an object per row
 * (48 bytes) was promoted to the old space and freed only by its full collections, about 1 MB of
 * old-space garbage per batch (docs/PERFORMANCE.md, `columns17`).
 *
 * Guarantees:
 *
 * - **Never changed once made.** Nothing here writes a column after the constructor, and a
 *   slice shares its numbers with the rows it was cut from.
 * - **Row i is whole.** Its seq, timestamp and value are `numbers[3i]`, `numbers[3i + 1]`,
 *   `numbers[3i + 2]`, its series `series[i]`, for 0 ≤ i < length.
 */

/** A sample read back for forwarding, as an object (`SpooledRows.sample`): for the paths that are not per row. */
export interface SpooledSample extends Sample {
  seq: number;
  /** What the lease computed once for the sample's series, shared by the series' samples. */
  spooledSeries?: SpooledSeries;
}

/**
 * What the forwarder needs of a series, computed once per series read from the dictionary, and
 * all the lease's caches keep of it, one object shared by the series' samples. Its device, metric
 * and labels are in its COPY prefix, not kept apart: a backlog's series and the fresh samples'
 * fill a cache of 10,000 each, and those three fields, their strings and the parsed labels were
 * about 3 MB of the heap during a drain.
 */
export interface SpooledSeries {
  /** Its id in the spool's series dictionary (a batch's COPY rows are grouped by it). */
  readonly id: number;
  /** Its device, metric and labels as the start of a COPY row (src/forward/copy_text.ts). */
  readonly copyPrefix: string;
  /** Why the central database cannot store the series (`seriesProblem`), or undefined. */
  readonly problem: string | undefined;
}

/** The labels of the series that have none (an SNMP OID, a file of 5,000 devices): one shared object. */
export const NO_LABELS: Labels = Object.freeze({});

export class SpooledRows {
  readonly length: number;
  readonly #numbers: Float64Array;
  readonly #series: readonly SpooledSeries[];

  /** Rows whose seq, timestamp and value are the triples of `numbers`, and whose series are `series`, in order. */
  constructor(numbers: Float64Array, series: readonly SpooledSeries[]) {
    if (numbers.length !== 3 * series.length) {
      throw new Error(`Rows need three numbers each: ${numbers.length} numbers for ${series.length} series`);
    }
    this.#numbers = numbers;
    this.#series = series;
    this.length = series.length;
  }

  seq(i: number): number {
    return this.#numbers[3 * i]!;
  }

  timestampMs(i: number): number {
    return this.#numbers[3 * i + 1]!;
  }

  value(i: number): number {
    return this.#numbers[3 * i + 2]!;
  }

  series(i: number): SpooledSeries {
    return this.#series[i]!;
  }

  /** The first row's seq (the rows are not empty). */
  get firstSeq(): number {
    return this.seq(0);
  }

  /** The last row's seq (the rows are not empty). */
  get lastSeq(): number {
    return this.seq(this.length - 1);
  }

  /** Rows `start` to `end` (excluded), sharing these rows' numbers. */
  slice(start: number, end = this.length): SpooledRows {
    return new SpooledRows(this.#numbers.subarray(3 * start, 3 * end), this.#series.slice(start, end));
  }

  /** Row `i` as a sample object, its device, metric and labels taken from its series' COPY prefix. */
  sample(i: number): SpooledSample {
    const series = this.series(i);
    const { deviceId, metricId, labelsJson } = copyPrefixParts(series.copyPrefix);
    return {
      seq: this.seq(i),
      timestampMs: this.timestampMs(i),
      value: this.value(i),
      deviceId,
      metricId,
      labels: labelsJson === "{}" ? NO_LABELS : JSON.parse(labelsJson) as Labels,
      spooledSeries: series,
    };
  }

  /** Every row as a sample object. */
  samples(): SpooledSample[] {
    return Array.from({ length: this.length }, (_, i) => this.sample(i));
  }
}
