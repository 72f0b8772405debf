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
    copy: (target) => copyAll(src, target),
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

function copyAll(src: DatabaseSync, dst: DatabaseSync): { samples: number; lost: number } {
  dst.exec("BEGIN IMMEDIATE");
  try {
    const result = copySamples(src, dst);
    copyLedgerState(src, dst);
    dst.prepare("UPDATE meta SET value = ? WHERE key = 'rows'").run(String(result.samples));
    // A page of a later version of the file may hold seqs above the next seq its meta recorded.
    dst.prepare(
      `UPDATE meta SET value = CAST(max(CAST(value AS INTEGER), (SELECT coalesce(max(seq), 0) + 1 FROM samples)) AS TEXT)
       WHERE key = 'next_seq'`,
    ).run();
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

type Row = { seq: unknown; series: unknown; ts: unknown; value: unknown };

/**
 * Copies every sample SQLite can still read from `src`; returns the samples the new spool holds
 * and the seqs that could not be read (at least that many samples lost).
 *
 * A damaged table tree may link a page from another version of the file (a write-ahead log cut
 * before frames already copied into the file replays older pages over newer ones) or hold a key
 * a flipped bit changed. Its rows are then out of order, and a reading that goes on past the
 * last seq it read skips runs of rows that a lookup of their own seq still finds (it lost 9,986
 * of 10,271 such rows on one image). So:
 *
 * 1. **A walk in tree order** (`walk()`) takes each row wherever it stands: it brings rows no
 *    lookup reaches (a page linked where its keys do not belong), and the lowest and highest
 *    seq read in order with both neighbours (a changed key widens nothing).
 * 2. **A seq met twice keeps the row its own lookup finds**, not a key a flipped bit produced.
 * 3. **A lookup of every seq not copied yet** (`lookUpMissing()`), from that lowest seq (or the
 *    first the walk stepped over) to the spool's committed next seq, or past the highest seq
 *    read in order when that is above. About a microsecond per seq looked up: when the first
 *    pages cannot be read at all, that is every seq the spool ever gave.
 */
function copySamples(src: DatabaseSync, dst: DatabaseSync): { samples: number; lost: number } {
  let epochShiftUs = 0;
  let committedNextSeq: number | undefined;
  try {
    const meta = (key: string) =>
      Number((src.prepare("SELECT value FROM meta WHERE key = ?").get(key) as { value: string }).value);
    const srcEpoch = meta("epoch_ms");
    const dstEpoch = Number(
      (dst.prepare("SELECT value FROM meta WHERE key = 'epoch_ms'").get() as { value: string }).value,
    );
    if (Number.isFinite(srcEpoch) && Number.isFinite(dstEpoch)) epochShiftUs = (srcEpoch - dstEpoch) * 1000;
    try {
      const n = meta("next_seq");
      if (Number.isSafeInteger(n) && n > 0) committedNextSeq = n;
    } catch { /* the rows read in order still bound the lookups */ }
  } catch {
    // Without the old epoch, timestamps cannot be rebuilt: nothing is salvageable.
    return { samples: 0, lost: 0 };
  }
  const sink = sampleSink(src, dst, epochShiftUs);
  const walked = walk(src, sink, committedNextSeq);
  const from = Math.min(walked.lowestInPlace, walked.firstStepped);
  lookUpMissing(src, dst, sink, from, Math.max(committedNextSeq ?? 0, walked.highestInPlace + 1));
  const samples = Number((dst.prepare("SELECT count(*) AS n FROM samples").get() as { n: number }).n);
  return { samples, lost: sink.lost() };
}

interface Walked {
  /** Lowest and highest seq read in order with its neighbours (Infinity / 0 when none). */
  lowestInPlace: number;
  highestInPlace: number;
  /** First seq of the runs the walk stepped over unread (Infinity when none). */
  firstStepped: number;
}

interface SampleSink {
  /** Copies one row read from the damaged file unless its seq is copied already; false then. */
  take(row: Row): boolean;
  /** Replaces the copy of `seq` with the row the lookup of `seq` finds, when it finds one. */
  settle(seq: number): void;
  /** Seqs whose row is malformed or names a damaged series, and lookups that failed. */
  lost(): number;
  /** Counts a seq whose lookup failed (each seq is looked up once). */
  unreadable(): void;
}

function sampleSink(src: DatabaseSync, dst: DatabaseSync, epochShiftUs: number): SampleSink {
  const seriesMap = new Map<number, number | null>();
  const readSeries = src.prepare("SELECT device_id, metric_id, labels, last_seq FROM series WHERE id = ?");
  const upsertSeries = dst.prepare(
    `INSERT INTO series(device_id, metric_id, labels, last_seq) VALUES (?, ?, ?, ?)
     ON CONFLICT(device_id, metric_id, labels) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq) RETURNING id`,
  );
  const insert = dst.prepare("INSERT OR IGNORE INTO samples(seq, series, ts, value) VALUES (?, ?, ?, ?)");
  const replace = dst.prepare("INSERT OR REPLACE INTO samples(seq, series, ts, value) VALUES (?, ?, ?, ?)");
  const lookup = src.prepare("SELECT seq, series, ts, value FROM samples WHERE seq = ?");
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
  /** The row as the new spool stores it, or undefined when a column is not what the writer writes. */
  const converted = (r: Row): [number, number, number, number | null] | undefined => {
    const { seq, series, ts, value } = r;
    if (!Number.isSafeInteger(seq) || (seq as number) <= 0 || !Number.isSafeInteger(series)) return undefined;
    if (typeof ts !== "number" || !Number.isFinite(ts) || (value !== null && typeof value !== "number")) {
      return undefined;
    }
    const mapped = mapSeries(series as number);
    if (mapped === null) return undefined;
    return [seq as number, mapped, ts + epochShiftUs, value];
  };
  const malformed = new Set<number>();
  let unreadable = 0;
  const sink: SampleSink = {
    lost: () => malformed.size + unreadable,
    unreadable: () => unreadable++,
    take(row) {
      const values = converted(row);
      if (!values) {
        if (Number.isSafeInteger(row.seq)) malformed.add(row.seq as number);
        return true;
      }
      return Number(insert.run(...values).changes) > 0;
    },
    settle(seq) {
      let found: Row | undefined;
      try {
        found = lookup.get(seq) as Row | undefined;
      } catch (err) {
        if (spoolTrouble(err) === "refused") throw err;
        return; /* the lookup cannot tell: the row copied first stays */
      }
      const settled = found && converted(found);
      if (settled) replace.run(...settled);
    },
  };
  return sink;
}

/**
 * Step 1 of `copySamples`: reads `CHUNK` rows at a time, each run from past the last seq the
 * previous run read (past the highest when the last is not above where the run started). A run
 * that cannot be read is stepped over `CHUNK` seqs at a time up to `limit` (the committed next
 * seq; without it the walk stops there): the lookups cover what it stepped over. A row is in
 * place when its seq lies between those of the rows read just before and after it in its run;
 * a seq met twice, out of place, or last of a run (the next run starts past it, unchecked) is
 * settled by its own lookup.
 */
function walk(src: DatabaseSync, sink: SampleSink, limit: number | undefined): Walked {
  const range = src.prepare("SELECT seq, series, ts, value FROM samples WHERE seq > ? ORDER BY seq LIMIT ?");
  const walked: Walked = { lowestInPlace: Infinity, highestInPlace: 0, firstStepped: Infinity };
  const unsettled: number[] = [];
  let after = 0;
  for (;;) {
    let rows: Row[] | undefined;
    try {
      rows = range.all(after, CHUNK) as Row[];
    } catch (err) {
      if (spoolTrouble(err) === "refused") throw err;
    }
    if (rows?.length === 0) break;
    const seqs: number[] = [];
    for (const row of rows ?? []) {
      const copied = sink.take(row);
      const seq = Number(row.seq);
      if (!Number.isSafeInteger(seq)) continue;
      if (!copied) unsettled.push(seq);
      seqs.push(seq);
    }
    seqs.forEach((seq, i) => {
      if (i > 0 && i < seqs.length - 1 && seqs[i - 1]! < seq && seq < seqs[i + 1]!) {
        walked.lowestInPlace = Math.min(walked.lowestInPlace, seq);
        walked.highestInPlace = Math.max(walked.highestInPlace, seq);
      } else {
        unsettled.push(seq);
      }
    });
    const last = seqs.at(-1) ?? after;
    const highest = Math.max(after, ...seqs);
    if (last > after || highest > after) {
      after = last > after ? last : highest;
      continue;
    }
    // Nothing past `after` could be read there: step over it.
    if (limit === undefined) break;
    walked.firstStepped = Math.min(walked.firstStepped, after + 1);
    after += CHUNK;
    if (after >= limit) break;
  }
  for (const seq of unsettled) sink.settle(seq);
  return walked;
}

/** Step 3 of `copySamples`: looks up, CHUNK seqs at a time, every seq in [from, to) not copied yet. */
function lookUpMissing(src: DatabaseSync, dst: DatabaseSync, sink: SampleSink, from: number, to: number): void {
  const counted = dst.prepare("SELECT count(*) AS n FROM samples WHERE seq >= ? AND seq < ?");
  const copied = dst.prepare("SELECT seq FROM samples WHERE seq >= ? AND seq < ?");
  const many = src.prepare("SELECT seq, series, ts, value FROM samples WHERE seq IN (SELECT value FROM json_each(?))");
  const one = src.prepare("SELECT seq, series, ts, value FROM samples WHERE seq = ?");
  for (let start = from; start < to; start += CHUNK) {
    const end = Math.min(start + CHUNK, to);
    if (Number((counted.get(start, end) as { n: number }).n) === end - start) continue;
    const have = new Set((copied.all(start, end) as { seq: number }[]).map((r) => Number(r.seq)));
    const missing: number[] = [];
    for (let seq = start; seq < end; seq++) if (!have.has(seq)) missing.push(seq);
    let found: Row[] | undefined;
    try {
      found = many.all(JSON.stringify(missing)) as Row[];
    } catch (err) {
      if (spoolTrouble(err) === "refused") throw err;
    }
    if (found) {
      for (const r of found) sink.take(r);
      continue;
    }
    // A damaged page on the way of some of them: one lookup each, an unreadable seq counts as lost.
    for (const seq of missing) {
      let r: Row | undefined;
      try {
        r = one.get(seq) as Row | undefined;
      } catch (err) {
        if (spoolTrouble(err) === "refused") throw err;
        sink.unreadable();
        continue;
      }
      if (r) sink.take(r);
    }
  }
}
