import { DatabaseSync } from "node:sqlite";
import { errorMessage } from "../log.ts";

/**
 * Salvage of a damaged spool (see the Recovery section of spool.ts). Reads what it can from the
 * file moved aside, row by row where whole ranges fail, and copies it into the new spool with
 * the original seq numbers and series, so the central ledger still recognises forwarded rows.
 */
export interface Salvage {
  /** The damaged spool's id and next seq, when they could be read. */
  identity: { spoolId: string; nextSeq: number } | undefined;
  copy(target: DatabaseSync): { samples: number; lost: number };
}

const CHUNK = 1000;

export function salvageInto(damagedPath: string): Salvage {
  let src: DatabaseSync | undefined;
  try {
    src = new DatabaseSync(damagedPath, { readOnly: true });
  } catch {
    return { identity: undefined, copy: () => ({ samples: 0, lost: 0 }) };
  }
  const source = src;
  const identity = readIdentity(source);
  return {
    identity,
    copy(target) {
      try {
        return copySamples(source, target, identity?.nextSeq);
      } finally {
        source.close();
      }
    },
  };
}

function readIdentity(src: DatabaseSync): { spoolId: string; nextSeq: number } | undefined {
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
    } catch { /* a damaged series row loses its samples */ }
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
  dst.exec("BEGIN IMMEDIATE");
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
        } catch {
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
  const count = Number((dst.prepare("SELECT count(*) AS n FROM samples").get() as { n: number }).n);
  dst.prepare("UPDATE meta SET value = ? WHERE key = 'rows'").run(String(count));
  try {
    dst.exec("COMMIT");
  } catch (err) {
    dst.exec("ROLLBACK");
    throw new Error(`Cannot store salvaged samples: ${errorMessage(err)}`);
  }
  return { samples: copied, lost };
}
