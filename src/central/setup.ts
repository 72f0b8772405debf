import type { Config } from "../config/defaults.ts";
import { logger } from "../log.ts";
import { connect, type Endpoint, type Sql } from "./connect.ts";
import { b64url, signJwt } from "./jwt.ts";
import { migrate, type MigrationResult } from "./migrate.ts";
import { scramVerifier } from "./scram.ts";

/**
 * `setup-db`: creates or upgrades the central database, idempotently. As the administrator it
 * creates the Kwollect roles and database when missing, re-applies their passwords (as SCRAM
 * verifiers), installs TimescaleDB when the server has it, creates the archive tablespace, applies
 * the migrations and settings (with get_job_metrics' requests), schedules the summary refresh with
 * pg_cron when TimescaleDB is absent, and returns the PostgREST and reverse proxy configurations
 * and the API token to print.
 */
export interface SetupResult {
  migrations: MigrationResult;
  timescaledb: boolean;
  /** Who keeps metrics_summary materialised. */
  summaryRefresh: "timescaledb" | "pg_cron" | "systemd timer";
  postgrestConfig: string;
  /** nginx snippet for the proxy in front of PostgREST (insert_user_metrics relies on it). */
  reverseProxyConfig: string;
  apiToken: string;
}

/** Tablespace that archive_path becomes. */
export const ARCHIVE_TABLESPACE = "kwollect_archive";
/** Port PostgREST listens on, on 127.0.0.1 only, in the printed configuration. */
export const POSTGREST_PORT = 3000;

export function adminEndpoint(c: Config, database: string): Endpoint {
  return {
    host: c.db_host,
    port: c.db_port,
    database,
    user: c.db_admin,
    password: c.db_admin_password,
    sslmode: c.db_sslmode,
    sslrootcert: c.db_sslrootcert,
  };
}

export async function setupDatabase(c: Config): Promise<SetupResult> {
  const user = c.kwollect_user;
  const ro = `${user}_ro`;
  const dbName = c.kwollect_db_name;

  const maintenance = connect(adminEndpoint(c, "postgres"), { applicationName: "kwollector setup-db" });
  try {
    await ensureRole(maintenance, ro, c.kwollect_password_ro);
    await ensureRole(maintenance, user, c.kwollect_password);
    await maintenance.unsafe(`GRANT ${ident(ro)} TO ${ident(user)}`);
    const exists = await maintenance`SELECT 1 FROM pg_database WHERE datname = ${dbName}`;
    if (exists.length === 0) {
      await maintenance.unsafe(`CREATE DATABASE ${ident(dbName)} ENCODING 'UTF8' TEMPLATE template0`);
      logger.info("Database created", { database: dbName });
    }
    await maintenance.unsafe(`GRANT CONNECT, TEMPORARY ON DATABASE ${ident(dbName)} TO ${ident(user)}, ${ident(ro)}`);
  } finally {
    await maintenance.end();
  }

  const requests = c.jobmetrics_requests_path === ""
    ? undefined
    : await readJobmetricsRequests(c.jobmetrics_requests_path);
  const db = connect(adminEndpoint(c, dbName), { applicationName: "kwollector setup-db" });
  try {
    const timescaledb = await ensureTimescale(db);
    const archive = await ensureArchiveTablespace(db, c.archive_path, timescaledb);
    const migrations = await migrate(db, {
      user,
      user_ro: ro,
      db_name: dbName,
      timescaledb: timescaledb ? "on" : "off",
      chunk_interval_hour: String(c.chunk_interval_hour),
      chunk_compress_hour: String(c.chunk_compress_hour),
      request_timeout_min: String(c.request_timeout_min),
      api_anonymous_timeout_s: String(c.api_anonymous_timeout_s),
      api_max_rows: String(c.api_max_rows),
      retention_days: String(c.retention_days),
      archive_tablespace: archive,
      jobmetrics_requests: requests === undefined ? "" : JSON.stringify(requests),
    }).catch((err: Error) => {
      if (!err.message.startsWith("jobmetrics request")) throw err;
      throw new Error(`Invalid jobmetrics_requests_path '${c.jobmetrics_requests_path}': ${err.message}`);
    });
    if (migrations.adoptedKwollect) {
      logger.info("Kwollect database upgraded in place", { database: dbName, applied: migrations.applied.join(",") });
    }
    if (timescaledb && archive === "") await reportKwollectArchiveJob(db);
    const secret = await storedSecret(db, "jwt_secret");
    const proxyKey = await storedSecret(db, "proxy_key");
    const summaryRefresh = timescaledb ? "timescaledb" : await scheduleMaintenance(c, db, dbName);
    const payload: Record<string, unknown> = { role: user };
    if (c.api_token_expiry_days > 0) {
      payload.exp = Math.floor(Date.now() / 1000) + c.api_token_expiry_days * 86400;
    }
    const apiToken = await signJwt(payload, secret);
    const host = c.db_host.startsWith("/") ? "localhost" : c.db_host;
    const postgrestConfig = [
      `db-uri = "postgres://${encodeURIComponent(user)}:${
        encodeURIComponent(c.kwollect_password)
      }@${host}:${c.db_port}/${encodeURIComponent(dbName)}"`,
      `db-schemas = "api"`,
      `db-anon-role = "${ro}"`,
      ...(c.api_max_rows > 0 ? [`db-max-rows = ${c.api_max_rows}`] : []),
      `jwt-secret = "${secret}"`,
      `server-host = "127.0.0.1"`,
      `server-port = ${POSTGREST_PORT}`,
    ].join("\n");
    return {
      migrations,
      timescaledb,
      summaryRefresh,
      postgrestConfig,
      reverseProxyConfig: reverseProxyConfig(proxyKey),
      apiToken,
    };
  } finally {
    await db.end();
  }
}

async function ensureRole(sql: Sql, role: string, password: string): Promise<void> {
  const found = await sql`SELECT 1 FROM pg_roles WHERE rolname = ${role}`;
  if (found.length === 0) await sql.unsafe(`CREATE ROLE ${ident(role)} LOGIN`);
  else await sql.unsafe(`ALTER ROLE ${ident(role)} LOGIN`);
  // The verifier contains only base64 characters, '$' and ':', so it is a safe literal.
  await sql.unsafe(`ALTER ROLE ${ident(role)} PASSWORD '${await scramVerifier(password)}'`);
}

/** Installs TimescaleDB when the server has it loaded; returns whether metrics uses it. */
async function ensureTimescale(sql: Sql): Promise<boolean> {
  const installed = await sql`SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'`;
  if (installed.length > 0) return true;
  const [row] = await sql<{ available: boolean; preloaded: string; metrics_exists: boolean }[]>`
    SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') AS available,
           current_setting('shared_preload_libraries') AS preloaded,
           to_regclass('public.metrics') IS NOT NULL AS metrics_exists`;
  if (!row?.available) {
    logger.info("TimescaleDB is not installed on the server: using plain PostgreSQL tables");
    return false;
  }
  if (!row.preloaded.split(",").map((s) => s.trim()).includes("timescaledb")) {
    logger.warning(
      "TimescaleDB is installed but not in shared_preload_libraries: using plain PostgreSQL tables",
    );
    return false;
  }
  if (row.metrics_exists) {
    // The schema was built for plain tables (the summary, its trigger): keep it consistent.
    logger.warning(
      "TimescaleDB is available but this database was set up without it: keeping plain PostgreSQL tables",
    );
    return false;
  }
  await sql`CREATE EXTENSION IF NOT EXISTS timescaledb`;
  return true;
}

/**
 * Creates the archive tablespace at archive_path (TimescaleDB moves chunks there), or adopts the
 * one already there. Returns its name, or "" when archiving is off. CREATE TABLESPACE cannot run in a transaction, hence here and
 * not in a migration.
 */
async function ensureArchiveTablespace(sql: Sql, path: string, timescaledb: boolean): Promise<string> {
  if (path === "") return "";
  if (!timescaledb) {
    logger.warning(
      "archive_path is set but TimescaleDB is not in use: nothing is archived (only TimescaleDB can move old chunks to another tablespace)",
      { archive_path: path },
    );
    return "";
  }
  // A tablespace already at archive_path is the archive, whatever its name: Kwollect's is `archive`.
  const [atPath] = await sql<{ name: string }[]>`
    SELECT spcname AS name FROM pg_tablespace
    WHERE rtrim(pg_tablespace_location(oid), '/') = rtrim(${path}, '/')`;
  if (atPath) return atPath.name;
  const [existing] = await sql<{ location: string }[]>`
    SELECT pg_tablespace_location(oid) AS location FROM pg_tablespace WHERE spcname = ${ARCHIVE_TABLESPACE}`;
  if (existing) {
    throw new Error(
      `Tablespace ${ARCHIVE_TABLESPACE} is at '${existing.location}', not at archive_path '${path}': move it or set archive_path to it`,
    );
  }
  try {
    await sql.unsafe(`CREATE TABLESPACE ${ident(ARCHIVE_TABLESPACE)} LOCATION ${literal(path)}`);
  } catch (err) {
    throw new Error(
      `Cannot create tablespace ${ARCHIVE_TABLESPACE} at archive_path '${path}': ${
        (err as Error).message
      } (the directory must exist on the database server, be empty and belong to the postgres user)`,
    );
  }
  logger.info("Archive tablespace created", { archive_path: path });
  return ARCHIVE_TABLESPACE;
}

/**
 * Without archive_path, the archive job of an adopted Kwollect database (move_chunks_to_archive:
 * the summary's chunks only) runs on as Kwollect left it; say so, since kwollector's own archiving
 * (raw rows too) needs archive_path.
 */
async function reportKwollectArchiveJob(sql: Sql): Promise<void> {
  const jobs = await sql<{ config: { tablespace?: string; lag?: string } }[]>`
    SELECT config FROM timescaledb_information.jobs WHERE proc_name = 'move_chunks_to_archive'`;
  for (const { config } of jobs) {
    logger.info(
      "Kwollect's archive job is kept as it is: it moves the summary's chunks only; set archive_path to its tablespace's directory to archive raw rows too",
      { tablespace: config.tablespace ?? "", lag: config.lag ?? "" },
    );
  }
}

/** One job-wide request of the jobmetrics_requests_path file, with its line number. */
export interface JobmetricsRequest {
  line: number;
  request: string;
}

/**
 * Reads the jobmetrics_requests_path file: one SQL request per line; blank lines and lines
 * starting with `#` or `--` are skipped, a trailing `;` is dropped.
 */
export async function readJobmetricsRequests(path: string): Promise<JobmetricsRequest[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new Error(`Cannot read jobmetrics_requests_path '${path}': ${(err as Error).message}`);
  }
  return text.split("\n").flatMap((raw, i) => {
    const request = raw.trim().replace(/;+\s*$/, "").trim();
    if (request === "" || request.startsWith("#") || request.startsWith("--")) return [];
    return [{ line: i + 1, request }];
  });
}

const MAINTENANCE_JOB = "kwollect-maintenance";

/**
 * Without TimescaleDB, kwollect_maintenance() keeps the summary materialised and applies
 * retention. With pg_cron preloaded it is scheduled every 5 minutes (pg_cron lives in the database
 * named by cron.database_name and runs the job in ours); otherwise the operator enables
 * config/kwollect-summary-refresh.timer.
 */
async function scheduleMaintenance(c: Config, db: Sql, dbName: string): Promise<"pg_cron" | "systemd timer"> {
  const [row] = await db<{ preloaded: string; cron_db: string | null }[]>`
    SELECT current_setting('shared_preload_libraries') AS preloaded,
           current_setting('cron.database_name', true) AS cron_db`;
  const preloaded = row?.preloaded.split(",").map((s) => s.trim()).includes("pg_cron") ?? false;
  if (!preloaded || !row?.cron_db) {
    logger.warning(
      "Neither TimescaleDB nor pg_cron is available: enable config/kwollect-summary-refresh.timer on the database host so that metrics_summary stays materialised and retention applies",
      { database: dbName },
    );
    return "systemd timer";
  }
  const cron = connect(adminEndpoint(c, row.cron_db), { applicationName: "kwollector setup-db" });
  try {
    await cron`CREATE EXTENSION IF NOT EXISTS pg_cron`;
    const name = `${MAINTENANCE_JOB}-${dbName}`;
    await cron`SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = ${name}`;
    await cron`SELECT cron.schedule_in_database(${name}, '*/5 * * * *', 'SELECT * FROM kwollect_maintenance()', ${dbName})`;
  } finally {
    await cron.end();
  }
  return "pg_cron";
}

/** The proxy sets both headers itself, replacing any a client sent (see sql/0003_api.sql). */
function reverseProxyConfig(proxyKey: string): string {
  return [
    "# nginx: the only way to PostgREST (which listens on 127.0.0.1) from the nodes",
    "location / {",
    `    proxy_pass http://127.0.0.1:${POSTGREST_PORT};`,
    "    proxy_set_header X-Kwollect-Client $remote_addr;",
    `    proxy_set_header X-Kwollect-Proxy-Key "${proxyKey}";`,
    "}",
  ].join("\n");
}

/**
 * A random secret (the PostgREST JWT secret, the reverse proxy key), created once and kept in a
 * table only the administrator can read, so every setup-db run prints the same configuration and
 * tokens stay valid.
 */
async function storedSecret(sql: Sql, name: string): Promise<string> {
  await sql`CREATE TABLE IF NOT EXISTS kwollect_secrets (name text PRIMARY KEY, value text NOT NULL)`;
  await sql`REVOKE ALL ON kwollect_secrets FROM PUBLIC`;
  const fresh = b64url(crypto.getRandomValues(new Uint8Array(48)));
  await sql`INSERT INTO kwollect_secrets (name, value) VALUES (${name}, ${fresh}) ON CONFLICT (name) DO NOTHING`;
  const [row] = await sql<{ value: string }[]>`SELECT value FROM kwollect_secrets WHERE name = ${name}`;
  if (!row) throw new Error(`Cannot read secret '${name}' from table kwollect_secrets`);
  return row.value;
}

/** Quotes an SQL identifier. */
export function ident(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** Quotes an SQL string literal (standard_conforming_strings is on since PostgreSQL 9.1). */
export function literal(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}
