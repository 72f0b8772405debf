/**
 * What a database's schema is made of, to compare before and after a setup-db run: pg_dump's
 * schema (chunks of TimescaleDB's internal schema left out, since its policies compress chunks in
 * the background) and what pg_dump leaves out (TimescaleDB jobs, role settings, kwollect_settings,
 * jobmetrics requests, recorded migrations). TimescaleDB jobs are run here on demand.
 */
import assert from "node:assert/strict";
import type { Sql } from "../../src/central/connect.ts";
import { PG_BIN, type PgCluster } from "../../scripts/peers/postgres.ts";

export async function schemaDump(pg: PgCluster, database: string): Promise<string> {
  const out = await new Deno.Command(`${PG_BIN}/pg_dump`, {
    args: [
      "--schema-only",
      "--exclude-schema=_timescaledb_internal",
      "-h",
      pg.host,
      "-p",
      String(pg.port),
      "-U",
      "postgres",
      database,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  // pg_dump marks its output with a random \restrict key on each run.
  return new TextDecoder().decode(out.stdout).replace(/^\\(un)?restrict .*$/gm, "");
}

/** The catalogue beyond pg_dump; tables that do not exist yet read as null. */
export async function catalogState(admin: Sql, timescale: boolean): Promise<unknown[]> {
  const table = async (name: string, query: () => PromiseLike<Iterable<unknown>>) => {
    const [found] = await admin<{ ok: boolean }[]>`SELECT to_regclass(${name}) IS NOT NULL AS ok`;
    return found!.ok ? [...await query()] : null;
  };
  const state: unknown[] = [
    await table("kwollect_settings", () => admin`SELECT key, value FROM kwollect_settings ORDER BY key`),
    await table(
      "kwollect_jobmetrics_requests",
      () => admin`SELECT line, request FROM kwollect_jobmetrics_requests ORDER BY line`,
    ),
    await table(
      "kwollect_schema_migrations",
      () => admin`SELECT version, name, checksum FROM kwollect_schema_migrations ORDER BY version`,
    ),
    [
      ...await admin`SELECT r.rolname, s.setdatabase <> 0 AS in_database, s.setconfig
                     FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole ORDER BY 1, 2`,
    ],
  ];
  if (timescale) {
    state.push([
      ...await admin`SELECT proc_name, schedule_interval, config, hypertable_name, owner
                     FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY proc_name, hypertable_name`,
    ]);
  }
  return state;
}

/**
 * Runs a TimescaleDB job now, in this session. Every job is first taken off the scheduler, and any
 * run the scheduler started (it starts new policies at once) is waited for, so the two never race
 * for the same chunks.
 */
export async function runJob(admin: Sql, proc: string, hypertable?: string): Promise<void> {
  await admin`SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs WHERE job_id >= 1000`;
  for (let i = 0;; i++) {
    const [running] = await admin<{ n: number }[]>`
      SELECT count(*)::int AS n FROM timescaledb_information.job_stats WHERE job_status = 'Running'`;
    if (running!.n === 0) break;
    if (i === 200) throw new Error("TimescaleDB jobs still running after 20 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  await admin.unsafe(`CALL run_job(${await jobId(admin, proc, hypertable)})`);
}

async function jobId(admin: Sql, proc: string, hypertable?: string): Promise<number> {
  const [row] = await admin<{ job_id: number }[]>`
    SELECT job_id FROM timescaledb_information.jobs
    WHERE proc_name = ${proc} AND (${hypertable ?? null}::text IS NULL OR hypertable_name = ${hypertable ?? null})`;
  assert.ok(row, `no TimescaleDB job ${proc} ${hypertable ?? ""}`);
  return row.job_id;
}
