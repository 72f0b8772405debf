import type { MetricEntry } from "../config/metrics_dir.ts";
import { type Labels, type SeriesIdentity, seriesProblem } from "../sample.ts";

/**
 * # Series identity, computed once per series instead of once per sample
 *
 * A source that can name the series of a reading cheaply sets `Reading.seriesKey` (Prometheus:
 * the raw `name{labels}` text of the line; SNMP: "" as the entry is the series). For one entry, the
 * same key always gives the same metric id and labels: the identity (labels merged under the
 * entry's, their JSON, the spool's key, the per-poll key, the storability check) is built at the
 * first sample and reused by every later one, so a known series costs a map lookup.
 *
 * Bounded: a group keeps at most `max` identities. When it is full, identities not used in the
 * last two polls are swept out (once per poll at most); if it is still full (a device with more live series than the
 * bound), a new series gets an identity for this sample only, uncached, so the cache never
 * thrashes and never grows. An identity is derived data: dropping one costs only its recompute
 * (the spool's series dictionary stays the truth for series ids, src/spool/writer.ts).
 */
/**
 * Identities a poll group keeps: as many as one scrape may yield by default
 * (`prometheus_max_series`), about 300 bytes each.
 */
export const SERIES_IDENTITIES_PER_GROUP = 50_000;

export class SeriesIdentities {
  #max: number;
  #byEntry = new Map<MetricEntry, Map<string, { identity: SeriesIdentity; usedInPoll: number }>>();
  #size = 0;
  #poll = 0;
  /** A sweep frees what it can for the whole poll: at most one per poll. */
  #sweptInPoll = -1;

  constructor(max: number) {
    this.#max = max;
  }

  /** Identities in the cache (for tests and telemetry). */
  get size(): number {
    return this.#size;
  }

  /** Marks the start of a poll: identities used since are the live ones. */
  nextPoll(): void {
    this.#poll++;
  }

  /** The identity of the series `seriesKey` of `entry`, whose metric id and labels `build` gives when it is new. */
  of(entry: MetricEntry, seriesKey: string, build: () => { metricId: string; labels: Labels }): SeriesIdentity {
    let ofEntry = this.#byEntry.get(entry);
    const known = ofEntry?.get(seriesKey);
    if (known) {
      known.usedInPoll = this.#poll;
      return known.identity;
    }
    const { metricId, labels } = build();
    const identity = makeIdentity(entry.deviceId, metricId, labels);
    if (this.#size >= this.#max && this.#sweptInPoll !== this.#poll) this.#sweep();
    if (this.#size < this.#max) {
      if (!ofEntry) this.#byEntry.set(entry, ofEntry = new Map());
      ofEntry.set(seriesKey, { identity, usedInPoll: this.#poll });
      this.#size++;
    }
    return identity;
  }

  #sweep(): void {
    this.#sweptInPoll = this.#poll;
    for (const [entry, ofEntry] of this.#byEntry) {
      for (const [key, cached] of ofEntry) {
        if (cached.usedInPoll < this.#poll - 1) {
          ofEntry.delete(key);
          this.#size--;
        }
      }
      if (ofEntry.size === 0) this.#byEntry.delete(entry);
    }
  }
}

/** Builds the identity of a series; its labels object is frozen, since every sample shares it. */
export function makeIdentity(deviceId: string, metricId: string, labels: Labels): SeriesIdentity {
  const { problem, json } = seriesProblem(deviceId, metricId, labels);
  const labelsJson = json ?? "";
  const key = `${deviceId}\u0000${metricId}\u0000${labelsJson}`;
  const names = Object.keys(labels);
  const sorted = names.every((name, i) => i === 0 || names[i - 1]! < name);
  // Most exporters sort their labels: the spool's key is then the per-poll key too (one string).
  const pollKey = sorted || problem !== undefined
    ? key
    : `${deviceId}\u0000${metricId}\u0000${
      JSON.stringify(Object.fromEntries(names.sort().map((name) => [name, labels[name]])))
    }`;
  return { deviceId, metricId, labels: Object.freeze(labels), labelsJson, key, pollKey, problem };
}
