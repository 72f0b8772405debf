import type postgres from "postgres";
import type { Config } from "../config/defaults.ts";
import { logger, registerSecret } from "../log.ts";
import { connect } from "./connect.ts";
import { adminEndpoint, ident, literal } from "./setup.ts";

/**
 * `setup-db-oar`: Kwollect's OAR integration. Through postgres_fdw, OAR's `jobs`, `job_types`,
 * `assigned_resources` and `resources` tables (read with oardb_user) become foreign tables in
 * schema `oar` of the Kwollect database, and:
 * - `nodetime_per_job` (and its alias `nodetime_by_job`) lists each started job's nodes (the
 *   `default` resources' network_address cut at the first dot), with stop_time NULL while it runs;
 * - `promoted_metrics_job` lists, for jobs Running or Launching with type `monitor` (every optional
 *   metric, `.*`) or `monitor=<regex>`, the metrics to promote on their nodes, which
 *   `api.update_promoted_metrics()` (POSTed by OAR at each job's start and end) copies into
 *   promoted_metrics.
 * Idempotent: running it again re-imports OAR's tables with the current options. Every view reads
 * OAR with the user mapping of their owner, the administrator running this.
 */
export interface OarSetupResult {
  /** Jobs and (job, node) rows visible in nodetime_per_job right after setup: a connectivity check. */
  jobs: number;
  nodes: number;
}

const OAR_TABLES = ["jobs", "job_types", "assigned_resources", "resources"];

/** Kwollect's empty hook views (sql/0002), restored while OAR's objects are replaced. */
const EMPTY_NODETIME = `SELECT NULL::integer AS job_id, NULL::timestamptz AS start_time,
  NULL::timestamptz AS stop_time, NULL::text AS node WHERE false`;
const EMPTY_PROMOTED = `SELECT NULL::integer AS job_id, NULL::text AS node, NULL::text AS metric_id WHERE false`;

const NODETIME_BY_OARJOB = `
CREATE VIEW nodetime_by_oarjob AS
SELECT DISTINCT j.job_id::integer AS job_id,
       to_timestamp(j.start_time) AS start_time,
       CASE WHEN j.stop_time = 0 THEN NULL ELSE to_timestamp(j.stop_time) END AS stop_time,
       split_part(r.network_address, '.', 1)::text AS node
FROM oar.jobs j
JOIN oar.assigned_resources a ON a.moldable_job_id = j.assigned_moldable_job
JOIN oar.resources r ON r.resource_id = a.resource_id
WHERE r.type = 'default' AND j.start_time > 0`;

const PROMOTED_METRICS_JOB = `
CREATE OR REPLACE VIEW promoted_metrics_job AS
SELECT DISTINCT j.job_id::integer AS job_id,
       split_part(r.network_address, '.', 1)::text AS node,
       (CASE WHEN t.type = 'monitor' THEN '.*' ELSE substr(t.type, length('monitor=') + 1) END)::text AS metric_id
FROM oar.jobs j
JOIN oar.job_types t ON t.job_id = j.job_id
JOIN oar.assigned_resources a ON a.moldable_job_id = j.assigned_moldable_job
JOIN oar.resources r ON r.resource_id = a.resource_id
WHERE j.state IN ('Running', 'Launching') AND r.type = 'default'
  AND (t.type = 'monitor' OR t.type LIKE 'monitor=%')`;

/**
 * CREATE OR REPLACE VIEW, or DROP and CREATE when the existing view's columns differ (Kwollect's
 * OAR views have OAR's bigint job_id). A site object that reads the view stops the setup, with
 * PostgreSQL's message naming it.
 */
async function replaceView(tx: postgres.TransactionSql, name: string, query: string): Promise<void> {
  await tx.savepoint((sp) => sp.unsafe(`CREATE OR REPLACE VIEW ${name} AS ${query}`)).catch(
    async (err: { code?: string }) => {
      if (err.code !== "42P16") throw err;
      await tx.unsafe(`DROP VIEW ${name}`);
      await tx.unsafe(`CREATE VIEW ${name} AS ${query}`);
    },
  );
}

export async function setupOar(c: Config): Promise<OarSetupResult> {
  registerSecret(c.oardb_password);
  const ro = `${c.kwollect_user}_ro`;
  const oar = `${c.oardb_user}@${c.oardb_host}:${c.oardb_port}/${c.oardb_name}`;
  const db = connect(adminEndpoint(c, c.kwollect_db_name), { applicationName: "kwollector setup-db-oar" });
  try {
    const [migrated] = await db<{ ok: boolean }[]>`
      SELECT to_regclass('public.promoted_metrics_job') IS NOT NULL AS ok`;
    if (!migrated?.ok) {
      throw new Error(`Database '${c.kwollect_db_name}' is not set up: run kwollector setup-db first`);
    }
    await db.begin(async (tx) => {
      await tx`CREATE EXTENSION IF NOT EXISTS postgres_fdw`;
      const options = `host ${literal(c.oardb_host)}, port ${literal(String(c.oardb_port))}, dbname ${
        literal(c.oardb_name)
      }`;
      const [server] = await tx`SELECT 1 FROM pg_foreign_server WHERE srvname = 'oar_server'`;
      if (server) {
        await tx.unsafe(
          `ALTER SERVER oar_server OPTIONS (SET host ${literal(c.oardb_host)}, SET port ${
            literal(String(c.oardb_port))
          }, SET dbname ${literal(c.oardb_name)})`,
        );
      } else {
        await tx.unsafe(
          `CREATE SERVER oar_server FOREIGN DATA WRAPPER postgres_fdw OPTIONS (${options}, use_remote_estimate 'true')`,
        );
      }
      await tx`DROP USER MAPPING IF EXISTS FOR CURRENT_USER SERVER oar_server`;
      await tx.unsafe(
        `CREATE USER MAPPING FOR CURRENT_USER SERVER oar_server OPTIONS (user ${literal(c.oardb_user)}, password ${
          literal(c.oardb_password)
        })`,
      );

      // Detach Kwollect's views from the previous import before dropping it. An upgraded
      // Kwollect database kept its own nodetime_by_job and promoted_metrics_job (Kwollect's OAR
      // integration's, over the same foreign tables): OAR through this import replaces them.
      await tx.unsafe(`CREATE OR REPLACE VIEW nodetime_per_job AS ${EMPTY_NODETIME}`);
      await replaceView(tx, "nodetime_by_job", "SELECT job_id, start_time, stop_time, node FROM nodetime_per_job");
      await replaceView(tx, "promoted_metrics_job", EMPTY_PROMOTED);
      await tx`DROP VIEW IF EXISTS nodetime_by_oarjob`;
      await tx`DROP SCHEMA IF EXISTS oar CASCADE`;
      await tx`CREATE SCHEMA oar`;
      await tx.unsafe(
        `IMPORT FOREIGN SCHEMA public LIMIT TO (${OAR_TABLES.join(", ")}) FROM SERVER oar_server INTO oar`,
      ).catch((err: Error) => {
        throw new Error(`Cannot read OAR's database ${oar}: ${err.message}`);
      });
      const imported = await tx<{ table_name: string }[]>`
        SELECT foreign_table_name AS table_name FROM information_schema.foreign_tables
        WHERE foreign_table_schema = 'oar'`;
      const missing = OAR_TABLES.filter((t) => !imported.some((r) => r.table_name === t));
      if (missing.length > 0) {
        throw new Error(`OAR's database ${oar} has no table ${missing.join(", ")} in schema public`);
      }
      await tx.unsafe(NODETIME_BY_OARJOB);
      await tx`CREATE OR REPLACE VIEW nodetime_per_job AS SELECT job_id, start_time, stop_time, node FROM nodetime_by_oarjob`;
      await tx.unsafe(PROMOTED_METRICS_JOB);
      await tx.unsafe(`GRANT SELECT ON nodetime_by_oarjob, nodetime_by_job, promoted_metrics_job TO ${ident(ro)}`);
    });
    const [counts] = await db<{ jobs: number; nodes: number }[]>`
      SELECT count(DISTINCT job_id)::int AS jobs, count(*)::int AS nodes FROM nodetime_per_job`
      .catch((err: Error) => {
        throw new Error(`Cannot query OAR's database ${oar} through postgres_fdw: ${err.message}`);
      });
    const result = { jobs: counts?.jobs ?? 0, nodes: counts?.nodes ?? 0 };
    logger.info("OAR integration ready", { oar, ...result });
    return result;
  } finally {
    await db.end();
  }
}
