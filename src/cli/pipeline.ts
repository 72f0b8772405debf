import { connect, endpointOf } from "../central/connect.ts";
import { promotedMetrics } from "../central/promoted_metrics.ts";
import { type Clock, sleep, systemClock, type TimerId } from "../clock.ts";
import { PromotionFilter, PromotionRefresher } from "../collect/promotion.ts";
import { type Config, parseListenAddress } from "../config/defaults.ts";
import { AsideForwarder } from "../forward/aside_forwarder.ts";
import { Forwarder } from "../forward/forwarder.ts";
import { errorMessage, logger } from "../log.ts";
import type { Sample, SampleBatch } from "../sample.ts";
import { spoolTrouble } from "../spool/errors.ts";
import { openSpool, openSpoolLease, SAMPLE_BYTES_ESTIMATE, type Spool } from "../spool/spool.ts";
import { CONDITIONS, SPOOL_FILE_LOST, SPOOL_UNAVAILABLE } from "../telemetry/events.ts";
import { HealthSampler } from "../telemetry/health.ts";
import { type MetricsEndpoint, serveMetrics } from "../telemetry/prometheus_endpoint.ts";
import { Telemetry } from "../telemetry/telemetry.ts";
import { onCrash } from "./crash.ts";
import { spoolOptions } from "./runtime.ts";

/**
 * The collecting pipeline behind `run` and `wattmetre`, assembled in one place: the spool (opened
 * when the disk allows it), the forwarder of the live spool and of the spools moved aside, the
 * promotion refresher, the collector's own telemetry (health sampler and Prometheus endpoint),
 * and the watch over the spool file. Each part gets the port it needs and no more: the producers
 * (the scheduler, the wattmeter reader, the health sampler) only `deliver`, which is the spool
 * writer's `append` followed, once committed, by a nudge to the forwarder (which otherwise
 * would look for new rows every forward_interval_ms); the forwarders a lease; the refresher the
 * spool's local state and its reader of promoted_metrics (its connection made here); the health
 * sampler narrow gauges.
 *
 * Starting is one fixed order: the spool, the refresher, the telemetry, the forwarders' loops,
 * the file watch; the caller then starts its producer. Stopping is one fixed order too: the
 * producer stops first (the caller), then `stop()` ends the file watch, the telemetry and the
 * refresher, commits what is queued, lets the forwarders finish their current batch, writes the
 * spool file back if it was deleted, and closes the spool.
 *
 * Housekeeping (`Housekeeping`) runs about once a second (two at most): the spool file's watch,
 * the wall clock's watch and the caller's own tasks (`everyTick`: `run` records its devices'
 * status). It runs in a wake-up of the producer's when one comes close enough to the second
 * (`housekeep`: the scheduler's, after its polls), and on a timer of its own only when none
 * does: a wake-up of the Deno runtime costs CPU even when it does nothing (about 0.2 ms on the
 * 2-core VM: docs/PERFORMANCE.md, "SNMP workload B"), and at 1 s polls the poll's wake-up is one
 * already paid for.
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
  deliver(samples: SampleBatch): Promise<void>;
  /** Starts the promotion refresher once `refreshPromotions` says it is needed (after a reload). */
  refreshPromotionsIfNeeded(): void;
  /** Runs `task` at every housekeeping tick (`Housekeeping`), after the pipeline's own checks, until `stop()`. */
  everyTick(task: () => void): void;
  /**
   * A wake-up already paid for (the scheduler's, its own timer set again): runs the housekeeping
   * tick now if it is due soon. Throws what the tick throws (our own bug).
   */
  housekeep(): void;
  /** Rejects with the programming error that ended a forwarder; never resolves otherwise. */
  failure: Promise<never>;
  stop(): Promise<void>;
}

/**
 * The housekeeping tick: how often the spool file is checked for having been deleted or
 * replaced, and the wall clock compared with the monotonic one (to report steps).
 */
const TICK_MS = 1000;
/** A producer's wake-up runs the tick when at most this much early... */
const TICK_EARLY_MS = 150;
/** ... and the tick's own timer, between two offers, waits this much past TICK_MS for one. */
const TICK_LATE_MS = 150;

/**
 * Runs `tick` about every TICK_MS, on the wake-ups the process has anyway when it can: `offer()`
 * (called at the end of each of the scheduler's wake-ups) runs it when TICK_MS - TICK_EARLY_MS
 * have passed since the last run; its own timer runs it otherwise, 2 × TICK_MS after a run at an
 * offer and TICK_MS + TICK_LATE_MS after a run of its own (late enough for the offers of polls
 * a second apart to come first, whatever their phase). So a collector polling every second runs
 * every tick in a poll's wake-up and its timer never fires, and one with nothing to poll ticks
 * every 1.15 s on the timer; a tick is at most 2 × TICK_MS after the last (polls every 2 s, or
 * the first after polls stop).
 *
 * Why 2 × TICK_MS after an offer: Deno's runtime sleeps until the earliest timer, re-armed at
 * each wake-up before the callbacks run, and a timer cleared afterwards still wakes the process
 * at its time (measured: a 1.15 s fallback cleared at each 1 s poll woke the process 150 ms
 * after every poll, for nothing). The timer set at an offer must therefore come after the next
 * poll's, which is set again in that poll's wake-up. A tick that throws (our own bug) throws
 * from the scheduler's timer or its own, so that it surfaces (CRITICAL + exit), as from the
 * interval it replaces.
 */
export class Housekeeping {
  #clock: Clock;
  #tick: () => void;
  #lastMs: number;
  #timer: TimerId | undefined;
  #stopped = false;

  constructor(clock: Clock, tick: () => void) {
    this.#clock = clock;
    this.#tick = tick;
    this.#lastMs = clock.monotonic();
    this.#arm(TICK_MS + TICK_LATE_MS);
  }

  /** A wake-up already paid for: runs the tick now if it is due soon. */
  offer(): void {
    if (this.#stopped || this.#clock.monotonic() - this.#lastMs < TICK_MS - TICK_EARLY_MS) return;
    this.#run(2 * TICK_MS);
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Runs the tick, the timer set for `nextMs` later. */
  #run(nextMs: number): void {
    if (this.#stopped) return;
    this.#lastMs = this.#clock.monotonic();
    this.#arm(nextMs);
    this.#tick();
  }

  #arm(ms: number): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.#run(TICK_MS + TICK_LATE_MS);
    }, ms);
  }
}
/** Longest wait between two attempts to open a spool the disk refuses. */
const OPEN_RETRY_MAX_MS = 30_000;

export async function startPipeline(
  c: Config,
  opts: { name: string; signal: AbortSignal; refreshPromotions: () => boolean },
): Promise<Pipeline | undefined> {
  const telemetry = new Telemetry({ conditions: CONDITIONS });
  const spool = await openWhenAllowed(c, telemetry, opts.signal);
  if (!spool) return undefined;
  const { writer } = spool;
  onCrash(() => writer.commitPending());
  const endpoint = endpointOf(c);
  const filter = new PromotionFilter();
  let refresher: PromotionRefresher | undefined;
  const startRefresher = () => {
    if (refresher || !opts.refreshPromotions()) return;
    refresher = new PromotionRefresher({
      filter,
      saved: spool.state,
      central: promotedMetrics(() => connect(endpoint, { applicationName: `kwollector ${opts.name} promotion` })),
      refreshMs: c.promoted_refresh_ms,
    });
    refresher.start();
  };
  startRefresher();
  const forwarder = new Forwarder({ lease: spool.lease, endpoint, config: c, telemetry, nudged: true });
  // The forwarder looks at the spool once its new rows are committed (see Forwarder.nudge).
  const deliver = (samples: SampleBatch) => writer.append(samples).then(() => forwarder.nudge());
  const aside = new AsideForwarder({ spoolPath: c.spool_path, config: c, endpoint, telemetry, open: openSpoolLease });
  const health = startTelemetry({ config: c, spool, telemetry, forwarder, deliver });
  const forwarding = new AbortController();
  const loops = Promise.all([forwarder.run(forwarding.signal), aside.run(forwarding.signal)]);
  const failure = loops.then(() => new Promise<never>(() => {}));
  failure.catch(() => {}); // observed by the caller through `failure`; never an unhandled rejection
  const tasks: (() => void)[] = [];
  const housekeeping = new Housekeeping(systemClock, () => {
    restoreIfLost(spool, telemetry);
    health.watchClock();
    for (const task of tasks) task();
  });

  return {
    spool,
    telemetry,
    forwarder,
    filter,
    deliver,
    refreshPromotionsIfNeeded: startRefresher,
    everyTick: (task) => tasks.push(task),
    housekeep: () => housekeeping.offer(),
    failure,
    async stop() {
      housekeeping.stop();
      await health.stop();
      await refresher?.stop();
      writer.commitPending();
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
      const spool = openSpool({ ...spoolOptions(c), telemetry });
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
  const state = spool.writer.fileState();
  if (state === "ok") return;
  const fields = { spool: spool.path, file: state, rows: spool.view.rowCount() };
  telemetry.begin(SPOOL_FILE_LOST, spool.path, fields);
  try {
    spool.writer.restoreFile();
    telemetry.end(SPOOL_FILE_LOST, spool.path, { spool: spool.path });
  } catch (err) {
    if (spoolTrouble(err) !== "refused") throw err;
    logger.debug("Spool file not written back yet", { spool: spool.path, error: errorMessage(err) });
  }
}

/**
 * Starts the collector's own telemetry: its health delivered as samples of device `<edge_id>`
 * every telemetry_interval_ms, and the Prometheus endpoint when metrics_listen is set.
 */
function startTelemetry(opts: {
  config: Config;
  spool: Spool;
  telemetry: Telemetry;
  forwarder: Forwarder;
  deliver(samples: Sample[]): Promise<void>;
}): { endpoint: MetricsEndpoint | undefined; watchClock(): void; stop(): Promise<void> } {
  const { config: c, telemetry, spool } = opts;
  const health = new HealthSampler({
    telemetry,
    spool: {
      path: spool.path,
      stats: () => spool.view.stats(),
      appended: () => spool.writer.counters.appended,
      removed: () =>
        spool.lease.counters.forwarded + spool.writer.counters.droppedOldest + spool.lease.counters.quarantined,
    },
    sampleBytesEstimate: SAMPLE_BYTES_ESTIMATE,
    clock: systemClock,
    edgeId: c.edge_id,
    maxBytes: c.spool_max_bytes,
    lastForwardAtMs: () => opts.forwarder.counters.lastForwardAtMs,
    deliver: opts.deliver,
  });
  const listen = parseListenAddress(c.metrics_listen);
  const endpoint = listen
    ? serveMetrics(listen, () => {
      health.refresh();
      return telemetry.snapshot();
    })
    : undefined;
  health.watchClock();
  let recording: Promise<void> | undefined;
  const timer = c.telemetry_interval_ms > 0
    ? setInterval(() => {
      recording ??= health.record().finally(() => recording = undefined);
    }, c.telemetry_interval_ms)
    : undefined;
  return {
    endpoint,
    watchClock: () => health.watchClock(),
    async stop() {
      clearInterval(timer);
      await recording;
      await endpoint?.close();
    },
  };
}
