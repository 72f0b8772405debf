/**
 * # Local state kept in the spool's database, next to the samples
 *
 * What the collector must remember across restarts that is not a sample: the last poll and
 * error of each device group (for `status`, written by the collector about once a second) and
 * the last known content of the central `promoted_metrics` table (so that a collector starting
 * while the central database is unreachable polls what was promoted when it was last seen).
 * Each write leaves the whole set in the database, in one transaction: device states are written
 * when they changed since this process last wrote them (the first write replaces the table, so
 * devices gone from the configuration go too), promoted metrics replaced at each write. A
 * device's state changes with its last poll time (the scheduler records it at each poll, in the
 * same object), so that time is what is remembered of each state object written: a number, not
 * a copy of its state (a collector of 5,000 devices held 5,000 state strings, and made as many a
 * second), and not its key, which is read only when the state is written. Device
 * states are committed without a sync of their own (a power cut may take back their last
 * seconds, never a sample: the next sample commit syncs them too), so that `status` does not
 * cost an fsync a second.
 * (Certificate pins have their own module and connection: tls_pins.ts.)
 */
import type { SpoolStore } from "./store.ts";

export interface DeviceStatus {
  key: string;
  deviceId: string;
  /** The time of the poll that last changed this state: every change comes with a new one. */
  lastPollAtMs: number | undefined;
  lastOkAtMs: number | undefined;
  lastError: string | undefined;
  pollsOk: number;
  pollsFailed: number;
  pollsSkipped: number;
}

/** A row of the central promoted_metrics table (src/central/promoted_metrics.ts). */
type PromotedRow = { deviceId: string; metricId: string | null };

export class LocalState {
  #store: SpoolStore;
  /** The last poll time of each device state this process wrote (undefined: nothing written yet). */
  #written: WeakMap<DeviceStatus, number | undefined> | undefined;

  constructor(store: SpoolStore) {
    this.#store = store;
  }

  /**
   * Records the latest state of each device group, for `status` (one transaction, the changed
   * ones only: a collector of 5,000 devices polled every 10 s writes some 500 rows a second).
   */
  writeDeviceStatus(devices: DeviceStatus[]): void {
    if (devices.length === 0) return;
    const store = this.#store;
    const first = this.#written === undefined;
    const written = this.#written ?? new WeakMap<DeviceStatus, number | undefined>();
    const changed: DeviceStatus[] = [];
    for (const d of devices) {
      if (!written.has(d) || written.get(d) !== d.lastPollAtMs) changed.push(d);
    }
    if (changed.length === 0) return;
    const up = store.statement(
      `INSERT INTO devices(key, device_id, last_poll_at_ms, last_ok_at_ms, last_error, polls_ok, polls_failed, polls_skipped)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(key) DO UPDATE SET device_id = excluded.device_id, last_poll_at_ms = excluded.last_poll_at_ms,
         last_ok_at_ms = excluded.last_ok_at_ms, last_error = excluded.last_error, polls_ok = excluded.polls_ok,
         polls_failed = excluded.polls_failed, polls_skipped = excluded.polls_skipped`,
    );
    store.transaction(() => {
      if (first) store.statement("DELETE FROM devices").run();
      for (const d of changed) {
        up.run(
          d.key,
          d.deviceId,
          d.lastPollAtMs ?? null,
          d.lastOkAtMs ?? null,
          d.lastError ?? null,
          d.pollsOk,
          d.pollsFailed,
          d.pollsSkipped,
        );
      }
    }, { durable: false });
    for (const d of changed) written.set(d, d.lastPollAtMs);
    this.#written = written;
  }

  deviceStatus(): DeviceStatus[] {
    return (this.#store.statement("SELECT * FROM devices ORDER BY key").all() as {
      key: string;
      device_id: string;
      last_poll_at_ms: number | null;
      last_ok_at_ms: number | null;
      last_error: string | null;
      polls_ok: number;
      polls_failed: number;
      polls_skipped: number;
    }[]).map((r) => ({
      key: r.key,
      deviceId: r.device_id,
      lastPollAtMs: r.last_poll_at_ms ?? undefined,
      lastOkAtMs: r.last_ok_at_ms ?? undefined,
      lastError: r.last_error ?? undefined,
      pollsOk: Number(r.polls_ok),
      pollsFailed: Number(r.polls_failed),
      pollsSkipped: Number(r.polls_skipped),
    }));
  }

  /** Replaces the last known content of the central promoted_metrics table. */
  writePromoted(rows: readonly PromotedRow[]): void {
    const store = this.#store;
    const ins = store.statement("INSERT INTO promoted(device_id, metric_id) VALUES (?, ?)");
    store.transaction(() => {
      store.statement("DELETE FROM promoted").run();
      for (const r of rows) ins.run(r.deviceId, r.metricId);
    });
  }

  readPromoted(): PromotedRow[] {
    return (this.#store.statement("SELECT device_id, metric_id FROM promoted").all() as {
      device_id: string;
      metric_id: string | null;
    }[]).map((r) => ({ deviceId: r.device_id, metricId: r.metric_id }));
  }
}
