import { DatabaseSync } from "node:sqlite";
import { errorMessage } from "../log.ts";
import { SpoolError, spoolTrouble } from "./errors.ts";
import type { SpoolIdentity } from "./schema.ts";

/**
 * Salvage of a damaged spool (see aside.ts). Reads what it can from the file moved aside, row by
 * row where whole ranges fail, and copies it into a new spool with the original seq numbers,
 * series, unreported gaps and quarantined seqs, so the central ledger still recognises what was
 * already forwarded and every seq stays accounted for.
 *
 * A file the disk or the OS will not let us open now (full disk, permission) throws a `refused`
 * SpoolError: the caller retries later. A file SQLite cannot read as a database salvages nothing.
 */
export interface Salvage {
  /** The damaged spool's id and next seq, when they could be read. */
  identity: SpoolIdentity | undefined;
  /** Copies into `target` (a new spool with `identity`) in one transaction. */
  copy(target: DatabaseSync): { samples: number; lost: number };
  close(): void;
}

const CHUNK = 1000;

export function openSalvage(damagedPath: string): Salvage {
  let src: DatabaseSync;
  try {
    src = new DatabaseSync(damagedPath, { readOnly: true });
    src.prepare("SELECT count(*) FROM sqlite_master").get();
  } catch (err) {
    if (spoolTrouble(err) === "refused") {
      throw new SpoolError(`Cannot read damaged spool '${damagedPath}': ${errorMessage(err)}`, "refused");
    }
    return { identity: undefined, copy: () => ({ samples: 0, lost: 0 }), close: () => {} };
  }
  const identity = readIdentity(src);
  return {
    identity,
    copy: (target) => copyAll(src, target, identity?.nextSeq),
    close() {
      try {
        src.close();
      } catch { /* closing a damaged database may fail too */ }
    },
  };
}

function readIdentity(src: DatabaseSync): SpoolIdentity | undefined {
  try {
    const rows = src.prepare("SELECT key, value FROM meta").all() as { key: string; value: string }[];
    const meta = new Map(rows.map((r) => [r.key, r.value]));
    const spoolId = meta.get("spool_id");
    const nextSeq = Number(meta.get("next_seq"));
    if (!spoolId || !/^[0-9a-f-]{36}$/.test(spoolId) || !Number.isInteger(nextSeq)) return undefined;
    let maxSeq = 0;
    try {
      maxSeq = Number((src.prepare("SELECT coalesce(max(seq), 0) AS m FROM samples").get() as { m: number }).m);
    } catch { /* the samples index may be what is damaged */ }
    return { spoolId, nextSeq: Math.max(nextSeq, maxSeq + 1) };
  } catch {
    return undefined;
  }
}

function copyAll(src: DatabaseSync, dst: DatabaseSync, nextSeq: number | undefined): { samples: number; lost: number } {
  dst.exec("BEGIN IMMEDIATE");
  try {
    const result = copySamples(src, dst, nextSeq);
    copyLedgerState(src, dst);
    const count = Number((dst.prepare("SELECT count(*) AS n FROM samples").get() as { n: number }).n);
    dst.prepare("UPDATE meta SET value = ? WHERE key = 'rows'").run(String(count));
    dst.exec("COMMIT");
    return result;
  } catch (err) {
    try {
      dst.exec("ROLLBACK");
    } catch { /* already rolled back by SQLite */ }
    throw new SpoolError(`Cannot store salvaged samples: ${errorMessage(err)}`, spoolTrouble(err) ?? "refused");
  }
}

/** Gaps not yet reported and quarantined seqs: without them the ledger would have holes. */
function copyLedgerState(src: DatabaseSync, dst: DatabaseSync): void {
  try {
    const gaps = src.prepare("SELECT first_seq, last_seq, rows, reason, at_ms FROM gaps").all() as {
      first_seq: number;
      last_seq: number;
      rows: number;
      reason: string;
      at_ms: number;
    }[];
    const ins = dst.prepare(
      "INSERT OR IGNORE INTO gaps(first_seq, last_seq, rows, reason, at_ms) VALUES (?, ?, ?, ?, ?)",
    );
    for (const g of gaps) ins.run(g.first_seq, g.last_seq, g.rows, g.reason, g.at_ms);
  } catch { /* an unreadable gaps table: those ranges stay unreported (ledger gaps show them) */ }
  try {
    const rows = src.prepare(
      "SELECT seq, ts_ms, device_id, metric_id, value, labels, reason, at_ms, reported FROM quarantine",
    ).all() as Record<string, number | string | null>[];
    const ins = dst.prepare(
      `INSERT OR IGNORE INTO quarantine(seq, ts_ms, device_id, metric_id, value, labels, reason, at_ms, reported)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    for (const q of rows) {
      const column = (name: string) => q[name] ?? null;
      ins.run(
        ...["seq", "ts_ms", "device_id", "metric_id", "value", "labels", "reason", "at_ms", "reported"].map(column),
      );
    }
  } catch { /* an unreadable quarantine table: those seqs stay unreported (ledger gaps show them) */ }
}

function copySamples(
  src: DatabaseSync,
  dst: DatabaseSync,
  nextSeq: number | undefined,
): { samples: number; lost: number } {
  let epochShiftUs = 0;
  try {
    const srcEpoch = Number(
      (src.prepare("SELECT value FROM meta WHERE key = 'epoch_ms'").get() as { value: string }).value,
    );
    const dstEpoch = Number(
      (dst.prepare("SELECT value FROM meta WHERE key = 'epoch_ms'").get() as { value: string }).value,
    );
    if (Number.isFinite(srcEpoch) && Number.isFinite(dstEpoch)) epochShiftUs = (srcEpoch - dstEpoch) * 1000;
  } catch {
    // Without the old epoch, timestamps cannot be rebuilt: nothing is salvageable.
    return { samples: 0, lost: 0 };
  }
  const seriesMap = new Map<number, number | null>();
  const readSeries = src.prepare("SELECT device_id, metric_id, labels, last_seq FROM series WHERE id = ?");
  const upsertSeries = dst.prepare(
    `INSERT INTO series(device_id, metric_id, labels, last_seq) VALUES (?, ?, ?, ?)
     ON CONFLICT(device_id, metric_id, labels) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq) RETURNING id`,
  );
  const insert = dst.prepare("INSERT OR IGNORE INTO samples(seq, series, ts, value) VALUES (?, ?, ?, ?)");
  const mapSeries = (id: number): number | null => {
    if (seriesMap.has(id)) return seriesMap.get(id)!;
    let mapped: number | null = null;
    try {
      const s = readSeries.get(id) as
        | { device_id: string; metric_id: string; labels: string; last_seq: number }
        | undefined;
      if (s) {
        JSON.parse(s.labels);
        mapped = Number((upsertSeries.get(s.device_id, s.metric_id, s.labels, s.last_seq) as { id: number }).id);
      }
    } catch (err) {
      if (spoolTrouble(err) === "refused") throw err;
      /* a damaged series row loses its samples */
    }
    seriesMap.set(id, mapped);
    return mapped;
  };
  type Row = { seq: number; series: number; ts: number; value: number | null };
  const range = src.prepare("SELECT seq, series, ts, value FROM samples WHERE seq > ? ORDER BY seq LIMIT ?");
  const point = src.prepare("SELECT seq, series, ts, value FROM samples WHERE seq = ?");
  let copied = 0;
  let lost = 0;
  let after = 0;
  const end = nextSeq ?? Number.MAX_SAFE_INTEGER;
  const keep = (r: Row) => {
    const series = mapSeries(Number(r.series));
    if (series === null) {
      lost++;
      return;
    }
    insert.run(Number(r.seq), series, Number(r.ts) + epochShiftUs, r.value);
    copied++;
  };
  while (after < end) {
    let rows: Row[];
    try {
      rows = range.all(after, CHUNK) as Row[];
    } catch {
      // The range crosses damaged pages: fall back to point reads over the next chunk of seqs.
      if (nextSeq === undefined) break;
      for (let seq = after + 1; seq <= Math.min(after + CHUNK, end - 1); seq++) {
        try {
          const r = point.get(seq) as Row | undefined;
          if (r) keep(r);
        } catch (err) {
          if (spoolTrouble(err) === "refused") throw err;
          lost++;
        }
      }
      after += CHUNK;
      continue;
    }
    if (rows.length === 0) break;
    for (const r of rows) keep(r);
    after = Number(rows.at(-1)!.seq);
  }
  return { samples: copied, lost };
}
