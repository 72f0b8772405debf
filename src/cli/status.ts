import { parseCommand } from "./args.ts";
import { formatBytes, formatCount, formatDuration } from "./format.ts";
import { type DeviceStatus, openSpoolView, type SpoolStats } from "../spool/spool.ts";
import { listAside } from "../spool/aside.ts";
import type { Config } from "../config/defaults.ts";
import { errorMessage } from "../log.ts";

export const STATUS_HELP = `kwollector status [CONFIG] [--json] [--key value ...]

Shows the spool (depth in samples and bytes, oldest unsent sample's age, last successful
forward), the spools moved aside that are still to be forwarded, and each device's last poll
and error. Works while 'kwollector run' is running.

Examples:
  kwollector status /etc/kwollect/kwollector.yaml
  kwollector status kwollector.yaml --json | jq .oldest_unsent_age_s`;

export function statusCommand(argv: string[]): number {
  const { resolved, switches } = parseCommand(argv, { switches: ["json"] });
  const c = resolved.config;
  let stats: SpoolStats | undefined;
  let devices: DeviceStatus[] = [];
  let spoolError: string | null = null;
  try {
    const { view, close } = openSpoolView(c.spool_path);
    try {
      stats = view.stats();
      devices = view.deviceStatus();
    } finally {
      close();
    }
  } catch (err) {
    spoolError = err instanceof Deno.errors.NotFound
      ? "missing: not created yet, or deleted (a running collector writes it back within about a second)"
      : `cannot be read: ${errorMessage(err)}`;
  }
  const aside = asideReport(c);
  const now = Date.now();
  const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());
  const report = {
    spool_path: c.spool_path,
    spool_id: stats?.spoolId ?? null,
    spool_error: spoolError,
    spool_rows: stats?.rows ?? 0,
    spool_bytes: stats?.bytes ?? 0,
    spool_max_bytes: c.spool_max_bytes,
    oldest_unsent_age_s: stats?.oldestTimestampMs !== undefined ? (now - stats.oldestTimestampMs) / 1000 : null,
    last_forward_at: iso(stats?.lastForwardAtMs),
    gaps_unreported: stats?.gaps ?? 0,
    quarantined: stats?.quarantined ?? 0,
    aside,
    devices: devices.map((d) => ({
      device_id: d.deviceId,
      source: d.key.slice(d.deviceId.length + 1),
      last_poll_at: iso(d.lastPollAtMs),
      last_ok_at: iso(d.lastOkAtMs),
      last_error: d.lastError ?? null,
      polls_ok: d.pollsOk,
      polls_failed: d.pollsFailed,
      polls_skipped: d.pollsSkipped,
    })),
  };
  if (switches.has("json")) {
    console.log(JSON.stringify(report));
    return 0;
  }
  const lines = [
    `Spool        ${report.spool_path}${spoolError ? ` (${spoolError})` : ""}`,
    `Depth        ${formatCount(report.spool_rows)} samples, ${formatBytes(report.spool_bytes)} of ${
      formatBytes(report.spool_max_bytes)
    }`,
    `Oldest unsent ${report.oldest_unsent_age_s === null ? "-" : formatDuration(report.oldest_unsent_age_s)} ago`,
    `Last forward ${report.last_forward_at ?? "never"}`,
    `Quarantined  ${report.quarantined}`,
    ...aside.map((a) =>
      a.kind === "damaged"
        ? `Moved aside  ${a.path}: damaged, waiting for its salvage`
        : `Moved aside  ${a.path}: ${a.error ?? `${formatCount(a.rows)} samples to forward`} (spool id ${a.spool_id})`
    ),
    "",
  ];
  if (report.devices.length > 0) {
    const rows = report.devices.map((d) => [
      d.device_id,
      d.source,
      d.last_poll_at ?? "-",
      d.last_error ?? "ok",
    ]);
    const header = ["DEVICE", "SOURCE", "LAST POLL", "LAST ERROR"];
    const widths = header.map((h, i) => Math.min(60, Math.max(h.length, ...rows.map((r) => r[i]!.length))));
    const fmt = (r: string[]) => r.map((v, i) => (i === r.length - 1 ? v : v.padEnd(widths[i]!))).join("  ");
    lines.push(fmt(header), ...rows.map(fmt));
  }
  console.log(lines.join("\n"));
  return 0;
}

interface AsideEntry {
  path: string;
  kind: "damaged" | "retired";
  spool_id: string | null;
  rows: number;
  error: string | null;
}

/** The spools moved aside (src/spool/aside.ts), and what each still holds. */
function asideReport(c: Config): AsideEntry[] {
  const { damaged, retired } = listAside(c.spool_path);
  const entries: AsideEntry[] = damaged.map((path) => ({
    path,
    kind: "damaged",
    spool_id: null,
    rows: 0,
    error: null,
  }));
  for (const path of retired) {
    try {
      const { view, close } = openSpoolView(path);
      try {
        entries.push({ path, kind: "retired", spool_id: view.spoolId, rows: view.rowCount(), error: null });
      } finally {
        close();
      }
    } catch (err) {
      entries.push({ path, kind: "retired", spool_id: null, rows: 0, error: `cannot be read: ${errorMessage(err)}` });
    }
  }
  return entries;
}
