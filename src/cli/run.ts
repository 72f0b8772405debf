import { connect, endpointOf } from "../central/connect.ts";
import { PromotionFilter, PromotionRefresher } from "../collect/promotion.ts";
import { systemClock } from "../collect/clock.ts";
import { Scheduler } from "../collect/scheduler.ts";
import { Forwarder } from "../forward/forwarder.ts";
import { errorMessage, logger } from "../log.ts";
import { parseCommand } from "./args.ts";
import { CONDITIONS, DEVICE_STATUS_UNRECORDED } from "../telemetry/events.ts";
import { Telemetry } from "../telemetry/telemetry.ts";
import { SpoolTlsPins } from "../spool/tls_pins.ts";
import { loadGroupsForRun, openSpool, startTelemetry, stopSignal, surviveStrayErrors } from "./runtime.ts";

export const RUN_HELP = `kwollector run [CONFIG] [--key value ...]

Polls every metric of metrics_dir at its update_every, writes each sample to the spool first,
and forwards the spool to the central database whenever it is reachable. Stops cleanly on
SIGTERM or SIGINT: in-flight polls finish and are committed to the spool.

Examples:
  kwollector run /etc/kwollect/kwollector.yaml
  kwollector /etc/kwollect/kwollector.yaml --log_level info
  KWOLLECT_DB_HOST=db.example.org kwollector run kwollector.yaml`;

const STATUS_EVERY_MS = 1000;
const GC_EVERY_MS = 60_000;

export async function runCommand(argv: string[]): Promise<number> {
  const { resolved } = parseCommand(argv);
  const c = resolved.config;
  surviveStrayErrors();
  if (c.worker !== 8) logger.info("Option 'worker' is accepted for Kwollect compatibility and has no effect");
  const groups = loadGroupsForRun(c);
  const telemetry = new Telemetry({ conditions: CONDITIONS });
  const spool = openSpool(c, "writer", telemetry);
  const stop = stopSignal();
  const tlsPins = SpoolTlsPins.open(c.spool_path);
  // Optional entries are polled while promoted_metrics asks for them; without any optional
  // entry there is nothing to refresh and no connection is opened for it.
  const filter = new PromotionFilter();
  const refresher = groups.some((g) => g.entries.some((e) => e.optional))
    ? new PromotionRefresher({
      filter,
      spool,
      connect: () => connect(endpointOf(c), { applicationName: "kwollector promotion" }),
      refreshMs: c.promoted_refresh_ms,
    })
    : undefined;
  const scheduler = new Scheduler({
    groups,
    config: c,
    clock: systemClock,
    deliver: (samples) => spool.append(samples),
    isActive: (entry) => filter.isActive(entry),
    telemetry,
    tlsPins,
  });
  const forwarder = new Forwarder({ spool, endpoint: endpointOf(c), config: c, telemetry });
  const health = startTelemetry({ config: c, spool, telemetry, forwarder });
  logger.info("kwollector started", {
    groups: groups.length,
    entries: groups.reduce((n, g) => n + g.entries.length, 0),
    spool: c.spool_path,
    spool_id: spool.spoolId,
    backlog_rows: spool.stats().rows,
  });

  const statusTimer = setInterval(() => {
    try {
      spool.writeDeviceStatus(scheduler.deviceStatus());
      telemetry.end(DEVICE_STATUS_UNRECORDED, "spool");
    } catch (err) {
      const error = errorMessage(err);
      telemetry.begin(DEVICE_STATUS_UNRECORDED, "spool", { error }, error);
    }
  }, STATUS_EVERY_MS);
  const gcTimer = setInterval(() => {
    try {
      spool.collectGarbage();
    } catch (err) {
      logger.warning("Spool garbage collection failed", { error: errorMessage(err) });
    }
  }, GC_EVERY_MS);

  refresher?.start();
  scheduler.start();
  const forwarding = forwarder.run(stop.signal);
  await new Promise<void>((resolve) => stop.signal.addEventListener("abort", () => resolve(), { once: true }));

  await scheduler.stop();
  await health.stop();
  await refresher?.stop();
  spool.commitPending();
  await forwarding;
  clearInterval(statusTimer);
  clearInterval(gcTimer);
  spool.writeDeviceStatus(scheduler.deviceStatus());
  await forwarder.close();
  tlsPins.close();
  spool.close();
  stop.dispose();
  logger.info("kwollector stopped", { forwarded_rows: forwarder.counters.rows });
  return 0;
}
