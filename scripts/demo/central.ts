import { connect, type Endpoint, type Sql } from "../../src/central/connect.ts";
import { migrate } from "../../src/central/migrate.ts";
import { ident } from "../../src/central/setup.ts";
import type { KwollectorCli } from "./kwollector_cli.ts";

/**
 * The central database of the demo: either PGlite (PostgreSQL compiled to WebAssembly, running
 * in a worker thread of the demo process) served on a local port (pglite_server.ts) with the same
 * migrations as
 * `setup-db` applies, or a real PostgreSQL prepared by `kwollector setup-db`.
 */
export interface Central {
  /** One line saying what it is and what was applied. */
  description: string;
  /** Where the collector's connections go (through the demo's relay). */
  host: string;
  port: number;
  /** Connection of the demo itself, as the Kwollect user, not through the relay. */
  sql: Sql;
  close(): Promise<void>;
}

/** The Kwollect roles the migrations grant to; PGlite accepts CREATE ROLE but ignores logins. */
const USER = "kwuser";
const USER_RO = "kwuser_ro";

export async function startEmbeddedCentral(): Promise<Central> {
  const worker = new Worker(new URL("./central_worker.ts", import.meta.url), { type: "module" });
  const port = await new Promise<number>((resolve, reject) => {
    worker.onmessage = (e: MessageEvent<{ port: number }>) => resolve(e.data.port);
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new Error(`The embedded central database failed to start: ${e.message}`));
    };
  });
  const stopWorker = async () => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      worker.onmessage = () => resolve();
      worker.postMessage("close");
      timer = setTimeout(resolve, 5000);
    });
    clearTimeout(timer);
    worker.terminate();
  };
  const endpoint = pgliteEndpoint(port);
  const sql = connect(endpoint, { applicationName: "kwollector demo" });
  try {
    for (const role of [USER_RO, USER]) {
      const found = await sql`SELECT 1 FROM pg_roles WHERE rolname = ${role}`;
      if (found.length === 0) await sql.unsafe(`CREATE ROLE ${ident(role)} LOGIN`);
    }
    const result = await migrate(sql, {
      user: USER,
      user_ro: USER_RO,
      db_name: "postgres",
      timescaledb: "off",
      chunk_interval_hour: "6",
      chunk_compress_hour: "24",
      request_timeout_min: "5",
    });
    const [version] = await sql<{ v: string }[]>`SELECT current_setting('server_version') AS v`;
    return {
      description: `PGlite (PostgreSQL ${version?.v} in WebAssembly, in a thread of this process), migrations ${
        result.applied.join(", ")
      } applied`,
      host: "127.0.0.1",
      port,
      sql,
      async close() {
        await sql.end({ timeout: 1 });
        await stopWorker();
      },
    };
  } catch (err) {
    await sql.end({ timeout: 0 }).catch(() => {});
    await stopWorker();
    throw err;
  }
}

/** PGlite has one database and no authentication: every session is `postgres` in `postgres`. */
export function pgliteEndpoint(port: number): Endpoint {
  return {
    host: "127.0.0.1",
    port,
    database: "postgres",
    user: "postgres",
    password: "",
    sslmode: "disable",
    sslrootcert: "",
  };
}

/** A real PostgreSQL the demo prepares with setup-db: an endpoint whose CA is the system's. */
export type RealCentralOptions = Omit<Endpoint, "sslrootcert">;

/** Runs `kwollector setup-db` (its flags carry db_admin and db_admin_password) on a real server. */
export async function prepareRealCentral(
  cli: KwollectorCli,
  opts: RealCentralOptions,
  setupFlags: string[],
): Promise<Central> {
  const setup = await cli.output("setup-db", ["--db_host", opts.host, "--db_port", String(opts.port), ...setupFlags]);
  if (setup.code !== 0) {
    throw new Error(`kwollector setup-db failed (exit ${setup.code}): ${(setup.stderr || setup.stdout).trim()}`);
  }
  // "Schema ready (TimescaleDB): applied 0001_core, ..." or "Schema ready (plain PostgreSQL): ..."
  const schema = /^Schema ready \(([^)]*)\): (.*)$/m.exec(setup.stdout);
  const sql = connect({
    host: opts.host,
    port: opts.port,
    database: opts.database,
    user: opts.user,
    password: opts.password,
    sslmode: opts.sslmode,
    sslrootcert: "",
  }, { applicationName: "kwollector demo" });
  return {
    description: `PostgreSQL at ${opts.host}:${opts.port}, database ${opts.database} (${
      schema?.[1] ?? "schema ready"
    }), set up by kwollector setup-db: ${schema?.[2] ?? ""}`,
    host: opts.host,
    port: opts.port,
    sql,
    close: () => sql.end({ timeout: 1 }),
  };
}
