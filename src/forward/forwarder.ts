import type { Config } from "../config/defaults.ts";
import { connect, describe, type Endpoint, type Sql } from "../central/connect.ts";
import { errorMessage } from "../log.ts";
import { readingProblem } from "../sample.ts";
import type { SpooledRows, SpooledSample, SpoolLease } from "../spool/spool.ts";
import { Backoff } from "./backoff.ts";
import { BackfillPace } from "./backfill_pace.ts";
import {
  batchClaim,
  CopyRejectedError,
  ONE_STATEMENT_ROWS_MAX,
  prepareBatch,
  type PreparedBatch,
  sendInOneStatement,
  type WrittenBatch,
} from "./batch_writer.ts";
import { classify, type FailureKind } from "./classify.ts";
import { failpoint, failpointArmed } from "./failpoint.ts";
import { NoSlotError, takeBackfillSlot } from "./fleet_slots.ts";
import { Ledger, ledgerLockHolder, type LockHolder, OverlapError } from "./ledger.ts";
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
 * writer's (batch_writer.ts); how fast the backfill may go is the pace's (backfill_pace.ts).
 * This module keeps the loop, the lanes, the connections and their sessions (session.ts), the
 * bisection of rejected batches, and the mapping of failures to conditions.
 *
 * Memory is bounded by one batch per lane and batch in flight (`forward_batch_rows` ×
 * (1 + `forward_pipeline_batches`)) whatever the backlog: the spool is read by seq range.
 *
 * # Two lanes after an outage
 *
 * The live lane is every sample taken since the latest of: the start of this process (its first
 * poll included), the last failed attempt, the last step that left no live sample behind. The
 * rest is the backfill: what was in the spool when the process started, and what piled up while
 * the central database could not be reached. While the spool holds more than one batch:
 *
 * - **The live lane has its own connection.** Each step sends the live samples on it, awaited,
 *   while the backfill's batches are in flight on theirs: a live sample never queues behind a
 *   backfill batch of this collector (before, it waited for the batch on the same connection).
 *   Its batch claims after its rows, like the backfill's, so whichever lane claims holds the
 *   spool's ledger lock for one COMMIT, never for a COPY: no backend of this collector waits
 *   for the lock behind its own other lane's COPY. (The live lane used to claim first: its
 *   siblings' claims queued behind its COPY, and a power loss there left them waiting on the
 *   server beside the orphan, two backends waiting on the lock in the orphaned-session torture.)
 * - **The backfill is pipelined.** Up to `forward_pipeline_batches` backfill batches are in flight
 *   at once, each in its own transaction on its own connection: the next batch is read, encoded
 *   and streamed while the previous one commits, so one collector alone can use what the
 *   database can take. Each batch is read after the last seq of those in flight and never past
 *   the live lane's start, so no row is in two batches; the ledger's claim, taken last in each
 *   transaction (ledger.ts), keeps exactly once whatever order they commit in.
 * - **The backfill is paced** (backfill_pace.ts): capped at `forward_backfill_rows_per_s` when
 *   set, never in batches under a minimum, paused and one batch at a time while the central
 *   database is slow, back to full pace when it is fast, so a fleet of collectors returning
 *   together does not flatten the central database and the live lanes get through. Only a batch
 *   sent whole, at its first try, whose claim found the spool's ledger lock free, tells the pace
 *   how fast the database is: a wait for the lock (an orphaned session of a previous life, a
 *   concurrent flush) or a retry measures something else.
 * - **The fleet's backfill takes turns** (fleet_slots.ts): each backfill batch first takes one of
 *   the `forward_fleet_backfill_batches` slots the central database keeps for the whole fleet; a
 *   batch that finds none free is rolled back at once, kept encoded, and tried again after
 *   SLOT_RETRY_MS (jittered), before any new batch is read, or at once when a batch of this
 *   collector commits and so frees a slot (but every SLOT_TURN_BATCHES-th time). So twenty
 *   collectors returning together keep a few COPYs running, not forty, and their live lanes find
 *   the database (and their own process) free between them. The one batch a collector sends
 *   alone (below) takes no slot: it is one per collector and (re)connection, and it finds out
 *   whether the ledger lock is free.
 * - **No pipeline until the ledger lock is known free.** The backfill opens its connections only
 *   after a claim found the spool's ledger lock free: at start, after any failure, and from the
 *   moment a claim finds the lock held by another session, the live connection alone carries one
 *   batch at a time (live samples, or else the oldest backfill batch, claimed first), the backfill's
 *   connections are closed, and a backfill batch in flight is let settle before anything else is
 *   sent. So while the lock is held elsewhere (the orphan of a power loss keeps it until the
 *   server drops it, session.ts), this collector has one backend, and only it waits for the
 *   lock: no pile of sessions waiting behind the orphan, each of which would wait on after its
 *   client gave up.
 *
 * When the backlog is down to one batch, the backfill's batches are awaited and their
 * connections closed, and the live connection carries everything again. Any failure, in either
 * lane, waits for every batch in flight to settle before the connections are dropped and the
 * spool reconciled: a commit in doubt is always resolved by the ledger, never raced.
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
  /**
   * The owner calls `nudge()` after each commit of new rows (the pipeline does): an idle
   * forwarder then waits for a nudge instead of looking every forward_interval_ms, and one whose
   * batch emptied the spool, with no nudge since, waits for the next instead of looking again.
   */
  nudged?: boolean;
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

/** Longest wait between two attempts while the central database refuses the collector. */
const REFUSED_RETRY_MAX_MS = 30_000;
/**
 * Longest idle wait of a nudged forwarder, or forward_interval_ms if longer: what comes without
 * a nudge (none of the pipeline's rows) waits no longer.
 */
const NUDGED_IDLE_MAX_MS = 5000;

/** One connection to the central database, and whether its session was limited (session.ts). */
interface Channel {
  sql: Sql;
  limited: boolean;
  busy: boolean;
  /** Its backend's pid, once limited. */
  pid?: number;
}

/** One transaction of a batch that committed: its rows, and whether its claim waited for the lock. */
interface SendOutcome {
  rows: number;
  waited: boolean;
}

/**
 * The first transaction of a backfill batch takes a fleet slot (fleet_slots.ts); its encoding is
 * kept here when no slot was free, for the next try.
 */
interface SlotTry {
  slots: number;
  prepared?: PreparedBatch;
}

/** A backfill batch that found no fleet slot free: read, encoded, waiting for its next try. */
interface Parked {
  batch: SpooledRows;
  slot: SlotTry;
}

/**
 * Base wait before a batch that found no fleet slot tries again (jittered ±50%). With twenty
 * collectors waiting, a freed slot is taken again within about 15 ms; each try costs a round trip
 * (measured: 100 ms cost the fleet's collectors 0.13 of a core more than 300 ms, docs/PERFORMANCE.md).
 */
export const SLOT_RETRY_MS = 300;

/**
 * When a collector's backfill batch commits, a batch of its own waiting for a slot tries at once,
 * in the slot just freed; every SLOT_TURN_BATCHES-th time it waits SLOT_RETRY_MS instead, like
 * the rest of the fleet, so that a long backlog does not keep a slot from the others for its whole
 * drain (25 full 20,000-row batches: about 3 s at 150,000 rows/s).
 */
export const SLOT_TURN_BATCHES = 25;

/** A backfill batch in flight on its own channel. */
interface InFlight {
  first: number;
  last: number;
  done: Promise<void>;
}

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
  /** The live lane's connection, which also carries everything once caught up. */
  #live: Channel | undefined;
  /** The backfill's connections, one per batch in flight (see "Two lanes"). */
  #backfill: Channel[] = [];
  #inFlight: InFlight[] = [];
  /** Backfill batches that found no fleet slot, in seq order, tried again from #slotRetryAt on. */
  #parked: Parked[] = [];
  #slotRetryAt = 0;
  /** Slots freed by this collector's commits since it last let one go (SLOT_TURN_BATCHES). */
  #turnBatches = 0;
  /** The first failure of a backfill batch in flight, until a step handles it. */
  #backfillFailure: { error: unknown } | undefined;
  /** Whether a claim found the ledger lock free since the last failure or lock wait (see "Two lanes"). */
  #lockClear = false;
  /** Whether `nudge()` was called since the last idle wait, and what ends that wait. */
  #nudged = false;
  #onNudge: (() => void) | undefined;
  /** When the last step that sent began (monotonic). */
  #lastSentAt = -Infinity;
  /** Wakes a paced wait when a backfill batch settles. */
  #wake: (() => void) | undefined;
  #ledger: Ledger;
  #reconciled = false;
  #backoff: Backoff;
  #refusedBackoff: Backoff;
  #telemetry: Telemetry;
  #pace: BackfillPace;
  /** Seqs up to this one are the backfill, later ones the live lane (see "Two lanes"). */
  #liveAfter: number;
  #draining = false;
  /** Whether the central database answered since the connection last failed, and when it last did. */
  #answered = false;
  #lastAnswerAt: number | undefined;
  /** Spool rows when the current step began: the backlog a recovery log line reports. */
  #backlogAtStepStart = 0;
  /** The batches whose commit went unanswered, until their range is found claimed. */
  #inDoubt: { first: number; last: number }[] = [];

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
    this.#pace = new BackfillPace({
      maxRows: opts.config.forward_batch_rows,
      capRowsPerS: opts.config.forward_backfill_rows_per_s,
      pipeline: opts.config.forward_pipeline_batches,
      clock: this.#clock,
    });
  }

  /** Forwards until `signal` aborts: everything queued, then new samples as they come. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const began = this.#clock.monotonic();
      const outcome = await this.step();
      if (outcome === "sent") {
        this.#lastSentAt = began;
        // Nudged, with the spool emptied and no commit since the step began: the next rows come
        // with a nudge, and a look now would find none (a step's statements to the spool and a
        // turn of the loop a batch, at 1 s polls once a second for nothing).
        if (!this.#opts.nudged || this.#nudged || this.#opts.lease.rowCount() > 0) continue;
        await this.#untilNudged(signal);
        continue;
      }
      if (outcome === "paced") await this.#pacedWait(Math.max(10, this.#opts.config.forward_interval_ms / 5), signal);
      else if (outcome === "idle" && this.#opts.nudged) await this.#untilNudged(signal);
      else {
        const wait = outcome === "idle" ? this.#opts.config.forward_interval_ms : this.#retryWaitMs();
        await sleep(this.#clock, wait, signal);
      }
    }
    await this.#settleBackfill();
  }

  /**
   * Tells an idle forwarder that the spool has new rows (see `ForwarderOptions.nudged`). Each
   * forwarder wake-up costs CPU even when it finds nothing: at 1 s polls, looking every 500 ms
   * woke the process twice a second for one batch.
   */
  nudge(): void {
    this.#nudged = true;
    this.#onNudge?.();
  }

  /**
   * The idle wait of a nudged forwarder: until a nudge (or the longest idle wait), then no sooner
   * than forward_interval_ms after the last step that sent, so batches come no more often than
   * with the periodic look.
   */
  async #untilNudged(signal: AbortSignal): Promise<void> {
    if (!this.#nudged && !signal.aborted) {
      await new Promise<void>((resolve) => {
        const done = () => {
          this.#clock.clearTimeout(timer);
          signal.removeEventListener("abort", done);
          this.#onNudge = undefined;
          resolve();
        };
        const timer = this.#clock.setTimeout(done, Math.max(NUDGED_IDLE_MAX_MS, this.#opts.config.forward_interval_ms));
        signal.addEventListener("abort", done, { once: true });
        this.#onNudge = done;
      });
    }
    this.#nudged = false;
    const rest = this.#lastSentAt + this.#opts.config.forward_interval_ms - this.#clock.monotonic();
    if (rest > 0) await sleep(this.#clock, rest, signal);
  }

  /**
   * Drains the spool until it is empty or `deadlineMs` (monotonic) passes. Returns true when the
   * spool is empty.
   */
  async drain(opts: { deadlineMs: number; signal?: AbortSignal; onProgress?: () => void }): Promise<boolean> {
    try {
      for (;;) {
        if (opts.signal?.aborted) return false;
        const outcome = await this.step();
        opts.onProgress?.();
        if (outcome === "idle") return true;
        if (this.#clock.monotonic() >= opts.deadlineMs) return false;
        if (outcome === "paced") await this.#pacedWait(20, opts.signal);
        if (outcome === "failed") {
          const wait = Math.min(this.#retryWaitMs(), Math.max(0, opts.deadlineMs - this.#clock.monotonic()));
          await sleep(this.#clock, wait, opts.signal);
        }
      }
    } finally {
      await this.#settleBackfill();
    }
  }

  /**
   * One unit of work: reconcile if needed, report gaps and quarantined seqs, send the live lane
   * and start backfill batches. Never throws but for our own bug: failures are classified,
   * logged by impact and answered with "failed".
   */
  async step(): Promise<"sent" | "idle" | "paced" | "failed"> {
    const lease = this.#opts.lease;
    this.#backlogAtStepStart = lease.rowCount();
    try {
      const live = await this.#ready(this.#liveChannel());
      if (!this.#reconciled) {
        await this.#reconcile(live.sql);
        this.#reconciled = true;
      }
      this.#raiseBackfillFailure();
      await this.#ledger.reportGaps(live.sql, (rows) => this.counters.droppedReported += rows);
      await this.#ledger.reportQuarantine(live.sql);
      const batchRows = this.#opts.config.forward_batch_rows;
      if (lease.rowCount() <= batchRows) {
        // What is left fits one batch: the backfill's batches land first (read(0) would
        // otherwise take their rows again), then the live connection sends the rest.
        await this.#settleBackfill();
        this.#raiseBackfillFailure();
        this.#closeBackfill();
        if (this.#draining) {
          this.#draining = false;
          this.#telemetry.end(BACKLOG_DRAINING, "spool", { live_rows: this.counters.liveRows });
        }
        const newest = lease.lastSeq();
        const batch = lease.readRows(0, batchRows);
        if (batch.length > 0) await this.#sendIsolating(live.sql, batch, false);
        // Caught up: whatever comes next is live.
        this.#liveAfter = Math.max(this.#liveAfter, newest);
        this.#recovered();
        return batch.length > 0 ? "sent" : "idle";
      }
      // A backlog: the live lane on its own connection, the backfill's batches on theirs.
      if (!this.#draining) {
        this.#draining = true;
        this.#telemetry.begin(BACKLOG_DRAINING, "spool", {
          backlog_rows: lease.rowCount(),
          cap_rows_per_s: this.#opts.config.forward_backfill_rows_per_s || undefined,
        });
      }
      if (!this.#lockClear) return await this.#sendAlone(live.sql);
      const started = this.#startBackfill();
      const fresh = lease.readRows(this.#liveAfter, batchRows);
      if (fresh.length > 0) {
        // Claimed after its rows, like the backfill's batches (see "Two lanes").
        await this.#sendIsolating(live.sql, fresh, true);
        this.#liveAfter = Math.max(this.#liveAfter, fresh.lastSeq);
      }
      this.counters.liveRows += fresh.length;
      this.#recovered();
      return started > 0 || fresh.length >= batchRows ? "sent" : "paced";
    } catch (caught) {
      // Every batch in flight settles before the connections go: a commit in doubt is resolved
      // by reconciliation, never raced by it.
      await this.#settleBackfill();
      const fromBackfill = this.#backfillFailure?.error;
      this.#backfillFailure = undefined;
      const err = fromBackfill !== undefined && classify(fromBackfill) === "bug" ? fromBackfill : caught;
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
   * While the ledger lock is not known free: once every backfill batch in flight settled, one
   * batch on the live connection, claimed first, live samples first (see "Two lanes").
   */
  async #sendAlone(sql: Sql): Promise<"sent" | "paced"> {
    if (this.#inFlight.length > 0) return "paced";
    this.#raiseBackfillFailure();
    this.#closeBackfill();
    const lease = this.#opts.lease;
    const fresh = lease.readRows(this.#liveAfter, this.#opts.config.forward_batch_rows);
    const batch = fresh.length > 0 ? fresh : lease.readRows(0, this.#pace.rows, this.#liveAfter);
    if (batch.length === 0) return "paced";
    await this.#sendIsolating(sql, batch, false);
    if (fresh.length > 0) {
      this.#liveAfter = Math.max(this.#liveAfter, fresh.lastSeq);
      this.counters.liveRows += fresh.length;
    }
    this.#recovered();
    return "sent";
  }

  /**
   * Starts backfill batches while the pace allows and a slot is free; returns the rows started
   * (a batch tried again for a fleet slot is not counted: the step then waits, see run()).
   * Each batch starts after the last seq in flight and ends at the live lane's start at most.
   */
  #startBackfill(): number {
    let started = 0;
    while (this.#inFlight.length < this.#pace.inFlightMax) {
      // A batch waiting for a fleet slot goes first, one try per step (the next one tries while
      // it is in flight, if it got a slot), at its retry and not within the pace's pause; none
      // is read while one waits.
      if (this.#parked.length > 0) {
        if (this.#clock.monotonic() < Math.max(this.#slotRetryAt, this.#pace.pausedUntil)) break;
        const parked = this.#parked.shift()!;
        this.#launch(parked.batch, parked.slot);
        break;
      }
      const allowed = this.#pace.allowance();
      if (allowed === 0) break;
      const after = Math.max(0, ...this.#inFlight.map((f) => f.last));
      const batch = this.#opts.lease.readRows(after, allowed, this.#liveAfter);
      if (batch.length === 0) break;
      this.#pace.spent(batch.length);
      const slots = this.#opts.config.forward_fleet_backfill_batches;
      this.#launch(batch, slots > 0 ? { slots } : undefined);
      started += batch.length;
    }
    return started;
  }

  /** Sends `batch` on a free backfill connection, without waiting for it. */
  #launch(batch: SpooledRows, slot: SlotTry | undefined): void {
    let channel = this.#backfill.find((c) => !c.busy);
    if (!channel) {
      channel = this.#channel("kwollector backfill");
      this.#backfill.push(channel);
    }
    const ch = channel;
    ch.busy = true;
    const flight: InFlight = { first: batch.firstSeq, last: batch.lastSeq, done: Promise.resolve() };
    flight.done = (async () => {
      try {
        await this.#ready(ch);
        const began = this.#clock.monotonic();
        const sends: SendOutcome[] = [];
        await this.#sendIsolating(ch.sql, batch, true, undefined, sends, slot);
        // Only a batch sent whole at once, with the lock free, measures the database's speed.
        if (sends.length === 1 && !sends[0]!.waited && sends[0]!.rows === batch.length) {
          this.#paced(this.#clock.monotonic() - began);
        }
        if (slot) this.#slotFreed();
      } catch (err) {
        if (err instanceof NoSlotError && slot) this.#park({ batch, slot });
        else this.#backfillFailure ??= { error: err };
      } finally {
        ch.busy = false;
        this.#inFlight = this.#inFlight.filter((f) => f !== flight);
        this.#wake?.();
      }
    })();
    this.#inFlight.push(flight);
  }

  /**
   * This collector's batch committed, which freed its fleet slot: a batch of ours waiting for a
   * slot tries at once, rather than leave the slot idle until its retry or another collector's
   * (twenty collectors returning together drained about a tenth less: docs/PERFORMANCE.md `turn14`),
   * except every SLOT_TURN_BATCHES-th time.
   */
  #slotFreed(): void {
    if (this.#parked.length === 0) return;
    if (++this.#turnBatches < SLOT_TURN_BATCHES) {
      this.#slotRetryAt = 0;
      return;
    }
    this.#turnBatches = 0;
    this.#slotRetryLater();
  }

  /** Keeps a batch that found no fleet slot (it wrote and claimed nothing) for its next try. */
  #park(parked: Parked): void {
    this.#parked.push(parked);
    this.#parked.sort((a, b) => a.batch.firstSeq - b.batch.firstSeq);
    this.#slotRetryLater();
  }

  /** The waiting batch's next try: SLOT_RETRY_MS from now, jittered ±50% so that a fleet spreads out. */
  #slotRetryLater(): void {
    this.#slotRetryAt = this.#clock.monotonic() + SLOT_RETRY_MS * (0.5 + Math.random());
  }

  /** Tells the pace how long a backfill batch took; logs when the central database turns slow or fast. */
  #paced(elapsedMs: number): void {
    const turned = this.#pace.observe(elapsedMs);
    if (turned === "slow") {
      this.#telemetry.begin(CENTRAL_SLOW, "central", {
        rows: this.#pace.rows,
        batch_ms: Math.round(elapsedMs),
        pause_ms: Math.max(0, Math.round(this.#pace.pausedUntil - this.#clock.monotonic())),
      });
    } else if (turned === "fast") this.#telemetry.end(CENTRAL_SLOW, "central", { rows: this.#pace.rows });
  }

  /** Rethrows the failure of a backfill batch in flight, for the step to handle. */
  #raiseBackfillFailure(): void {
    const failure = this.#backfillFailure;
    if (failure) throw failure.error;
  }

  /** Waits for every backfill batch in flight to settle (their failures are kept, not thrown). */
  async #settleBackfill(): Promise<void> {
    while (this.#inFlight.length > 0) await Promise.all(this.#inFlight.map((f) => f.done));
  }

  /** Waits `ms`, or less when a backfill batch settles first (its slot is free again). */
  async #pacedWait(ms: number, signal?: AbortSignal): Promise<void> {
    if (this.#inFlight.length === 0) return await sleep(this.#clock, ms, signal);
    const stop = new AbortController();
    const woken = new Promise<void>((resolve) => this.#wake = resolve);
    await Promise.race([sleep(this.#clock, ms, signal ? AbortSignal.any([signal, stop.signal]) : stop.signal), woken]);
    stop.abort();
    this.#wake = undefined;
  }

  /**
   * A lock wait ran into lock_timeout: the database answers, another session holds a lock this
   * batch needs (an orphaned batch of this spool, a concurrent flush, maintenance). Logged with
   * the holder; the connection is kept (the transaction was rolled back, nothing is uncertain).
   */
  async #lockWaited(wait: LockWait): Promise<void> {
    this.#lockClear = false;
    this.#closeBackfill();
    const sql = this.#live?.sql;
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

  /**
   * Ends the connections; a batch still in flight fails with them (its commit is then in doubt,
   * resolved by the next process's reconciliation).
   */
  async close(): Promise<void> {
    const channels = [this.#live, ...this.#backfill].filter((c) => c !== undefined);
    this.#live = undefined;
    this.#backfill = [];
    await Promise.all(channels.map((c) => c.sql.end({ timeout: 1 }).catch(() => {})));
    await this.#settleBackfill();
  }

  #liveChannel(): Channel {
    this.#live ??= this.#channel("kwollector forwarder");
    return this.#live;
  }

  /** A new connection (opened at its first statement) under the application name `name`. */
  #channel(name: string): Channel {
    const state = { limited: false, busy: false };
    const make = this.#opts.connectFn ?? ((e: Endpoint) =>
      connect(e, {
        applicationName: name,
        parameters: sessionParameters(this.#opts.config),
        onClose: () => {
          state.limited = false;
        },
      }));
    return Object.assign(state, { sql: make(this.#opts.endpoint) });
  }

  /** Limits the channel's statements once per connection (see session.ts). */
  async #ready(channel: Channel): Promise<Channel> {
    if (!channel.limited) {
      channel.pid = await this.#timed(limitStatements(channel.sql, this.#opts.config));
      channel.limited = true;
    }
    return channel;
  }

  /** Closes the backfill's connections (none in flight): the drain is over. */
  #closeBackfill(): void {
    for (const c of this.#backfill) c.sql.end({ timeout: 1 }).catch(() => {});
    this.#backfill = [];
    // Their rows are still in the spool: read again from there.
    this.#parked = [];
  }

  /**
   * Drops the connections (their state is uncertain) and forces reconciliation before the next
   * send. Called with no backfill batch in flight.
   */
  #reset(): void {
    const channels = [this.#live, ...this.#backfill].filter((c) => c !== undefined);
    this.#live = undefined;
    this.#backfill = [];
    this.#parked = [];
    this.#answered = false;
    this.#reconciled = false;
    this.#lockClear = false;
    this.#opts.lease.releaseLeases();
    for (const c of channels) c.sql.end({ timeout: 0 }).catch(() => {});
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
  async #sendIsolating(
    sql: Sql,
    batch: SpooledRows,
    claimLast: boolean,
    method = this.#opts.config.forward_method,
    sends: SendOutcome[] = [],
    slot?: SlotTry,
  ): Promise<void> {
    const now = this.#clock.now();
    for (let bad = 0; bad < batch.length; bad++) {
      const problem = readingProblem(batch.timestampMs(bad), batch.value(bad), now) ?? batch.series(bad).problem;
      if (problem === undefined) continue;
      // Only the first transaction of a batch takes a slot: a later one has rows sent before it.
      if (bad > 0) await this.#sendIsolating(sql, batch.slice(0, bad), claimLast, method, sends, slot);
      await this.#quarantine(sql, batch.sample(bad), problem);
      if (bad + 1 < batch.length) await this.#sendIsolating(sql, batch.slice(bad + 1), claimLast, method, sends);
      return;
    }
    try {
      sends.push(await this.#send(sql, batch, method, claimLast, slot));
    } catch (err) {
      if (err instanceof CopyRejectedError) return await this.#sendIsolating(sql, batch, claimLast, "insert", sends);
      if (err instanceof OverlapError || classify(err) !== "data") throw err;
      sends.push({ rows: 0, waited: false });
      if (batch.length === 1) return await this.#quarantine(sql, batch.sample(0), errorMessage(err));
      const mid = Math.floor(batch.length / 2);
      await this.#sendIsolating(sql, batch.slice(0, mid), claimLast, method, sends);
      await this.#sendIsolating(sql, batch.slice(mid), claimLast, method, sends);
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

  /**
   * Sends one batch in one transaction, its ledger claim and its rows (see ledger.ts): a
   * backfill batch claims after its rows, so that the spool's ledger lock is held only for its
   * commit, not for its COPY, and the other lane's claims do not wait for that COPY.
   */
  async #send(
    sql: Sql,
    batch: SpooledRows,
    method: string,
    claimLast: boolean,
    slot?: SlotTry,
  ): Promise<SendOutcome> {
    if (!claimLast && !slot && batch.length <= ONE_STATEMENT_ROWS_MAX && !orphanFailpointArmed()) {
      const sent = await this.#sendInOneStatement(sql, batch);
      if (sent) return sent;
    }
    // A batch that found no slot before was encoded then (the same rows: its chunks are unsent).
    const kept = slot?.prepared;
    const same = kept?.first === batch.firstSeq && kept.last === batch.lastSeq && kept.rows === batch.length;
    const prepared = same ? kept : prepareBatch(batch, method);
    if (slot) slot.prepared = prepared;
    const { first, last } = prepared;
    // A lock held by this forwarder's other lane or batch is no sign of another session.
    const held = (holder: LockHolder | undefined) => {
      const own = [this.#live, ...this.#backfill].some((c) => c?.pid !== undefined && c.pid === holder?.pid);
      if (holder && !own) this.#lockClear = false;
    };
    let waited = false;
    let written: WrittenBatch | undefined;
    const sent = this.#timed(
      sql.begin(async (tx) => {
        if (slot && !(await takeBackfillSlot(tx, slot.slots))) throw new NoSlotError(slot.slots);
        const claim = (beforeWait?: () => Promise<void>) =>
          this.#ledger.claimBatch(tx, prepared, { onHeld: held, beforeWait })
            .then((c) => waited = c.waited);
        written = await prepared.write(tx, claim, !claimLast);
      }).then(() => written?.settled),
    );
    try {
      await sent;
    } catch (err) {
      // Cut off without an answer, the COMMIT may still land: a later refusal of this range is
      // then our own lost acknowledgement, not another process's claim.
      if (!(err instanceof OverlapError || err instanceof NoSlotError) && classify(err) === "retry") {
        this.#inDoubt.push({ first, last });
      }
      throw err;
    }
    return this.#committed(batch, waited);
  }

  /**
   * A small batch claimed first sent as one statement, one round trip (batch_writer.ts
   * `sendInOneStatement`); undefined when nothing was written: the lock was held or the range
   * claimed, which the usual path then waits for or reports.
   */
  async #sendInOneStatement(sql: Sql, batch: SpooledRows): Promise<SendOutcome | undefined> {
    const claim = batchClaim(batch);
    let written: boolean;
    try {
      written = await this.#timed(sendInOneStatement(sql, batch, this.#ledger.claimIfFree(sql, claim)));
    } catch (err) {
      // Cut off without an answer, the statement's commit may still land (see #send).
      if (classify(err) === "retry") this.#inDoubt.push({ first: claim.first, last: claim.last });
      throw err;
    }
    return written ? this.#committed(batch, false) : undefined;
  }

  /** A batch committed centrally with its claim: its rows leave the spool. */
  #committed(batch: SpooledRows, waited: boolean): SendOutcome {
    const first = batch.firstSeq;
    const last = batch.lastSeq;
    failpoint("after-central-commit");
    // The claim got the lock (at once, or once its holder let go): it is free.
    this.#lockClear = true;
    this.#opts.lease.removeForwarded(first, last);
    this.counters.batches++;
    this.counters.rows += batch.length;
    this.counters.lastForwardAtMs = this.#clock.now();
    this.#telemetry.emit(ROWS_FORWARDED, { rows: batch.length, first_seq: first, last_seq: last }, { n: batch.length });
    return { rows: batch.length, waited };
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
      const lost = this.#inDoubt.filter((d) => err.first <= d.last && err.last >= d.first);
      if (lost.length > 0) {
        this.#inDoubt = this.#inDoubt.filter((d) => !lost.includes(d));
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

/**
 * Whether the orphaned-session torture armed a failpoint of the claiming transaction's COPY
 * (batch_writer.ts `copyRows`): its batches then all go the usual way, the one that can leave a
 * backend holding the lock. A batch sent in one statement holds the lock only while the server
 * runs it, and commits or rolls back before it answers.
 */
function orphanFailpointArmed(): boolean {
  return failpointArmed("mid-copy") || failpointArmed("before-commit");
}
