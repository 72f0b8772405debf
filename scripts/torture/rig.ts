/**
 * The collector's configuration in the torture scenarios: one Prometheus entry polling the
 * counting exporter (device EXPORTER_DEVICE, every `periodMs`), TLS to the test cluster, a private
 * spool, fast forwarding and retries.
 */
import { metricsEntry, writeCollectorConfig } from "../harness/config.ts";
import { tempDir } from "../harness/temp_dir.ts";
import type { PgCluster } from "../peers/postgres.ts";
import type { CountingExporter } from "../peers/prometheus_exporter.ts";

/** device_id of the exporter's samples in metrics.d. */
export const EXPORTER_DEVICE = "exporter-1";

export interface Rig {
  dir: string;
  config: string;
  spoolPath: string;
}

export interface RigOptions {
  pg: PgCluster;
  exporter: CountingExporter;
  periodMs?: number;
  /** More metrics.d entries (YAML list items), appended to the exporter's. */
  extraEntries?: string;
  /** verify-full by default; `require` encrypts without checking the certificate. */
  sslmode?: "verify-full" | "require" | "disable";
  settings?: Record<string, string | number>;
}

export async function writeRig(opts: RigOptions): Promise<Rig> {
  const dir = await tempDir("kwollector-torture-");
  const names = opts.exporter.series > 1 ? "scrape_count-bulk" : "scrape_count";
  const entry = metricsEntry({
    name: "counter",
    deviceId: EXPORTER_DEVICE,
    url: `prometheus://${opts.exporter.hostname}:${opts.exporter.port}/${names}`,
    updateEveryMs: opts.periodMs ?? 100,
  });
  const spoolPath = `${dir}/spool/spool.db`;
  const config = await writeCollectorConfig(dir, {
    metrics: { "exporter.yaml": entry + (opts.extraEntries ?? "") },
    settings: {
      db_host: "127.0.0.1",
      db_port: opts.pg.port,
      db_sslmode: opts.sslmode ?? "verify-full",
      spool_path: spoolPath,
      edge_id: "torture-edge",
      forward_interval_ms: 50,
      forward_retry_max_ms: 300,
      log_level: "info",
      ...(opts.sslmode === undefined || opts.sslmode === "verify-full" ? { db_sslrootcert: opts.pg.caFile } : {}),
      ...opts.settings,
    },
  });
  return { dir, config, spoolPath };
}
