import { connect, endpointOf } from "../central/connect.ts";
import { sleep, systemClock } from "../clock.ts";
import { PromotionFilter, PromotionRefresher } from "../collect/promotion.ts";
import type { Config } from "../config/defaults.ts";
import { AsideForwarder } from "../forward/aside_forwarder.ts";
import { Forwarder } from "../forward/forwarder.ts";
import { errorMessage, logger } from "../log.ts";
import type { Sample } from "../sample.ts";
import { spoolTrouble } from "../spool/errors.ts";
import type { Spool } from "../spool/spool.ts";
import { CONDITIONS, SPOOL_FILE_LOST, SPOOL_UNAVAILABLE } from "../telemetry/events.ts";
import { Telemetry } from "../telemetry/telemetry.ts";
import { onCrash } from "./crash.ts";
import { openSpool, startTelemetry } from "./runtime.ts";

/**
 * The collecting pipeline behind `run` and `wattmetre`, assembled in one place: the spool (opened
 * when the disk allows it), the forwarder of the live spool and of the spools moved aside, the
 * promotion refresher, the collector's own telemetry, and the watch over the spool file. Each
 * producer (the scheduler, the wattmeter reader) only gets `deliver`.
 *
 * Stopping is one fixed order: the producer stops first (the caller), then `stop()` ends the
 * telemetry and the refresher, commits what is queued, lets the forwarders finish their current
 * batch, writes the spool file back if it was deleted, and closes the spool.
 *
 * A programming error in a forwarder rejects `failure`: the caller stops its producer and
 * rethrows, so that main.ts logs it CRITICAL and the process exits (systemd restarts it; the
 * spool keeps every acknowledged sample).
 */
export interface Pipeline {
  spool: Spool;
  telemetry: Telemetry;
  forwarder: Forwarder;
  filter: PromotionFilter;
  deliver(samples: Sample[]): Promise<void>;
  /** Starts the promotion refresher once `refreshPromotions` says it is needed (after a reload). */
  refreshPromotionsIfNeeded(): void;
  /** Rejects with the programming error that ended a forwarder; never resolves otherwise. */
  failure: Promise<never>;
  stop(): Promise<void>;
}

/** How often the spool file is checked for having been deleted or replaced. */
const FILE_WATCH_MS = 1000;
/** Longest wait between two attempts to open a spool the disk refuses. */
const OPEN_RETRY_MAX_MS = 30_000;

export async function startPipeline(
  c: Config,
  opts: { name: string; signal: AbortSignal; refreshPromotions: () => boolean },
): Promise<Pipeline | undefined> {
  const telemetry = new Telemetry({ conditions: CONDITIONS });
  const spool = await openWhenAllowed(c, telemetry, opts.signal);
  if (!spool) return undefined;
  onCrash(() => spool.commitPending());
  const endpoint = endpointOf(c);
  const filter = new PromotionFilter();
  let refresher: PromotionRefresher | undefined;
  const startRefresher = () => {
    if (refresher || !opts.refreshPromotions()) return;
    refresher = new PromotionRefresher({
      filter,
      spool,
      connect: () => connect(endpoint, { applicationName: `kwollector ${opts.name} promotion` }),
      refreshMs: c.promoted_refresh_ms,
    });
    refresher.start();
  };
  startRefresher();
  const forwarder = new Forwarder({ spool, endpoint, config: c, telemetry });
  const aside = new AsideForwarder({
    spoolPath: c.spool_path,
    config: c,
    endpoint,
    telemetry,
    open: (path) => openSpool({ ...c, spool_path: path }, "forwarder"),
  });
  const health = startTelemetry({ config: c, spool, telemetry, forwarder });
  const forwarding = new AbortController();
  const loops = Promise.all([forwarder.run(forwarding.signal), aside.run(forwarding.signal)]);
  const failure = loops.then(() => new Promise<never>(() => {}));
  failure.catch(() => {}); // observed by the caller through `failure`; never an unhandled rejection
  const watch = setInterval(() => restoreIfLost(spool, telemetry), FILE_WATCH_MS);

  return {
    spool,
    telemetry,
    forwarder,
    filter,
    deliver: (samples) => spool.append(samples),
    refreshPromotionsIfNeeded: startRefresher,
    failure,
    async stop() {
      clearInterval(watch);
      await health.stop();
      await refresher?.stop();
      spool.commitPending();
      forwarding.abort();
      await loops.catch(() => {});
      await forwarder.close();
      restoreIfLost(spool, telemetry);
      spool.close();
    },
  };
}

/**
 * Opens the spool, retrying in place while the disk or the OS refuses (a full disk at start):
 * the condition is logged once with the path when it starts and once when it ends. Returns
 * undefined when `signal` aborts first.
 */
async function openWhenAllowed(c: Config, telemetry: Telemetry, signal: AbortSignal): Promise<Spool | undefined> {
  for (let waitMs = 1000; !signal.aborted; waitMs = Math.min(waitMs * 2, OPEN_RETRY_MAX_MS)) {
    try {
      const spool = openSpool(c, "writer", telemetry);
      telemetry.end(SPOOL_UNAVAILABLE, c.spool_path, { spool: c.spool_path });
      return spool;
    } catch (err) {
      if (spoolTrouble(err) !== "refused") throw err;
      const error = errorMessage(err);
      telemetry.begin(SPOOL_UNAVAILABLE, c.spool_path, { spool: c.spool_path, error }, error);
    }
    await sleep(systemClock, waitMs, signal);
  }
  return undefined;
}

/** Writes the spool file back when it was deleted or replaced under the running collector. */
function restoreIfLost(spool: Spool, telemetry: Telemetry): void {
  const state = spool.fileState();
  if (state === "ok") return;
  const fields = { spool: spool.path, file: state, rows: spool.rowCount() };
  telemetry.begin(SPOOL_FILE_LOST, spool.path, fields);
  try {
    spool.restoreFile();
    telemetry.end(SPOOL_FILE_LOST, spool.path, { spool: spool.path });
  } catch (err) {
    if (spoolTrouble(err) !== "refused") throw err;
    logger.debug("Spool file not written back yet", { spool: spool.path, error: errorMessage(err) });
  }
}
