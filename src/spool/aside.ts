/**
 * # Spool files moved aside, and how they are drained later
 *
 * A spool file is moved aside when it is damaged (at open), or when it replaced the live spool
 * while the collector ran. Nothing in it is forgotten:
 *
 * 1. **Moved, never deleted.** `moveAside()` renames the file and its `-wal`/`-shm` to
 *    `<spool>.damaged-<time>` (the write-ahead log first, so a new spool at the old path can
 *    never pick up the old log).
 * 2. **Salvaged until it succeeds.** `salvagePending()` rebuilds each damaged file as a clean
 *    spool `<spool>.retired-<time>` with the damaged spool's id, seqs, series, unreported gaps
 *    and quarantine, written to a temporary file and renamed when complete. When the disk or the
 *    OS refuses (a full disk), the temporary file is removed, the damaged file stays, and the
 *    next call tries again. The damaged file becomes `<spool>.salvaged-<time>` once its retired
 *    spool exists.
 * 3. **Drained like the live spool.** A retired spool is an ordinary spool with its own id: the
 *    forwarder sends it through the same central ledger, so each of its samples arrives exactly
 *    once, including samples already forwarded before the damage (the ledger recognises them).
 *    `removeDrained()` deletes it, with its salvaged source, once every sample has left; a
 *    retired spool still holding quarantined samples is kept for inspection.
 * 4. **Visible.** `listAside()` gives what `status` shows.
 *
 * When the damaged file's identity (meta table) cannot be read, the retired spool gets a new
 * id: its samples are then unknown to the ledger, and a batch that was in flight when the
 * spool was damaged may arrive twice. This is logged as an error when it happens.
 */
import { DatabaseSync } from "node:sqlite";
import { basename, dirname, join } from "node:path";
import { errorMessage, logger } from "../log.ts";
import { openSalvage } from "./salvage.ts";
import { SpoolError, spoolTrouble } from "./errors.ts";
import { initializeSchema } from "./schema.ts";

const STAMP = "\\d{4}-\\d\\d-\\d\\dT\\d\\d-\\d\\d-\\d\\d-\\d{3}Z(?:-\\d+)?";
const SIDECARS = ["-wal", "-shm"] as const;

export interface AsideFiles {
  /** Moved-aside files waiting for their salvage. */
  damaged: string[];
  /** Salvaged spools waiting to be forwarded. */
  retired: string[];
}

/** The moved-aside files of the spool at `spoolPath`, oldest first. */
export function listAside(spoolPath: string): AsideFiles {
  const base = basename(spoolPath).replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const pattern = new RegExp(`^${base}\\.(damaged|retired)-${STAMP}$`);
  const found: AsideFiles = { damaged: [], retired: [] };
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dirname(spoolPath))];
  } catch {
    return found;
  }
  for (const e of entries.map((e) => e.name).sort()) {
    const m = pattern.exec(e);
    if (m) found[m[1] === "damaged" ? "damaged" : "retired"].push(join(dirname(spoolPath), e));
  }
  return found;
}

/** Renames the spool file and its sidecars to `<spool>.damaged-<time>`; returns the new path. */
export function moveAside(spoolPath: string): string {
  let aside = `${spoolPath}.damaged-${new Date().toISOString().replace(/[:.]/g, "-")}`;
  for (let n = 1; exists(aside); n++) aside = `${aside.replace(/-\d+$/, "")}-${n}`;
  for (const suffix of [...SIDECARS, ""]) {
    try {
      Deno.renameSync(spoolPath + suffix, aside + suffix);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound && suffix !== "") continue;
      throw new SpoolError(`Cannot move spool '${spoolPath}${suffix}' aside: ${errorMessage(err)}`, "refused");
    }
  }
  return aside;
}

export interface SalvageReport {
  damaged: string;
  retired: string;
  samples: number;
  lost: number;
  sameSpoolId: boolean;
}

/**
 * Salvages every damaged file of the spool into a retired spool. Returns what was salvaged;
 * files the disk or the OS would not let us salvage now are left for the next call and listed
 * in `refused`.
 */
export function salvagePending(spoolPath: string): { salvaged: SalvageReport[]; refused: string[] } {
  const salvaged: SalvageReport[] = [];
  const refused: string[] = [];
  for (const damaged of listAside(spoolPath).damaged) {
    try {
      salvaged.push(salvageOne(damaged));
    } catch (err) {
      if (spoolTrouble(err) !== "refused") throw err;
      refused.push(`${damaged}: ${errorMessage(err)}`);
    }
  }
  return { salvaged, refused };
}

function salvageOne(damaged: string): SalvageReport {
  const retired = damaged.replace(/\.damaged-/, ".retired-");
  const tmp = `${retired}.tmp`;
  removeWithSidecars(tmp);
  const salvage = openSalvage(damaged);
  let copied: { samples: number; lost: number };
  try {
    createPrivateFile(tmp);
    const db = new DatabaseSync(tmp);
    try {
      db.exec("PRAGMA synchronous = FULL");
      initializeSchema(db, salvage.identity);
      copied = salvage.copy(db);
    } finally {
      db.close();
    }
    Deno.renameSync(tmp, retired);
  } catch (err) {
    removeWithSidecars(tmp);
    throw new SpoolError(
      `Cannot salvage '${damaged}' into '${retired}': ${errorMessage(err)}`,
      spoolTrouble(err) ?? "refused",
    );
  } finally {
    salvage.close();
  }
  for (const suffix of ["", ...SIDECARS]) {
    try {
      Deno.renameSync(damaged + suffix, damaged.replace(/\.damaged-/, ".salvaged-") + suffix);
    } catch { /* sidecars may not exist */ }
  }
  const report = { damaged, retired, ...copied, sameSpoolId: salvage.identity !== undefined };
  const fields = { damaged, retired, samples_salvaged: copied.samples, samples_lost_at_least: copied.lost };
  if (report.sameSpoolId) {
    logger.error("Spool salvage finished: the retired spool is forwarded with its original spool id", fields);
  } else {
    logger.error(
      "Spool salvage finished without the damaged spool's id: its samples get a new spool id, and a batch " +
        "that was in flight at the damage may arrive twice",
      fields,
    );
  }
  return report;
}

/**
 * Deletes a drained retired spool and the salvaged source it came from. The caller has checked
 * that no sample, gap or unreported quarantined seq is left in it.
 */
export function removeDrained(retiredPath: string): void {
  removeWithSidecars(retiredPath);
  removeWithSidecars(retiredPath.replace(/\.retired-/, ".salvaged-"));
}

/** Creates `path` readable by its owner only, before SQLite opens it. */
export function createPrivateFile(path: string): void {
  try {
    Deno.statSync(path);
  } catch {
    Deno.openSync(path, { create: true, write: true, mode: 0o600 }).close();
  }
  Deno.chmodSync(path, 0o600);
}

function removeWithSidecars(path: string): void {
  for (const suffix of ["", ...SIDECARS, "-journal"]) {
    try {
      Deno.removeSync(path + suffix);
    } catch { /* absent */ }
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
