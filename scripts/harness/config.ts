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
