import { errorMessage } from "../log.ts";
import type { SpooledSample } from "../spool/spool.ts";
import { CopyEncoder, copyFloat, copyPrefix, copyPrefixParts, copyTimestamp, recycleCopyChunks } from "./copy_text.ts";
import { failpoint } from "./failpoint.ts";
import type { BatchClaim, Transaction } from "./ledger.ts";

/**
 * # Writing a batch's rows into `metrics`, and the postgres.js defects worked around
 *
 * A batch is encoded once, before its transaction begins, and written inside it, after its
 * ledger claim (ledger.ts), by one of two methods (`forward_method`):
 *
 * - `copy` (the default): `COPY metrics (...) FROM STDIN` in PostgreSQL's text format
 *   (copy_text.ts), encoded to UTF-8 bytes once, in chunks of about 64 KiB, the rows grouped by
 *   series (`encodeBySeries`).
 * - `insert`: one `INSERT ... SELECT FROM unnest(...)` of text arrays cast on the server, the same
 *   text forms COPY uses, so that both methods store the same values (microsecond timestamps,
 *   NaN and ±Infinity, labels as jsonb).
 *
 * postgres.js (npm `postgres` 3.4) has one defect on this path that no option avoids, worked
 * around here and only here:
 *
 * - **A rejected COPY never settles, and its error is lost** (porsager/postgres#1173, fix proposed
 *   in #1183). When the server rejects COPY data after the stream ended (a value it cannot take),
 *   it answers CopyDone with an ErrorResponse; postgres.js never calls the writable's final
 *   callback, so waiting for the stream hangs for ever, and the server's message is nowhere. So
 *   once the stream has handed over all its data, a probe query (`SELECT 1`) is queued in the same
 *   transaction: it succeeds after a good COPY and fails with 25P02 (transaction aborted) after a
 *   rejected one. The batch is then sent again through INSERT (CopyRejectedError), which reports
 *   the server's real error, so the forwarder can tell bad rows from a bad day.
 *   The probe must not be queued before postgres.js has sent CopyDone (any query issued during
 *   the COPY fails the whole transaction), and postgres.js gives no signal of that: Node's
 *   Writable shows it only in its internal state (`_writableState.finalCalled`), polled every
 *   millisecond (`streamHandedOver()`).
 *
 * (The other postgres.js defect the collector meets, a write to a closed socket thrown from a
 * timer, porsager/postgres#1154, cannot be caught here: see src/cli/crash.ts.)
 */

/** The server rejected a COPY (see the module header); the batch is to be sent through INSERT. */
export class CopyRejectedError extends Error {
  readonly code = "KWOLLECTOR_COPY_REJECTED";
  constructor(cause: unknown) {
    super(`COPY was rejected by the central database (${errorMessage(cause)})`);
  }
}

/** A batch ready to send: its claim, and the writing of its rows inside the claiming transaction. */
export interface PreparedBatch extends BatchClaim {
  /** Writes the rows; `claimed` says whether the transaction holds the ledger lock already. */
  write(tx: Transaction, claimed: boolean): Promise<void>;
}

/** Encodes `batch` (non-empty) for `method` ("copy", or anything else for INSERT). */
export function prepareBatch(batch: SpooledSample[], method: string): PreparedBatch {
  let minTs = Infinity;
  let maxTs = -Infinity;
  const copy = method === "copy";
  for (const s of batch) {
    if (s.timestampMs < minTs) minTs = s.timestampMs;
    if (s.timestampMs > maxTs) maxTs = s.timestampMs;
  }
  const chunks = copy ? encodeBySeries(batch) : [];
  return {
    first: batch[0]!.seq,
    last: batch.at(-1)!.seq,
    rows: batch.length,
    minTs,
    maxTs,
    write: (tx, claimed) => copy ? copyRows(tx, chunks, claimed) : insertRows(tx, batch),
  };
}

/**
 * Rows of one batch are grouped by series (each series' rows in seq order, series by their id in
 * the spool's dictionary) when every row comes from the spool's lease and the batch is at most
 * this long (the sort key packs the series id and the row's index in one float64).
 */
const GROUPED_ROWS_MAX = 2 ** 21;

/**
 * The batch's COPY rows, grouped by series (see GROUPED_ROWS_MAX), otherwise in seq order.
 *
 * Grouped, each index leaf page of `metrics` that a series' rows go to (the device's and the
 * alias's, at the end of their time range) is dirtied once per batch instead of once per row. A
 * backlog of many series interleaves them (a poll is one row of each): once the table's indexes
 * outgrow the central database's buffer pool, each row then costs a page evicted and written
 * back (docs/PERFORMANCE.md, "drainfwd"). The order of rows inside one COPY changes nothing else.
 */
export function encodeBySeries(batch: readonly SpooledSample[]): Uint8Array[] {
  const encoder = new CopyEncoder();
  const order = seriesOrder(batch);
  for (let k = 0; k < batch.length; k++) {
    const s = batch[order ? order[k]! % GROUPED_ROWS_MAX : k]!;
    const prefix = s.spooledSeries?.copyPrefix ?? copyPrefix(s.deviceId, s.metricId, JSON.stringify(s.labels));
    encoder.row(prefix, s.timestampMs, s.value);
  }
  return encoder.finish();
}

/** The batch's row indexes sorted by (series id, index), packed as series id × GROUPED_ROWS_MAX + index. */
function seriesOrder(batch: readonly SpooledSample[]): Float64Array | undefined {
  if (batch.length > GROUPED_ROWS_MAX) return undefined;
  const keys = new Float64Array(batch.length);
  for (let i = 0; i < batch.length; i++) {
    const id = batch[i]!.spooledSeries?.id;
    if (id === undefined || id < 0 || id >= 2 ** 32) return undefined;
    keys[i] = id * GROUPED_ROWS_MAX + i;
  }
  return keys.sort();
}

async function insertRows(tx: Transaction, batch: SpooledSample[]): Promise<void> {
  // A series read from the spool keeps its device, metric and labels in its COPY prefix only.
  const series = batch.map((s) =>
    s.spooledSeries
      ? copyPrefixParts(s.spooledSeries.copyPrefix)
      : { deviceId: s.deviceId, metricId: s.metricId, labelsJson: JSON.stringify(s.labels) }
  );
  await tx`
    INSERT INTO metrics ("timestamp", device_id, metric_id, value, labels)
    SELECT * FROM unnest(${batch.map((s) => copyTimestamp(s.timestampMs))}::text[]::timestamptz[],
                         ${series.map((s) => s.deviceId)}::text[], ${series.map((s) => s.metricId)}::text[],
                         ${batch.map((s) => copyFloat(s.value))}::text[]::float8[],
                         ${series.map((s) => s.labelsJson)}::text[]::jsonb[])`;
}

/**
 * Writes the chunks through COPY, then gives them back for later batches (see copy_text.ts). The
 * failpoints `before-copy` and `mid-copy` count only batches that hold the ledger lock (their
 * claim came first): a power loss there leaves an orphan that holds the lock, which is what the
 * orphaned-session torture needs (scripts/torture/orphaned_session.ts).
 */
async function copyRows(tx: Transaction, chunks: Uint8Array[], claimed: boolean): Promise<void> {
  if (chunks.length === 0) throw new Error("A prepared batch is written once: its COPY data was already sent");
  const taken = chunks.splice(0);
  try {
    await copyChunks(tx, taken, claimed);
  } finally {
    recycleCopyChunks(taken);
  }
}

async function copyChunks(tx: Transaction, chunks: Uint8Array[], claimed: boolean): Promise<void> {
  if (claimed) failpoint("before-copy");
  const writable = await tx`COPY metrics (device_id, metric_id, labels, "timestamp", value) FROM STDIN`.writable();
  if (claimed) failpoint("mid-copy");
  const finished = writeAll(writable, chunks);
  try {
    // The probe is queued once all COPY data has been handed over: it succeeds after a good
    // COPY and fails (the transaction is aborted) after a rejected one, whose own promise
    // would never settle.
    await Promise.all([finished, streamHandedOver(writable).then(() => tx`SELECT 1`)]);
  } catch (err) {
    if ((err as { code?: string }).code === "25P02") throw new CopyRejectedError(err);
    throw err;
  }
}

/**
 * Resolves once the writable has called its `final` (postgres.js then sends CopyDone and accepts
 * the next query of the transaction; any query issued before fails the whole transaction).
 * Node's Writable exposes this only in its internal state.
 */
async function streamHandedOver(w: object): Promise<void> {
  const state = (w as { _writableState?: { finalCalled?: boolean; destroyed?: boolean } })._writableState;
  while (state && !state.finalCalled && !state.destroyed) await new Promise((r) => setTimeout(r, 1));
}

/** Writes the COPY data; resolves when the server has acknowledged the COPY. */
function writeAll(
  w: {
    write(chunk: Uint8Array, cb?: (err?: Error | null) => void): boolean;
    end(): void;
    once(ev: string, fn: (e?: unknown) => void): unknown;
  },
  chunks: Uint8Array[],
): Promise<void> {
  return new Promise((resolve, reject) => {
    w.once("error", reject);
    w.once("finish", () => resolve());
    for (const c of chunks) w.write(c);
    w.end();
  });
}
