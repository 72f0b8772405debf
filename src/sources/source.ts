import type { MetricEntry } from "../config/metrics_dir.ts";
import type { Config, ConfigKey } from "../config/defaults.ts";
import type { Labels, RawValue } from "../sample.ts";
import type { TlsPins } from "../spool/tls_pins.ts";

/**
 * The small interface every protocol implements. One Source serves one poll group: the entries
 * that share a protocol, a device endpoint (host, port, credentials) and an update period, and so
 * are fetched by one request per cycle.
 */
export interface Source {
  /**
   * Fetches the current value of `entries` (the group's entries active this cycle). Throws when
   * the whole device failed (unreachable, timeout, authentication); returns per-entry errors for
   * entries that failed alone. Must stop promptly when `signal` aborts.
   *
   * A source whose answer can be large (a Prometheus exporter) may hand its readings over as it
   * reads them, in parts, through `handOver`, and wait for each before it reads on: what it holds
   * of a poll is then one part, not the whole answer. Readings handed over are no longer in the
   * result; they are kept even when the poll fails afterwards (they were read from the device).
   * Without `handOver`, or for a source that does not use it, the result holds every reading.
   */
  poll(entries: readonly MetricEntry[], signal: AbortSignal, handOver?: HandOver): Promise<PollResult>;
  /** Releases connections, sessions and child processes. */
  close(): Promise<void>;
}

/** A value read for one entry. */
export interface Reading {
  entry: MetricEntry;
  value: RawValue;
  /** Metric id when it differs from `entry.name` (Prometheus `prom_<name>`, `_metric_id`). */
  metricId?: string;
  /** Labels from the device (Prometheus labels), merged under the entry's configured labels. */
  labels?: Labels;
  /** Timestamp from the device (exposition timestamp, `_timestamp`), ms since the epoch. */
  timestampMs?: number;
  /**
   * Names the series among the entry's readings, when the source can do so cheaply: readings of
   * one entry with the same key always have the same metric id and labels, so their series
   * identity is computed once (src/collect/series_identity.ts). A string of its own, not a slice of
   * a larger text (see `ownCopy`): the identities keep it as their key, as it is.
   */
  seriesKey?: string;
}

export interface EntryError {
  entry: MetricEntry;
  message: string;
  /** What of the entry failed, when not all of it (a metric id): each is logged on its own. */
  subject?: string;
}

/**
 * Takes a part of a poll's readings (the array is the taker's from then on); the source waits for
 * the promise before it reads more of the answer, so a part is what a poll holds at a time.
 */
export type HandOver = (readings: Reading[]) => Promise<void>;

export interface PollResult {
  readings: Reading[];
  errors: EntryError[];
}

/** What a protocol's sources are given of the configuration: the keys it declares, and no other. */
export type ProtocolOptions<K extends ConfigKey> = Readonly<Pick<Config, K>>;

/** Where a poll group's source runs: its timeout and the certificates pinned for https urls. */
export interface PollContext {
  /** Timeout of one poll of this group (`poll_timeout_ms`). */
  timeoutMs: number;
  /** Certificates pinned for https urls (tofu); a private, in-memory set when absent. */
  tlsPins?: TlsPins;
}

export interface SourceContext<K extends ConfigKey = never> extends PollContext {
  /** The protocol's configuration keys (`configKeys`) and their values. */
  options: ProtocolOptions<K>;
}

/**
 * One line of the registry: how a URL scheme is validated, grouped and polled. `K` is the set of
 * configuration keys the protocol reads: its sources are given those (resolved once, by
 * `buildGroups`) and cannot name any other.
 */
export interface Protocol<K extends ConfigKey = ConfigKey> {
  /** The configuration keys the protocol reads (each named after the protocol, e.g. `snmp_retries`). */
  readonly configKeys: readonly K[];
  /** Checks an entry before any network access; returns an error message naming what is wrong. */
  validate(entry: MetricEntry, options: ProtocolOptions<K>): string | undefined;
  /**
   * Entries with the same key (and period) are polled by one request. It must include everything
   * that selects the device endpoint: host, port, credentials, protocol options.
   */
  groupKey(entry: MetricEntry): string;
  /** Human-readable name of the endpoint, without credentials (for logs and status). */
  endpoint(entry: MetricEntry): string;
  create(entries: readonly MetricEntry[], ctx: SourceContext<K>): Source;
}
