import type { Config } from "../../src/config/defaults.ts";
import { resolveConfig } from "../../src/config/resolve.ts";
import type { PgCluster } from "../peers/postgres.ts";

/** A resolved configuration from defaults plus `overrides` (as flags), ignoring the environment. */
export function testConfig(overrides: Record<string, string | number> = {}): Config {
  const flags = Object.fromEntries(Object.entries(overrides).map(([k, v]) => [k, String(v)]));
  return resolveConfig({ flags, env: {} }).config;
}

/** Configuration pointing at a test cluster, with a spool in `dir`. */
export function pgConfig(pg: PgCluster, dir: string, overrides: Record<string, string | number> = {}): Config {
  return testConfig({
    db_host: pg.host,
    db_port: pg.port,
    db_sslmode: "disable",
    db_admin: "postgres",
    spool_path: `${dir}/spool.db`,
    metrics_dir: `${dir}/metrics.d`,
    edge_id: "test-edge",
    ...overrides,
  });
}

/** One metrics.d entry, as Kwollect's keys name it. */
export interface EntryFields {
  name: string;
  deviceId: string;
  url: string;
  updateEveryMs: number;
  labels?: Record<string, string>;
}

/** The YAML list item of `entry`, as a metrics.d file holds it. */
export function metricsEntry(entry: EntryFields): string {
  const lines = [
    `- name: ${entry.name}`,
    `  device_id: ${entry.deviceId}`,
    `  url: ${entry.url}`,
    `  update_every: ${entry.updateEveryMs}`,
  ];
  if (entry.labels) lines.push(`  labels: ${JSON.stringify(entry.labels)}`);
  return lines.join("\n") + "\n";
}

/**
 * Writes a collector's configuration files: `<dir>/metrics.d/<file>` for each of `metrics` (YAML
 * text), and `<dir>/kwollector.yaml` holding `metrics_dir` and `settings`. Returns the path of
 * kwollector.yaml.
 */
export async function writeCollectorConfig(
  dir: string,
  opts: { metrics: Record<string, string>; settings: Record<string, string | number> },
): Promise<string> {
  await Deno.mkdir(`${dir}/metrics.d`, { recursive: true });
  for (const [file, text] of Object.entries(opts.metrics)) await Deno.writeTextFile(`${dir}/metrics.d/${file}`, text);
  const settings = { metrics_dir: `${dir}/metrics.d`, ...opts.settings };
  const path = `${dir}/kwollector.yaml`;
  await Deno.writeTextFile(path, Object.entries(settings).map(([k, v]) => `${k}: ${v}`).join("\n") + "\n");
  return path;
}
