import { systemClock } from "../clock.ts";
import { Scheduler } from "../collect/scheduler.ts";
import type { PollGroup } from "../collect/groups.ts";
import type { Config } from "../config/defaults.ts";
import { errorMessage, logger } from "../log.ts";
import { parseCommand } from "./args.ts";
import { DEVICE_STATUS_UNRECORDED } from "../telemetry/events.ts";
import { type Pipeline, startPipeline } from "./pipeline.ts";
import { loadGroupsForRun } from "./runtime.ts";
import { stopSignal } from "./signals.ts";
import { SpoolTlsPins } from "../spool/tls_pins.ts";

export const RUN_HELP = `kwollector run [CONFIG] [--key value ...]

Polls every metric of metrics_dir at its update_every, writes each sample to the spool first,
and forwards the spool to the central database whenever it is reachable. Stops cleanly on
SIGTERM or SIGINT: in-flight polls finish and are committed to the spool. SIGHUP (systemctl
reload) reads metrics_dir again: in-flight polls finish, then the new entries are polled.

Examples:
  kwollector run /etc/kwollect/kwollector.yaml
  kwollector /etc/kwollect/kwollector.yaml --log_level info
  KWOLLECT_DB_HOST=db.example.org kwollector run kwollector.yaml`;

const GC_EVERY_MS = 60_000;

export async function runCommand(argv: string[]): Promise<number> {
  const { resolved } = parseCommand(argv);
  const c = resolved.config;
  if (c.worker !== 8) logger.info("Option 'worker' is accepted for Kwollect compatibility and has no effect");
  let groups = await loadGroupsForRun(c);
  // SIGHUP: the current polls finish and are committed, then the new metrics.d is polled.
  let reloading = Promise.resolve();
  let reloadNow = () => logger.info("SIGHUP ignored: the collector is still starting");
  const stop = stopSignal({ onHangup: () => reloadNow() });
  const pipeline = await startPipeline(c, {
    name: "run",
    signal: stop.signal,
    refreshPromotions: () => groups.some((g) => g.entries.some((e) => e.optional)),
  });
  if (!pipeline) {
    stop.dispose();
    return 0;
  }
  const { spool } = pipeline;
  // Certificates pinned for https urls (redfish_tls_verify: tofu), in the spool's database.
  const tlsPins = SpoolTlsPins.open(c.spool_path);
  const start = (g: PollGroup[]) => startScheduler(g, c, pipeline, tlsPins);
  let scheduler = start(groups);
  logger.info("kwollector started", {
    groups: groups.length,
    entries: groups.reduce((n, g) => n + g.entries.length, 0),
    spool: c.spool_path,
    spool_id: spool.spoolId,
    backlog_rows: spool.view.rowCount(),
  });
  reloadNow = () => {
    reloading = reloading.then(async () => {
      const next = await loadGroupsForRun(c);
      await scheduler.stop();
      groups = next;
      scheduler = start(groups);
      pipeline.refreshPromotionsIfNeeded();
      logger.warning("metrics_dir read again (SIGHUP)", {
        groups: groups.length,
        entries: groups.reduce((n, g) => n + g.entries.length, 0),
      });
    });
  };

  pipeline.everyTick(() => recordDeviceStatus(pipeline, scheduler));
  const gcTimer = setInterval(() => {
    try {
      spool.writer.collectGarbage();
    } catch (err) {
      logger.warning("Spool garbage collection failed", { error: errorMessage(err) });
    }
  }, GC_EVERY_MS);

  const stopped = new Promise<void>((resolve) =>
    stop.signal.addEventListener("abort", () => resolve(), { once: true })
  );
  let bug: unknown;
  await Promise.race([stopped, pipeline.failure.catch((err) => bug = err)]);
  await reloading;
  await scheduler.stop();
  clearInterval(gcTimer);
  recordDeviceStatus(pipeline, scheduler, Infinity);
  await pipeline.stop();
  tlsPins.close();
  stop.dispose();
  if (bug !== undefined) throw bug;
  logger.info("kwollector stopped", { forwarded_rows: pipeline.forwarder.counters.rows });
  return 0;
}

function startScheduler(groups: PollGroup[], c: Config, pipeline: Pipeline, tlsPins: SpoolTlsPins): Scheduler {
  const scheduler = new Scheduler({
    groups,
    config: c,
    clock: systemClock,
    deliver: pipeline.deliver,
    isActive: (entry) => pipeline.filter.isActive(entry),
    telemetry: pipeline.telemetry,
    tlsPins,
    onWake: pipeline.housekeep,
  });
  scheduler.start();
  return scheduler;
}

/** Writes the changed device states, at most `limit` (local_state.ts DEVICE_STATES_PER_WRITE). */
function recordDeviceStatus(pipeline: Pipeline, scheduler: Scheduler, limit?: number): void {
  try {
    pipeline.spool.state.writeDeviceStatus(scheduler.deviceStatus(), limit);
    pipeline.telemetry.end(DEVICE_STATUS_UNRECORDED, "spool");
  } catch (err) {
    const error = errorMessage(err);
    pipeline.telemetry.begin(DEVICE_STATUS_UNRECORDED, "spool", { error }, error);
  }
}
