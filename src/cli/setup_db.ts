import { setupDatabase } from "../central/setup.ts";
import { setupOar } from "../central/oar.ts";
import { parseCommand } from "./args.ts";

export const SETUP_DB_HELP = `kwollector setup-db [CONFIG] [--key value ...]

Creates or upgrades the central Kwollect database as db_admin: roles <kwollect_user> and
<kwollect_user>_ro, the database, TimescaleDB when the server has it, the numbered migrations of
sql/ (embedded), and settings (chunk interval, compression, timeouts, API bounds). A database
built by Kwollect's kwollect-setup-db is upgraded in place, in one transaction, keeping its rows,
summary, job definition and roles. Idempotent. Prints the PostgREST configuration and the API
token.

Examples:
  sudo -u postgres kwollector setup-db --db_host /var/run/postgresql --kwollect_password s3cret
  kwollector setup-db kwollector.yaml --db_admin postgres --db_admin_password ... --chunk_interval_hour 24`;

export async function setupDbCommand(argv: string[]): Promise<number> {
  const { resolved } = parseCommand(argv);
  const result = await setupDatabase(resolved.config);
  const m = result.migrations;
  console.log(
    `Schema ready (${result.timescaledb ? "TimescaleDB" : "plain PostgreSQL"}): ${
      m.applied.length ? `applied ${m.applied.join(", ")}` : "no new migration"
    }${m.alreadyApplied.length ? ` (${m.alreadyApplied.length} already applied)` : ""}${
      m.adoptedKwollect ? "; the Kwollect database was upgraded in place, its data, jobs and roles kept" : ""
    }`,
  );
  console.log("\n# PostgREST configuration:");
  console.log(result.postgrestConfig);
  console.log("\n# API token (Authorization: Bearer <token>):");
  console.log(result.apiToken);
  console.log("\n# Reverse proxy (nginx) in front of PostgREST, for insert_user_metrics:");
  console.log(result.reverseProxyConfig);
  if (result.summaryRefresh === "systemd timer") {
    console.log(
      "\nNeither TimescaleDB nor pg_cron is available: enable config/kwollect-summary-refresh.timer on the database host",
    );
  }
  return 0;
}

export const SETUP_DB_OAR_HELP = `kwollector setup-db-oar [CONFIG] [--key value ...]

Connects the Kwollect database to the OAR job scheduler's database through postgres_fdw:
nodetime_per_job and job-driven promotion ('monitor' and 'monitor=<regex>' job types) come from
OAR. Run setup-db first. Uses oardb_host, oardb_port, oardb_name, oardb_user, oardb_password.

Examples:
  kwollector setup-db-oar --oardb_host oar.site --oardb_password ... --db_admin_password ...`;

export async function setupDbOarCommand(argv: string[]): Promise<number> {
  const { resolved } = parseCommand(argv);
  const result = await setupOar(resolved.config);
  console.log(`OAR integration ready: ${result.jobs} jobs, ${result.nodes} job nodes visible`);
  return 0;
}
