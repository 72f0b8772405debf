/**
 * Sorts a failure of a forwarded batch into what the forwarder does next, by SQLSTATE class
 * (as Telegraf's PostgreSQL output does) or by the client's connection error code.
 *
 * - `retry`: the database or the network is unavailable, busy or restarting; the batch is fine.
 *   Wait with backoff, reconcile with the ledger (the commit may have happened), send again.
 * - `data`: the server rejected the content; only some rows are bad. Bisect the batch and
 *   quarantine the rows that fail alone.
 * - `config`: a person must act (wrong password, missing table, no privilege). Retry slowly and
 *   keep everything: nothing is dropped because of a configuration mistake.
 */
export type FailureKind = "retry" | "data" | "config";

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

export function classify(err: unknown): FailureKind {
  const e = err as { code?: unknown; name?: unknown } | undefined;
  const code = typeof e?.code === "string" ? e.code : "";
  if (CONNECTION_CODES.has(code)) return "retry";
  if (e?.name !== "PostgresError" || !/^[0-9A-Z]{5}$/.test(code)) return "retry";
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
