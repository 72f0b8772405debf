import type { Config } from "../config/defaults.ts";
import { connect, describe, type Endpoint, type Sql } from "../central/connect.ts";
import { errorMessage } from "../log.ts";
import { sampleProblem } from "../sample.ts";
import type { SpooledSample, SpoolLease } from "../spool/spool.ts";
import { Backoff } from "./backoff.ts";
import { CopyRejectedError, prepareBatch } from "./batch_writer.ts";
import { classify, type FailureKind } from "./classify.ts";
import { failpoint } from "./failpoint.ts";
import { Ledger, ledgerLockHolder, OverlapError } from "./ledger.ts";
import { limitStatements, type LockWait, lockWaitOf, sessionParameters } from "./session.ts";
import { type Clock, deadline, sleep, systemClock } from "../clock.ts";
import {
  ACK_LOST,
  BACKLOG_DRAINING,
  CENTRAL_LOCK_WAIT,
  CENTRAL_REFUSES,
  CENTRAL_SLOW,
  CENTRAL_UNREACHABLE,
  CLAIMED_ELSEWHERE,
  FORWARD_FAILED,
  ROWS_FORWARDED,
  ROWS_QUARANTINED,
  ROWS_RECONCILED,
  SPOOL_REFUSES_FORWARDER,
} from "../telemetry/events.ts";
import { Telemetry } from "../telemetry/telemetry.ts";

/**
 * # The forwarder: the loop that drains the spool into the central database
 *
 * Each step reconciles when needed, reports gaps and quarantined seqs, then sends batches read
 * from the spool's lease. What makes delivery exactly once is the ledger's protocol (ledger.ts);
 * how a batch's rows are written, and the postgres.js defects on the way, are the batch
 * writer's (batch_writer.ts). This module keeps the loop, the lanes and the pacing, the
 * connection and its session (session.ts), the bisection of rejected batches, and the mapping of
 * failures to conditions.
 *
 * Memory is bounded by one batch (`forward_batch_rows`) whatever the backlog: the spool is read
 * by seq range.
 *
 * # Two lanes after an outage
 *
 * The live lane is every sample taken since the latest of: the start of this process (its first
 * poll included), the last failed attempt, the last step that left no live sample behind. The
 * rest is the backfill: what was in the spool when the process started, and what piled up while
 * the central database could not be reached. While the spool holds more than one batch, each
 * step first sends the live samples (dashboards and alerts recover at once), then one batch of
 * the oldest backfill. The backfill is paced: capped at `forward_backfill_rows_per_s` when set,
 * and its batch shrinks when the central database slows down (a batch slower than
 * BACKFILL_SLOW_MS halves it, a fast one doubles it back), so a fleet of collectors returning
 * together does not flatten the central database. Both lanes use the same ledger, so
 * exactly-once holds across them.
 *
 * # Retrying
 *
 * After a failure the forwarder waits a jittered, exponentially growing time capped at
 * `forward_retry_max_ms` (3 s by default), so live data is central again within about 3.5 s of
 * the central database's return (Prometheus' remote_write caps its backoff at 5 s) while a fleet
 * of collectors spreads its reconnections over those 3 s. Each attempt is a whole reconnection,
 * which costs a refused connection nothing while the server or the network is down, so no
 * separate reachability probe is needed. A refusal that needs a person (wrong password, missing
 * table) is retried at the old pace instead, every REFUSED_RETRY_MAX_MS at most: a fleet with
 * a wrong password does not fill the server's log with failed logins. A lock held by another
 * session (src/forward/session.ts) is reported as such and retried like an outage.
 */
export interface ForwarderOptions {
  /** The spool as this forwarder may use it: read, acknowledge, quarantine, report. */
  lease: SpoolLease;
  endpoint: Endpoint;
  config: Config;
  clock?: Clock;
  /** Makes the central connection (tests inject failures here). */
  connectFn?: (e: Endpoint) => Sql;
  /** Where forwards, failures and outages are logged and counted (a private one by default). */
  telemetry?: Telemetry;
}

export interface ForwardCounters {
  batches: number;
  rows: number;
  quarantined: number;
  droppedReported: number;
  retries: number;
  reconciledRows: number;
  /** Rows sent by the live lane while a backlog was draining. */
  liveRows: number;
  lastForwardAtMs: number | undefined;
}

const BACKFILL_SLOW_MS = 2000;
const BACKFILL_FAST_MS = 500;
const BACKFILL_MIN_ROWS = 500;
/** Longest wait between two attempts while the central database refuses the collector. */
const REFUSED_RETRY_MAX_MS = 30_000;

export class Forwarder {
  readonly counters: ForwardCounters = {
    batches: 0,
    rows: 0,
    quarantined: 0,
    droppedReported: 0,
    retries: 0,
    reconciledRows: 0,
    liveRows: 0,
    lastForwardAtMs: undefined,
  };
  /** The last failure since the last successful step (for `flush`'s final message). */
  lastFailure: { kind: FailureKind; message: string } | undefined;
  #opts: ForwarderOptions;
  #clock: Clock;
  #sql: Sql | undefined;
  #ledger: Ledger;
  #reconciled = false;
  #backoff: Backoff;
  #refusedBackoff: Backoff;
  /** Whether the connection's statement_timeout was set (again after every reconnection). */
  #sessionLimited = false;
  #telemetry: Telemetry;
  #backfillRows: number;
  /** Seqs up to this one are the backfill, later ones the live lane (see "Two lanes"). */
  #liveAfter: number;
  #draining = false;
  #backfillTokens = 0;
  /** Whether the central database answered since the connection last failed, and when it last did. */
  #answered = false;
  #lastAnswerAt: number | undefined;
  /** Spool rows when the current step began: the backlog a recovery log line reports. */
  #backlogAtStepStart = 0;
  /** The batch whose commit went unanswered, until its range is found claimed. */
  #inDoubt: { first: number; last: number } | undefined;
  #backfillRefilledAt: number;

  constructor(opts: ForwarderOptions) {
    this.#opts = opts;
    this.#clock = opts.clock ?? systemClock;
    this.#telemetry = opts.telemetry ?? new Telemetry({ now: () => this.#clock.monotonic() });
    this.#backoff = new Backoff({ capMs: opts.config.forward_retry_max_ms });
    this.#refusedBackoff = new Backoff({ capMs: Math.max(REFUSED_RETRY_MAX_MS, opts.config.forward_retry_max_ms) });
    this.#ledger = new Ledger({
      lease: opts.lease,
      edgeId: opts.config.edge_id,
      bounded: (answer) => this.#timed(answer),
      telemetry: this.#telemetry,
    });
    this.#liveAfter = opts.lease.openedAtSeq - 1;
    this.#backfillRows = opts.config.forward_batch_rows;
    this.#backfillRefilledAt = this.#clock.monotonic();
  }

  /** Forwards until `signal` aborts: everything queued, then new samples as they come. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const outcome = await this.step();
      if (outcome === "sent") continue;
      const wait = outcome === "idle"
        ? this.#opts.config.forward_interval_ms
        : outcome === "paced"
        ? Math.max(10, this.#opts.config.forward_interval_ms / 5)
        : this.#retryWaitMs();
      await sleep(this.#clock, wait, signal);
    }
  }

  /**
   * Drains the spool until it is empty or `deadlineMs` (monotonic) passes. Returns true when the
   * spool is empty.
   */
  async drain(opts: { deadlineMs: number; signal?: AbortSignal; onProgress?: () => void }): Promise<boolean> {
    for (;;) {
      if (opts.signal?.aborted) return false;
      const outcome = await this.step();
      opts.onProgress?.();
      if (outcome === "idle") return true;
      if (this.#clock.monotonic() >= opts.deadlineMs) return false;
      if (outcome === "paced") await sleep(this.#clock, 20, opts.signal);
      if (outcome === "failed") {
        const wait = Math.min(this.#retryWaitMs(), Math.max(0, opts.deadlineMs - this.#clock.monotonic()));
        await sleep(this.#clock, wait, opts.signal);
      }
    }
  }

  /**
   * One unit of work: reconcile if needed, report gaps and quarantined seqs, then send one batch.
   * Never throws: failures are classified, logged by impact and answered with "failed".
   */
  async step(): Promise<"sent" | "idle" | "paced" | "failed"> {
    const lease = this.#opts.lease;
    this.#backlogAtStepStart = lease.rowCount();
    try {
      const sql = this.#connection();
      if (!this.#sessionLimited) {
        await this.#timed(limitStatements(sql, this.#opts.config));
        this.#sessionLimited = true;
      }
      if (!this.#reconciled) {
        await this.#reconcile(sql);
        this.#reconciled = true;
      }
      await this.#ledger.reportGaps(sql, (rows) => this.counters.droppedReported += rows);
      await this.#ledger.reportQuarantine(sql);
      const batchRows = this.#opts.config.forward_batch_rows;
      const newest = lease.lastSeq();
      if (lease.rowCount() <= batchRows) {
        if (this.#draining) {
          this.#draining = false;
          this.#telemetry.end(BACKLOG_DRAINING, "spool", { live_rows: this.counters.liveRows });
        }
        const batch = lease.read(0, batchRows);
        if (batch.length > 0) await this.#sendIsolating(sql, batch);
        // Caught up: whatever comes next is live.
        this.#liveAfter = Math.max(this.#liveAfter, newest);
        this.#recovered();
        return batch.length > 0 ? "sent" : "idle";
      }
      // A backlog: the live lane first, then a paced backfill batch.
      if (!this.#draining) {
        this.#draining = true;
        this.#telemetry.begin(BACKLOG_DRAINING, "spool", {
          backlog_rows: lease.rowCount(),
          cap_rows_per_s: this.#opts.config.forward_backfill_rows_per_s || undefined,
        });
      }
      const live = lease.read(this.#liveAfter, batchRows);
      if (live.length > 0) {
        await this.#sendIsolating(sql, live);
        this.#liveAfter = Math.max(this.#liveAfter, live.at(-1)!.seq);
      }
      this.counters.liveRows += live.length;
      const allowed = this.#backfillAllowance();
      let backfilled = 0;
      if (allowed > 0) {
        const old = lease.read(0, allowed);
        const started = this.#clock.monotonic();
        await this.#sendIsolating(sql, old);
        this.#adaptBackfill(this.#clock.monotonic() - started);
        backfilled = old.length;
        this.#backfillTokens -= backfilled;
      }
      this.#recovered();
      return backfilled > 0 || live.length >= batchRows ? "sent" : "paced";
    } catch (err) {
      // Our own bug is not a delivery failure: it leaves the loop, and the process (see main.ts).
      if (classify(err) === "bug") throw err;
      const lockWait = lockWaitOf(err, { spoolId: lease.spoolId, config: this.#opts.config });
      if (lockWait) await this.#lockWaited(lockWait);
      else this.#failed(err);
      // What was taken until now could not be sent in time: it joins the backfill.
      this.#liveAfter = Math.max(this.#liveAfter, lease.lastSeq());
      return "failed";
    }
  }

  /**
   * A lock wait ran into lock_timeout: the database answers, another session holds a lock this
   * batch needs (an orphaned batch of this spool, a concurrent flush, maintenance). Logged with
   * the holder; the connection is kept (the transaction was rolled back, nothing is uncertain).
   */
  async #lockWaited(wait: LockWait): Promise<void> {
    const sql = this.#sql;
    const lease = this.#opts.lease;
    if (sql && wait.ledger) {
      try {
        wait.holder = await this.#timed(ledgerLockHolder(sql, lease.spoolId));
      } catch (err) {
        this.#failed(err);
        return;
      }
    }
    this.counters.retries++;
    const t = this.#telemetry;
    t.emit(FORWARD_FAILED, { error: `Lock wait timed out: ${wait.lock}`, attempt: this.#backoff.attempts });
    const answered = { endpoint: describe(this.#opts.endpoint), backlog_rows: lease.rowCount() };
    t.end(CENTRAL_UNREACHABLE, "central", answered);
    t.end(CENTRAL_REFUSES, "central", answered);
    const h = wait.holder;
    t.begin(CENTRAL_LOCK_WAIT, "central", {
      lock: wait.lock,
      waited_ms: wait.waitedMs,
      ...(h && {
        holder_pid: h.pid,
        holder_application: h.application,
        holder_client: h.client ?? undefined,
        holder_state: h.state ?? undefined,
        holder_state_s: h.stateS ?? undefined,
        holder_transaction_s: h.transactionS ?? undefined,
      }),
    }, wait.lock);
  }

  /** The wait before the next attempt: slow while a person must act, short otherwise. */
  #retryWaitMs(): number {
    const refused = this.#telemetry.isActive(CENTRAL_REFUSES, "central");
    return (refused ? this.#refusedBackoff : this.#backoff).next();
  }

  /** Rows the backfill lane may send now (token bucket when forward_backfill_rows_per_s > 0). */
  #backfillAllowance(): number {
    const cap = this.#opts.config.forward_backfill_rows_per_s;
    if (cap <= 0) return this.#backfillRows;
    const now = this.#clock.monotonic();
    this.#backfillTokens = Math.min(cap, this.#backfillTokens + ((now - this.#backfillRefilledAt) / 1000) * cap);
    this.#backfillRefilledAt = now;
    return Math.min(this.#backfillRows, Math.floor(this.#backfillTokens));
  }

  /** Shrinks the backfill batch while the central database is slow, grows it back when fast. */
  #adaptBackfill(elapsedMs: number): void {
    const max = this.#opts.config.forward_batch_rows;
    if (elapsedMs > BACKFILL_SLOW_MS && this.#backfillRows > BACKFILL_MIN_ROWS) {
      this.#backfillRows = Math.max(BACKFILL_MIN_ROWS, Math.floor(this.#backfillRows / 2));
      this.#telemetry.begin(CENTRAL_SLOW, "central", { rows: this.#backfillRows, batch_ms: Math.round(elapsedMs) });
    } else if (elapsedMs < BACKFILL_FAST_MS && this.#backfillRows < max) {
      this.#backfillRows = Math.min(max, this.#backfillRows * 2);
      if (this.#backfillRows === max) this.#telemetry.end(CENTRAL_SLOW, "central", { rows: max });
    }
  }

  async close(): Promise<void> {
    const sql = this.#sql;
    this.#sql = undefined;
    if (sql) await sql.end({ timeout: 1 }).catch(() => {});
  }

  #connection(): Sql {
    if (!this.#sql) {
      const make = this.#opts.connectFn ?? ((e: Endpoint) =>
        connect(e, {
          applicationName: "kwollector forwarder",
          parameters: sessionParameters(this.#opts.config),
          onClose: () => {
            this.#sessionLimited = false;
          },
        }));
      this.#sql = make(this.#opts.endpoint);
    }
    return this.#sql;
  }

  /** Drops the connection (its state is uncertain) and forces reconciliation before the next send. */
  #reset(): void {
    const sql = this.#sql;
    this.#sql = undefined;
    this.#answered = false;
    this.#reconciled = false;
    this.#sessionLimited = false;
    this.#opts.lease.releaseLeases();
    if (sql) sql.end({ timeout: 0 }).catch(() => {});
  }

  /** Removes from the spool every range the central ledger already holds. */
  async #reconcile(sql: Sql): Promise<void> {
    const removed = await this.#ledger.reconcile(sql);
    if (removed > 0) {
      this.counters.reconciledRows += removed;
      this.#telemetry.emit(ROWS_RECONCILED, { samples: removed }, { n: removed });
    }
  }

  /**
   * Sends a batch; on a data error, bisects it so only the rows that fail alone are set aside.
   * A sample that cannot be written centrally at all (written to the spool before the door
   * checked samples, see sample.ts) is set aside first, and the runs around it are sent.
   */
  async #sendIsolating(sql: Sql, batch: SpooledSample[], method = this.#opts.config.forward_method): Promise<void> {
    const now = this.#clock.now();
    const bad = batch.findIndex((s) => sampleProblem(s, now, s.spooledSeries) !== undefined);
    if (bad >= 0) {
      if (bad > 0) await this.#sendIsolating(sql, batch.slice(0, bad), method);
      await this.#quarantine(sql, batch[bad]!, sampleProblem(batch[bad]!, now, batch[bad]!.spooledSeries)!);
      if (bad + 1 < batch.length) await this.#sendIsolating(sql, batch.slice(bad + 1), method);
      return;
    }
    try {
      await this.#send(sql, batch, method);
    } catch (err) {
      if (err instanceof CopyRejectedError) return await this.#sendIsolating(sql, batch, "insert");
      if (err instanceof OverlapError || classify(err) !== "data") throw err;
      if (batch.length === 1) return await this.#quarantine(sql, batch[0]!, errorMessage(err));
      const mid = Math.floor(batch.length / 2);
      await this.#sendIsolating(sql, batch.slice(0, mid), method);
      await this.#sendIsolating(sql, batch.slice(mid), method);
    }
  }

  /** Sets a sample aside in the spool's quarantine, with the reason, and records its seq centrally. */
  async #quarantine(sql: Sql, sample: SpooledSample, reason: string): Promise<void> {
    this.#opts.lease.quarantine([sample], reason);
    this.counters.quarantined++;
    this.#telemetry.emit(ROWS_QUARANTINED, {
      seq: sample.seq,
      device: sample.deviceId,
      metric: sample.metricId,
      reason,
    });
    await this.#ledger.reportQuarantine(sql);
  }

  /** Sends one batch in one transaction: its ledger claim, then its rows (see ledger.ts). */
  async #send(sql: Sql, batch: SpooledSample[], method: string): Promise<void> {
    const prepared = prepareBatch(batch, method);
    const { first, last } = prepared;
    const sent = this.#timed(sql.begin(async (tx) => {
      await this.#ledger.claimBatch(tx, prepared);
      await prepared.write(tx);
    }));
    try {
      await sent;
    } catch (err) {
      // Cut off without an answer, the COMMIT may still land: a later refusal of this range is
      // then our own lost acknowledgement, not another process's claim.
      if (!(err instanceof OverlapError) && classify(err) === "retry") this.#inDoubt = { first, last };
      throw err;
    }
    failpoint("after-central-commit");
    this.#opts.lease.removeForwarded(first, last);
    this.counters.batches++;
    this.counters.rows += batch.length;
    this.counters.lastForwardAtMs = this.#clock.now();
    this.#telemetry.emit(ROWS_FORWARDED, { rows: batch.length, first_seq: first, last_seq: last }, { n: batch.length });
  }

  /** Bounds a central operation by forward_timeout_ms; on expiry the connection is dropped. */
  #timed<T>(p: Promise<T>): Promise<T> {
    const ms = this.#opts.config.forward_timeout_ms;
    const answered = () => {
      this.#answered = true;
      this.#lastAnswerAt = this.#clock.monotonic();
    };
    return deadline(p, { ms, message: `Central database did not answer within ${ms} ms`, clock: this.#clock }).then(
      (answer) => {
        answered();
        return answer;
      },
      (err) => {
        // A refusal by the server is an answer too: it is reachable.
        if ((err as { name?: string }).name === "PostgresError" || err instanceof OverlapError) answered();
        throw err;
      },
    );
  }

  #failed(err: unknown): void {
    const kind: FailureKind = err instanceof OverlapError ? "retry" : classify(err);
    const message = errorMessage(err);
    this.lastFailure = { kind, message };
    const t = this.#telemetry;
    const endpoint = describe(this.#opts.endpoint);
    this.counters.retries++;
    // Whatever happened, the commit may or may not have reached the server: reconcile first.
    this.#reset();
    if (err instanceof OverlapError) {
      const doubt = this.#inDoubt;
      if (doubt && err.first <= doubt.last && err.last >= doubt.first) {
        this.#inDoubt = undefined;
        t.emit(ACK_LOST, { error: message });
      } else t.emit(CLAIMED_ELSEWHERE, { error: message });
      this.#backoff.reset();
      return;
    }
    t.emit(FORWARD_FAILED, { error: message, attempt: this.#backoff.attempts });
    // A refusal (bad password, missing table) needs a person; an outage only needs patience; a
    // spool that refuses (disk full, I/O error) is this host's problem, not the central one's.
    if (kind === "local") {
      t.begin(SPOOL_REFUSES_FORWARDER, "spool", { spool: this.#opts.lease.path, error: message }, message);
    } else if (kind === "config") t.begin(CENTRAL_REFUSES, "central", { endpoint, error: message }, message);
    // An outage began when the database last answered: a black hole is noticed only at a timeout.
    else t.begin(CENTRAL_UNREACHABLE, "central", { endpoint, error: message }, undefined, this.#lastAnswerAt);
  }

  /**
   * A step went through. The central conditions end only once the central database has answered
   * since the connection failed: a step over an empty spool may not have asked it anything.
   */
  #recovered(): void {
    this.#backoff.reset();
    this.#refusedBackoff.reset();
    this.lastFailure = undefined;
    const t = this.#telemetry;
    if (t.isActive(SPOOL_REFUSES_FORWARDER, "spool")) t.end(SPOOL_REFUSES_FORWARDER, "spool");
    if (t.isActive(CENTRAL_LOCK_WAIT, "central")) t.end(CENTRAL_LOCK_WAIT, "central");
    if (!this.#answered) return;
    if (!t.isActive(CENTRAL_REFUSES, "central") && !t.isActive(CENTRAL_UNREACHABLE, "central")) return;
    const fields = { endpoint: describe(this.#opts.endpoint), backlog_rows: this.#backlogAtStepStart };
    t.end(CENTRAL_REFUSES, "central", fields);
    t.end(CENTRAL_UNREACHABLE, "central", fields);
  }
}
