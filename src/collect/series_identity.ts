import type { MetricEntry } from "../config/metrics_dir.ts";
import { BoundedCache } from "../bounded_cache.ts";
import { type Labels, type SeriesIdentity, seriesProblem } from "../sample.ts";

/**
 * # Series identity, computed once per series instead of once per sample
 *
 * A source that can name the series of a reading cheaply sets `Reading.seriesKey` (Prometheus:
 * the raw `name{labels}` text of the line; SNMP: "" as the entry is the series). For one entry, the
 * same key always gives the same metric id and labels: the identity (labels merged under the
 * entry's, their JSON, the spool's key, the per-poll key, the storability check) is built at the
 * first sample and reused by every later one, so a known series costs a map lookup. The key is
 * kept as the source gave it, a string of its own (the Prometheus parser's `KnownSeries.text`):
 * copying it again was a second string per cached series.
 *
 * Bounded: each entry keeps at most SERIES_IDENTITIES_PER_ENTRY identities (src/bounded_cache.ts:
 * series gone from the device are swept out, and a series past the bound gets no identity, its
 * samples are built as without one). An entry that has had one series at a time keeps it in a
 * slot, not a cache of its own (`OnlySeries`): a file of 5,000 devices costs 5,000 slots. An
 * identity is derived data: dropping one costs only its recompute (the spool's series dictionary
 * stays the truth for series ids, src/spool/writer.ts). An entry whose readings no longer name their
 * series (a Prometheus exporter too large for its source's cache, see SeriesTexts) gives its cache
 * up after two polls.
 *
 * One object per series in a group: two entries of one device that select the same series, or one
 * entry's two series texts that name the same labels in another order, share the identity of the
 * same `pollKey` while any slot or cache of the group holds it (`#byPollKey`, a count of holders
 * each). So the per-poll duplicate check is a stamp on the identity (`seenInPoll`), not a set of
 * keys built each poll.
 */

/** Identities an entry keeps (about 400 bytes each): a device with more series is partly cached. */
export const SERIES_IDENTITIES_PER_ENTRY = 10_000;

/**
 * The one series an entry has had so far, with the last poll that used it. Most entries have one
 * (an SNMP OID, a Modbus register, a metric of a file of 5,000 devices): a cache with a hash table
 * of its own costs about 500 bytes (measured in a heap snapshot of the hostile bench), this
 * costs a slot. An entry's second live series turns it into a BoundedCache.
 */
interface OnlySeries {
  key: string;
  identity: HeldIdentity;
  usedInPoll: number;
}

/** An identity as the cache of one group holds it: with the number of its slots and caches holding it. */
interface HeldIdentity extends SeriesIdentity {
  holders: number;
}

/** The labels of a series that has none: one frozen object shared by all of them. */
const NO_LABELS: Labels = Object.freeze({});

export class SeriesIdentities {
  #max: number;
  #poll = 0;
  #onlySeries = new Map<MetricEntry, OnlySeries>();
  #byEntry = new Map<MetricEntry, BoundedCache<string, HeldIdentity>>();
  /** Every identity a slot or a cache holds, by its pollKey: the group's one object per series. */
  #byPollKey = new Map<string, HeldIdentity>();
  #release = (identity: HeldIdentity): void => {
    if (--identity.holders === 0) this.#byPollKey.delete(identity.pollKey);
  };

  constructor(maxPerEntry = SERIES_IDENTITIES_PER_ENTRY) {
    this.#max = maxPerEntry;
  }

  /** The current poll (see `nextPoll`): the stamp of the samples it takes (`seenInPoll`). */
  get poll(): number {
    return this.#poll;
  }

  /** The identity held for the series of `pollKey`, if any (a sample without one checks its stamp). */
  byPollKey(pollKey: string): SeriesIdentity | undefined {
    return this.#byPollKey.get(pollKey);
  }

  /** Identities in the cache (for tests). */
  get size(): number {
    let n = this.#onlySeries.size;
    for (const cache of this.#byEntry.values()) n += cache.size;
    return n;
  }

  /** Marks the start of a poll: identities used since are the live ones. */
  nextPoll(): void {
    this.#poll++;
    for (const [entry, cache] of this.#byEntry) {
      cache.nextRound();
      // Its source no longer names the entry's series (seriesKey): the identities go, not only
      // when another series needs their room.
      if (cache.idle) {
        cache.clear();
        this.#byEntry.delete(entry);
      }
    }
  }

  /**
   * The identity of the series `seriesKey` of `entry`, whose metric id is `metricId` and whose
   * labels are the device's `deviceLabels` merged under the entry's; undefined when the entry has
   * no room left for it. (Plain arguments, not a callback: this runs for every sample, and a
   * closure per call was a measurable share of the collector's garbage.)
   */
  of(
    entry: MetricEntry,
    seriesKey: string,
    metricId: string,
    deviceLabels: Labels | undefined,
  ): SeriesIdentity | undefined {
    const cache = this.#byEntry.get(entry);
    if (cache) {
      const known = cache.get(seriesKey);
      if (known || !cache.hasRoom()) return known;
      const identity = this.#held(entry, metricId, deviceLabels);
      cache.set(seriesKey, identity);
      return identity;
    }
    const only = this.#onlySeries.get(entry);
    if (only?.key === seriesKey) {
      only.usedInPoll = this.#poll;
      return only.identity;
    }
    // As a BoundedCache sweeps: a series not used during the last two polls gives its place up.
    if (!only || only.usedInPoll < this.#poll - 1) {
      const identity = this.#held(entry, metricId, deviceLabels);
      if (only) this.#release(only.identity);
      this.#onlySeries.set(entry, { key: seriesKey, identity, usedInPoll: this.#poll });
      return identity;
    }
    if (this.#max < 2) return undefined;
    const identity = this.#held(entry, metricId, deviceLabels);
    const grown = new BoundedCache<string, HeldIdentity>(this.#max, this.#release);
    grown.set(only.key, only.identity);
    grown.set(seriesKey, identity);
    this.#onlySeries.delete(entry);
    this.#byEntry.set(entry, grown);
    return identity;
  }

  /** The group's identity of the series, one more holder of it (made when the group holds none). */
  #held(entry: MetricEntry, metricId: string, deviceLabels: Labels | undefined): HeldIdentity {
    const made = identityOf(entry, metricId, deviceLabels);
    const identity = this.#byPollKey.get(made.pollKey) ?? made;
    if (identity === made) this.#byPollKey.set(made.pollKey, made);
    identity.holders++;
    return identity;
  }
}

function identityOf(entry: MetricEntry, metricId: string, deviceLabels: Labels | undefined): HeldIdentity {
  // An entry without labels of its own shares the reading's labels when nobody can change them
  // (a Prometheus series' parsed labels, frozen): one object per series instead of two.
  const shared = deviceLabels !== undefined && Object.isFrozen(deviceLabels) && Object.keys(entry.labels).length === 0;
  const labels = shared ? deviceLabels : { ...deviceLabels, ...entry.labels };
  return makeIdentity(entry.deviceId, metricId, Object.keys(labels).length > 0 ? labels : NO_LABELS);
}

/**
 * The key of a series in the duplicate check of one poll (scheduler.ts `PollSamples`), for its
 * samples at the poll's time: device, metric and the labels' JSON with their names sorted. An
 * identity holds it as `pollKey`, and a sample without an identity (its entry's cache full, a
 * string value) is keyed by the same text, so that two entries of one device selecting the same
 * series yield one sample whether or not each has it cached.
 */
export function pollKeyOf(deviceId: string, metricId: string, labels: Labels): string {
  const names = Object.keys(labels).sort();
  return `${deviceId}\u0000${metricId}\u0000${JSON.stringify(Object.fromEntries(names.map((n) => [n, labels[n]])))}`;
}

/** Builds the identity of a series; its labels object is frozen, since every sample shares it. */
export function makeIdentity(deviceId: string, metricId: string, labels: Labels): HeldIdentity {
  const { problem, json } = seriesProblem(deviceId, metricId, labels);
  const head = `${deviceId}\u0000${metricId}\u0000`;
  const key = head + (json ?? "");
  const names = Object.keys(labels);
  const sorted = names.every((name, i) => i === 0 || names[i - 1]! < name);
  // Most exporters sort their labels: the spool's key is then the per-poll key too (one string).
  const pollKey = sorted && json !== undefined ? key : pollKeyOf(deviceId, metricId, labels);
  return {
    deviceId,
    metricId,
    labels: Object.freeze(labels),
    key,
    pollKey,
    problem,
    spool: undefined,
    seenInPoll: -1,
    holders: 0,
  };
}
