/**
 * A throwaway PostgreSQL 15 cluster for tests: initdb in a temp directory as the `postgres` user,
 * listening on 127.0.0.1 at a free port, with TLS on (a self-signed CA and server certificate made
 * with openssl) and password authentication (scram) for every role but the local superuser. It is
 * started and stopped by the tests, by PID, with pg_ctl. TimescaleDB is preloaded when it is
 * installed on the machine (`timescaledb: true` requires it).
 */
import postgres from "postgres";
import { connect, type Endpoint, type Sql } from "../../src/central/connect.ts";
import { selfSignedCertificate } from "./certificates.ts";

export const PG_BIN = "/usr/lib/postgresql/15/bin";

export interface PgCluster {
  dir: string;
  port: number;
  host: string;
  /** CA certificate (PEM file) that signed the server certificate. */
  caFile: string;
  timescaledb: boolean;
  /** Superuser connection to `database` over TCP (no TLS), for test setup and checks. */
  admin(database?: string): Sql;
  endpoint(opts: Partial<Endpoint>): Endpoint;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Runs SQL through psql as the superuser (for statements postgres.js cannot run). */
  psql(sql: string, database?: string): Promise<string>;
}

/** The CommandComplete message of a COMMIT, as the server sends it (its acknowledgement). */
export const COMMIT_COMPLETE = new Uint8Array([0x43, 0, 0, 0, 11, ...new TextEncoder().encode("COMMIT"), 0]);

export function timescaleInstalled(): boolean {
  try {
    Deno.statSync("/usr/share/postgresql/15/extension/timescaledb.control");
    return true;
  } catch {
    return false;
  }
}

export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function run(cmd: string, args: string[], opts: { asPostgres?: boolean; cwd?: string } = {}): Promise<string> {
  const full = opts.asPostgres ? ["runuser", ["-u", "postgres", "--", cmd, ...args]] as const : [cmd, args] as const;
  const out = await new Deno.Command(full[0], { args: [...full[1]], stdout: "piped", stderr: "piped", cwd: opts.cwd })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed: ${text}`);
  return text;
}

/** A private network the cluster also serves (netns.ts): its address, and its clients'. */
export interface ServedNetwork {
  address: string;
  clients: string;
}

export interface PostgresOptions {
  /** Preloads TimescaleDB (default: when it is installed). */
  timescaledb?: boolean;
  /** fsync on (off by default: tests need no durability across a power cut). */
  fsync?: boolean;
  /** A private network the cluster serves too. */
  network?: ServedNetwork;
  /** More server settings (`-c name=value`), e.g. `track_commit_timestamp: "on"`. */
  settings?: Record<string, string>;
}

export async function startPostgres(opts: PostgresOptions = {}): Promise<PgCluster> {
  const timescaledb = opts.timescaledb ?? timescaleInstalled();
  const dir = await Deno.makeTempDir({ prefix: "kwollector-pg-" });
  await Deno.chmod(dir, 0o755);
  const data = `${dir}/data`;
  await run("chown", ["postgres:postgres", dir]);
  await run(`${PG_BIN}/initdb`, [
    "-D",
    data,
    "-U",
    "postgres",
    "--auth-local=trust",
    "--auth-host=scram-sha-256",
    "-E",
    "UTF8",
    "--locale=C.UTF-8",
    "--pwfile=/dev/null",
  ], { asPostgres: true })
    .catch(async () => {
      // --pwfile=/dev/null gives the superuser no password; host auth below trusts it explicitly.
      await run(`${PG_BIN}/initdb`, ["-D", data, "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"], {
        asPostgres: true,
      });
    });
  // TLS material: a CA and a server certificate for 127.0.0.1 / localhost.
  const caKey = `${dir}/ca.key`;
  const caFile = `${dir}/ca.crt`;
  await selfSignedCertificate({ keyFile: caKey, certFile: caFile, subject: "/CN=kwollector test CA", days: 2 });
  await run("openssl", [
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    `${data}/server.key`,
    "-out",
    `${dir}/server.csr`,
    "-subj",
    "/CN=localhost",
  ]);
  await Deno.writeTextFile(`${dir}/ext.cnf`, "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    `${dir}/server.csr`,
    "-CA",
    caFile,
    "-CAkey",
    caKey,
    "-CAcreateserial",
    "-out",
    `${data}/server.crt`,
    "-days",
    "2",
    "-extfile",
    `${dir}/ext.cnf`,
  ]);
  await run("chown", ["postgres:postgres", `${data}/server.key`, `${data}/server.crt`]);
  await Deno.chmod(`${data}/server.key`, 0o600);
  // The superuser connects without a password over TCP (test setup only); every other role
  // must give its password.
  await Deno.writeTextFile(
    `${data}/pg_hba.conf`,
    [
      "local all all trust",
      "host all postgres 127.0.0.1/32 trust",
      "hostssl all all 127.0.0.1/32 scram-sha-256",
      "host all all 127.0.0.1/32 scram-sha-256",
      ...(opts.network ? [`host all all ${opts.network.clients} scram-sha-256`] : []),
    ].join("\n") + "\n",
  );
  const port = freePort();
  const options = [
    `-p ${port}`,
    `-c listen_addresses=${["127.0.0.1", ...(opts.network ? [opts.network.address] : [])].join(",")}`,
    `-c unix_socket_directories=${dir}`,
    "-c ssl=on",
    `-c fsync=${opts.fsync ? "on" : "off"}`,
    "-c max_connections=200",
    ...(timescaledb ? ["-c shared_preload_libraries=timescaledb", "-c timescaledb.telemetry_level=off"] : []),
    ...Object.entries(opts.settings ?? {}).map(([name, value]) => `-c ${name}=${value}`),
  ].join(" ");
  const start = () =>
    run(`${PG_BIN}/pg_ctl`, ["-D", data, "-l", `${dir}/pg.log`, "-w", "-o", options, "start"], { asPostgres: true })
      .then(() => {});
  await start();
  const admins: Sql[] = [];
  const cluster: PgCluster = {
    dir,
    port,
    host: "127.0.0.1",
    caFile,
    timescaledb,
    admin(database = "postgres") {
      const sql = postgres({
        host: "127.0.0.1",
        port,
        username: "postgres",
        database,
        max: 2,
        onnotice: () => {},
        idle_timeout: 2,
      });
      admins.push(sql);
      return sql;
    },
    endpoint: (o) => ({
      host: "127.0.0.1",
      port,
      database: "kwdb",
      user: "kwuser",
      password: "changeme",
      sslmode: "disable",
      sslrootcert: "",
      ...o,
    }),
    start,
    async stop() {
      await run(`${PG_BIN}/pg_ctl`, ["-D", data, "-m", "fast", "-w", "stop"], { asPostgres: true });
    },
    psql: (sql, database = "postgres") =>
      run("psql", [
        "-X",
        "-q",
        "-A",
        "-t",
        "-h",
        "127.0.0.1",
        "-p",
        String(port),
        "-U",
        "postgres",
        "-d",
        database,
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
      ]),
  };
  const originalStop = cluster.stop;
  cluster.stop = async () => {
    await Promise.all(admins.splice(0).map((a) => a.end({ timeout: 0 }).catch(() => {})));
    await originalStop();
  };
  return cluster;
}

/** Stops the cluster and deletes its directory. */
export async function destroyPostgres(pg: PgCluster): Promise<void> {
  await pg.stop().catch(() => {});
  await Deno.remove(pg.dir, { recursive: true }).catch(() => {});
}

export { connect };
