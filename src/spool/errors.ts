/**
 * What went wrong with the spool file, told apart so that each gets the right answer:
 *
 * - `damaged`: the file is not a sound SQLite database (its pages fail the integrity check, it
 *   is not a database at all). Moved aside and salvaged; waiting would not heal it.
 * - `refused`: the disk or the operating system refused (disk full, I/O error, permission,
 *   read-only file system, locked). The file may be perfectly sound: it is never moved, the
 *   operation is retried in place and the condition is logged with the path.
 *
 * node:sqlite in Deno gives no result code, only SQLite's message (sqlite3_errstr / errmsg), so
 * the messages are matched; Deno's own file errors carry an errno-like `code`.
 */
export type SpoolTrouble = "damaged" | "refused";

/** Code of the spool's own errors, so the forwarder's classification can tell them apart. */
export const SPOOL_ERROR_CODE = "KWOLLECTOR_SPOOL";

export class SpoolError extends Error {
  readonly code = SPOOL_ERROR_CODE;
  readonly trouble: SpoolTrouble;
  constructor(message: string, trouble: SpoolTrouble) {
    super(message);
    this.name = "SpoolError";
    this.trouble = trouble;
  }
}

const DAMAGED = /database disk image is malformed|file is not a database|malformed database schema|quick_check/i;
const REFUSED =
  /database or disk is full|disk I\/O error|unable to open database file|readonly database|access permission denied|database is locked|database table is locked|out of memory|no space left|permission denied|read-only file system|disk quota/i;
const REFUSED_CODES = new Set(["ENOSPC", "EACCES", "EPERM", "EROFS", "EIO", "EDQUOT", "EBUSY", "EMFILE", "ENFILE"]);

/** Sorts an error met while opening or using the spool; undefined when it is neither. */
export function spoolTrouble(err: unknown): SpoolTrouble | undefined {
  if (err instanceof SpoolError) return err.trouble;
  const code = (err as { code?: unknown })?.code;
  if (typeof code === "string" && REFUSED_CODES.has(code)) return "refused";
  if (err instanceof Deno.errors.PermissionDenied) return "refused";
  const message = err instanceof Error ? err.message : String(err);
  if (REFUSED.test(message)) return "refused";
  if (DAMAGED.test(message)) return "damaged";
  return undefined;
}
