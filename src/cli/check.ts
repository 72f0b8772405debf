import { buildGroups, type PollGroup, protocolsOf } from "../collect/groups.ts";
import { samplesOfPoll } from "../collect/scheduler.ts";
import type { Config } from "../config/defaults.ts";
import { formatProblem, type Problem } from "../config/errors.ts";
import { loadMetricsDir, metricsDirLimits } from "../config/metrics_dir.ts";
import { errorMessage } from "../log.ts";
import { MemoryTlsPins, pinEndpoint, SpoolTlsPins, type TlsPin } from "../spool/tls_pins.ts";
import { fetchCertificate, type PresentedCertificate } from "../sources/redfish/tls_trust.ts";
import { parseCommand } from "./args.ts";

export const CHECK_HELP = `kwollector check [CONFIG] [--probe] [--json] [--key value ...]

Validates the configuration and every metrics.d file, reporting all errors at once, each with
file:line and key (exit 2 when any), and warnings (exit 0): no entry at all, an entry repeating
another's series. Under redfish_tls_verify tofu, lists each https host as pinned or new. With
--probe, polls every configured metric once and prints the samples without spooling them (one
JSON object per line with --json), and tells which https hosts present a changed certificate.

Examples:
  kwollector check /etc/kwollect/kwollector.yaml
  kwollector check kwollector.yaml --probe --metrics_dir ./new-pdu.d`;

export async function checkCommand(argv: string[]): Promise<number> {
  const { resolved, switches } = parseCommand(argv, { switches: ["probe", "json"] });
  const c = resolved.config;
  const json = switches.has("json");
  const probe = switches.has("probe");
  const md = loadMetricsDir(c.metrics_dir, metricsDirLimits(c));
  const built = buildGroups(md.entries, c, await protocolsOf(md.entries));
  const errors: Problem[] = [...md.problems, ...built.problems];
  for (const p of errors) report(json, { error: formatProblem(p), ...p });
  for (const w of md.warnings) report(json, { warning: formatProblem(w), ...w });
  if (!json) {
    console.error(
      `metrics_dir ${md.dir}: ${md.files} file(s), ${md.entries.length} metric entries in ${built.groups.length} ` +
        `poll groups; ${errors.length} problem(s), ${md.warnings.length} warning(s)`,
    );
  }
  // The spool's pins, read only: a probe never pins (a new host is pinned by run's first poll).
  let pinned: TlsPin[] = [];
  try {
    pinned = SpoolTlsPins.list(c.spool_path);
  } catch (err) {
    const problem = {
      file: c.spool_path,
      key: "spool_path",
      message: `Cannot read the certificate pins: ${errorMessage(err)}`,
    };
    report(json, { warning: formatProblem(problem), ...problem });
  }
  const pins = new MemoryTlsPins(pinned);
  if (c.redfish_tls_verify === "tofu") await reportHttpsHosts(built.groups, pins, { probe, json, c });
  if (probe) await probeGroups(built.groups, c, pins, json);
  return errors.length > 0 ? 2 : 0;
}

/** A line of the report: JSON on stdout, or its first field on stderr. */
function report(json: boolean, fields: Record<string, unknown>): void {
  if (json) console.log(JSON.stringify(fields));
  else console.error(String(Object.values(fields)[0]));
}

/** Each https endpoint under tofu: pinned, new, or (probing its handshake only) changed. */
async function reportHttpsHosts(
  groups: readonly PollGroup[],
  pins: MemoryTlsPins,
  opts: { probe: boolean; json: boolean; c: Config },
): Promise<void> {
  const endpoints = new Map<string, { host: string; port: number }>();
  for (const g of groups) {
    for (const e of g.entries) {
      if (e.target.scheme !== "https") continue;
      const port = e.target.port ?? 443;
      endpoints.set(pinEndpoint(e.target.host, port), { host: e.target.host, port });
    }
  }
  const lines = await Promise.all([...endpoints].map(async ([endpoint, { host, port }]) => {
    const pin = pins.get(endpoint);
    let presented: PresentedCertificate | undefined;
    let error: string | undefined;
    if (opts.probe) {
      try {
        presented = await fetchCertificate(host, port, opts.c.poll_timeout_ms);
      } catch (err) {
        error = errorMessage(err);
      }
    }
    const state = pin === undefined
      ? "new"
      : presented && presented.fingerprint256 !== pin.fingerprint256
      ? "changed"
      : "pinned";
    return { endpoint, state, pin, presented, error };
  }));
  for (const l of lines.sort((a, b) => a.endpoint.localeCompare(b.endpoint))) {
    if (opts.json) {
      console.log(JSON.stringify({
        tls: l.endpoint,
        state: l.state,
        ...(l.pin && { pinned_fingerprint256: l.pin.fingerprint256 }),
        ...(l.presented && { presented_fingerprint256: l.presented.fingerprint256 }),
        ...(l.error !== undefined && { error: l.error }),
      }));
      continue;
    }
    const probed = l.error !== undefined
      ? `; cannot check it now: ${l.error}`
      : l.presented === undefined
      ? ""
      : l.state === "changed"
      ? `; presents ${l.presented.fingerprint256} (${l.presented.subject}): CHANGED, its polls fail until ` +
        `'kwollector trust [CONFIG] ${l.endpoint} --fingerprint ${l.presented.fingerprint256}'`
      : l.state === "pinned"
      ? "; presents it"
      : `; presents ${l.presented.fingerprint256} (${l.presented.subject})`;
    console.error(`https ${l.endpoint}: ${describePin(l.pin)}${probed}`);
  }
}

function describePin(pin: TlsPin | undefined): string {
  if (pin === undefined) return "new, its certificate is pinned at its first poll";
  return `pinned ${pin.fingerprint256} (${pin.subject}, since ${new Date(pin.pinnedAtMs).toISOString()})`;
}

async function probeGroups(groups: readonly PollGroup[], c: Config, pins: MemoryTlsPins, json: boolean) {
  let failures = 0;
  await Promise.all(groups.map(async (group) => {
    const timeoutMs = c.poll_timeout_ms;
    const source = group.open({ timeoutMs, tlsPins: pins });
    const sentAtMs = Date.now();
    try {
      const result = await source.poll(group.entries, AbortSignal.timeout(timeoutMs));
      const { samples, refused } = samplesOfPoll(result.readings, sentAtMs, Date.now());
      result.errors.push(...refused);
      for (const s of samples) {
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
