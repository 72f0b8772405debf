/**
 * The spool's on-disk schema (described in the header of spool.ts) and its identity: one place
 * creates it, for the live spool and for the retired spools that salvage builds.
 */
import type { DatabaseSync } from "node:sqlite";

export const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series(
  id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, metric_id TEXT NOT NULL, labels TEXT NOT NULL,
  last_seq INTEGER NOT NULL, UNIQUE(device_id, metric_id, labels));
CREATE INDEX IF NOT EXISTS series_last_seq ON series(last_seq);
CREATE TABLE IF NOT EXISTS samples(seq INTEGER PRIMARY KEY, series INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL);
CREATE TABLE IF NOT EXISTS gaps(first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, rows INTEGER NOT NULL,
  reason TEXT NOT NULL, at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine(seq INTEGER PRIMARY KEY, ts_ms REAL NOT NULL, device_id TEXT NOT NULL,
  metric_id TEXT NOT NULL, value REAL, labels TEXT NOT NULL, reason TEXT NOT NULL, at_ms INTEGER NOT NULL,
  reported INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS devices(key TEXT PRIMARY KEY, device_id TEXT NOT NULL, last_poll_at_ms INTEGER,
  last_ok_at_ms INTEGER, last_error TEXT, polls_ok INTEGER NOT NULL, polls_failed INTEGER NOT NULL,
  polls_skipped INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS promoted(device_id TEXT NOT NULL, metric_id TEXT);
`;

/** What names a spool's samples for ever: its id, and the next seq it will give. */
export interface SpoolIdentity {
  spoolId: string;
  nextSeq: number;
}

export function readMeta(db: DatabaseSync): Map<string, string> {
  const rows = db.prepare("SELECT key, value FROM meta").all() as { key: string; value: string }[];
  return new Map(rows.map((r) => [r.key, r.value]));
}

/**
 * Creates the schema of a new spool (with `identity` when it continues a damaged one), or
 * checks the version of an existing one.
 */
export function initializeSchema(db: DatabaseSync, identity?: SpoolIdentity): void {
  const version = Number((db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version);
  if (version > SCHEMA_VERSION) {
    throw new Error(`Spool format version ${version} is newer than this kwollector understands (${SCHEMA_VERSION})`);
  }
  db.exec("BEGIN IMMEDIATE");
  db.exec(SCHEMA);
  const meta = readMeta(db);
  const set = db.prepare("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)");
  set.run("spool_id", identity?.spoolId ?? crypto.randomUUID());
  set.run("epoch_ms", String(Date.now()));
  set.run("next_seq", String(identity?.nextSeq ?? 1));
  set.run("rows", "0");
  set.run("created_at_ms", String(Date.now()));
  if (!meta.has("spool_id")) db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
  db.exec("COMMIT");
}
