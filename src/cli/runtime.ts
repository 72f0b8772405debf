import type { Config } from "../config/defaults.ts";
import { formatProblem } from "../config/errors.ts";
import { loadMetricsDir, metricsDirLimits } from "../config/metrics_dir.ts";
import { buildGroups, type PollGroup, protocolsOf } from "../collect/groups.ts";
import type { SpoolOptions } from "../spool/spool.ts";
import { logger } from "../log.ts";

/** Pieces shared by the subcommands that collect, forward or inspect. */

/** The writer's options of the spool at `spool_path`. */
export function spoolOptions(c: Config): SpoolOptions {
  return {
    path: c.spool_path,
    maxBytes: c.spool_max_bytes,
    fullPolicy: c.spool_full_policy as "drop_oldest" | "drop_newest",
    synchronous: c.spool_synchronous as "full" | "normal",
    commitIntervalMs: c.spool_commit_interval_ms,
  };
}

/**
 * Loads metrics.d for `run`: a bad entry or file is reported with its file and line and left
 * out, the good ones are collected (one bad entry never stops the others; `check` reports them
 * as errors). Warnings (no entry at all, a repeated series) are logged at warning.
 */
export async function loadGroupsForRun(c: Config): Promise<PollGroup[]> {
  const { entries, problems, warnings } = loadMetricsDir(c.metrics_dir, metricsDirLimits(c));
  const built = buildGroups(entries, c, await protocolsOf(entries));
  for (const p of [...problems, ...built.problems]) {
    logger.error("Metric entry ignored: a person must fix it", { problem: formatProblem(p) });
  }
  for (const w of warnings) logger.warning(w.message, { where: w.line === undefined ? w.file : `${w.file}:${w.line}` });
  return built.groups;
}
