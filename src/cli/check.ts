import { buildGroups } from "../collect/groups.ts";
import { pollTimeoutMs, toSample } from "../collect/scheduler.ts";
import { formatProblem, type Problem } from "../config/errors.ts";
import { loadMetricsDir } from "../config/metrics_dir.ts";
import { errorMessage } from "../log.ts";
import { parseCommand } from "./args.ts";

export const CHECK_HELP = `kwollector check [CONFIG] [--probe] [--json] [--key value ...]

Validates the configuration and every metrics.d file, reporting all errors at once, each with
file:line and key (exit 2 when any). With --probe, polls every configured metric once and prints
the samples without spooling them (one JSON object per line with --json).

Examples:
  kwollector check /etc/kwollect/kwollector.yaml
  kwollector check kwollector.yaml --probe --metrics_dir ./new-pdu.d`;

export async function checkCommand(argv: string[]): Promise<number> {
  const { resolved, switches } = parseCommand(argv, { switches: ["probe", "json"] });
  const c = resolved.config;
  const json = switches.has("json");
  const { entries, problems } = loadMetricsDir(c.metrics_dir);
  const built = buildGroups(entries, c);
  const all: Problem[] = [...problems, ...built.problems];
  for (const p of all) {
    if (json) console.log(JSON.stringify({ error: formatProblem(p), ...p }));
    else console.error(formatProblem(p));
  }
  if (!json) {
    console.error(
      `${entries.length} metric entries in ${built.groups.length} poll groups; ${all.length} problem(s)`,
    );
  }
  if (switches.has("probe")) {
    let failures = 0;
    await Promise.all(built.groups.map(async (group) => {
      const timeoutMs = pollTimeoutMs(group.periodMs, c.poll_timeout_ms);
      const source = group.protocol.create(group.entries, { config: c, timeoutMs });
      const sentAtMs = Date.now();
      try {
        const result = await source.poll(group.entries, AbortSignal.timeout(timeoutMs));
        for (const r of result.readings) {
          const s = toSample(r, sentAtMs);
          if (json) {
            console.log(JSON.stringify({
              timestamp: new Date(s.timestampMs).toISOString(),
              device_id: s.deviceId,
              metric_id: s.metricId,
              value: Number.isFinite(s.value) ? s.value : String(s.value),
              labels: s.labels,
            }));
          } else {
            console.log(
              `${new Date(s.timestampMs).toISOString()} ${s.deviceId} ${s.metricId} ${s.value} ${
                JSON.stringify(s.labels)
              }`,
            );
          }
        }
        for (const e of result.errors) {
          failures++;
          const where = `${e.entry.file}:${e.entry.line}`;
          if (json) {
            console.log(
              JSON.stringify({ error: e.message, file: e.entry.file, line: e.entry.line, device_id: e.entry.deviceId }),
            );
          } else console.error(`${where}: ${e.entry.deviceId} ${e.entry.name}: ${e.message}`);
        }
      } catch (err) {
        failures++;
        const message = `Poll of ${group.name} failed: ${errorMessage(err)}`;
        if (json) console.log(JSON.stringify({ error: message }));
        else console.error(message);
      } finally {
        await source.close();
      }
    }));
    if (failures > 0 && !json) console.error(`${failures} probe failure(s)`);
  }
  return all.length > 0 ? 2 : 0;
}
