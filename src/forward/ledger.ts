import type postgres from "postgres";
import type { Sql } from "../central/connect.ts";
import type { SpoolLease } from "../spool/spool.ts";
import { SEQS_REUSED } from "../telemetry/events.ts";
import type { Telemetry } from "../telemetry/telemetry.ts";
import { VERSION } from "../version.ts";

/**
 * # The delivery ledger: exactly once
 *
 * Every statement about the central `kwollect_ledger` table (sql/0001_core.sql) is here, and this
 * is the protocol they make:
 *
 * 1. **A batch claims its seqs in its own transaction.** A batch is a run of spooled samples with
 *    seqs [first, last]. It is sent in ONE central transaction: `claimBatch()` calls
 *    `kwollect_claim(spool_id, first, last, ...)`, which, under a per-spool advisory lock held
 *    until COMMIT, inserts the batch's ledger row after checking that no ledger row overlaps the
 *    range; the batch writer (batch_writer.ts) writes the rows before or after the claim; then
 *    COMMIT. Rows and ledger row become visible together, or not at all, whatever the order, so
 *    several batches of one spool may be in flight at once on several connections (the
 *    forwarder's pipelined backfill): their claims are serialised by the lock, and a batch whose
 *    claim is refused rolls its rows back. The backfill claims after its rows, so the lock is held
 *    for its COMMIT only, not for its COPY; so does the live lane's batch sent beside the backfill
 *    (forwarder.ts "Two lanes"). A batch sent alone claims first: it learns whether the lock is
 *    free before it sends its rows. A small batch sent alone tries first to claim and write its
 *    rows in ONE statement, its own transaction (`claimIfFree()`, batch_writer.ts
 *    `sendInOneStatement`): its rows are inserted only when the lock was free and the claim
 *    granted, so they commit with their ledger row or not at all, like the batch of a transaction.
 *    When nothing was written (lock held, or range already claimed), the batch is sent again the
 *    usual way, which waits for the lock or reports the overlap.
 * 2. **Rows leave the spool only after that COMMIT returned** (spool invariant 3).
 * 3. **A claim refused is a batch already committed.** A retry after an uncertain commit
 *    (connection cut after COMMIT was sent, collector killed before the local delete), or a
 *    concurrent `flush` of the same spool, finds its range claimed: `claimBatch()` throws an
 *    OverlapError, nothing is written, and the forwarder reconciles.
 * 4. **Reconciliation before sending.** `reconcile()` removes from the spool every range the
 *    ledger holds. The forwarder runs it at start and after every failure, before anything is
 *    sent.
 * 5. **Reused seqs are moved, not mistaken.** Before its first reconciliation, a writer's
 *    forwarder asks whether the ledger holds data at or past the seq the writer started from,
 *    taken before it started: a spool that lost commits it had forwarded (spool.ts "Recovery")
 *    would hand those seqs out again. Its new samples are then renumbered past the ledger, and the
 *    seqs in between are recorded as dropped.
 * 6. **Every seq is accounted for.** Seqs set aside by the forwarder are claimed as `quarantined`
 *    (`reportQuarantine()`), ranges given up by the full-spool policy as `dropped`
 *    (`reportGaps()`, minus any part that reached the ledger another way). So per spool the
 *    ledger ranges never overlap and tile every seq ever assigned; `kwollect_ledger_gaps` lists
 *    the holes (final once the collector reports an empty spool, since during an outage newer
 *    batches may arrive first).
 *
 * Bigints (seqs) are read back as float8: postgres.js returns int8 as text, and seqs stay below
 * 2^53.
 */

/** A transaction of the central connection (`sql.begin()`). */
export type Transaction = postgres.TransactionSql;

/** A seq range is already in the central ledger (see the module header, point 3). */
export class OverlapError extends Error {
  readonly code = "KWOLLECTOR_ALREADY_CLAIMED";
  constructor(readonly first: number, readonly last: number) {
    super(`Seq range ${first}..${last} is already in the central ledger`);
  }
}

export interface LedgerOptions {
  lease: SpoolLease;
  edgeId: string;
  /** Bounds each statement sent on its own (the forwarder's forward_timeout_ms). */
  bounded<T>(answer: Promise<T>): Promise<T>;
  /** Where a renumbering (point 5) is logged and counted. */
  telemetry: Telemetry;
}

/** A batch's claim: its seq range, its rows and their time span. */
export interface BatchClaim {
  first: number;
  last: number;
  rows: number;
  minTs: number;
  maxTs: number;
}

export class Ledger {
  #opts: LedgerOptions;
  #seqsChecked = false;

  constructor(opts: LedgerOptions) {
    this.#opts = opts;
  }

  /**
   * Claims the batch's range as `data` inside its transaction `tx`; throws an OverlapError when
   * any part of it is already claimed. One statement tries the spool's ledger lock and, when it
   * is free, claims at once. When another session holds it, the statement reports who instead:
   * `onHeld` is told (undefined when it let go meanwhile), then `beforeWait` runs, then a second
   * statement claims, waiting for the lock (up to lock_timeout, see session.ts). Returns whether
   * the claim had to wait.
   *
   * A statement the caller issues right after this call (the batch's COPY) goes out with the try
   * (postgres.js pipelines the queries of one connection): one round trip when the lock is free.
   * When it is held, that statement is behind the waiting claim, whose lock timeout would make the
   * server refuse it too: `beforeWait` is where the caller ends it first.
   */
  async claimBatch(
    tx: Transaction,
    batch: BatchClaim,
    waiting: {
      onHeld?: ((holder: LockHolder | undefined) => void) | undefined;
      beforeWait?: (() => Promise<void>) | undefined;
    } = {},
  ): Promise<{ waited: boolean }> {
    const spoolId = this.#opts.lease.spoolId;
    const claim = () =>
      tx`kwollect_claim(${spoolId}, ${this.#opts.edgeId}, ${batch.first}, ${batch.last}, ${batch.rows}, 'data',
                        ${new Date(batch.minTs)}, ${new Date(batch.maxTs)}, ${VERSION})`;
    const [lock] = await tx`
      WITH tried AS MATERIALIZED (
        SELECT pg_try_advisory_xact_lock(hashtextextended(${spoolId}::uuid::text, 0)) AS free)
      SELECT tried.free, CASE WHEN tried.free THEN ${claim()} END AS ok, holder.* FROM tried
      LEFT JOIN LATERAL (SELECT * FROM (${holderQuery(tx, spoolId)}) h WHERE NOT tried.free) holder ON true
    `.execute() as unknown as ({ free: boolean; ok: boolean | null } & Partial<HolderRow>)[];
    let ok = lock?.ok;
    const waited = lock?.free !== true;
    if (waited) {
      waiting.onHeld?.(lock?.pid == null ? undefined : holderOf(lock as HolderRow));
      await waiting.beforeWait?.();
      const [claimed] = await tx`SELECT ${claim()} AS ok`.execute() as unknown as { ok: boolean }[];
      ok = claimed?.ok;
    }
    if (ok !== true) throw new OverlapError(batch.first, batch.last);
    return { waited };
  }

  /**
   * The condition of a batch's rows written in one statement (point 1): true when the spool's
   * ledger lock was free and the claim granted, otherwise NULL or false, and nothing claimed. An
   * uncorrelated subquery, so PostgreSQL evaluates it once, before the first row (an InitPlan).
   * Never waits for the lock: a held lock is left to the usual path, which waits and reports it.
   */
  claimIfFree(sql: Sql, batch: BatchClaim): postgres.PendingQuery<postgres.Row[]> {
    const spoolId = this.#opts.lease.spoolId;
    return sql`
      (SELECT CASE WHEN pg_try_advisory_xact_lock(hashtextextended(${spoolId}::uuid::text, 0))
              THEN kwollect_claim(${spoolId}, ${this.#opts.edgeId}, ${batch.first}, ${batch.last}, ${batch.rows},
                                  'data', ${new Date(batch.minTs)}, ${new Date(batch.maxTs)}, ${VERSION}) END)`;
  }

  /**
   * Removes from the spool every range the ledger holds; returns the samples removed. The first
   * call checks for reused seqs first (point 5).
   */
  async reconcile(sql: Sql): Promise<number> {
    const { lease, bounded } = this.#opts;
    if (!this.#seqsChecked) {
      await this.#renumberReusedSeqs(sql);
      this.#seqsChecked = true;
    }
    const min = lease.minSeq();
    if (min === undefined) return 0;
    const ranges = await bounded(sql`
      SELECT first_seq::float8 AS first, last_seq::float8 AS last FROM kwollect_ledger
      WHERE spool_id = ${lease.spoolId} AND last_seq >= ${min} ORDER BY first_seq`);
    let removed = 0;
    for (const r of ranges as unknown as { first: number; last: number }[]) {
      removed += lease.removeForwarded(r.first, r.last);
    }
    return removed;
  }

  /**
   * Claimed data at or past the seq the writer started from, with samples older than its start,
   * proves that the spool lost commits it had forwarded: the new samples then move past the
   * ledger's last seq (the range in between is recorded as dropped), instead of being mistaken
   * for the old ones and removed. Only the writer's lease can move seqs.
   */
  async #renumberReusedSeqs(sql: Sql): Promise<void> {
    const { lease, bounded } = this.#opts;
    const own = lease.ownSeqs;
    if (!own) return;
    const [row] = await bounded(sql`
      SELECT max(last_seq)::float8 AS last, bool_or(kind = 'data' AND max_ts < ${new Date(own.openedAtMs)}) AS old
      FROM kwollect_ledger WHERE spool_id = ${lease.spoolId} AND last_seq >= ${own.openedAtSeq}`) as unknown as {
      last: number | null;
      old: boolean | null;
    }[];
    if (row?.old !== true || row.last === null) return;
    const shift = own.renumberAfter(row.last, "lost with the spool's write-ahead log");
    this.#opts.telemetry.emit(SEQS_REUSED, {
      spool: lease.path,
      lost_first_seq: own.openedAtSeq,
      lost_last_seq: row.last,
      shift,
    });
  }

  /** Records the spool's gaps as `dropped`, telling `reported` the samples each one held. */
  async reportGaps(sql: Sql, reported: (rows: number) => void): Promise<void> {
    const { lease, bounded } = this.#opts;
    for (const gap of lease.gaps()) {
      const claimed = await this.#claimOnly(sql, gap.firstSeq, gap.lastSeq, gap.rows, "dropped");
      if (!claimed) {
        // Part of the range reached the ledger another way (a concurrent flush): record the rest.
        const taken = await bounded(sql`
          SELECT first_seq::float8 AS first, last_seq::float8 AS last FROM kwollect_ledger
          WHERE spool_id = ${lease.spoolId} AND last_seq >= ${gap.firstSeq} AND first_seq <= ${gap.lastSeq}
          ORDER BY first_seq`) as unknown as { first: number; last: number }[];
        let cursor = gap.firstSeq;
        for (const t of taken) {
          if (t.first > cursor) await this.#claimOnly(sql, cursor, t.first - 1, 0, "dropped");
          cursor = Math.max(cursor, t.last + 1);
        }
        if (cursor <= gap.lastSeq) await this.#claimOnly(sql, cursor, gap.lastSeq, 0, "dropped");
      }
      lease.removeGap(gap.firstSeq);
      reported(gap.rows);
    }
  }

  /** Records the seqs set aside in the spool's quarantine as `quarantined`. */
  async reportQuarantine(sql: Sql): Promise<void> {
    const { lease } = this.#opts;
    for (const q of lease.unreportedQuarantine()) {
      await this.#claimOnly(sql, q.seq, q.seq, 0, "quarantined");
      lease.markQuarantineReported(q.seq);
    }
  }

  /** Records a ledger row with no data rows; false when the range was already claimed. */
  async #claimOnly(sql: Sql, first: number, last: number, rows: number, kind: string): Promise<boolean> {
    const { lease, edgeId, bounded } = this.#opts;
    const [row] = await bounded(sql`
      SELECT kwollect_claim(${lease.spoolId}, ${edgeId}, ${first}, ${last}, ${rows},
                            ${kind}, NULL, NULL, ${VERSION}) AS ok`) as unknown as { ok: boolean }[];
    return row?.ok === true;
  }
}

/** The session holding the ledger lock of a spool, as the forwarder reports it. */
export interface LockHolder {
  pid: number;
  application: string;
  client: string | null;
  state: string | null;
  /** Seconds in that state, and since its transaction began. */
  stateS: number | null;
  transactionS: number | null;
}

/** The session holding the ledger lock of `spoolId` (kwollect_claim's advisory lock), if any. */
export async function ledgerLockHolder(sql: Sql | Transaction, spoolId: string): Promise<LockHolder | undefined> {
  const [row] = await holderQuery(sql, spoolId) as unknown as HolderRow[];
  return row && holderOf(row);
}

interface HolderRow {
  pid: number;
  application: string;
  client: string | null;
  state: string | null;
  state_s: number | null;
  transaction_s: number | null;
}

/** The query of the ledger lock's holder, also a fragment of claimBatch's try. */
function holderQuery(sql: Sql | Transaction, spoolId: string) {
  // kwollect_claim locks hashtextextended(spool_id::text, 0). A one-key advisory lock shows its
  // int8 key split in classid (high half) and objid (low half).
  return sql`
    SELECT a.pid, a.application_name AS application, host(a.client_addr) AS client, a.state,
           extract(epoch FROM now() - a.state_change)::float8 AS state_s,
           extract(epoch FROM now() - a.xact_start)::float8 AS transaction_s
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(${spoolId}::uuid::text, 0)`;
}

function holderOf(row: HolderRow): LockHolder {
  const round = (s: number | null) => s === null ? null : Math.round(s * 10) / 10;
  return {
    pid: row.pid,
    application: row.application,
    client: row.client,
    state: row.state,
    stateS: round(row.state_s),
    transactionS: round(row.transaction_s),
  };
}
