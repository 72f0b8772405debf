/**
 * A Kwollect 1.3 central database as kwollect-setup-db 1.3.1 leaves it and a site runs it, written
 * for these tests from the facts of shared/reference/kwollect.md §1 and §2 (no Kwollect code):
 *
 * - roles kwuser (LOGIN, password "changeme", ALL on the database, owner of every object) and
 *   kwuser_ro (LOGIN, password "ro"), kwuser a member of kwuser_ro; Kwollect's timeouts;
 * - `metrics`: a hypertable (6-hour chunks, compression segmented by device_id, metric_id,
 *   labels, a 24-hour compression policy, its chunks compressed) under TimescaleDB; a plain table
 *   otherwise; Kwollect's two indexes; `promoted_metrics`;
 * - `metrics_summary`: the continuous aggregate (MAX of `_total` counters and AVG of the rest, per
 *   5 minutes, without `_metric_scrape_time`; or Kwollect 1.2's AVG of everything with
 *   `summary: "avg"`), with its 12 h / 10 min / 5 min refresh policy and 2-day compression, refreshed
 *   over the fixture's past; a plain view computing the same on plain PostgreSQL;
 * - the views metrics_by_device(_summary) and metrics_by_job(_summary) (strict job bounds);
 * - the site's job definition: Kwollect's empty `nodetime_by_job` replaced by a view over the
 *   site's table `site_jobs`, and `promoted_metrics_job` over `site_monitor_jobs` (bigint job ids,
 *   as a scheduler may have them), with Kwollect's OAR-style api.update_promoted_metrics();
 * - schema api with Kwollect's signatures: get_metrics(job_id, nodes, devices, metrics,
 *   start_time, end_time, summary boolean, as_rate boolean), available_metrics(at, params),
 *   insert_metrics(device_id, metric_id, "timestamp", value, labels); plus a site's own
 *   api.site_version(). Their bodies are PL/pgSQL (plpython3u is not installed here): what the
 *   upgrade deals with is their signatures, owners and grants;
 * - archiving (TimescaleDB, with `archiveDir`): tablespace `archive` and the daily
 *   move_chunks_to_archive job over the summary (lag 8 days).
 *
 * Data (times in seconds from fixture.ts's T0, 2024-03-01T12:00:00Z): bmc_node_power_watt of
 * node-1, node-2, node-3 every minute from T0 - 1 day to T0 + 1 day (value 100 + node + k mod 7);
 * node-1's counter network_ifacein_bytes_total (1000 * k) and prom_node_load1 (with a varying
 * _metric_scrape_time) over the same range; wattmetre1-port1 and -port2, alias node-2, every
 * minute over T0 .. T0 + 1 h; node-3 every minute over the last two hours. Jobs: 1234 on
 * node-1 and node-2 given as FQDNs, T0 .. T0 + 1 h; 1235 running on node-3 since an hour ago.
 */
import type { Sql } from "../../src/central/connect.ts";
import type { PgCluster } from "../../scripts/peers/postgres.ts";
import { T0_EPOCH } from "./fixture.ts";

export const KW_USER = "kwuser";
export const KW_PASSWORD = "changeme";
export const KW_PASSWORD_RO = "ro";

export interface Kwollect13Options {
  database: string;
  timescaledb: boolean;
  /** The summary's aggregate: Kwollect 1.3's (MAX of counters) or 1.2's (AVG of everything). */
  summary?: "max" | "avg";
  /** Directory of the `archive` tablespace (TimescaleDB only); no archiving without it. */
  archiveDir?: string;
  /**
   * The site's job view: Kwollect 1.3's nodetime_by_job (default), or the 1.8 README's
   * nodetime_per_job (nodetime_by_job then stays Kwollect's placeholder).
   */
  jobView?: "nodetime_by_job" | "nodetime_per_job";
}

/** Creates the roles (once per cluster), the database and everything in it. */
export async function createKwollect13(pg: PgCluster, opts: Kwollect13Options): Promise<void> {
  const server = pg.admin("postgres");
  const [roles] = await server<{ n: number }[]>`SELECT count(*)::int AS n FROM pg_roles WHERE rolname = ${KW_USER}`;
  if (roles!.n === 0) {
    await server.unsafe(`CREATE ROLE kwuser LOGIN PASSWORD '${KW_PASSWORD}'`);
    await server.unsafe(`CREATE ROLE kwuser_ro PASSWORD '${KW_PASSWORD_RO}'`);
    await server.unsafe(`GRANT kwuser_ro TO kwuser`);
    await server.unsafe(`ALTER ROLE kwuser_ro LOGIN`);
    await server.unsafe(`ALTER ROLE kwuser SET statement_timeout TO '5 min'`);
  }
  await server.unsafe(`CREATE DATABASE ${opts.database}`);
  await server.unsafe(`GRANT ALL PRIVILEGES ON DATABASE ${opts.database} TO kwuser`);
  await server.unsafe(`ALTER DATABASE ${opts.database} SET idle_in_transaction_session_timeout TO '1 h'`);
  await server.unsafe(`ALTER DATABASE ${opts.database} SET statement_timeout TO '1 h'`);
  if (opts.archiveDir) {
    await server.unsafe(`CREATE TABLESPACE archive OWNER kwuser LOCATION '${opts.archiveDir}'`);
  }

  const db = pg.admin(opts.database);
  if (opts.timescaledb) await db`CREATE EXTENSION IF NOT EXISTS timescaledb`;
  // PostgreSQL 13, which Kwollect 1.3 installs, let everyone create tables in public.
  await db`GRANT CREATE ON SCHEMA public TO PUBLIC`;
  await db`CREATE SCHEMA api`;
  await db`GRANT ALL PRIVILEGES ON SCHEMA api TO kwuser`;
  await db`GRANT USAGE ON SCHEMA api TO kwuser_ro`;
  await db.begin(async (tx) => {
    await tx`SET LOCAL SESSION AUTHORIZATION kwuser`;
    await tx.unsafe(schemaSql(opts));
    await tx.unsafe(API_SQL);
  });
  await db.unsafe(siteSql(opts.jobView ?? "nodetime_by_job"));
  await db.unsafe(dataSql());
  if (opts.timescaledb) {
    await db.unsafe(compressOlderThan("metrics", "1 day"));
    await db.unsafe(`CALL refresh_continuous_aggregate('metrics_summary', to_timestamp(${T0_EPOCH - 86400}),
                                                       to_timestamp(${T0_EPOCH + 86400}))`);
    await db.unsafe(compressOlderThan("metrics_summary", "2 days"));
  }
  if (opts.archiveDir) await db.unsafe(ARCHIVE_SQL);
}

/**
 * Compresses the chunks of `table` older than `age`, as a site's compression policy would have.
 * The policy Kwollect's schema adds may compress the same chunk at the same moment in a background
 * worker: a chunk it compressed first is taken as done (`if_not_compressed` only checks before).
 */
function compressOlderThan(table: string, age: string): string {
  return `DO $$ DECLARE c regclass; BEGIN
    FOR c IN SELECT show_chunks('${table}', older_than => interval '${age}') LOOP
      BEGIN
        PERFORM compress_chunk(c, if_not_compressed => true);
      EXCEPTION WHEN OTHERS THEN
        IF SQLERRM NOT LIKE '%is already compressed%' THEN RAISE; END IF;
      END;
    END LOOP;
  END $$`;
}

function schemaSql(opts: Kwollect13Options): string {
  const timescale = opts.timescaledb;
  const value = opts.summary === "avg"
    ? "avg(value)"
    : "CASE WHEN metrics.metric_id ~ '_total$' THEN max(value) ELSE avg(value) END";
  return `
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO kwuser_ro;
${timescale ? "ALTER DEFAULT PRIVILEGES IN SCHEMA _timescaledb_internal GRANT SELECT ON TABLES TO kwuser_ro;" : ""}

CREATE TABLE metrics (
  "timestamp" timestamptz DEFAULT now(),
  device_id text NOT NULL,
  metric_id text NOT NULL,
  value double precision DEFAULT 'NaN',
  labels jsonb DEFAULT '{}'::jsonb
);
${
    timescale
      ? `
SELECT create_hypertable('metrics', 'timestamp', chunk_time_interval => interval '6 hours');
ALTER TABLE metrics SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id, metric_id, labels',
                         timescaledb.compress_orderby = 'timestamp DESC');
SELECT add_compression_policy('metrics', interval '24 hours');`
      : ""
  }
CREATE INDEX metrics_device_idx ON metrics (device_id, "timestamp" DESC);
CREATE INDEX metrics_alias_idx ON metrics ((labels->>'_device_alias'), "timestamp" DESC) WHERE labels ? '_device_alias';

CREATE TABLE promoted_metrics (device_id text NOT NULL, metric_id text DEFAULT NULL);

-- Kwollect's placeholder for the job scheduler's hook.
CREATE VIEW nodetime_by_job AS
SELECT * FROM (SELECT 0 AS job_id, now() AS start_time, now() AS stop_time, ''::text AS node) empty WHERE false;

${
    timescale
      ? `
CREATE MATERIALIZED VIEW metrics_summary WITH (timescaledb.continuous) AS
SELECT time_bucket(interval '5 minute', "timestamp") AS "timestamp", device_id, metric_id, ${value} AS value,
       labels - '_metric_scrape_time' AS labels
FROM metrics
GROUP BY time_bucket(interval '5 minute', "timestamp"), device_id, metric_id, labels - '_metric_scrape_time'
WITH NO DATA;
SELECT add_continuous_aggregate_policy('metrics_summary', start_offset => interval '12 hours',
                                       end_offset => interval '10 minutes', schedule_interval => interval '5 minutes');
ALTER MATERIALIZED VIEW metrics_summary SET (timescaledb.compress);
SELECT add_compression_policy('metrics_summary', interval '2 days');`
      : `
CREATE VIEW metrics_summary AS
SELECT date_bin('5 minutes', "timestamp", timestamptz '2000-01-01 00:00:00+00') AS "timestamp", device_id, metric_id,
       ${value} AS value, labels - '_metric_scrape_time' AS labels
FROM metrics
GROUP BY 1, device_id, metric_id, labels - '_metric_scrape_time';`
  }

${byDeviceView("metrics_by_device", "metrics")}
${byDeviceView("metrics_by_device_summary", "metrics_summary")}
${byJobView("metrics_by_job", "metrics")}
${byJobView("metrics_by_job_summary", "metrics_summary")}
`;
}

/** Raw rows (labels without `_device_alias`) and per-alias sums listing their devices. */
function byDeviceView(name: string, source: string): string {
  return `
CREATE VIEW ${name} AS
SELECT s."timestamp", s.device_id, s.metric_id, s.value, s.labels - '_device_alias' AS labels FROM ${source} s
UNION ALL
SELECT s."timestamp", s.labels->>'_device_alias', s.metric_id, sum(s.value),
       (s.labels || jsonb_build_object('_device_orig', array_agg(s.device_id ORDER BY s.device_id))) - '_device_alias'
FROM ${source} s WHERE s.labels ? '_device_alias'
GROUP BY s."timestamp", s.metric_id, s.labels;`;
}

/** Each job's rows, strictly inside its window, as Kwollect's views have them. */
function byJobView(name: string, source: string): string {
  return `
CREATE VIEW ${name} AS
SELECT r."timestamp", r.device_id, r.metric_id, r.value, r.labels, j.start_time, j.stop_time, j.job_id
FROM nodetime_by_job j
JOIN LATERAL (
  SELECT s."timestamp", s.device_id, s.metric_id, s.value, s.labels - '_device_alias' AS labels FROM ${source} s
  WHERE s.device_id = j.node AND s."timestamp" > j.start_time AND (j.stop_time IS NULL OR s."timestamp" < j.stop_time)
  UNION ALL
  SELECT s."timestamp", s.labels->>'_device_alias', s.metric_id, sum(s.value),
         (s.labels || jsonb_build_object('_device_orig', array_agg(s.device_id))) - '_device_alias'
  FROM ${source} s
  WHERE s.labels ? '_device_alias' AND s.labels->>'_device_alias' = j.node
    AND s."timestamp" > j.start_time AND (j.stop_time IS NULL OR s."timestamp" < j.stop_time)
  GROUP BY s."timestamp", s.metric_id, s.labels
) r ON true;`;
}

/** Kwollect's api signatures, owned by kwuser; simple PL/pgSQL bodies. */
const API_SQL = `
CREATE FUNCTION api.get_metrics(job_id integer DEFAULT NULL, nodes text DEFAULT NULL, devices text DEFAULT NULL,
                                metrics text DEFAULT NULL, start_time text DEFAULT NULL, end_time text DEFAULT NULL,
                                summary boolean DEFAULT false, as_rate boolean DEFAULT false)
RETURNS SETOF metrics LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN QUERY SELECT d."timestamp", d.device_id, d.metric_id, d.value, d.labels FROM metrics_by_device d
  WHERE d.device_id = ANY (string_to_array(concat_ws(',', nodes, devices), ','))
    AND d."timestamp" >= start_time::timestamptz AND d."timestamp" <= end_time::timestamptz
  ORDER BY d."timestamp";
END $$;

CREATE FUNCTION api.available_metrics("at" timestamptz DEFAULT now(), params jsonb DEFAULT '{}')
RETURNS TABLE (device_id text, metric_id text) LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN QUERY SELECT DISTINCT m.device_id, m.metric_id FROM metrics m
  WHERE m."timestamp" < "at" AND m."timestamp" > "at" - interval '1 minute';
END $$;

CREATE FUNCTION api.insert_metrics(device_id text, metric_id text, "timestamp" timestamptz DEFAULT now(),
                                   value double precision DEFAULT 'NaN', labels jsonb DEFAULT '{}')
RETURNS SETOF metrics LANGUAGE plpgsql AS $$
BEGIN
  RETURN QUERY INSERT INTO metrics ("timestamp", device_id, metric_id, value, labels)
    VALUES ("timestamp", device_id, metric_id, value, labels) RETURNING *;
END $$;
`;

/** The site's integration, as an administrator adds it: jobs, promotion, a function of its own. */
function siteSql(jobView: string): string {
  return `
CREATE TABLE site_jobs (job_id integer, start_time timestamptz, stop_time timestamptz, node text);
CREATE OR REPLACE VIEW ${jobView} AS SELECT job_id, start_time, stop_time, node FROM site_jobs;
GRANT SELECT ON site_jobs, ${jobView} TO kwuser_ro;
CREATE TABLE site_monitor_jobs (job_id bigint, node text, metric_id text);
CREATE VIEW promoted_metrics_job AS SELECT job_id, node, metric_id FROM site_monitor_jobs;
CREATE FUNCTION api.update_promoted_metrics() RETURNS SETOF promoted_metrics LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM promoted_metrics;
  RETURN QUERY INSERT INTO promoted_metrics SELECT DISTINCT node, metric_id FROM promoted_metrics_job RETURNING *;
END $$;
ALTER FUNCTION api.update_promoted_metrics() OWNER TO kwuser;
CREATE FUNCTION api.site_version() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'site 7' $$;
GRANT EXECUTE ON FUNCTION api.site_version() TO kwuser_ro;
`;
}

function dataSql(): string {
  const from = T0_EPOCH - 86400;
  return `
INSERT INTO metrics ("timestamp", device_id, metric_id, value, labels)
SELECT to_timestamp(${from} + k * 60), 'node-' || n, 'bmc_node_power_watt', 100 + n + k % 7, '{}'
FROM generate_series(0, 2880) k, generate_series(1, 3) n;
INSERT INTO metrics ("timestamp", device_id, metric_id, value, labels)
SELECT to_timestamp(${from} + k * 60), 'node-1', 'network_ifacein_bytes_total', 1000 * k, '{"interface": "eth0"}'
FROM generate_series(0, 2880) k;
INSERT INTO metrics ("timestamp", device_id, metric_id, value, labels)
SELECT to_timestamp(${from} + k * 60), 'node-1', 'prom_node_load1', k % 4,
       jsonb_build_object('_metric_scrape_time', ${from} + k * 60 + 0.5)
FROM generate_series(0, 2880) k;
INSERT INTO metrics ("timestamp", device_id, metric_id, value, labels)
SELECT to_timestamp(${T0_EPOCH} + k * 60), 'wattmetre1-port' || p, 'wattmetre_power_watt', 10 * p + k % 3,
       '{"_device_alias": "node-2"}'
FROM generate_series(0, 60) k, generate_series(1, 2) p;
INSERT INTO metrics ("timestamp", device_id, metric_id, value, labels)
SELECT date_trunc('minute', now()) - k * interval '1 minute', 'node-3', 'bmc_node_power_watt', 300 + k % 5, '{}'
FROM generate_series(1, 120) k;
INSERT INTO promoted_metrics VALUES ('node-7', 'prom_.*'), ('node-8', NULL);
INSERT INTO site_jobs VALUES
  (1234, to_timestamp(${T0_EPOCH}), to_timestamp(${T0_EPOCH + 3600}), 'node-1.lyon.grid5000.fr'),
  (1234, to_timestamp(${T0_EPOCH}), to_timestamp(${T0_EPOCH + 3600}), 'node-2.lyon.grid5000.fr'),
  (1235, now() - interval '1 hour', NULL, 'node-3.lyon.grid5000.fr');
INSERT INTO site_monitor_jobs VALUES (1235, 'node-3', 'wattmetre_power_watt');
`;
}

/** Kwollect 1.3.1's archiving, as its setup leaves it (the job's first run is tonight). */
const ARCHIVE_SQL = `
CREATE PROCEDURE move_chunks_to_archive(job_id integer, config jsonb) LANGUAGE plpgsql AS $$
DECLARE
  ht regclass := (config->>'hypertable')::regclass;
  lag interval := (config->>'lag')::interval;
  destination name := config->>'tablespace';
  chunk regclass;
BEGIN
  IF ht IS NULL OR lag IS NULL OR destination IS NULL THEN
    RAISE EXCEPTION 'Config must have hypertable, lag and destination';
  END IF;
  FOR chunk IN SELECT c FROM show_chunks(ht, older_than => lag) c LOOP
    PERFORM move_chunk(chunk => chunk, destination_tablespace => destination, index_destination_tablespace => destination);
  END LOOP;
END $$;
SELECT add_job('move_chunks_to_archive', '1 day',
               config => '{"hypertable": "metrics_summary", "lag": "8d", "tablespace": "archive"}',
               initial_start => current_date + time '23:59:59');
`;

/** Every raw row, as get_metrics returns it for its own device: labels without `_device_alias`. */
export async function rawRows(admin: Sql): Promise<string[]> {
  const rows = await admin<{ row: string }[]>`
    SELECT json_build_array(to_char("timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS'), device_id, metric_id,
                            value, labels - '_device_alias')::text AS row
    FROM metrics ORDER BY 1`;
  return rows.map((r) => r.row);
}
