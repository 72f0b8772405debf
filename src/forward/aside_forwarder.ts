import type { Config } from "../config/defaults.ts";
import type { Endpoint } from "../central/connect.ts";
import { errorMessage, logger } from "../log.ts";
import { listAside, removeDrained, salvagePending } from "../spool/aside.ts";
import type { LeasedSpool } from "../spool/spool.ts";
import { type Clock, sleep, systemClock } from "../clock.ts";
import { SPOOL_SALVAGE_PENDING } from "../telemetry/events.ts";
import type { Telemetry } from "../telemetry/telemetry.ts";
import { Forwarder } from "./forwarder.ts";

/**
 * Forwards the spools moved aside (src/spool/aside.ts) next to the live one, so that none is
 * forgotten: each pass salvages what is still pending (a salvage the disk refused is retried on
 * every pass, logged once while it lasts), then drains each retired spool through a Forwarder of
 * its own, with the same ledger protocol as the live spool (exactly once, under the retired
 * spool's own id), and deletes it once nothing in it is left to send.
 */
export interface AsideForwarderOptions {
  spoolPath: string;
  config: Config;
  endpoint: Endpoint;
  telemetry: Telemetry;
  /** Opens a retired spool for forwarding (a lease: no writer, no lock). */
  open(path: string): LeasedSpool;
  clock?: Clock;
}

/** How often the spool's directory is looked at for files moved aside. */
const LOOK_EVERY_MS = 10_000;

export class AsideForwarder {
  #opts: AsideForwarderOptions;
  #clock: Clock;

  constructor(opts: AsideForwarderOptions) {
    this.#opts = opts;
    this.#clock = opts.clock ?? systemClock;
  }

  /** Passes every LOOK_EVERY_MS while `signal` is not aborted. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await this.pass(this.#clock.monotonic() + LOOK_EVERY_MS * 6, signal);
      await sleep(this.#clock, LOOK_EVERY_MS, signal);
    }
  }

  /**
   * Salvages and drains what is aside, until `deadlineMs` (monotonic). Returns true when nothing
   * is left to send: no damaged file waiting for salvage, no retired spool holding samples.
   */
  async pass(deadlineMs: number, signal?: AbortSignal): Promise<boolean> {
    const { spoolPath, telemetry } = this.#opts;
    const aside = listAside(spoolPath);
    if (aside.damaged.length === 0 && aside.retired.length === 0) return true;
    const { refused } = salvagePending(spoolPath);
    if (refused.length > 0) {
      telemetry.begin(SPOOL_SALVAGE_PENDING, spoolPath, { spool: spoolPath, problem: refused[0] }, refused[0]);
    } else telemetry.end(SPOOL_SALVAGE_PENDING, spoolPath, { spool: spoolPath });
    let done = refused.length === 0;
    for (const path of listAside(spoolPath).retired) {
      if (signal?.aborted || this.#clock.monotonic() >= deadlineMs) return false;
      done = (await this.#drain(path, deadlineMs, signal)) && done;
    }
    return done;
  }

  async #drain(path: string, deadlineMs: number, signal?: AbortSignal): Promise<boolean> {
    let spool: LeasedSpool;
    try {
      spool = this.#opts.open(path);
    } catch (err) {
      logger.error("Cannot open a retired spool to forward it", { spool: path, error: errorMessage(err) });
      return false;
    }
    const forwarder = new Forwarder({ lease: spool.lease, endpoint: this.#opts.endpoint, config: this.#opts.config });
    try {
      if (!isEmpty(spool) && !(await forwarder.drain({ deadlineMs, ...(signal && { signal }) }))) return false;
      if (!isEmpty(spool)) return false;
      const { quarantined } = spool.view.stats();
      await forwarder.close();
      spool.close();
      if (quarantined > 0) return true; // kept for the inspection of its quarantined samples
      removeDrained(path);
      logger.warning("Retired spool forwarded and removed", {
        spool: path,
        spool_id: spool.spoolId,
        forwarded_rows: forwarder.counters.rows,
        reconciled_rows: forwarder.counters.reconciledRows,
      });
      return true;
    } finally {
      await forwarder.close();
      spool.close();
    }
  }
}

/** Nothing left to send: no sample, no gap or quarantined seq the ledger does not have yet. */
function isEmpty(spool: LeasedSpool): boolean {
  const { rows, gaps } = spool.view.stats();
  return rows === 0 && gaps === 0 && spool.lease.unreportedQuarantine().length === 0;
}
