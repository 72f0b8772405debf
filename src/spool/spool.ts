/**
 * # The spool: every sample is written here first
 *
 * ## Invariants
 *
 * 1. **Acknowledged means durable.** `writer.append()` resolves only after the SQLite transaction that
 *    holds the samples has committed with `synchronous=FULL` (the default; `normal` is an opt-in
 *    that may lose the last commit on a power cut, never on a process crash). Commits are grouped:
 *    at most one per `commitIntervalMs`, so fsyncs stay ≤ 1000/commitIntervalMs per second at any
 *    load.
 * 2. **Sequence numbers are never reused.** Each sample gets the next `seq`, strictly increasing in
 *    commit order. `meta.next_seq` is written in the same transaction as the samples, so a spool
 *    emptied by forwarding, reopened, or rebuilt by salvage continues after the last seq it ever
 *    gave. A spool has an id of its own (`meta.spool_id`, a UUID created with it); (spool id, seq)
 *    names one sample for ever.
 * 3. **Rows leave only after the central commit that contains them.** `lease.removeForwarded()` is
 *    called by the forwarder after the central transaction holding those seqs (and their ledger row)
 *    committed. A crash between the two leaves the rows here; the forwarder's reconciliation with
 *    the central ledger removes them before anything is re-sent. So the removal is committed
 *    without an fsync of its own: a power cut may undo it (and only it and what followed it, never
 *    a sample commit before it; the next sample commit syncs it), which leaves the same rows here
 *    as a crash before it, and the same reconciliation removes them.
 * 4. **Every seq is accounted for.** A seq is either still here, forwarded (central ledger row of
 *    kind `data`), set aside in `quarantine` (ledger kind `quarantined`), or given up under the
 *    full-spool policy (a `gaps` row, forwarded as ledger kind `dropped`). So the central ledger
 *    of a spool tiles 1..next_seq-1 without holes once the spool is drained. `lease.readRows()` returns
 *    a run of consecutive seqs, so the ledger range of a batch never covers a seq that left another
 *    way.
 * 5. **Bounded.** The bytes in use never exceed `maxBytes` by more than one commit; when they would,
 *    the policy (`drop_oldest` or `drop_newest`) applies, is logged as an error and counted.
 * 6. **One writer; forwarders next to it; the ledger arbitrates.** Only the writer (`run`,
 *    `wattmetre`, through `openSpool()`) appends, assigns and moves seqs, applies the full policy,
 *    collects garbage and keeps the local state. It holds an exclusive lock on `<spool>.lock` for
 *    its lifetime, so there is at most one. `flush` opens a lease without the writer
 *    (`openSpoolLease()`): in a second process, next to a running writer, it reads, removes
 *    forwarded rows, quarantines and reports gaps. Two things make that safe, and nothing else:
 *    - **SQLite's locking.** Every change, in either process, is one `BEGIN IMMEDIATE`
 *      transaction (one connection changes the file at a time; the other waits, up to its
 *      busy_timeout of 10 s), and the rows counter is read back as committed inside it, so the
 *      two processes' changes compose. A view (`status`, `openSpoolView()`) reads a WAL snapshot.
 *    - **The central ledger.** A row leaves only after the ledger holds its seq (invariant 3),
 *      and `kwollect_claim` admits a seq range once, under the spool's advisory lock: when both
 *      processes send the same rows, one claim succeeds and the other returns false, and the
 *      loser reconciles (removes what the ledger holds) instead of sending again. No seq is sent
 *      twice; none is removed unsent.
 *
 *    The leases (lease.ts) live in one process. They keep the writer's drop_oldest away from the
 *    batches its own process's forwarder has in flight; they do not protect `flush`'s batch. The
 *    writer may then drop rows `flush` is sending and record them as a gap: `flush`'s claim is
 *    free, so its batch lands, and then either its removal forgets the gap (the gap lies inside
 *    the delivered range), or the writer's forwarder finds its claim of the gap refused and
 *    records as dropped only the parts the ledger does not hold. The ledger still tiles without
 *    overlap, and what was delivered is not counted as dropped. What the leases cannot cover:
 *    the check for reused seqs (see Recovery) runs in the writer's forwarder before its first
 *    reconciliation; a `flush` that reconciles first, after the spool lost its write-ahead log,
 *    takes the new samples at reused seqs for the old ones and removes them. And each process
 *    caches the series dictionary for itself: a series the writer's garbage collection deleted
 *    may see its id given again to a new series, which a long-running `flush` that cached the
 *    old one would misname. Run `flush` with the writer stopped when either matters.
 *
 * ## On-disk format (SQLite, WAL mode, `PRAGMA user_version` = SCHEMA_VERSION)
 *
 * - `meta(key, value)`: spool_id, epoch_ms (origin of sample timestamps), next_seq, rows,
 *   created_at_ms, last_forward_at_ms.
 * - `series(id, device_id, metric_id, labels, last_seq)`: dictionary of (device, metric, labels
 *   JSON). `last_seq` is a lower bound of the last seq that uses the series, kept within
 *   SERIES_SEQ_SLACK of the truth so garbage collection never removes a series still in use.
 * - `samples(seq INTEGER PRIMARY KEY, series, ts, value)`: `ts` in microseconds since
 *   `meta.epoch_ms` (6-byte integers for 4 years), `value` REAL with NaN stored as NULL. About
 *   25–30 bytes per sample on disk.
 * - `gaps(first_seq, last_seq, rows, reason, at_ms)`: ranges given up when the spool was full.
 * - `quarantine(seq, ..., reported)`: samples the central database rejected, with the reason;
 *   `reported` once the central ledger has a `quarantined` row for the seq.
 * - `devices(key, ...)`: last poll and error per device group, for `status`.
 * - `promoted(device_id, metric_id)`: last known content of the central promoted_metrics.
 * - `tls_pins(endpoint, fingerprint256, ...)`: certificates pinned for https metric urls; created
 *   and kept by tls_pins.ts over its own connection, not by this module.
 *
 * ## Recovery
 *
 * At open, `PRAGMA quick_check` runs. What fails is told apart (errors.ts):
 *
 * - **The disk or the OS refused** (full disk, I/O error, permission, read-only file system):
 *   the file may be perfectly sound. `openSpool()` throws a `refused` SpoolError and touches
 *   nothing; the caller retries in place, logging the path.
 * - **The file is damaged** (fails the check, is not a database): it is moved aside and a new
 *   spool (with a new id) starts at once, so a damaged spool never causes a crash loop. The file
 *   moved aside is salvaged into a retired spool with its own id and seqs and forwarded like this
 *   one, exactly once, salvage retried until it succeeds (aside.ts).
 *
 * While the collector runs, `writer.fileState()` tells whether the spool file was deleted or
 * replaced under it; `writer.restoreFile()` writes the open database back to its path (a
 * replacement is moved aside and drained as a retired spool), so its unsent samples are not lost
 * when it stops.
 *
 * A spool that lost its latest commits (its write-ahead log deleted or damaged, a power cut under
 * `synchronous=normal`) reopens with an older next seq and hands out seqs the central ledger
 * already holds for other samples. Before its first reconciliation, the writer's forwarder asks
 * the ledger (src/forward/ledger.ts); `writer.renumberAfter()` then moves the new samples past the
 * ledger's last seq and records the seqs in between as a gap.
 *
 * ## Ports: what a caller may do is its type
 *
 * This module opens the spool and hands out ports, one file each beneath it:
 *
 * - `openSpool()` (the collector: `run`, `wattmetre`): the store with its writer lock
 *   (store.ts: the file, schema, checks on open, meta), the `writer` (writer.ts: group commit,
 *   series dictionary, full policy, renumbering), the `lease` of this process's forwarders
 *   (lease.ts: read, acknowledge, quarantine, gaps; it reads the writer's last commits from
 *   memory, fresh_rows.ts), the `state` (local_state.ts: device status, promotions) and a `view`.
 * - `openSpoolLease()` (`flush`, the forwarder of retired spools): a `lease` and a `view`, no
 *   writer, no lock (invariant 6).
 * - `openSpoolView()` (`status`): a read-only `view`.
 */

import type { Clock } from "../clock.ts";
import type { Telemetry } from "../telemetry/telemetry.ts";
import { type DeviceStatus, LocalState } from "./local_state.ts";
import { LeaseTable, type SpooledSample, SpoolLease } from "./lease.ts";
import type { SpooledRows } from "./spooled_rows.ts";
import { type SpoolStats, SpoolStore } from "./store.ts";
import { FreshRows } from "./fresh_rows.ts";
import { type FullPolicy, SpoolWriter } from "./writer.ts";

export type { DeviceStatus } from "./local_state.ts";
export type { GapRange, OwnSeqs, SpooledSample, SpoolLease } from "./lease.ts";
export type { SpooledRows, SpooledSeries } from "./spooled_rows.ts";
export type { LocalState } from "./local_state.ts";
export type { SpoolStats } from "./store.ts";
export type { FullPolicy, SpoolWriter, WriterCounters } from "./writer.ts";
export { SAMPLE_BYTES_ESTIMATE } from "./writer.ts";

export interface SpoolOptions {
  path: string;
  maxBytes: number;
  fullPolicy: FullPolicy;
  synchronous: "full" | "normal";
  commitIntervalMs: number;
  /** Where samples dropped by the full-spool policy are logged and counted. */
  telemetry?: Telemetry;
  /** The clock of the group commit's timer. */
  clock?: Clock;
}

/** The collector's spool: its one writer, and every port. */
export interface Spool {
  readonly path: string;
  readonly spoolId: string;
  writer: SpoolWriter;
  lease: SpoolLease;
  state: LocalState;
  view: SpoolView;
  /** Commits what is queued, then closes the database and releases the writer lock. */
  close(): void;
}

/** A spool forwarded without its writer (`flush`, retired spools). */
export interface LeasedSpool {
  readonly path: string;
  readonly spoolId: string;
  lease: SpoolLease;
  view: SpoolView;
  close(): void;
}

/**
 * Opens (creating if needed) the spool at `opts.path` for its one writer. A damaged spool is
 * moved aside and salvaged; the returned spool is always usable. Throws a `refused` SpoolError
 * when the disk or the OS refuses, and an error naming the holder when another writer holds it.
 */
export function openSpool(opts: SpoolOptions): Spool {
  const store = SpoolStore.openForWriting(opts);
  const leases = new LeaseTable();
  const fresh = new FreshRows(() => store.dataVersion());
  const writer = new SpoolWriter(store, leases, fresh, opts);
  return {
    path: store.path,
    spoolId: store.spoolId,
    writer,
    lease: new SpoolLease(store, leases, writer, fresh),
    state: new LocalState(store),
    view: new SpoolView(store),
    close() {
      writer.close();
      store.close();
    },
  };
}

/** Opens an existing spool for forwarding next to its writer (invariant 6); NotFound when missing. */
export function openSpoolLease(path: string): LeasedSpool {
  const store = SpoolStore.openShared(path, { readOnly: false });
  return {
    path,
    spoolId: store.spoolId,
    lease: new SpoolLease(store, new LeaseTable()),
    view: new SpoolView(store),
    close: () => store.close(),
  };
}

/** Opens an existing spool read only (`status`); NotFound when missing. */
export function openSpoolView(path: string): { view: SpoolView; close(): void } {
  const store = SpoolStore.openShared(path, { readOnly: true });
  return { view: new SpoolView(store), close: () => store.close() };
}

/** What can be read of a spool without changing it. */
export class SpoolView {
  #store: SpoolStore;
  /** Reads through a lease of its own, so that nothing it reads is leased in the writer. */
  #reader: SpoolLease;
  #state: LocalState;

  constructor(store: SpoolStore) {
    this.#store = store;
    this.#reader = new SpoolLease(store, new LeaseTable());
    this.#state = new LocalState(store);
  }

  get spoolId(): string {
    return this.#store.spoolId;
  }

  get path(): string {
    return this.#store.path;
  }

  stats(): SpoolStats {
    return this.#store.stats();
  }

  /** Samples in the spool, as committed. */
  rowCount(): number {
    return this.#store.committedRows();
  }

  usedBytes(): number {
    return this.#store.usedBytes();
  }

  /** One run of consecutive seqs after `afterSeq` (see lease.ts `readRows()`), leasing nothing. */
  readRows(afterSeq: number, limit: number): SpooledRows {
    return this.#reader.readRows(afterSeq, limit);
  }

  /** The rows of `readRows`, as sample objects. */
  read(afterSeq: number, limit: number): SpooledSample[] {
    return this.#reader.read(afterSeq, limit);
  }

  deviceStatus(): DeviceStatus[] {
    return this.#state.deviceStatus();
  }
}
