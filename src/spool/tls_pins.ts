import { DatabaseSync } from "node:sqlite";
import { dirname } from "node:path";

/**
 * Certificates pinned for https metric urls under `redfish_tls_verify: tofu` (trust on first
 * use): the SHA-256 fingerprint of the certificate a host presented at its first successful
 * poll, per `host:port`.
 *
 * Guarantees:
 * - A pin lives in the spool's SQLite database (table `tls_pins`, created IF NOT EXISTS), so it
 *   survives restarts and upgrades with the spool. A spool moved aside as damaged loses its pins:
 *   the next poll of each host pins again (logged), as on a new collector.
 * - A first-use pin never replaces an existing one (`pinIfAbsent`); only `kwollector trust`
 *   replaces a pin (`replace`), after the operator has seen the new fingerprint.
 * - This module has its own connection and relies on SQLite's locking (WAL, busy_timeout), not
 *   on the spool's writer lock: `kwollector trust` pins while `run` runs, and `run` reads the
 *   pin again at its next connection to that host.
 */

export interface TlsPin {
  /** `host:port`, the host lower-case, an IPv6 address in brackets. */
  endpoint: string;
  /** SHA-256 of the certificate, as openssl and node:tls print it: `AB:CD:...`. */
  fingerprint256: string;
  /** The certificate's subject and end of validity, for messages. */
  subject: string;
  validTo: string;
  pinnedAtMs: number;
}

export interface TlsPins {
  get(endpoint: string): TlsPin | undefined;
  /** Pins `pin` unless `pin.endpoint` already has one; returns the pin in force. */
  pinIfAbsent(pin: TlsPin): TlsPin;
}

/** Pins of this process only: tests, `check --probe` (which never pins in the spool). */
export class MemoryTlsPins implements TlsPins {
  #pins = new Map<string, TlsPin>();

  constructor(initial: readonly TlsPin[] = []) {
    for (const p of initial) this.#pins.set(p.endpoint, p);
  }

  get(endpoint: string): TlsPin | undefined {
    return this.#pins.get(endpoint);
  }

  pinIfAbsent(pin: TlsPin): TlsPin {
    const current = this.#pins.get(pin.endpoint);
    if (current) return current;
    this.#pins.set(pin.endpoint, pin);
    return pin;
  }
}

const SCHEMA = `CREATE TABLE IF NOT EXISTS tls_pins(endpoint TEXT PRIMARY KEY, fingerprint256 TEXT NOT NULL,
  subject TEXT NOT NULL, valid_to TEXT NOT NULL, pinned_at_ms INTEGER NOT NULL) WITHOUT ROWID`;

interface Row {
  endpoint: string;
  fingerprint256: string;
  subject: string;
  valid_to: string;
  pinned_at_ms: number;
}

/** The pins of the spool at `spoolPath`. */
export class SpoolTlsPins implements TlsPins {
  #db: DatabaseSync;

  private constructor(db: DatabaseSync) {
    this.#db = db;
  }

  /**
   * Opens the pins of a spool for reading and writing. A spool that does not exist yet is
   * created readable by its owner only, as the spool itself does, and completed by `run` later.
   */
  static open(spoolPath: string): SpoolTlsPins {
    try {
      Deno.statSync(spoolPath);
    } catch {
      Deno.mkdirSync(dirname(spoolPath), { recursive: true, mode: 0o700 });
      Deno.openSync(spoolPath, { create: true, write: true, mode: 0o600 }).close();
    }
    const db = new DatabaseSync(spoolPath);
    try {
      db.exec("PRAGMA busy_timeout = 10000");
      db.exec("PRAGMA journal_mode = WAL");
      db.exec(SCHEMA);
    } catch (err) {
      db.close();
      throw new Error(`Cannot open the certificate pins of spool '${spoolPath}': ${(err as Error).message}`);
    }
    return new SpoolTlsPins(db);
  }

  /** Every pin of a spool, read only; none when the spool or its table does not exist yet. */
  static list(spoolPath: string): TlsPin[] {
    try {
      Deno.statSync(spoolPath);
    } catch {
      return [];
    }
    const db = new DatabaseSync(spoolPath, { readOnly: true });
    try {
      db.exec("PRAGMA busy_timeout = 10000");
      const exists = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tls_pins'").get();
      if (!exists) return [];
      return (db.prepare("SELECT * FROM tls_pins ORDER BY endpoint").all() as unknown as Row[]).map(fromRow);
    } finally {
      db.close();
    }
  }

  get(endpoint: string): TlsPin | undefined {
    const row = this.#db.prepare("SELECT * FROM tls_pins WHERE endpoint = ?").get(endpoint) as Row | undefined;
    return row ? fromRow(row) : undefined;
  }

  pinIfAbsent(pin: TlsPin): TlsPin {
    this.#db.prepare(
      "INSERT INTO tls_pins(endpoint, fingerprint256, subject, valid_to, pinned_at_ms) VALUES (?, ?, ?, ?, ?) " +
        "ON CONFLICT(endpoint) DO NOTHING",
    ).run(pin.endpoint, pin.fingerprint256, pin.subject, pin.validTo, pin.pinnedAtMs);
    return this.get(pin.endpoint) ?? pin;
  }

  /** Pins `pin` in place of any previous pin of its endpoint; returns the previous one. */
  replace(pin: TlsPin): TlsPin | undefined {
    const db = this.#db;
    db.exec("BEGIN IMMEDIATE");
    try {
      const previous = this.get(pin.endpoint);
      db.prepare(
        "INSERT OR REPLACE INTO tls_pins(endpoint, fingerprint256, subject, valid_to, pinned_at_ms) " +
          "VALUES (?, ?, ?, ?, ?)",
      ).run(pin.endpoint, pin.fingerprint256, pin.subject, pin.validTo, pin.pinnedAtMs);
      db.exec("COMMIT");
      return previous;
    } catch (err) {
      db.exec("ROLLBACK");
      throw err;
    }
  }

  close(): void {
    this.#db.close();
  }
}

function fromRow(r: Row): TlsPin {
  return {
    endpoint: r.endpoint,
    fingerprint256: r.fingerprint256,
    subject: r.subject,
    validTo: r.valid_to,
    pinnedAtMs: Number(r.pinned_at_ms),
  };
}

/** `host:port` as pins name it. */
export function pinEndpoint(host: string, port: number): string {
  return `${host.includes(":") ? `[${host}]` : host.toLowerCase()}:${port}`;
}
