import { errorMessage } from "../log.ts";
import type { SpooledRows } from "../spool/spool.ts";
import { CopyEncoder, copyFloat, copyPrefixParts, copyTimestamp, recycleCopyChunks } from "./copy_text.ts";
import { failpoint, failpointArmed } from "./failpoint.ts";
import type postgres from "postgres";
import type { Sql } from "../central/connect.ts";
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
 * around here and only here (and a habit that costs memory, kept away in `copyWriter`: it keeps
 * for ever the stack of the first query of each statement text, with the closures on it):
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
 *   the COPY fails the whole transaction), and postgres.js gives no signal of that: the probe is
 *   queued from the writable's `_final` (Node's hook for a stream's implementer, which
 *   postgres.js fills with the sending of CopyDone), right after it ran.
 *
 * - **A COPY that went well still sends CopyFail.** The writable is destroyed once finished
 *   (autoDestroy), and its destroy always sends CopyFail, which the server ignores outside COPY,
 *   but that message arrives after the probe, so the backend reads it while idle in the
 *   transaction and then waits on without the idle-in-transaction timer (it is armed only
 *   with ReadyForQuery): an orphan of a power loss before COMMIT then held the ledger lock until
 *   the keepalives dropped it (25 s), not for 15 s (session.ts). So a writable destroyed without
 *   an error sends nothing (`quietWhenFinished`); with one, it still fails the COPY.
 *
 * # Round trips
 *
 * The statements of a batch go out together wherever the order allows (postgres.js pipelines
 * the queries of one connection when they are issued without waiting): a batch that claims first
 * sends BEGIN, then the lock's try (which claims when the lock is free) with the COPY, then its
 * rows with CopyDone, the probe and COMMIT (3 round trips, 6 when each waited for the previous).
 * COMMIT need not wait for the probe's answer there: the claim was granted before the rows went
 * out, so the only refusal left is the server's of the COPY, which aborts the transaction, and
 * PostgreSQL answers the COMMIT of an aborted transaction by rolling it back; the probe's answer,
 * read after the COMMIT's (`WrittenBatch.settled`), tells which happened. A batch that claims
 * last sends its claim with its rows' end and the probe, and COMMIT once the claim is granted (a
 * claim refused as an overlap is no error, so a COMMIT sent behind it would commit the rows). A
 * claim refused while its COPY was already sent ends that COPY empty before the transaction rolls
 * back; so does a claim that finds the lock held, before it waits (ledger.ts `claimBatch`).
 *
 * A batch sent alone (claimed first) of at most ONE_STATEMENT_ROWS_MAX rows, the live lane's
 * batch of every second, first goes as ONE statement outside a transaction block
 * (`sendInOneStatement`): `INSERT INTO metrics ... SELECT ... FROM unnest(...) WHERE <the lock's
 * try and the claim>`, one round trip, committed by the server before it answers. The claim is an
 * uncorrelated subquery, evaluated once before the first row: every row goes in with the ledger
 * row or none does (the INSERT's count says which). When none did (the lock held by another
 * session, the range already claimed), the batch goes the way above, which waits for the lock
 * and logs it, or reports the overlap; a refused row fails the statement and its claim, and the
 * forwarder bisects as for INSERT. No BEGIN, COMMIT or reserved connection, so no statement is
 * ever issued on a connection after it closed (the #1154 case below). Its backend holds the lock
 * while it runs the statement only: postgres.js writes Execute and Sync in one buffer, and the
 * server commits or rolls back at Sync (a power loss splitting those 19 bytes over two TCP
 * segments would leave a backend holding the lock until the keepalives drop it, as one caught
 * inside COPY).
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
  /**
   * Writes the rows in `tx` with the batch's claim: `claim` issues the claim's statements and
   * resolves once it is granted, running `beforeWait` before it waits for a lock another session
   * holds (ledger.ts `claimBatch`); it goes out before the rows when `claimFirst`, otherwise after
   * them (see ledger.ts point 1).
   */
  write(tx: Transaction, claim: BatchClaimer, claimFirst: boolean): Promise<WrittenBatch>;
}

/**
 * A batch written in its transaction, which may now commit: `settled` rejects, once the
 * transaction has answered, when the server refused what was sent (a CopyRejectedError for a
 * rejected COPY), in which case the COMMIT rolled back. To be awaited after the COMMIT.
 */
export interface WrittenBatch {
  settled: Promise<void>;
}

const SETTLED: WrittenBatch = { settled: Promise.resolve() };

/** Issues a batch's claim; resolves once it is granted (see `PreparedBatch.write`). */
export type BatchClaimer = (beforeWait?: () => Promise<void>) => Promise<unknown>;

/** Encodes `batch` (non-empty) for `method` ("copy", or anything else for INSERT). */
export function prepareBatch(batch: SpooledRows, method: string): PreparedBatch {
  return { ...batchClaim(batch), write: method === "copy" ? copyWriter(encodeBySeries(batch)) : insertWriter(batch) };
}

/**
 * The write of a batch's COPY chunks: a closure whose scope holds the chunks, not the batch.
 * postgres.js keeps for ever an Error with the stack of the first query of each statement text
 * (query.js `cachedError`), and that stack holds the closures it ran through with their scopes:
 * with the batch in this scope, the first batch's rows stayed reachable for the life of the
 * process, and the rows of every live batch after it were promoted to the old space (about 70
 * bytes a sample in the heap profile, about 20 after; the collector's CPU 3.2 -> 2.7 ms per 1,000
 * samples of workload A; docs/PERFORMANCE.md `pretenure13`).
 */
function copyWriter(chunks: Uint8Array[]): PreparedBatch["write"] {
  return (tx, claim, claimFirst) => copyRows(tx, chunks, claim, claimFirst);
}

function insertWriter(batch: SpooledRows): PreparedBatch["write"] {
  return (tx, claim, claimFirst) => insertRows(tx, batch, claim, claimFirst);
}

/** The claim of `batch` (non-empty): its seq range, its rows and their time span. */
export function batchClaim(batch: SpooledRows): BatchClaim {
  let minTs = Infinity;
  let maxTs = -Infinity;
  // Indexed, each timestamp read once: it runs once per batch, often before V8 optimizes it, and
  // there an iterator's result and each read's boxed number were allocations per row.
  for (let i = 0; i < batch.length; i++) {
    const ts = batch.timestampMs(i);
    if (ts < minTs) minTs = ts;
    if (ts > maxTs) maxTs = ts;
  }
  return { first: batch.firstSeq, last: batch.lastSeq, rows: batch.length, minTs, maxTs };
}

/**
 * Rows of one batch are grouped by series (each series' rows in seq order, series by their id in
 * the spool's dictionary) when the batch is at most this long (the sort key packs the series id
 * and the row's index in one float64).
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
export function encodeBySeries(batch: SpooledRows): Uint8Array[] {
  const encoder = new CopyEncoder();
  const order = seriesOrder(batch);
  for (let k = 0; k < batch.length; k++) {
    const i = order ? order[k]! % GROUPED_ROWS_MAX : k;
    encoder.row(batch.series(i).copyPrefix, batch.timestampMs(i), batch.value(i));
  }
  return encoder.finish();
}

/** The batch's row indexes sorted by (series id, index), packed as series id × GROUPED_ROWS_MAX + index. */
function seriesOrder(batch: SpooledRows): Float64Array | undefined {
  if (batch.length > GROUPED_ROWS_MAX) return undefined;
  const keys = new Float64Array(batch.length);
  for (let i = 0; i < batch.length; i++) {
    const id = batch.series(i).id;
    if (id < 0 || id >= 2 ** 32) return undefined;
    keys[i] = id * GROUPED_ROWS_MAX + i;
  }
  return keys.sort();
}

async function insertRows(
  tx: Transaction,
  batch: SpooledRows,
  claim: BatchClaimer,
  claimFirst: boolean,
): Promise<WrittenBatch> {
  if (claimFirst) await claim();
  await tx`INSERT INTO metrics ("timestamp", device_id, metric_id, value, labels) ${unnestRows(tx, batch)}`;
  if (!claimFirst) await claim();
  return SETTLED;
}

/**
 * The batch's rows as `SELECT * FROM unnest(...)` of text arrays, cast on the server: every value
 * goes as a parameter, in the text forms COPY uses.
 */
function unnestRows(sql: Sql | Transaction, batch: SpooledRows) {
  const n = batch.length;
  const timestamps = new Array<string>(n);
  const devices = new Array<string>(n);
  const metrics = new Array<string>(n);
  const values = new Array<string>(n);
  const labels = new Array<string>(n);
  for (let i = 0; i < n; i++) {
    // A series read from the spool keeps its device, metric and labels in its COPY prefix only.
    const series = copyPrefixParts(batch.series(i).copyPrefix);
    timestamps[i] = copyTimestamp(batch.timestampMs(i));
    devices[i] = series.deviceId;
    metrics[i] = series.metricId;
    values[i] = copyFloat(batch.value(i));
    labels[i] = series.labelsJson;
  }
  return sql`
    SELECT * FROM unnest(${timestamps}::text[]::timestamptz[], ${devices}::text[], ${metrics}::text[],
                         ${values}::text[]::float8[], ${labels}::text[]::jsonb[])`;
}

/**
 * Most rows of a batch sent in one statement (`sendInOneStatement`). Its INSERT costs the server
 * more per row than COPY, and its parameters are held whole in memory: this is for the live
 * lane's small batches, whose cost is the round trips, not the rows.
 */
export const ONE_STATEMENT_ROWS_MAX = 2000;

/**
 * Claims and writes `batch` (non-empty, at most ONE_STATEMENT_ROWS_MAX rows) in ONE statement
 * outside any transaction block, so in its own transaction, committed before its answer: one
 * round trip. Its rows are inserted only where `claimed` (ledger.ts `claimIfFree`) is true,
 * which PostgreSQL evaluates once before the first row. Returns whether the batch was written:
 * false when nothing was (the lock was held or the range already claimed: the caller sends it the
 * usual way, which waits for the lock or reports the overlap). A row the server refuses fails the
 * statement, which rolls back the claim with it: the error goes to the caller, as INSERT's does.
 * Cut off without an answer, the commit is in doubt, as any batch's COMMIT.
 */
export async function sendInOneStatement(
  sql: Sql,
  batch: SpooledRows,
  claimed: postgres.PendingQuery<postgres.Row[]>,
): Promise<boolean> {
  const result = await sql`
    INSERT INTO metrics ("timestamp", device_id, metric_id, value, labels)
    SELECT rows.* FROM (${unnestRows(sql, batch)}) rows WHERE ${claimed}`;
  if (result.count === batch.length) return true;
  // The claim gates every row at once: all of them or none.
  if (result.count !== 0) throw new Error(`One-statement batch wrote ${result.count} of ${batch.length} rows`);
  return false;
}

/**
 * Writes the chunks through COPY, then gives them back for later batches (see copy_text.ts). The
 * failpoints `mid-copy` and `before-commit` count only batches that hold the ledger lock (their
 * claim came first): a power loss there leaves an orphan that holds the lock, inside its COPY or
 * idle in its transaction, which is what the orphaned-session torture needs
 * (scripts/torture/orphaned_session.ts). Since COMMIT follows the probe without waiting, a
 * backend is idle there only when the COMMIT is lost on the way: armed, `before-commit` waits for
 * the probe's answer before it stops the process, so that its COMMIT is never sent.
 */
async function copyRows(
  tx: Transaction,
  chunks: Uint8Array[],
  claim: BatchClaimer,
  claimFirst: boolean,
): Promise<WrittenBatch> {
  if (chunks.length === 0) throw new Error("A prepared batch is written once: its COPY data was already sent");
  const taken = chunks.splice(0);
  try {
    return await copyChunks(tx, taken, claim, claimFirst);
  } finally {
    recycleCopyChunks(taken);
  }
}

async function copyChunks(
  tx: Transaction,
  chunks: Uint8Array[],
  claim: BatchClaimer,
  claimFirst: boolean,
): Promise<WrittenBatch> {
  // Every COPY opened here, the one ended empty before a lock wait included, stays quiet once
  // finished (see "A COPY that went well still sends CopyFail").
  const open = () =>
    (tx`COPY metrics (device_id, metric_id, labels, "timestamp", value) FROM STDIN`
      .writable() as Promise<unknown> as Promise<CopyWritable>).then(quietWhenFinished);
  let opened: Promise<CopyWritable>;
  let claimed: Promise<unknown> | undefined;
  if (claimFirst) {
    // The COPY goes out with the lock's try. When another session holds the lock, that COPY is
    // ended empty before the claim waits, and the rows go in a COPY opened once it is granted: a
    // claim that times out leaves one error in the server's log, not a second for the COPY
    // queued behind it.
    let reopened = false;
    claimed = claim(async () => {
      reopened = true;
      await endEmpty(opened);
    }).then(() => {
      if (reopened) opened = open();
    });
    opened = open();
    await claimedOrCopyEnded(claimed, () => reopened ? undefined : opened);
  } else {
    opened = open();
  }
  const writable = await opened;
  if (claimFirst) failpoint("mid-copy");
  // The probe (and a claim that comes last) is queued once all COPY data has been handed over: it
  // succeeds after a good COPY and fails (the transaction is aborted) after a rejected one, whose
  // own promise would never settle.
  const handedOver = new Promise<void>((resolve) => {
    const sendCopyDone = writable._final;
    writable._final = (callback) => {
      sendCopyDone.call(writable, callback);
      resolve();
    };
  });
  const finished = writeAll(writable, chunks);
  const probed = handedOver.then(() => {
    const probe = tx`SELECT 1`.execute();
    if (claimed) return probe;
    const claiming = claim();
    return probe.then(() => claiming, (err) => {
      // After a rejected COPY the claim fails with the probe's 25P02: the probe's error tells it.
      claiming.catch(() => {});
      throw err;
    });
  });
  const settled = Promise.all([finished, probed]).then(() => {}, (err) => {
    if ((err as { code?: string }).code === "25P02") throw new CopyRejectedError(err);
    throw err;
  });
  if (!claimed) {
    // The claim's answer decides whether the transaction may commit.
    await settled;
    return SETTLED;
  }
  // Claimed before its rows went out: COMMIT goes right behind the probe (see "Round trips").
  settled.catch(() => {});
  await handedOver;
  if (failpointArmed("before-commit")) {
    await settled;
    failpoint("before-commit");
  }
  return { settled };
}

/**
 * Waits for a claim whose COPY was issued with it (`issued`: undefined once that COPY was ended).
 * When the claim fails, the COPY is ended before its error goes on: a refused claim (an overlap)
 * left the server waiting for COPY data, which an empty COPY ends (the transaction then rolls
 * back); a claim in error aborted the transaction, and the server refused the COPY with 25P02,
 * which only repeats that error.
 */
async function claimedOrCopyEnded(
  claimed: Promise<unknown>,
  issued: () => Promise<CopyWritable> | undefined,
): Promise<void> {
  try {
    await claimed;
  } catch (err) {
    const copy = issued();
    if (copy) await endEmpty(copy).catch(() => {});
    throw err;
  }
}

/** Ends a COPY without rows (COPY 0). */
async function endEmpty(opened: Promise<CopyWritable>): Promise<void> {
  await writeAll(await opened, []);
}

/** The part of postgres.js' COPY writable (a Node Writable) used here. */
interface CopyWritable {
  write(chunk: Uint8Array, cb?: (err?: Error | null) => void): boolean;
  end(): void;
  once(ev: string, fn: (e?: unknown) => void): unknown;
  _final(callback: (err?: Error | null) => void): void;
  _destroy(err: Error | null, callback: (err?: Error | null) => void): void;
}

/** The writable, whose destroy sends CopyFail only for an error (see the module header). */
function quietWhenFinished(writable: CopyWritable): CopyWritable {
  const failCopy = writable._destroy;
  writable._destroy = (err, callback) => err ? failCopy.call(writable, err, callback) : callback(null);
  return writable;
}

/** Writes the COPY data; resolves when the server has acknowledged the COPY. */
function writeAll(w: CopyWritable, chunks: Uint8Array[]): Promise<void> {
  return new Promise((resolve, reject) => {
    w.once("error", reject);
    w.once("finish", () => resolve());
    for (const c of chunks) w.write(c);
    w.end();
  });
}
