import { type Config, parseListenAddress } from "../config/defaults.ts";
import { systemClock } from "../clock.ts";
import type { Forwarder } from "../forward/forwarder.ts";
import { HealthSampler } from "../telemetry/health.ts";
import { type MetricsEndpoint, serveMetrics } from "../telemetry/prometheus_endpoint.ts";
import type { Telemetry } from "../telemetry/telemetry.ts";
import { formatProblem } from "../config/errors.ts";
import { loadMetricsDir, metricsDirLimits } from "../config/metrics_dir.ts";
import { buildGroups, type PollGroup } from "../collect/groups.ts";
import { Spool } from "../spool/spool.ts";
import { logger } from "../log.ts";

/** Pieces shared by the subcommands that collect, forward or inspect. */

export function spoolOptions(c: Config, mode: "writer" | "forwarder" | "reader" = "writer") {
  return {
    path: c.spool_path,
    maxBytes: c.spool_max_bytes,
    fullPolicy: c.spool_full_policy as "drop_oldest" | "drop_newest",
    synchronous: c.spool_synchronous as "full" | "normal",
    commitIntervalMs: c.spool_commit_interval_ms,
    mode,
  };
}

export function openSpool(
  c: Config,
  mode: "writer" | "forwarder" | "reader" = "writer",
  telemetry?: Telemetry,
): Spool {
  return Spool.open({ ...spoolOptions(c, mode), ...(telemetry && { telemetry }) });
}

/**
 * Loads metrics.d for `run`: a bad entry or file is reported with its file and line and left
 * out, the good ones are collected (one bad entry never stops the others; `check` reports them
 * as errors). Warnings (no entry at all, a repeated series) are logged at warning.
 */
export function loadGroupsForRun(c: Config): PollGroup[] {
  const { entries, problems, warnings } = loadMetricsDir(c.metrics_dir, metricsDirLimits(c));
  const built = buildGroups(entries, c);
  for (const p of [...problems, ...built.problems]) {
    logger.error("Metric entry ignored: a person must fix it", { problem: formatProblem(p) });
  }
  for (const w of warnings) logger.warning(w.message, { where: w.line === undefined ? w.file : `${w.file}:${w.line}` });
  return built.groups;
}

/** How often the wall clock is compared with the monotonic one, to report steps. */
const CLOCK_WATCH_MS = 1000;

/**
 * Starts the collector's own telemetry: its health stored as samples of device `<edge_id>`
 * every telemetry_interval_ms, and the Prometheus endpoint when metrics_listen is set.
 */
export function startTelemetry(opts: {
  config: Config;
  spool: Spool;
  telemetry: Telemetry;
  forwarder: Forwarder;
}): { endpoint: MetricsEndpoint | undefined; stop(): Promise<void> } {
  const { config: c, telemetry } = opts;
  const health = new HealthSampler({
    telemetry,
    spool: opts.spool,
    clock: systemClock,
    edgeId: c.edge_id,
    maxBytes: c.spool_max_bytes,
    lastForwardAtMs: () => opts.forwarder.counters.lastForwardAtMs,
  });
  const listen = parseListenAddress(c.metrics_listen);
  const endpoint = listen
    ? serveMetrics(listen, () => {
      health.refresh();
      return telemetry.snapshot();
    })
    : undefined;
  health.watchClock();
  const clockWatch = setInterval(() => health.watchClock(), CLOCK_WATCH_MS);
  let recording: Promise<void> | undefined;
  const timer = c.telemetry_interval_ms > 0
    ? setInterval(() => {
      recording ??= health.record().finally(() => recording = undefined);
    }, c.telemetry_interval_ms)
    : undefined;
  return {
    endpoint,
    async stop() {
      clearInterval(timer);
      clearInterval(clockWatch);
      await recording;
      await endpoint?.close();
    },
  };
}
