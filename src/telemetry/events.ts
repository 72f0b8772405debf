import type { ConditionSpec, EventSpec, GaugeSpec } from "./telemetry.ts";

/**
 * The catalogue of everything the collector logs and counts about itself. Metric names follow
 * Prometheus conventions (unit suffix, `_total` for counters); the same names are the metric_id
 * of the telemetry samples stored under device `<edge_id>`.
 */

// Polling (labels: protocol).
export const POLL_OK: EventSpec = {
  counter: "kwollector_polls_total",
  help: "Device poll slots by protocol and result (ok, failed, skipped, missed)",
  labels: { result: "ok" },
  level: "debug",
  message: "Poll done",
};
export const POLL_FAILED: EventSpec = { ...POLL_OK, labels: { result: "failed" }, message: "Poll failed" };
export const POLL_SKIPPED: EventSpec = {
  ...POLL_OK,
  labels: { result: "skipped" },
  message: "Poll slot skipped: the previous poll is still running",
};
export const POLL_MISSED: EventSpec = {
  ...POLL_OK,
  labels: { result: "missed" },
  message: "Poll slots missed: the collector was late",
};
export const SAMPLES_POLLED: EventSpec = {
  counter: "kwollector_samples_polled_total",
  help: "Samples read from devices, by protocol",
  level: "debug",
  message: "Samples polled",
};
export const ENTRY_ERROR: EventSpec = {
  counter: "kwollector_entry_errors_total",
  help: "Metric entries that returned no value in an otherwise successful poll, by protocol",
  level: "debug",
  message: "Metric entry returned no value",
};
export const SAMPLES_LOST: EventSpec = {
  counter: "kwollector_samples_lost_total",
  help: "Polled samples the spool could not store (disk full, I/O error)",
  level: "debug",
  message: "Samples lost: the spool could not store them",
};
export const DEVICE_FAILING: ConditionSpec = {
  name: "device_poll_failing",
  level: "warning",
  started: "Device poll failing",
  ended: "Device poll recovered",
};
export const DEVICE_BEHIND: ConditionSpec = {
  name: "device_behind_schedule",
  level: "warning",
  started: "Device slower than its period: skipping poll slots",
  ended: "Device back on schedule",
};
export const COLLECTOR_LATE: ConditionSpec = {
  name: "collector_late",
  level: "warning",
  started: "Collector late: poll slots missed",
  ended: "Collector back on time",
};
export const ENTRY_FAILING: ConditionSpec = {
  name: "metric_entry_failing",
  level: "warning",
  started: "Metric entry failing",
  ended: "Metric entry recovered",
};
export const SPOOL_WRITE_FAILING: ConditionSpec = {
  name: "spool_write_failing",
  level: "error",
  started: "Samples lost: the spool cannot store them",
  ended: "Spool stores samples again",
};

export const DEVICE_STATUS_UNRECORDED: ConditionSpec = {
  name: "device_status_unrecorded",
  level: "warning",
  started: "Cannot record device status in the spool",
  ended: "Device status recorded in the spool again",
};

/** The troubles of a wattmeter stream; their messages name the wattmeter (the condition's key). */
export function wattmeterConditions(id: string) {
  const condition = (name: string, level: "warning" | "error", started: string, ended: string): ConditionSpec => ({
    name,
    level,
    started: `Wattmeter ${id}: ${started}`,
    ended,
    countsOccurrences: true,
  });
  return {
    malformed: condition(
      "wattmeter_lines_malformed",
      "warning",
      "dropping malformed lines",
      "Wattmeter lines well-formed again",
    ),
    notOk: condition("wattmeter_lines_not_ok", "warning", "dropping lines not marked OK", "Wattmeter lines OK again"),
    gaps: condition(
      "wattmeter_seconds_missing",
      "warning",
      "seconds missing from the stream",
      "Wattmeter stream continuous again",
    ),
    backwards: condition(
      "wattmeter_time_backwards",
      "warning",
      "time went backwards",
      "Wattmeter time moving forward again",
    ),
    spoolFailing: condition(
      "wattmeter_spool_write_failing",
      "error",
      "samples lost, the spool could not store them",
      "Wattmeter samples stored again",
    ),
  };
}

// Forwarding.
export const ROWS_FORWARDED: EventSpec = {
  counter: "kwollector_rows_forwarded_total",
  help: "Samples committed to the central database",
  level: "debug",
  message: "Batch forwarded",
};
export const ROWS_QUARANTINED: EventSpec = {
  counter: "kwollector_rows_quarantined_total",
  help: "Samples the central database rejected, kept in the spool's quarantine table",
  level: "warning",
  message: "Sample rejected by the central database: quarantined",
};
export const ROWS_RECONCILED: EventSpec = {
  counter: "kwollector_rows_reconciled_total",
  help: "Samples found already committed centrally (lost acknowledgement) and removed from the spool",
  level: "info",
  message: "Reconciled spool with the central ledger: removed samples already committed",
};
export const FORWARD_FAILED: EventSpec = {
  counter: "kwollector_forward_failures_total",
  help: "Forward attempts that failed (connection, timeout, server error); each is retried",
  level: "debug",
  message: "Forward attempt failed",
};
export const ACK_LOST: EventSpec = {
  counter: "kwollector_acknowledgements_lost_total",
  help: "Batches committed centrally whose acknowledgement was lost; found in the ledger, not re-sent",
  level: "info",
  message: "Batch was already committed (acknowledgement lost); reconciling",
};
export const CLAIMED_ELSEWHERE: EventSpec = {
  counter: "kwollector_batches_claimed_elsewhere_total",
  help: "Batches another process (a concurrent flush) forwarded first; found in the ledger, not re-sent",
  level: "info",
  message: "Batch already forwarded by another process (a concurrent flush); reconciling",
};
export const CENTRAL_UNREACHABLE: ConditionSpec = {
  name: "central_unreachable",
  level: "warning",
  started: "Central database unreachable; samples are kept in the spool",
  ended: "Central database reachable again; forwarding the backlog",
};
export const SPOOL_REFUSES_FORWARDER: ConditionSpec = {
  name: "spool_refuses_forwarder",
  level: "error",
  started: "Spool refuses the forwarder (disk or I/O error): forwarded samples stay in it until it accepts",
  ended: "Spool accepts the forwarder again",
};
export const CENTRAL_REFUSES: ConditionSpec = {
  name: "central_refuses_collector",
  level: "error",
  started: "Central database refuses the collector; samples are kept in the spool until fixed",
  ended: "Central database accepts the collector again",
};
export const CENTRAL_LOCK_WAIT: ConditionSpec = {
  name: "central_lock_wait",
  level: "warning",
  started: "Central database lock held by another session; retrying",
  ended: "Central database lock free again; forwarding",
  countsOccurrences: true,
};
export const BACKLOG_DRAINING: ConditionSpec = {
  name: "backlog_draining",
  level: "info",
  started: "Draining the backlog: new samples go first, the backlog is paced",
  ended: "Backlog drained",
};
export const CENTRAL_SLOW: ConditionSpec = {
  name: "central_slow",
  level: "info",
  started: "Central database slow: backfill batches reduced and paused",
  ended: "Central database fast again: backfill batches back to full size and pace",
};

// The spool.
export const ROWS_DROPPED: EventSpec = {
  counter: "kwollector_rows_dropped_total",
  help: "Samples given up by the full-spool policy, by policy (drop_oldest, drop_newest)",
  level: "debug",
  message: "Spool full: samples dropped",
};
export const SEQS_REUSED: EventSpec = {
  counter: "kwollector_seq_renumberings_total",
  help: "Times the spool had lost commits it had already forwarded and its new seqs were moved past the ledger's",
  level: "error",
  message: "Spool lost commits it had already forwarded (write-ahead log lost or damaged): " +
    "new samples renumbered after the central ledger's, the lost range recorded as dropped",
};
export const SPOOL_UNAVAILABLE: ConditionSpec = {
  name: "spool_unavailable",
  level: "error",
  started: "Spool cannot be opened: the disk or the operating system refuses; retrying in place, " +
    "nothing is polled until it opens",
  ended: "Spool opened",
};
export const SPOOL_SALVAGE_PENDING: ConditionSpec = {
  name: "spool_salvage_pending",
  level: "error",
  started: "A spool moved aside cannot be salvaged yet (the disk or the operating system refuses); " +
    "it is kept and retried",
  ended: "Spool moved aside salvaged: it is being forwarded",
};
export const SPOOL_FILE_LOST: ConditionSpec = {
  name: "spool_file_lost",
  level: "error",
  started: "Spool file was deleted or replaced while kwollector runs; writing it back",
  ended: "Spool file written back: no sample lost",
};
export const SPOOL_FULL: ConditionSpec = {
  name: "spool_full",
  level: "error",
  started: "Spool full: samples are being dropped",
  ended: "Spool has room again",
};

// The wall clock.
export const CLOCK_STEPPED: EventSpec = {
  counter: "kwollector_clock_steps_total",
  help: "Steps of the wall clock of more than a second (NTP, an operator); sample timestamps follow it",
  level: "warning",
  message: "Wall clock stepped: sample timestamps follow the new time",
};

// Gauges set by the health sampler.
export const SPOOL_ROWS: GaugeSpec = { name: "kwollector_spool_rows", help: "Samples in the spool, not yet forwarded" };
export const SPOOL_BYTES: GaugeSpec = { name: "kwollector_spool_bytes", help: "Bytes used by the spool's data" };
export const SPOOL_FREE_BYTES: GaugeSpec = {
  name: "kwollector_spool_free_bytes",
  help: "Bytes the spool may still grow: the rest of spool_max_bytes, or less if the disk is fuller",
};
export const OLDEST_UNSENT_AGE: GaugeSpec = {
  name: "kwollector_oldest_unsent_age_seconds",
  help: "Age of the oldest sample not yet forwarded (0 when the spool is empty)",
};
export const INGEST_RATE: GaugeSpec = {
  name: "kwollector_ingest_samples_per_second",
  help: "Samples written to the spool per second, over the last telemetry interval",
};
export const OUTAGE_BUDGET: GaugeSpec = {
  name: "kwollector_outage_budget_hours",
  help: "Hours of central outage the free spool budget still covers at the current ingest rate",
};
export const LAST_FORWARD_AGE: GaugeSpec = {
  name: "kwollector_last_forward_age_seconds",
  help: "Time since the last batch was committed to the central database",
};

export const CONDITIONS: readonly ConditionSpec[] = [
  DEVICE_FAILING,
  DEVICE_BEHIND,
  COLLECTOR_LATE,
  ENTRY_FAILING,
  SPOOL_WRITE_FAILING,
  DEVICE_STATUS_UNRECORDED,
  CENTRAL_UNREACHABLE,
  CENTRAL_REFUSES,
  SPOOL_REFUSES_FORWARDER,
  CENTRAL_LOCK_WAIT,
  BACKLOG_DRAINING,
  CENTRAL_SLOW,
  SPOOL_FULL,
  SPOOL_UNAVAILABLE,
  SPOOL_SALVAGE_PENDING,
  SPOOL_FILE_LOST,
];
