import net from "node:net";
import postgres from "postgres";
import type { Config } from "../config/defaults.ts";
import { ConfigError } from "../config/errors.ts";

/**
 * Connections to the central PostgreSQL. Every connection goes through our own socket factory so
 * that TCP_NODELAY is set (postgres.js never sets it, and every COPY then waits ~90 ms for a
 * delayed ACK) and TCP keepalives probe a silent server after KEEPALIVE_IDLE_MS. postgres.js
 * still performs the SSLRequest negotiation on that socket, so TLS works with libpq's sslmode
 * semantics: `prefer` and `require` encrypt without verifying, `verify-ca` checks the chain
 * against `db_sslrootcert`, `verify-full` also checks the host name.
 *
 * Keepalives: Deno's node:net sets only the idle time before the first probe (TCP_KEEPIDLE); the
 * probe interval and count stay the kernel's (net.ipv4.tcp_keepalive_intvl and _probes, 75 s × 9
 * by default). A dead server is therefore noticed by the caller's own deadline on each request
 * (the forwarder's forward_timeout_ms) rather than by the socket; what the server needs to notice
 * a dead client is asked for per session (`parameters`, see src/forward/session.ts).
 */
export type Sql = ReturnType<typeof postgres>;

export interface Endpoint {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string;
  sslmode: string;
  sslrootcert: string;
}

export function endpointOf(c: Config): Endpoint {
  return {
    host: c.db_host,
    port: c.db_port,
    database: c.db_name,
    user: c.db_user,
    password: c.db_password,
    sslmode: c.db_sslmode,
    sslrootcert: c.db_sslrootcert,
  };
}

/** "user@host:port/db", never with the password: what error messages name. */
export function describe(e: Endpoint): string {
  return `${e.user}@${e.host}:${e.port}/${e.database}`;
}

export interface ConnectOptions {
  /** Connections in the pool (the forwarder uses one). */
  max?: number;
  connectTimeoutS?: number;
  applicationName?: string;
  /** Server-side statement_timeout in ms (0: none). */
  statementTimeoutMs?: number;
  /**
   * Further server settings for the session, sent in the startup packet: they hold on every
   * connection, reconnections included, and take precedence over the role's and database's.
   */
  parameters?: Record<string, string | number>;
  /** Called when a connection closes, whatever the cause (postgres.js reconnects on the next query). */
  onClose?: () => void;
}

/** Idle time of a connection before the client's kernel probes the server. */
export const KEEPALIVE_IDLE_MS = 10_000;

export function connect(e: Endpoint, opts: ConnectOptions = {}): Sql {
  const unix = e.host.startsWith("/");
  const ssl = unix ? false : sslOption(e);
  return postgres({
    ...(unix ? { path: `${e.host.replace(/\/$/, "")}/.s.PGSQL.${e.port}` } : { host: e.host, port: e.port }),
    database: e.database,
    username: e.user,
    password: e.password,
    max: opts.max ?? 1,
    ssl,
    connect_timeout: opts.connectTimeoutS ?? 10,
    idle_timeout: 0,
    max_lifetime: null,
    onnotice: () => {},
    // Keepalives are set by openSocket, once.
    keep_alive: null,
    ...(opts.onClose ? { onclose: opts.onClose } : {}),
    connection: {
      application_name: opts.applicationName ?? "kwollector",
      ...(opts.statementTimeoutMs ? { statement_timeout: opts.statementTimeoutMs } : {}),
      ...opts.parameters,
    },
    ...(unix ? {} : { socket: () => openSocket(e.host, e.port) }),
  });
}

function openSocket(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, host);
    s.setNoDelay(true);
    s.setKeepAlive(true, KEEPALIVE_IDLE_MS);
    // postgres.js reads socket.host for the TLS server name.
    (s as unknown as { host: string }).host = host;
    s.once("connect", () => {
      s.removeListener("error", reject);
      resolve(s);
    });
    s.once("error", reject);
  });
}

function sslOption(e: Endpoint): false | "prefer" | "require" | Record<string, unknown> {
  const ca = () => {
    if (e.sslrootcert === "") {
      throw runConfigError(
        "db_sslrootcert",
        `db_sslmode '${e.sslmode}' needs db_sslrootcert, the CA certificate file to verify the server`,
      );
    }
    try {
      return Deno.readTextFileSync(e.sslrootcert);
    } catch (err) {
      throw runConfigError("db_sslrootcert", `Cannot read '${e.sslrootcert}': ${(err as Error).message}`);
    }
  };
  switch (e.sslmode) {
    case "disable":
      return false;
    case "prefer":
      return "prefer";
    case "require":
      // As libpq: with a root certificate given, require verifies the chain like verify-ca.
      return e.sslrootcert === ""
        ? "require"
        : { ca: ca(), rejectUnauthorized: true, checkServerIdentity: () => undefined };
    case "verify-ca":
      return { ca: ca(), rejectUnauthorized: true, checkServerIdentity: () => undefined };
    case "verify-full":
      // The identity is checked against `host` (DNS name or IP SAN); SNI is sent for names only.
      return { ca: ca(), rejectUnauthorized: true, host: e.host, ...(net.isIP(e.host) ? {} : { servername: e.host }) };
    default:
      throw runConfigError("db_sslmode", `Invalid value '${e.sslmode}'`);
  }
}

/** A configuration mistake found when connecting: classified `config` (a person must act). */
function runConfigError(key: string, message: string): ConfigError {
  return new ConfigError([{ file: "configuration", key, message }]);
}
