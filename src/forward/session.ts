import type { Config } from "../config/defaults.ts";
import type { Sql } from "../central/connect.ts";
import type { LockHolder } from "./ledger.ts";

/**
 * # The forwarder's central session: what frees a spool's ledger lock when a collector vanishes
 *
 * A batch holds its spool's ledger lock (the `pg_advisory_xact_lock` taken by `kwollect_claim`)
 * from its claim to its COMMIT. When the collector vanishes in between (power loss, a cut cable,
 * a frozen host), no FIN or RST reaches the server: its backend keeps the transaction, and the
 * lock, until the server itself notices. Left to the site's settings that is the database's
 * `idle_in_transaction_session_timeout` (1 h on kwdb) or, for a backend inside COPY, the kernel's
 * keepalive (2 h 11 min): the restarted collector's claims wait behind the orphan that long.
 * So every forwarder session asks, in its startup packet (so that every reconnection has it too,
 * and ahead of the role's and database's settings):
 *
 * - `tcp_keepalives_idle=10`, `tcp_keepalives_interval=5`, `tcp_keepalives_count=3`: the server's
 *   kernel probes a silent client after 10 s and drops the connection after 3 unanswered probes,
 *   25 s after the client's last packet (at the first probe, 10 s, when the collector's host came
 *   back with the same address: its kernel answers the probe with RST). The backend's read then
 *   fails, it exits and the lock is released. **This is what frees an orphan caught inside COPY**:
 *   that backend is running the COPY, waiting for data, so it is not idle in a transaction, and a
 *   COPY waiting for its client does not act on statement_timeout's cancel (checked on
 *   PostgreSQL 15: a COPY left without data kept its lock well past its 2 s statement_timeout).
 * - `idle_in_transaction_session_timeout=15s`: a session idle between the statements of a batch
 *   (after its claim, before COMMIT) is ended after 15 s, whether its client died or only froze (a
 *   stopped process's kernel still answers keepalives). The statements of a batch follow each
 *   other at once, so a healthy batch never idles that long. **For a power loss between two
 *   statements, this frees the lock first** (15 s, before the keepalives' 25 s).
 * - `lock_timeout` (5 s, at most a quarter of forward_timeout_ms): a claim waiting for the lock
 *   gives up with SQLSTATE 55P03 instead of waiting behind the orphan. The forwarder reports the
 *   lock and its holder ("Central database lock held by another session"), not an unreachable
 *   database, and retries on the same connection: one backend per collector, never a queue of
 *   them. (Before, each retry gave up after forward_timeout_ms and left its backend waiting on the
 *   lock: a backend waiting for a lock does not notice that its client left.) It bounds every
 *   other lock wait of the forwarder too, e.g. a COPY behind a table lock taken by maintenance.
 *
 * And once per connection, `statement_timeout` is lowered to 90% of forward_timeout_ms unless the
 * site set a lower one (kwdb's role setting is request_timeout_min, 5 min by default): the server
 * stops a statement the forwarder is about to give up on, and says so (SQLSTATE 57014).
 */

const KEEPALIVE_IDLE_S = 10;
const KEEPALIVE_INTERVAL_S = 5;
const KEEPALIVE_COUNT = 3;
export const IDLE_IN_TRANSACTION_MS = 15_000;
const LOCK_TIMEOUT_MS = 5_000;

function lockTimeoutMs(config: Config): number {
  return Math.min(LOCK_TIMEOUT_MS, Math.floor(config.forward_timeout_ms / 4));
}

function statementTimeoutMs(config: Config): number {
  return Math.floor(config.forward_timeout_ms * 0.9);
}

/** The startup parameters of a forwarder session (see the module header). */
export function sessionParameters(config: Config): Record<string, number> {
  return {
    tcp_keepalives_idle: KEEPALIVE_IDLE_S,
    tcp_keepalives_interval: KEEPALIVE_INTERVAL_S,
    tcp_keepalives_count: KEEPALIVE_COUNT,
    idle_in_transaction_session_timeout: IDLE_IN_TRANSACTION_MS,
    lock_timeout: lockTimeoutMs(config),
  };
}

/**
 * Lowers the session's statement_timeout to the forwarder's, keeping a lower one of the site.
 * Returns the session's backend pid (how the forwarder tells its own sessions from others).
 */
export async function limitStatements(sql: Sql, config: Config): Promise<number> {
  const ms = statementTimeoutMs(config);
  const [row] = await sql<{ pid: number }[]>`
    SELECT pg_backend_pid() AS pid,
           (SELECT set_config('statement_timeout', ${String(ms)}, false) FROM pg_settings
            WHERE name = 'statement_timeout' AND setting::bigint NOT BETWEEN 1 AND ${ms}) AS lowered`;
  return row!.pid;
}

/** A lock wait that ran into lock_timeout: which lock, and who holds it when known. */
export interface LockWait {
  /** Whether it was the claim waiting for the spool's ledger lock. */
  ledger: boolean;
  /** "ledger lock of spool <id>", or the statement's lock when it was not the claim. */
  lock: string;
  waitedMs: number;
  holder?: LockHolder;
}

/** The lock wait `err` reports (SQLSTATE 55P03), or undefined for any other failure. */
export function lockWaitOf(err: unknown, opts: { spoolId: string; config: Config }): LockWait | undefined {
  const e = err as { name?: unknown; code?: unknown; where?: unknown } | undefined;
  if (e?.name !== "PostgresError" || e.code !== "55P03") return undefined;
  const inClaim = typeof e.where === "string" && e.where.includes("kwollect_claim");
  return {
    ledger: inClaim,
    lock: inClaim ? `ledger lock of spool ${opts.spoolId}` : "a table lock of the batch's COPY or INSERT into metrics",
    waitedMs: lockTimeoutMs(opts.config),
  };
}
