/**
 * Sorts a failure of a forwarded batch into what the forwarder does next, by SQLSTATE class
 * (as Telegraf's PostgreSQL output does), by the client's connection error code, or by where the
 * error came from. Each class says what a wrong guess costs.
 *
 * - `retry`: the database or the network is unavailable, busy or restarting; the batch is fine.
 *   Wait with backoff, reconcile with the ledger (the commit may have happened), send again.
 *   Wrongly retrying a permanent failure keeps the backlog growing, visibly (the condition is
 *   logged and the spool's age grows), and loses nothing.
 * - `data`: the server rejected the content; only some rows are bad. Bisect the batch and
 *   quarantine the rows that fail alone. A wrong guess costs a bisection that ends with every
 *   row sent, since a batch is re-sent in halves.
 * - `config`: a person must act (wrong password, missing table, no privilege, bad TLS setting).
 *   Retry slowly and keep everything: nothing is dropped because of a configuration mistake.
 * - `local`: the spool (this host's disk) refused a read or a write. Nothing was lost centrally;
 *   retry, and report it as the spool's problem, not the central database's.
 * - `bug`: a programming error of kwollector itself (a TypeError, a RangeError, a misused client
 *   call, an error with no code from anywhere). Never retried under another name: the caller
 *   logs it CRITICAL and the process exits so that systemd restarts it; the spool keeps every
 *   acknowledged sample. Guessing `bug` for an environmental failure costs a restart, which is
 *   logged and then either heals or repeats visibly; guessing `retry` for a bug would hide it for
 *   ever, which is what this class exists to prevent.
 */
import { ConfigError } from "../config/errors.ts";
import { SPOOL_ERROR_CODE } from "../spool/errors.ts";

export type FailureKind = "retry" | "data" | "config" | "local" | "bug";

const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
]);

/** postgres.js codes that mean the client was called wrongly: our bug, not the server's. */
const MISUSE_CODES = new Set(["UNDEFINED_VALUE", "NOT_TAGGED_CALL", "MAX_PARAMETERS_EXCEEDED", "UNSAFE_TRANSACTION"]);

/** postgres.js codes of an authentication the server asked for and the client cannot do. */
const AUTH_CODES = new Set(["SASL_SIGNATURE_MISMATCH", "AUTH_TYPE_NOT_IMPLEMENTED"]);

/** Errors of the spool: node:sqlite's, and the spool's own (see `SPOOL_ERROR_CODE`). */
const LOCAL_CODES = new Set(["ERR_SQLITE_ERROR", SPOOL_ERROR_CODE]);

/** Errors the JavaScript engine raises for a programming error. */
const ENGINE_ERRORS = [TypeError, RangeError, ReferenceError, SyntaxError, EvalError, URIError];

export function classify(err: unknown): FailureKind {
  if (ENGINE_ERRORS.some((E) => err instanceof E)) return "bug";
  const e = err as { code?: unknown; name?: unknown } | undefined;
  const code = typeof e?.code === "string" ? e.code : "";
  if (CONNECTION_CODES.has(code)) return "retry";
  if (err instanceof ConfigError || AUTH_CODES.has(code)) return "config";
  if (MISUSE_CODES.has(code)) return "bug";
  if (LOCAL_CODES.has(code)) return "local";
  if (e?.name === "AbortError") return "retry";
  if (e?.name === "PostgresError" && /^[0-9A-Z]{5}$/.test(code)) return classifySqlState(code);
  // Node's TLS errors (certificate not trusted, wrong host name) and other coded client errors:
  // the environment, not us. Coded errors are retried; a person may have to act (logged).
  if (code !== "") return /CERT|TLS|SSL|SELF_SIGNED|UNABLE_TO/.test(code) ? "config" : "retry";
  return "bug";
}

function classifySqlState(code: string): FailureKind {
  switch (code.slice(0, 2)) {
    case "22": // data exception: invalid text, out-of-range value, bad JSON, NUL byte
    case "23": // integrity constraint violation: a CHECK, NOT NULL or unique rule of the site
    case "54": // program limit exceeded: a value too large for a row or an index
      return "data";
    case "28": // invalid authorization: wrong user or password
    case "3D": // invalid catalog name: the database does not exist
    case "42": // syntax error or access rule violation: missing table or function, no privilege
    case "0A": // feature not supported: e.g. the table is something else than expected
      return "config";
    case "08": // connection exception
    case "40": // transaction rollback: serialization failure, deadlock
    case "53": // insufficient resources: disk full, out of memory, too many connections
    case "55": // object not in prerequisite state: lock not available
    case "57": // operator intervention: shutdown, statement timeout, cannot connect now
    case "58": // system error: I/O error on the server
    case "XX": // internal error
    default:
      return "retry";
  }
}
