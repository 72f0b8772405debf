/**
 * Shared setup of the central database tests: a throwaway cluster set up by `setupDatabase`, and
 * calls made the way PostgREST makes them. PostgREST logs in as the Kwollect user (its
 * authenticator), then per request opens a transaction (READ ONLY for GET), applies the settings
 * of the role it switches to (`ALTER ROLE <role> SET ...`, for the roles the authenticator is a
 * member of: PostgREST 11 and later), switches role with `SET LOCAL ROLE` (the anonymous
 * `<user>_ro`, or the token's role), publishes the JWT claims and the request headers with
 * `set_config(..., true)`, and calls the function with named arguments decoded from a JSON object
 * by `json_to_record` (so every value arrives as text, cast to the parameter's type), or with the
 * whole body for a function with a single unnamed json parameter.
 */
import type postgres from "postgres";
import { connect, type Sql } from "../../src/central/connect.ts";
import { setupDatabase, type SetupResult } from "../../src/central/setup.ts";
import type { Config } from "../../src/config/defaults.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { destroyPostgres, type PgCluster, startPostgres, timescaleInstalled } from "../../scripts/peers/postgres.ts";

export type Backend = "plain" | "timescaledb";

export interface Central {
  pg: PgCluster;
  dir: string;
  config: Config;
  setup: SetupResult;
  /** Superuser connection to the Kwollect database. */
  admin: Sql;
  /** PostgREST's connection: the Kwollect user. */
  authenticator: Sql;
  close(): Promise<void>;
}

export const USER = "kwuser";
export const RO = "kwuser_ro";
export const PASSWORD = "s3cret-pw";

/** Starts a cluster (with TimescaleDB preloaded or not) and runs setup-db on it. */
export async function startCentral(
  backend: Backend,
  overrides: Record<string, string | number> = {},
): Promise<Central> {
  const pg = await startPostgres({ timescaledb: backend === "timescaledb" });
  const dir = await Deno.makeTempDir({ prefix: "kwollector-central-" });
  try {
    const config = pgConfig(pg, dir, { kwollect_password: PASSWORD, ...overrides });
    const setup = await setupDatabase(config);
    const admin = pg.admin(config.kwollect_db_name);
    const authenticator = connect(pg.endpoint({ user: USER, password: PASSWORD, database: config.kwollect_db_name }), {
      max: 2,
    });
    return {
      pg,
      dir,
      config,
      setup,
      admin,
      authenticator,
      async close() {
        await authenticator.end({ timeout: 0 });
        await destroyPostgres(pg);
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      },
    };
  } catch (err) {
    await destroyPostgres(pg);
    throw err;
  }
}

/** Whether this machine can run the TimescaleDB variant (the one allowed skip, with a notice). */
export function timescaleAvailable(): boolean {
  if (timescaleInstalled()) return true;
  console.log("NOTICE: TimescaleDB is not installed here: its variant of this test is skipped");
  return false;
}

export interface Request {
  /** The role PostgREST switches to: the anonymous role unless a token says otherwise. */
  role?: string;
  claims?: Record<string, unknown>;
  headers?: Record<string, string>;
  /** GET requests run in a READ ONLY transaction. */
  method?: "GET" | "POST";
  /** statement_timeout of the request (the Kwollect user's request_timeout_min otherwise). */
  statementTimeoutMs?: number;
}

type Tx = postgres.TransactionSql;

/** Runs `body` inside one PostgREST-like request transaction. */
export async function request<T>(sql: Sql, req: Request, body: (tx: Tx) => Promise<T>): Promise<T> {
  const role = req.role ?? RO;
  const mode = (req.method ?? "GET") === "GET" ? "read only" : "read write";
  return await sql.begin(mode, async (tx) => {
    await tx`
      SELECT set_config(split_part(s, '=', 1), substr(s, strpos(s, '=') + 1), true)
      FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid, unnest(r.rolconfig) s
      JOIN pg_settings p ON p.name = split_part(s, '=', 1) AND p.context = 'user'
      WHERE m.member = current_user::regrole AND r.rolname = ${role}`;
    await tx.unsafe(`SET LOCAL ROLE "${role.replaceAll('"', '""')}"`);
    if (req.statementTimeoutMs) {
      await tx`SELECT set_config('statement_timeout', ${`${req.statementTimeoutMs}ms`}, true)`;
    }
    await tx`SELECT set_config('request.jwt.claims', ${JSON.stringify(req.claims ?? { role })}, true),
                    set_config('request.headers', ${JSON.stringify(req.headers ?? {})}, true),
                    set_config('request.method', ${req.method ?? "GET"}, true)`;
    return await body(tx);
  }) as T;
}

/** Parameter types of the API functions called with named arguments (their signatures). */
const PARAMETERS: Record<string, Record<string, string>> = {
  get_metrics: {
    devices: "text",
    nodes: "text",
    metrics: "text",
    start_time: "text",
    end_time: "text",
    job_id: "integer",
    summary: "boolean",
    as_rate: "text",
  },
  available_metrics: { at: "timestamptz", params: "jsonb" },
  get_job_metrics: { job_id: "integer" },
};

export type Row = Record<string, unknown>;

/**
 * `GET /rpc/<fn>?k=v&...` (named arguments, each a text value from the query string), or a POST
 * with a JSON object body when a value is not a string.
 */
export async function rpc(sql: Sql, fn: string, args: Record<string, unknown>, req: Request = {}): Promise<Row[]> {
  const types = PARAMETERS[fn];
  if (!types) throw new Error(`No signature for api.${fn} in the test harness`);
  const names = Object.keys(args);
  for (const n of names) if (!types[n]) throw new Error(`api.${fn} has no parameter '${n}'`);
  const columns = names.map((n) => `"${n}" ${types[n]}`).join(", ");
  const call = names.map((n) => `"${n}" := a."${n}"`).join(", ");
  const from = names.length ? `json_to_record($1::text::json) AS a(${columns}), LATERAL ` : "";
  const text = `SELECT r.* FROM ${from}api.${fn}(${call}) r`;
  return [...await request(sql, req, (tx) => tx.unsafe(text, names.length ? [JSON.stringify(args)] : []))];
}

/** `POST /rpc/<fn>` with a JSON body, to a function with a single unnamed json parameter. */
export async function rpcBody(sql: Sql, fn: string, body: unknown, req: Request = {}): Promise<Row[]> {
  return [
    ...await request(
      sql,
      { method: "POST", ...req },
      (tx) => tx.unsafe(`SELECT r.* FROM api.${fn}($1::text::jsonb) r`, [JSON.stringify(body)]),
    ),
  ];
}

/** The token's request: role and claims of the API token. */
export function withToken(extra: Partial<Request> = {}): Request {
  return { role: USER, claims: { role: USER }, method: "POST", ...extra };
}

/** Rejects with the PostgreSQL error of `p`, or fails when it resolves. */
export async function pgError(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as { code?: string; message: string };
    return { code: e.code ?? "", message: e.message };
  }
  throw new Error("Expected a PostgreSQL error, but the statement succeeded");
}

/** ISO string of a timestamp column (postgres.js returns Date objects). */
export function iso(v: unknown): string {
  return (v as Date).toISOString();
}
