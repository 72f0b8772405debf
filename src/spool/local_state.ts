/**
 * # Local state kept in the spool's database, next to the samples
 *
 * What the collector must remember across restarts that is not a sample: the last poll and
 * error of each device group (for `status`, written by the collector about once a second) and
 * the last known content of the central `promoted_metrics` table (so that a collector starting
 * while the central database is unreachable polls what was promoted when it was last seen).
 * Device states are written when they changed since this process last wrote them (the first
 * write replaces the table, so devices gone from the configuration go too), at most
 * DEVICE_STATES_PER_WRITE in one transaction: the write runs in the collector's housekeeping tick,
 * on the event loop, and the 5,000 devices of one metrics.d file polled together would otherwise
 * hold it some 40 ms at once. The next write takes the changed states from where the last one
 * stopped, so each gets its turn: with N devices a state is at most N / DEVICE_STATES_PER_WRITE
 * writes old. Promoted metrics are replaced whole at each write, in one transaction. A
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

/**
 * Most device states one write stores (see above): about 8 ms of the event loop at some 8 µs a
 * row, measured under the hostile bench (docs/PERFORMANCE.md `status10`).
 */
export const DEVICE_STATES_PER_WRITE = 1_000;

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
  /** Where the next device state write starts looking for changed states. */
  #cursor = 0;

  constructor(store: SpoolStore) {
    this.#store = store;
  }

  /**
   * Records the latest state of the device groups, for `status`: the changed ones only, at most
   * `limit` of them, taken in turn from where the last write stopped (a collector of 5,000
   * devices polled every 10 s writes some 500 rows a second, in bursts of `limit`). The last
   * write, at stop, passes Infinity.
   */
  writeDeviceStatus(devices: DeviceStatus[], limit = DEVICE_STATES_PER_WRITE): void {
    if (devices.length === 0) return;
    const store = this.#store;
    const first = this.#written === undefined;
    const written = this.#written ?? new WeakMap<DeviceStatus, number | undefined>();
    const changed: DeviceStatus[] = [];
    const start = this.#cursor % devices.length;
    let looked = 0;
    for (; looked < devices.length && changed.length < limit; looked++) {
      const d = devices[(start + looked) % devices.length]!;
      if (!written.has(d) || written.get(d) !== d.lastPollAtMs) changed.push(d);
    }
    this.#cursor = (start + looked) % devices.length;
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
