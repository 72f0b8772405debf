import type { Config } from "../config/defaults.ts";
import { logger } from "../log.ts";
import { connect, type Endpoint, type Sql } from "./connect.ts";
import { b64url, signJwt } from "./jwt.ts";
import { migrate, type MigrationResult } from "./migrate.ts";
import { scramVerifier } from "./scram.ts";

/**
 * `setup-db`: creates or upgrades the central database, idempotently. As the administrator it
 * creates the Kwollect roles and database when missing, re-applies their passwords (as SCRAM
 * verifiers), installs TimescaleDB when the server has it, applies the migrations and settings,
 * and returns the PostgREST configuration and API token to print.
 */
export interface SetupResult {
  migrations: MigrationResult;
  timescaledb: boolean;
  postgrestConfig: string;
  apiToken: string;
}

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

  const db = connect(adminEndpoint(c, dbName), { applicationName: "kwollector setup-db" });
  try {
    const timescaledb = await ensureTimescale(db);
    const migrations = await migrate(db, {
      user,
      user_ro: ro,
      db_name: dbName,
      timescaledb: timescaledb ? "on" : "off",
      chunk_interval_hour: String(c.chunk_interval_hour),
      chunk_compress_hour: String(c.chunk_compress_hour),
      request_timeout_min: String(c.request_timeout_min),
    });
    const secret = await jwtSecret(db);
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
      `jwt-secret = "${secret}"`,
    ].join("\n");
    return { migrations, timescaledb, postgrestConfig, apiToken };
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
  const [row] = await sql<{ available: boolean; preloaded: string }[]>`
    SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') AS available,
           current_setting('shared_preload_libraries') AS preloaded`;
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
  await sql`CREATE EXTENSION IF NOT EXISTS timescaledb`;
  return true;
}

/**
 * The PostgREST JWT secret: random, created once and kept in a table only the administrator can
 * read, so every setup-db run prints the same configuration and tokens stay valid.
 */
async function jwtSecret(sql: Sql): Promise<string> {
  await sql`CREATE TABLE IF NOT EXISTS kwollect_secrets (name text PRIMARY KEY, value text NOT NULL)`;
  await sql`REVOKE ALL ON kwollect_secrets FROM PUBLIC`;
  const fresh = b64url(crypto.getRandomValues(new Uint8Array(48)));
  await sql`INSERT INTO kwollect_secrets (name, value) VALUES ('jwt_secret', ${fresh}) ON CONFLICT (name) DO NOTHING`;
  const [row] = await sql<{ value: string }[]>`SELECT value FROM kwollect_secrets WHERE name = 'jwt_secret'`;
  if (!row) throw new Error("Cannot read the JWT secret from table kwollect_secrets");
  return row.value;
}

/** Quotes an SQL identifier. */
export function ident(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
